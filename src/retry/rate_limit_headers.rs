//! `RateLimit-Remaining` / `RateLimit-Reset` (and the `X-RateLimit-*` spellings, and the combined
//! `RateLimit: remaining=…, reset=…` field): what the server says is left, when present.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};

/// What the server announced: `remaining` calls before `reset_in` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerWindow {
    /// Calls left in the server's current window.
    pub remaining: u32,
    /// Time until that window resets.
    pub reset_in: Duration,
}

/// A reset value above this many seconds is read as a Unix timestamp (some servers send one).
const EPOCH_THRESHOLD_SECS: u64 = 1_000_000_000;

/// The server's window, if the response carries both a remaining count and a reset time that parse.
/// Anything malformed is ignored (the ledger's own accounting still holds). `wall_now` is called
/// only for a reset given as a Unix timestamp, so the common response costs no clock read.
pub fn parse_rate_limit_headers(
    headers: &HeaderMap,
    wall_now: impl FnOnce() -> SystemTime,
) -> Option<ServerWindow> {
    if headers.is_empty() {
        return None;
    }
    let get = |names: &[HeaderName]| -> Option<String> {
        names
            .iter()
            .find_map(|n| headers.get(n))
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    let mut remaining = get(&[
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-remaining"),
    ]);
    let mut reset = get(&[
        HeaderName::from_static("ratelimit-reset"),
        HeaderName::from_static("x-ratelimit-reset"),
    ]);
    if remaining.is_none() || reset.is_none() {
        if let Some(combined) = get(&[HeaderName::from_static("ratelimit")]) {
            for part in combined.split([',', ';']) {
                if let Some((k, v)) = part.split_once('=') {
                    match k.trim() {
                        "remaining" | "r" => remaining = Some(v.trim().to_string()),
                        "reset" | "t" => reset = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
            }
        }
    }
    let remaining: u32 = remaining?.parse().ok()?;
    let reset: f64 = reset?.parse().ok()?;
    if !(reset.is_finite() && reset >= 0.0) {
        return None;
    }
    let reset_in = if reset >= EPOCH_THRESHOLD_SECS as f64 {
        let at = UNIX_EPOCH + Duration::from_secs_f64(reset);
        at.duration_since(wall_now()).unwrap_or(Duration::ZERO)
    } else {
        Duration::from_secs_f64(reset)
    };
    Some(ServerWindow {
        remaining,
        reset_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
        )
        .unwrap();
        assert_eq!(
            w,
            ServerWindow {
                remaining: 7,
                reset_in: Duration::from_secs(12)
            }
        );
        let w = parse_rate_limit_headers(
            &headers(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "1700000030"),
            ]),
            || now,
        )
        .unwrap();
        assert_eq!(w.reset_in, Duration::from_secs(30));
        let w = parse_rate_limit_headers(
            &headers(&[("ratelimit", "limit=10, remaining=3, reset=4")]),
            || now,
        )
        .unwrap();
        assert_eq!(w.remaining, 3);
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "x"), ("x-ratelimit-reset", "1")]),
            || now
        )
        .is_none());
        assert!(
            parse_rate_limit_headers(&headers(&[("x-ratelimit-remaining", "1")]), || now).is_none()
        );
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "-3")]),
            || now
        )
        .is_none());
    }
}
