//! Rate-limit response headers: `Retry-After` on 429 and `X-RateLimit-*` on every response of a
//! known key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::model::RateInfo;

/// Whether and how a 429 carries a `Retry-After` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RetryAfterHeader {
    /// No header; only the body's `retry_after` (if enabled). The default, as the Fabraix docs
    /// show no header.
    #[default]
    None,
    /// `Retry-After: N`, whole seconds rounded up (at least 1), the same number as the body's.
    Seconds,
    /// `Retry-After: <HTTP-date>`: the server's wall clock plus the exact wait, rounded up to the
    /// next whole second (HTTP dates have one-second resolution).
    HttpDate,
}

/// A duration in whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The wait before a refused call may be retried, as sent: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

/// Adds `Retry-After` in the chosen form.
pub(crate) fn set_retry_after(
    headers: &mut HeaderMap,
    form: RetryAfterHeader,
    wait: Duration,
    wall_now: SystemTime,
) {
    let value = match form {
        RetryAfterHeader::None => return,
        RetryAfterHeader::Seconds => retry_after_secs(wait).to_string(),
        RetryAfterHeader::HttpDate => {
            let at = wall_now + wait;
            let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            let rounded = UNIX_EPOCH + Duration::from_secs(ceil_secs(since_epoch));
            httpdate::fmt_http_date(rounded)
        }
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(http::header::RETRY_AFTER, v);
    }
}

/// Adds `X-RateLimit-Limit` (N of the tightest limit), `X-RateLimit-Remaining` (calls it would
/// accept now) and `X-RateLimit-Reset` (whole seconds, rounded up, until it frees one more slot;
/// 0 when it is full).
pub(crate) fn set_rate_limit(headers: &mut HeaderMap, info: &RateInfo) {
    let pairs = [
        ("x-ratelimit-limit", info.limit),
        ("x-ratelimit-remaining", info.remaining),
        ("x-ratelimit-reset", ceil_secs(info.reset)),
    ];
    for (name, value) in pairs {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn http_date_is_never_early() {
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_400);
        let mut h = HeaderMap::new();
        set_retry_after(
            &mut h,
            RetryAfterHeader::HttpDate,
            Duration::from_millis(1500),
            wall,
        );
        let date = httpdate::parse_http_date(h["retry-after"].to_str().unwrap()).unwrap();
        assert_eq!(date, UNIX_EPOCH + Duration::from_secs(1_700_000_002));
    }
}
