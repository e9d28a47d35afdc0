//! `RateLimit-Remaining` / `RateLimit-Reset` (and the `X-RateLimit-*` spellings, and the combined
//! `RateLimit: remaining=…, reset=…` field): what the server says is left, when present.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::network_time::reset_to_duration;

/// What the server announced: `remaining` calls before `reset_in` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerWindow {
    /// Calls left in the server's current window.
    pub remaining: u32,
    /// The count of the limit the figures are for (`RateLimit-Limit`, `X-RateLimit-Limit` or the
    /// combined field's `limit`; its leading number), if given.
    pub limit: Option<u32>,
    /// Time until that window resets, at most the cap given to [`parse_rate_limit_headers`].
    pub reset_in: Duration,
    /// `Some(announced)` if the server announced a longer reset than the cap and was clamped
    /// (the caller logs it, as it does a clamped `retry_after`).
    pub clamped_from: Option<Duration>,
}

/// The longest header value read, in bytes: a longer one is not a count or a time.
const MAX_VALUE_LEN: usize = 256;

/// The server's window, if the response carries both a remaining count and a reset time that parse.
/// Anything malformed is ignored (the ledger's own accounting still holds). The reset is read through
/// the one checked path for network times (seconds, or a Unix timestamp when at least 10^9), and
/// bounded by `cap` (as a 429's `retry_after` is): a window can never hold a key longer.
/// `wall_now` is called only for a reset given as a Unix timestamp, so the common response costs no
/// clock read.
///
/// ```
/// use fabraix_scheduler::retry::parse_rate_limit_headers;
/// use http::{HeaderMap, HeaderValue};
/// use std::time::{Duration, UNIX_EPOCH};
/// let mut h = HeaderMap::new();
/// h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
/// h.insert("ratelimit-reset", HeaderValue::from_static("86400"));
/// let wall_now = || UNIX_EPOCH + Duration::from_secs(1_700_000_000); // the clock's wall time
/// let w = parse_rate_limit_headers(&h, wall_now, Duration::from_secs(3660)).unwrap();
/// assert_eq!(w.reset_in, Duration::from_secs(3660));
/// assert_eq!(w.clamped_from, Some(Duration::from_secs(86400)));
/// ```
pub fn parse_rate_limit_headers(
    headers: &HeaderMap,
    wall_now: impl FnOnce() -> SystemTime,
    cap: Duration,
) -> Option<ServerWindow> {
    if headers.is_empty() {
        return None;
    }
    let get = |names: &[HeaderName]| -> Option<&str> {
        names
            .iter()
            .find_map(|n| headers.get(n))
            .filter(|v| v.len() <= MAX_VALUE_LEN)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut remaining = get(&[
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-remaining"),
    ]);
    let mut reset = get(&[
        HeaderName::from_static("ratelimit-reset"),
        HeaderName::from_static("x-ratelimit-reset"),
    ]);
    let mut limit = get(&[
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-limit"),
    ]);
    if remaining.is_none() || reset.is_none() || limit.is_none() {
        if let Some(combined) = get(&[HeaderName::from_static("ratelimit")]) {
            for part in combined.split([',', ';']) {
                if let Some((k, v)) = part.split_once('=') {
                    match k.trim() {
                        "remaining" | "r" => remaining = Some(v.trim()),
                        "reset" | "t" => reset = Some(v.trim()),
                        "limit" | "l" if limit.is_none() => limit = Some(v.trim()),
                        _ => {}
                    }
                }
            }
        }
    }
    let remaining: u32 = remaining?.parse().ok()?;
    let announced = reset_to_duration(reset?, wall_now).ok()?;
    let (reset_in, clamped_from) = if announced > cap {
        (cap, Some(announced))
    } else {
        (announced, None)
    };
    // A policy may follow the count (`10, 10;w=1`): the leading number is the count.
    let limit = limit
        .and_then(|l| l.split([',', ';']).next())
        .and_then(|l| l.trim().parse().ok());
    Some(ServerWindow {
        remaining,
        limit,
        reset_in,
        clamped_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    const CAP: Duration = Duration::from_secs(3660);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn each_spelling_parses() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "7"), ("x-ratelimit-reset", "12")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(
            w,
            ServerWindow {
                remaining: 7,
                limit: None,
                reset_in: Duration::from_secs(12),
                clamped_from: None,
            }
        );
        let w = parse_rate_limit_headers(
            &headers(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "1700000030"),
            ]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(w.reset_in, Duration::from_secs(30));
        let w = parse_rate_limit_headers(
            &headers(&[("ratelimit", "limit=10, remaining=3, reset=4")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!((w.remaining, w.limit), (3, Some(10)));
        // The limit's count, alone or with a policy after it.
        for (value, count) in [("60", Some(60)), ("10, 10;w=1", Some(10)), ("many", None)] {
            let w = parse_rate_limit_headers(
                &headers(&[
                    ("x-ratelimit-limit", value),
                    ("x-ratelimit-remaining", "1"),
                    ("x-ratelimit-reset", "1"),
                ]),
                || now,
                CAP,
            )
            .unwrap();
            assert_eq!(w.limit, count, "{value}");
        }
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "x"), ("x-ratelimit-reset", "1")]),
            || now,
            CAP
        )
        .is_none());
        assert!(
            parse_rate_limit_headers(&headers(&[("x-ratelimit-remaining", "1")]), || now, CAP)
                .is_none()
        );
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "-3")]),
            || now,
            CAP
        )
        .is_none());
    }

    #[test]
    fn windows_beyond_the_cap_are_clamped_and_absurd_resets_do_not_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for reset in ["86400", "999999999", "1e19", "1e20", "inf", "1e300"] {
            let w = parse_rate_limit_headers(
                &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", reset)]),
                || now,
                CAP,
            )
            .unwrap();
            assert_eq!(w.reset_in, CAP, "{reset}");
            assert!(w.clamped_from.unwrap() > CAP, "{reset}");
        }
        let w = parse_rate_limit_headers(
            &headers(&[("ratelimit", "remaining=0, reset=1e300")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(w.reset_in, CAP);
        assert!(parse_rate_limit_headers(
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "NaN")]),
            || now,
            CAP
        )
        .is_none());
    }
}
