//! Human-readable durations with the rules of apimachinery's `duration.HumanDuration`,
//! which kube-apiserver uses for every Age, Last Seen and Duration cell.

use std::time::Duration;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// Renders `duration` the way `kubectl get` shows ages: about two significant
/// figures, e.g. "45s", "3m10s", "70m", "3h1m", "47h", "2d1h", "367d", "2y1d", "8y".
pub fn human_duration(duration: Duration) -> String {
    let nanos = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    human_duration_nanos(nanos)
}

/// The signed form: a duration of up to two seconds below zero is clock skew
/// and renders as "0s"; anything more negative is "<invalid>". Go durations are
/// signed 64-bit nanoseconds, so callers saturate to that range first.
pub(crate) fn human_duration_nanos(nanos: i64) -> String {
    // Truncation toward zero matches Go's `int(d.Seconds())`.
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / NANOS_PER_MINUTE;
    if minutes < 10 {
        let rest_seconds = seconds % 60;
        if rest_seconds == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{rest_seconds}s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / NANOS_PER_HOUR;
    if hours < 8 {
        let rest_minutes = minutes % 60;
        if rest_minutes == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{rest_minutes}m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rest_hours = hours % 24;
        if rest_hours == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{rest_hours}h", hours / 24);
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let rest_days = (hours / 24) % 365;
        if rest_days == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{rest_days}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = NANOS_PER_SECOND;
    const MILLISECOND: i64 = 1_000_000;
    const MINUTE: i64 = NANOS_PER_MINUTE;
    const HOUR: i64 = NANOS_PER_HOUR;
    const DAY: i64 = 24 * HOUR;
    const YEAR: i64 = 365 * DAY;

    /// apimachinery `duration_test.go`, `TestHumanDuration`.
    #[test]
    fn upstream_human_duration_table() {
        let cases = [
            (SECOND, "1s"),
            (70 * SECOND, "70s"),
            (190 * SECOND, "3m10s"),
            (70 * MINUTE, "70m"),
            (47 * HOUR, "47h"),
            (49 * HOUR, "2d1h"),
            ((8 * 24 + 2) * HOUR, "8d"),
            (367 * DAY, "367d"),
            ((365 * 2 * 24 + 25) * HOUR, "2y1d"),
            ((365 * 8 * 24 + 2) * HOUR, "8y"),
        ];
        for (nanos, want) in cases {
            assert_eq!(human_duration_nanos(nanos), want, "{nanos}ns");
        }
    }

    /// apimachinery `duration_test.go`, `TestHumanDurationBoundaries`.
    #[test]
    fn upstream_human_duration_boundaries() {
        let cases = [
            (-2 * SECOND, "<invalid>"),
            (-2 * SECOND + 1, "0s"),
            (0, "0s"),
            (SECOND - MILLISECOND, "0s"),
            (2 * MINUTE - MILLISECOND, "119s"),
            (2 * MINUTE, "2m"),
            (2 * MINUTE + SECOND, "2m1s"),
            (10 * MINUTE - MILLISECOND, "9m59s"),
            (10 * MINUTE, "10m"),
            (10 * MINUTE + SECOND, "10m"),
            (3 * HOUR - MILLISECOND, "179m"),
            (3 * HOUR, "3h"),
            (3 * HOUR + MINUTE, "3h1m"),
            (8 * HOUR - MILLISECOND, "7h59m"),
            (8 * HOUR, "8h"),
            (8 * HOUR + 59 * MINUTE, "8h"),
            (2 * DAY - MILLISECOND, "47h"),
            (2 * DAY, "2d"),
            (2 * DAY + HOUR, "2d1h"),
            (8 * DAY - MILLISECOND, "7d23h"),
            (8 * DAY, "8d"),
            (8 * DAY + 23 * HOUR, "8d"),
            (2 * YEAR - MILLISECOND, "729d"),
            (2 * YEAR, "2y"),
            (2 * YEAR + 23 * HOUR, "2y"),
            (2 * YEAR + 23 * HOUR + 59 * MINUTE, "2y"),
            (2 * YEAR + DAY - MILLISECOND, "2y"),
            (2 * YEAR + DAY, "2y1d"),
            (3 * YEAR, "3y"),
            (4 * YEAR, "4y"),
            (5 * YEAR, "5y"),
            (6 * YEAR, "6y"),
            (7 * YEAR, "7y"),
            (8 * YEAR - MILLISECOND, "7y364d"),
            (8 * YEAR, "8y"),
            (8 * YEAR + 364 * DAY, "8y"),
            (9 * YEAR, "9y"),
        ];
        for (nanos, want) in cases {
            assert_eq!(human_duration_nanos(nanos), want, "{nanos}ns");
        }
    }

    #[test]
    fn public_form_takes_std_durations_and_saturates() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(330)), "5m30s");
        assert_eq!(human_duration(Duration::MAX), "292y");
    }
}
