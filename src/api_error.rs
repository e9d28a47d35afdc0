//! What a server says when it refuses: the Fabraix envelope `{"error":{"message","type","code"}}`,
//! a FastAPI-style `{"detail": ...}`, or anything else (HTML, empty) kept as a short excerpt.

use std::fmt;

use serde_json::Value;

/// The longest excerpt of a non-JSON body kept in an error, in characters.
const EXCERPT_CHARS: usize = 200;

/// A server's error, parsed from its body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The envelope's `type` (`rate_limit_error`, `authentication_error`, ...), if any.
    pub kind: Option<String>,
    /// The envelope's `code` (`invalid_api_key`, ...), if any.
    pub code: Option<String>,
    /// A human-readable message: the server's, or a description of the body it sent.
    pub message: String,
}

impl ApiError {
    /// Parses an error body. Never fails: an HTML, empty or malformed body becomes a message that
    /// says so.
    ///
    /// ```
    /// use fabraix_scheduler::ApiError;
    /// let e = ApiError::from_body(401, br#"{"error":{"message":"Invalid API key provided","type":"authentication_error","code":"invalid_api_key"}}"#);
    /// assert_eq!(e.code.as_deref(), Some("invalid_api_key"));
    /// let e = ApiError::from_body(404, br#"{"detail":"Not Found"}"#);
    /// assert_eq!(e.message, "Not Found");
    /// let e = ApiError::from_body(502, b"<html>Bad gateway</html>");
    /// assert!(e.message.contains("non-JSON"));
    /// ```
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match parsed {
            Some(Value::Object(map)) => {
                if let Some(Value::Object(err)) = map.get("error") {
                    return Self {
                        status,
                        kind: err.get("type").and_then(Value::as_str).map(str::to_string),
                        code: err.get("code").and_then(value_as_code),
                        message: err
                            .get("message")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("HTTP {status}"), str::to_string),
                    };
                }
                if let Some(Value::String(message)) = map.get("error") {
                    return Self::plain(status, message.clone());
                }
                if let Some(detail) = map.get("detail") {
                    return Self {
                        status,
                        kind: None,
                        code: None,
                        message: describe_detail(detail),
                    };
                }
                Self::plain(
                    status,
                    format!(
                        "HTTP {status} with an unrecognised JSON body: {}",
                        excerpt(body)
                    ),
                )
            }
            Some(other) => Self::plain(
                status,
                format!(
                    "HTTP {status} with an unrecognised JSON body: {}",
                    excerpt(other.to_string().as_bytes())
                ),
            ),
            None if body.iter().all(u8::is_ascii_whitespace) => {
                Self::plain(status, format!("HTTP {status} with an empty body"))
            }
            None => Self::plain(
                status,
                format!("HTTP {status} with a non-JSON body: {}", excerpt(body)),
            ),
        }
    }

    fn plain(status: u16, message: String) -> Self {
        Self {
            status,
            kind: None,
            code: None,
            message,
        }
    }
}

fn value_as_code(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// FastAPI's `detail` is a string or a list of `{"loc": [...], "msg": "...", "type": "..."}`.
fn describe_detail(detail: &Value) -> String {
    match detail {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                match item.get("loc").and_then(Value::as_array) {
                    Some(loc) => {
                        let path: Vec<String> = loc
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                            .collect();
                        format!("{}: {msg}", path.join("."))
                    }
                    None => msg.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(EXCERPT_CHARS).collect();
    if one_line.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    format!("{out:?}")
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_shape_is_a_clear_error() {
        let e = ApiError::from_body(403, br#"{"error":{"message":"API key does not have permission for this operation","type":"authorization_error","code":"insufficient_permissions"}}"#);
        assert_eq!(e.kind.as_deref(), Some("authorization_error"));
        assert_eq!(e.code.as_deref(), Some("insufficient_permissions"));
        let e = ApiError::from_body(422, br#"{"detail":[{"loc":["body","trace_id"],"msg":"field required","type":"value_error.missing"}]}"#);
        assert_eq!(e.message, "body.trace_id: field required");
        assert!(ApiError::from_body(503, b"").message.contains("empty body"));
        assert!(ApiError::from_body(500, b"[1,2]")
            .message
            .contains("unrecognised JSON"));
        assert!(ApiError::from_body(500, br#"{"error":"boom"}"#).message == "boom");
        let long = vec![b'x'; 5000];
        assert!(ApiError::from_body(502, &long).message.len() < 300);
        assert!(
            ApiError::from_body(429, br#"{"error":{"type":"rate_limit_error"}}"#)
                .to_string()
                .contains("HTTP 429 rate_limit_error")
        );
    }
}
