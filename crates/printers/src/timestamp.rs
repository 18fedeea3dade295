//! RFC 3339 timestamps as Kubernetes serializes `metav1.Time` and `MicroTime`,
//! parsed to nanoseconds since the Unix epoch without any date library.

use std::time::SystemTime;

use crate::duration::human_duration_nanos;

/// Nanoseconds since 1970-01-01T00:00:00Z; negative before it.
pub(crate) type UnixNanos = i128;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which Kubernetes treats as "unset".
const GO_ZERO_TIME_SECONDS: i128 = -62_135_596_800;

pub(crate) fn unix_nanos(time: SystemTime) -> UnixNanos {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// A timestamp field: `None` when absent, null, not a string, unparsable or Go's zero time.
pub(crate) fn parse_time(value: Option<&serde_json::Value>) -> Option<UnixNanos> {
    let text = value?.as_str()?;
    let parsed = parse_rfc3339(text)?;
    if parsed == GO_ZERO_TIME_SECONDS * NANOS_PER_SECOND {
        return None;
    }
    Some(parsed)
}

/// The age of a timestamp as kube-apiserver prints it: "<unknown>" when unset.
pub(crate) fn since(time: Option<UnixNanos>, now: UnixNanos) -> String {
    match time {
        None => "<unknown>".to_string(),
        Some(time) => human_duration_nanos(saturating_go_duration(now - time)),
    }
}

/// Go's `Time.Sub` saturates at the range of a 64-bit nanosecond duration.
pub(crate) fn saturating_go_duration(nanos: i128) -> i64 {
    nanos.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// `2006-01-02T15:04:05Z` in UTC; Go's zero time when unset, as the default
/// table convertor prints it.
pub(crate) fn format_rfc3339_utc(time: Option<UnixNanos>) -> String {
    let nanos = time.unwrap_or(GO_ZERO_TIME_SECONDS * NANOS_PER_SECOND);
    let seconds = nanos.div_euclid(NANOS_PER_SECOND);
    let days = seconds.div_euclid(86_400) as i64;
    let second_of_day = seconds.rem_euclid(86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `None` on any syntax or range error.
pub(crate) fn parse_rfc3339(text: &str) -> Option<UnixNanos> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut position = 19;
    let mut fraction_nanos: i128 = 0;
    if bytes.get(position) == Some(&b'.') {
        position += 1;
        let start = position;
        while position < bytes.len() && bytes[position].is_ascii_digit() {
            position += 1;
        }
        let fraction = &bytes[start..position];
        if fraction.is_empty() {
            return None;
        }
        for (digit_idx, digit) in fraction.iter().take(9).enumerate() {
            fraction_nanos += i128::from(digit - b'0') * 10i128.pow(8 - digit_idx as u32);
        }
    }
    let offset_seconds: i64 = match bytes.get(position)? {
        b'Z' | b'z' if position + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if position + 6 == bytes.len() => {
            let offset_hours = digits(bytes, position + 1, 2)?;
            let offset_minutes = digits(bytes, position + 4, 2)?;
            if bytes[position + 3] != b':' || offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let magnitude = offset_hours * 3600 + offset_minutes * 60;
            if *sign == b'-' { -magnitude } else { magnitude }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(i128::from(seconds) * NANOS_PER_SECOND + fraction_nanos)
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(start..start + count)?;
    let mut value = 0i64;
    for byte in slice {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(byte - b'0');
    }
    Some(value)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.000001Z"),
            Some(1_709_208_000_000_001_000)
        );
        assert_eq!(parse_rfc3339("2023-02-29T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("2023-01-01 12:00:00Z"), None);
        assert_eq!(parse_rfc3339("2023-01-01T12:00:00"), None);
        assert_eq!(parse_rfc3339("2023-01-01T12:00:00Zjunk"), None);
    }

    #[test]
    fn formats_round_trip_and_go_zero_time() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(format_rfc3339_utc(parse_rfc3339(text)), text);
        }
        assert_eq!(format_rfc3339_utc(None), "0001-01-01T00:00:00Z");
        let zero = serde_json::json!("0001-01-01T00:00:00Z");
        assert_eq!(parse_time(Some(&zero)), None);
    }
}
