//! One answer, classified once: its class, the server's window, and (for a 429) the wait it
//! asks for. Everything after — the probe's verdict, the fast path for a plain success, the retry
//! decision — reads this one value, so no header or status is looked at twice.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::classify::{classify_status, Class};
use super::rate_limit_headers::{parse_rate_limit_headers, ServerWindow};
use super::retry_after::{parse_retry_after, RetryAfter, RetryAfterProblem};

/// A response, classified (see the module's notes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Classified {
    pub(crate) class: Class,
    /// What the server said is left (rate-limit headers), capped as a `retry_after` is.
    pub(crate) window: Option<ServerWindow>,
    /// A 429's wait (`Unusable` for any other class), with the values present but unusable.
    pub(crate) retry_after: RetryAfter,
    pub(crate) retry_after_problems: Vec<RetryAfterProblem>,
}

impl Classified {
    /// Classifies a response of `status` with `headers` and `body`. `cap` bounds the server's
    /// window and wait (see [`RetryPolicy::retry_after_cap_for`](super::RetryPolicy::retry_after_cap_for));
    /// `wall_now` is read only for a time given as a wall-clock date.
    pub(crate) fn response(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        wall_now: impl Fn() -> SystemTime,
        cap: Duration,
    ) -> Self {
        let class = classify_status(status);
        let window = parse_rate_limit_headers(headers, &wall_now, cap);
        let (retry_after, retry_after_problems) = if class == Class::RateLimited {
            parse_retry_after(headers, body, wall_now(), cap)
        } else {
            (RetryAfter::Unusable, Vec::new())
        };
        Self {
            class,
            window,
            retry_after,
            retry_after_problems,
        }
    }

    /// A success that says nothing of the server's window: it only delivers its outcome.
    pub(crate) fn is_plain_success(&self) -> bool {
        self.class == Class::Success && self.window.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use http::HeaderValue;

    use super::*;

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_429_carries_its_wait_and_its_window() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from_static("5"));
        let cap = Duration::from_secs(60);
        let c = Classified::response(StatusCode::TOO_MANY_REQUESTS, &h, b"", wall, cap);
        assert_eq!(c.class, Class::RateLimited);
        assert_eq!(c.window.map(|w| w.reset_in), Some(Duration::from_secs(5)));
        assert_eq!(
            c.retry_after,
            RetryAfter::Wait {
                wait: Duration::from_secs(7),
                clamped_from: None
            }
        );
        assert!(!c.is_plain_success());
    }

    #[test]
    fn only_a_success_without_a_window_is_plain() {
        let cap = Duration::from_secs(60);
        let none = HeaderMap::new();
        let ok = Classified::response(StatusCode::OK, &none, b"{}", wall, cap);
        assert!(ok.is_plain_success());
        assert_eq!(ok.retry_after, RetryAfter::Unusable);
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("3"));
        h.insert("ratelimit-reset", HeaderValue::from_static("1"));
        assert!(!Classified::response(StatusCode::OK, &h, b"", wall, cap).is_plain_success());
        let bad = Classified::response(StatusCode::BAD_GATEWAY, &none, b"", wall, cap);
        assert_eq!(bad.class, Class::Transient);
        assert!(!bad.is_plain_success());
        // A 2xx's body is not read for a wait.
        let body = br#"{"retry_after": 3}"#;
        let ok = Classified::response(StatusCode::OK, &none, body, wall, cap);
        assert_eq!(ok.retry_after, RetryAfter::Unusable);
    }
}
