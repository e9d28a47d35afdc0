//! The one checked path from a time a server sends (seconds as text or JSON, a Unix timestamp, an
//! HTTP-date) to a [`Duration`], and from a duration to the [`Instant`] it ends at. Every value is
//! bounded here: nothing a server sends can panic (float → `Duration` overflow, `UNIX_EPOCH +`
//! beyond `SystemTime`'s range, `Instant +` beyond the monotonic clock's) or stand for a wait
//! longer than [`MAX_SECONDS`] before the caller's own cap applies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::Instant;

/// The longest duration a network value is read as, in seconds (about 31.7 years). Larger
/// (and infinite) values are read as this much; the caller then clamps to its cap and logs it.
pub const MAX_SECONDS: f64 = 1.0e9;

/// A reset value at or above this many seconds is read as a Unix timestamp (some servers send
/// one), below it as seconds from now.
pub(crate) const EPOCH_THRESHOLD_SECS: f64 = 1.0e9;

/// Seconds from the network as a duration: NaN and negative values are errors (saying why);
/// infinite values and values above [`MAX_SECONDS`] are [`MAX_SECONDS`].
///
/// ```
/// use fabraix_scheduler::retry::seconds_to_duration;
/// use std::time::Duration;
/// assert_eq!(seconds_to_duration(2.5), Ok(Duration::from_millis(2500)));
/// assert_eq!(seconds_to_duration(1e300), Ok(Duration::from_secs(1_000_000_000)));
/// assert!(seconds_to_duration(-1.0).is_err());
/// ```
pub fn seconds_to_duration(secs: f64) -> Result<Duration, String> {
    if secs.is_nan() {
        return Err("is NaN".into());
    }
    if secs < 0.0 {
        return Err(format!("{secs} is negative"));
    }
    // In 0 ..= MAX_SECONDS after the clamp: `try_from_secs_f64` cannot overflow; kept checked.
    Ok(Duration::try_from_secs_f64(secs.min(MAX_SECONDS)).unwrap_or(max_duration()))
}

/// Seconds written as text (`"12"`, `" 2.5 "`, `"1e3"`), as [`seconds_to_duration`] reads them.
pub(crate) fn seconds_text_to_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{:?} is not a number", excerpt(text)))?;
    seconds_to_duration(secs)
}

/// The wait until a Unix timestamp `secs` (seconds since 1970), from `wall_now`: zero if it has
/// passed; [`MAX_SECONDS`] at most (a timestamp beyond `SystemTime`'s range included).
pub(crate) fn until_unix_time(secs: f64, wall_now: SystemTime) -> Result<Duration, String> {
    if secs.is_nan() {
        return Err("is NaN".into());
    }
    if secs < 0.0 {
        return Err(format!("{secs} is negative"));
    }
    // Beyond `Duration` (about 5.8 × 10^11 years): as far ahead as a wait may be.
    let Ok(since_epoch) = Duration::try_from_secs_f64(secs) else {
        return Ok(max_duration());
    };
    Ok(match UNIX_EPOCH.checked_add(since_epoch) {
        Some(at) => until_wall_time(at, wall_now),
        None => max_duration(),
    })
}

/// The wait until the wall-clock time `at` (an HTTP-date), from `wall_now`: zero if it has passed,
/// [`MAX_SECONDS`] at most.
pub(crate) fn until_wall_time(at: SystemTime, wall_now: SystemTime) -> Duration {
    at.duration_since(wall_now)
        .unwrap_or(Duration::ZERO)
        .min(max_duration())
}

/// A reset given either as seconds from now or as a Unix timestamp (at or above
/// [`EPOCH_THRESHOLD_SECS`]), as a wait from `wall_now`. `wall_now` is called only for a timestamp.
pub(crate) fn reset_to_duration(
    text: &str,
    wall_now: impl FnOnce() -> SystemTime,
) -> Result<Duration, String> {
    let text = text.trim();
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{:?} is not a number", excerpt(text)))?;
    if secs >= EPOCH_THRESHOLD_SECS {
        until_unix_time(secs, wall_now())
    } else {
        seconds_to_duration(secs)
    }
}

/// `now + wait`, never overflowing: an instant beyond the clock's range is read as about 30 years
/// from now (or one day, or now, whichever the clock can hold).
pub(crate) fn instant_after(now: Instant, wait: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    const DAY: Duration = Duration::from_secs(86_400);
    now.checked_add(wait)
        .or_else(|| now.checked_add(FAR))
        .or_else(|| now.checked_add(DAY))
        .unwrap_or(now)
}

/// [`MAX_SECONDS`] as a duration.
pub(crate) fn max_duration() -> Duration {
    Duration::from_secs(MAX_SECONDS as u64)
}

/// At most 40 characters of a value, for an error message (a hostile header may be long).
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if text.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_is_a_bounded_duration_or_an_error() {
        for secs in [
            0.0,
            1e-12,
            1.5,
            1e9,
            1e19,
            1e20,
            1e300,
            f64::MAX,
            f64::INFINITY,
        ] {
            let d = seconds_to_duration(secs).unwrap();
            assert!(d <= max_duration(), "{secs}");
        }
        for bad in [f64::NAN, -0.5, f64::NEG_INFINITY] {
            assert!(seconds_to_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_beyond_system_time_do_not_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            until_unix_time(1_700_000_030.0, now),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(until_unix_time(1_600_000_000.0, now), Ok(Duration::ZERO));
        for huge in [1e19, 1e20, 1e300, f64::INFINITY] {
            assert!(
                until_unix_time(huge, now).unwrap() <= max_duration(),
                "{huge}"
            );
        }
        assert_eq!(
            reset_to_duration("1e19", || now).unwrap(),
            until_unix_time(1e19, now).unwrap()
        );
        assert_eq!(reset_to_duration("12", || now), Ok(Duration::from_secs(12)));
        assert!(reset_to_duration("soon", || now).is_err());
    }

    #[test]
    fn instants_far_ahead_saturate() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(instant_after(now, Duration::MAX) > now);
    }
}
