//! XEP-0082 date-time profile (`CCYY-MM-DDThh:mm:ss[.sss]Z`) over simulated time.
//!
//! Times are durations since the Unix epoch, as the simulator's fixed epoch gives them; no
//! wall clock is ever read here.

use core::time::Duration;

/// The simulator's fixed epoch, 2026-01-01T00:00:00Z, as a duration since the Unix epoch: every
/// run starts there (never at the wall clock), and whatever needs a date before any call
/// carries the simulated time (an OpenPGP key's creation) takes this one.
pub const EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// Days since 1970-01-01 for a proleptic Gregorian date (civil-from-days inverse).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats a XEP-0082 DateTime with millisecond precision, e.g. `2026-01-01T00:00:01.250Z`.
pub fn format_stamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Parses a XEP-0082 DateTime in UTC (`Z`) with optional fractional seconds, strictly:
/// `CCYY-MM-DDThh:mm:ss[.s+]Z` with exactly those digit counts and a year in 1970..=9999.
/// Returns `None` for anything else: the stamp may come from an attacker.
pub fn parse_stamp(s: &str) -> Option<Duration> {
    fn num(s: &str, digits: usize) -> Option<i64> {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    }
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next()?, 4)?, num(dp.next()?, 2)?, num(dp.next()?, 2)?);
    if dp.next().is_some() {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let (hh, mm, ss) = (num(tp.next()?, 2)?, num(tp.next()?, 2)?, num(tp.next()?, 2)?);
    if tp.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 || y < 1970 {
        return None;
    }
    let nanos = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = f.parse().ok()?;
            n * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    // A four-digit year keeps every product far from overflow.
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(Duration::new(u64::try_from(secs).ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_profile() {
        let t = EPOCH + Duration::from_millis(1_250); // 2026-01-01T00:00:01.250Z
        assert_eq!(format_stamp(t), "2026-01-01T00:00:01.250Z");
        assert_eq!(parse_stamp("2026-01-01T00:00:01.250Z"), Some(t));
        assert_eq!(parse_stamp("2026-01-01T00:00:01Z"), Some(EPOCH + Duration::from_secs(1)));
        assert_eq!(format_stamp(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_stamp("2024-02-29T12:00:00Z"), Some(Duration::from_secs(1_709_208_000)));
    }

    #[test]
    fn rejects_hostile_stamps() {
        for bad in [
            "",
            "Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "x-y-zTa:b:cZ",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "1969-12-31T23:59:59Z",
            "300000000000-03-01T00:00:00Z",
            "2026-01-01T-5:00:00Z",
            "2026-01-01T+5:00:00Z",
            "2026-1-01T00:00:00Z",
            "2026-01-01T00:00:00:00Z",
            "2026-01-01-01T00:00:00Z",
            "+2026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }
}
