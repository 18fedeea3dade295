//! Go's text forms for the values Kubernetes JSON carries as strings: RFC 3339
//! times (`metav1.Time`, `metav1.MicroTime`), `time.Duration` and `[]byte`
//! (standard base64 with padding, as `encoding/json` writes it).

/// Seconds from 0001-01-01T00:00:00Z to the Unix epoch: Go's zero `time.Time`
/// as Unix seconds, which an encoder may write instead of leaving the field empty.
pub(crate) const GO_ZERO_TIME_UNIX_SECONDS: i64 = -62_135_596_800;

/// Formats a UTC instant as RFC 3339, with `fraction_digits` digits of the
/// second's fraction (0 for `metav1.Time`, 6 for `metav1.MicroTime`, which
/// truncate like Go's layouts). `None` when the year falls outside 0..=9999,
/// which Go's `Time.MarshalJSON` refuses too.
pub(crate) fn rfc3339(unix_seconds: i64, nanos: u32, fraction_digits: u32) -> Option<String> {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if fraction_digits > 0 {
        let fraction = nanos / 10u32.pow(9 - fraction_digits);
        text.push_str(&format!(
            ".{fraction:0width$}",
            width = fraction_digits as usize
        ));
    }
    text.push('Z');
    Some(text)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: "1h2m3.5s", "1.5ms", "0s".
pub(crate) fn go_duration(nanoseconds: i64) -> String {
    if nanoseconds == 0 {
        return "0s".to_owned();
    }
    let sign = if nanoseconds < 0 { "-" } else { "" };
    let magnitude = nanoseconds.unsigned_abs();
    if magnitude < 1_000_000_000 {
        let (unit, scale) = match magnitude {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", decimal(magnitude, scale));
    }
    let hours = magnitude / 3_600_000_000_000;
    let minutes = magnitude / 60_000_000_000 % 60;
    let seconds = decimal(magnitude % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, _) => format!("{sign}{minutes}m{seconds}s"),
        _ => format!("{sign}{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / scale` written with the fraction's trailing zeros dropped.
fn decimal(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (idx, byte)| {
            group | u32::from(*byte) << (16 - 8 * idx)
        });
        for idx in 0..4 {
            if idx <= chunk.len() {
                text.push(ALPHABET[(group >> (18 - 6 * idx) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_go_layouts() {
        assert_eq!(
            rfc3339(1_704_067_200, 0, 0).as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339(0, 0, 0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(951_782_400, 0, 0).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(rfc3339(-1, 0, 0).as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(
            rfc3339(1_704_067_200, 123_456_789, 6).as_deref(),
            Some("2024-01-01T00:00:00.123456Z")
        );
        assert_eq!(
            rfc3339(1_704_067_200, 0, 6).as_deref(),
            Some("2024-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            rfc3339(GO_ZERO_TIME_UNIX_SECONDS, 0, 0).as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339(253_402_300_800, 0, 0), None, "year 10000");
        assert_eq!(rfc3339(i64::MIN, 0, 0), None);
        assert_eq!(rfc3339(i64::MAX, 0, 0), None);
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(1_000_000_000), "1s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn base64_pads_like_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"q"), "cQ==");
        assert_eq!(base64(b"qq"), "cXE=");
        assert_eq!(base64(b"qqq"), "cXFx");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }
}
