//! Human-readable sizes, ages and times, as crictl prints them (docker's
//! go-units `HumanSizeWithPrecision(size, 3)` and `HumanDuration`, and
//! Go's `time.Time` format in UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Decimal units of sizes.
const SIZE_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// A size with three significant digits and a decimal unit: `745kB`,
/// `1.23MB`.
pub fn human_size(bytes: u64) -> String {
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < SIZE_UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_g(size, 3), SIZE_UNITS[unit])
}

/// Go's `%.{precision}g`: `precision` significant digits, trailing zeros
/// dropped, exponent form for very large or small values.
pub fn format_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{:.*e}", precision.saturating_sub(1), value);
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    if exponent < -4 || exponent >= precision as i32 {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_zeros(mantissa), exponent.abs());
    }
    let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

/// Drops trailing zeros after a decimal point, and the point itself.
fn trim_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// A rough duration: `Less than a second`, `5 seconds`, `About an hour`,
/// `3 days`...
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// How long ago `created_ns` (nanoseconds since the epoch) was: `5
/// minutes ago`.
pub fn ago(created_ns: i64, now: SystemTime) -> String {
    let created = UNIX_EPOCH + Duration::from_nanos(created_ns.max(0) as u64);
    let elapsed = now.duration_since(created).unwrap_or_default();
    format!("{} ago", human_duration(elapsed))
}

/// A time as Go prints a UTC `time.Time`:
/// `2024-05-01 12:34:56.789 +0000 UTC`.
pub fn go_time_utc(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}{fraction} +0000 UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(12), "12B");
        assert_eq!(human_size(745_000), "745kB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(320_000), "320kB");
        assert_eq!(human_size(99_960), "100kB");
        assert_eq!(human_size(999_600), "1e+03kB");
        assert_eq!(format_g(0.0001234, 3), "0.000123");
        assert_eq!(format_g(0.00001234, 3), "1.23e-05");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(59)), "59 seconds");
        assert_eq!(human_duration(Duration::from_secs(61)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(45 * 60)), "45 minutes");
        assert_eq!(human_duration(Duration::from_secs(90 * 60)), "2 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(20 * 86_400)), "2 weeks");
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(ago(40_000_000_000, now), "About a minute ago");
    }

    #[test]
    fn times_print_like_go() {
        assert_eq!(go_time_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_time_utc(1_714_566_896_789_000_000),
            "2024-05-01 12:34:56.789 +0000 UTC"
        );
    }
}
