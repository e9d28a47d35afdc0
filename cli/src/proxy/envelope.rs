//! The proxy's own answers, in the API's error envelope
//! `{"error":{"message","type","code"}}` (and `retry_after` on a 429, as the API puts it).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The body of an error: `{"error":{"message":..,"type":..,"code":..}}`.
pub fn body(message: &str, kind: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {"message": message, "type": kind, "code": code}
    }))
    .unwrap_or_default()
}

/// A JSON response with this status and body.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An error of the proxy itself (`type: proxy_error`).
pub fn proxy_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(status, body(message, "proxy_error", code))
}

/// The answer to a request refused because the queue is full: 429 with `Retry-After` (whole
/// seconds, at least 1) and the wait in the body's `retry_after`, as the API's own 429 has it.
pub fn queue_full(capacity: usize, retry_after: Duration) -> Response<Full<Bytes>> {
    let secs = retry_after_secs(retry_after);
    let message = format!(
        "the proxy's queue is full ({capacity} requests waiting for the quota); retry after {secs} s"
    );
    let body = serde_json::to_vec(&serde_json::json!({
        "error": {
            "message": message,
            "type": "rate_limit_error",
            "code": "proxy_queue_full",
            "retry_after": secs,
        }
    }))
    .unwrap_or_default();
    let mut r = json(StatusCode::TOO_MANY_REQUESTS, body);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// A wait as `Retry-After` seconds: rounded up, at least 1, at most a day.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_from_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(1 << 40)), 86_400);
        let r = queue_full(5, Duration::from_millis(1_500));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
    }
}
