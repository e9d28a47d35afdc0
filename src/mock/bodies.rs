//! Response bodies: the Fabraix error envelope, FastAPI-style `detail` bodies, and the three
//! endpoints' success bodies (with v4-format ids and server timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::validate::Endpoint;

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error":{"message","type","code"}}`.
pub(crate) fn error_envelope(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

/// 401 for a missing, unknown or revoked key.
pub(crate) fn invalid_api_key() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &error_envelope(
            "Invalid API key provided",
            "authentication_error",
            "invalid_api_key",
        ),
    )
}

/// 403 for a restricted key on an endpoint it may not use.
pub(crate) fn insufficient_permissions() -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        &error_envelope(
            "API key does not have permission for this operation",
            "authorization_error",
            "insufficient_permissions",
        ),
    )
}

/// 429, with `retry_after` (whole seconds) in the body when given.
pub(crate) fn rate_limited(retry_after_secs: Option<u64>) -> Response {
    let mut error = json!({"message": "Rate limit exceeded", "type": "rate_limit_error"});
    if let Some(secs) = retry_after_secs {
        error["retry_after"] = json!(secs);
    }
    json_response(StatusCode::TOO_MANY_REQUESTS, &json!({ "error": error }))
}

/// 400 `invalid_body`.
pub(crate) fn invalid_body(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &error_envelope(message, "invalid_request_error", "invalid_body"),
    )
}

/// 422 FastAPI style.
pub(crate) fn unprocessable(details: Vec<Value>) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": details }),
    )
}

/// An injected 500.
pub(crate) fn internal_error() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &error_envelope("Internal server error", "api_error", "internal_error"),
    )
}

/// 404 FastAPI style.
pub(crate) fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"}))
}

/// 405 FastAPI style.
pub(crate) fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"detail": "Method Not Allowed"}),
    )
}

/// A UUID in v4 format from `rng`.
pub(crate) fn uuid_v4(rng: &mut fastrand::Rng) -> String {
    let mut b = rng.u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Seconds since the Unix epoch, as a float.
pub(crate) fn unix_seconds(wall: SystemTime) -> f64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// ISO 8601 UTC with milliseconds, e.g. `2024-01-01T00:00:00.000Z`.
pub(crate) fn iso8601(wall: SystemTime) -> String {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The 200 body of an endpoint. `/check` answers `is_safe: false` when the content mentions
/// `rm -rf`, and true otherwise.
pub(crate) fn success(
    endpoint: Endpoint,
    fields: &Map<String, Value>,
    wall: SystemTime,
    rng: &mut fastrand::Rng,
) -> Value {
    match endpoint {
        Endpoint::RegisterAgentRun => json!({"trace_id": uuid_v4(rng), "timestamp": iso8601(wall)}),
        Endpoint::Event => json!({"event_id": uuid_v4(rng), "timestamp": unix_seconds(wall)}),
        Endpoint::Check => {
            let content = fields.get("content").and_then(Value::as_str).unwrap_or("");
            let unsafe_action = content.contains("rm -rf");
            let reasoning = if unsafe_action {
                "The action runs a destructive shell command (rm -rf); blocked."
            } else {
                "No unsafe action detected (the mock server flags only 'rm -rf')."
            };
            json!({
                "is_safe": !unsafe_action,
                "reasoning": reasoning,
                "action_check_id": uuid_v4(rng),
                "timestamp": unix_seconds(wall),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn uuid_has_v4_shape() {
        let mut rng = fastrand::Rng::with_seed(1);
        let id = uuid_v4(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, uuid_v4(&mut rng));
    }

    #[test]
    fn iso8601_formats_known_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_704_067_200_123);
        assert_eq!(iso8601(t), "2024-01-01T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(iso8601(t), "2000-02-29T01:01:01.000Z");
    }
}
