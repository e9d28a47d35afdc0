//! What a server says when it refuses: the Fabraix envelope `{"error":{"message","type","code"}}`,
//! a FastAPI-style `{"detail": ...}`, or anything else (HTML, empty) kept as a short excerpt.

use std::fmt;

use serde_json::Value;

use crate::api_key::ApiKey;

/// The longest excerpt of a non-JSON body kept in an error, in characters.
const EXCERPT_CHARS: usize = 200;

/// The longest message kept from a server's error, in characters (longer ones end with `…`).
const MESSAGE_CHARS: usize = 1000;

/// The longest `type` or `code` kept, in characters.
const NAME_CHARS: usize = 100;

/// Cuts `text` to `max` characters, marking the cut with `…`.
fn bound(text: &mut String, max: usize) {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
        text.push('…');
    }
}

/// A server's error, parsed from its body. Every text in it is bounded (a message to
/// 1,000 characters, a type or code to 100), whatever the server sent.
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
        let mut e = Self::parse(status, body);
        bound(&mut e.message, MESSAGE_CHARS);
        if let Some(kind) = e.kind.as_mut() {
            bound(kind, NAME_CHARS);
        }
        if let Some(code) = e.code.as_mut() {
            bound(code, NAME_CHARS);
        }
        e
    }

    fn parse(status: u16, body: &[u8]) -> Self {
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

    /// As [`from_body`](Self::from_body), with every occurrence of `key` in the body and in what
    /// is parsed from it replaced by the key's fingerprint: a server that echoes the key in its
    /// error never gets it shown, logged or written.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiError, ApiKey};
    /// let key = ApiKey::new("fbx_live_0123456789abcdef").unwrap();
    /// let body = br#"{"error":{"message":"Invalid API key fbx_live_0123456789abcdef"}}"#;
    /// let e = ApiError::from_body_redacted(401, body, &key);
    /// assert!(!e.to_string().contains("0123456789abcdef"));
    /// assert!(e.message.contains(key.fingerprint()));
    /// ```
    pub fn from_body_redacted(status: u16, body: &[u8], key: &ApiKey) -> Self {
        let mut e = Self::from_body(status, &key.redact_bytes(body));
        // A JSON escape (`\/`, `\u0073`) hides the key from the byte search, not from the parse.
        let redact = |s: &mut String| {
            if let std::borrow::Cow::Owned(clean) = key.redact(s) {
                *s = clean;
            }
        };
        redact(&mut e.message);
        e.kind.as_mut().map(redact);
        e.code.as_mut().map(redact);
        e
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
        let huge = format!(
            r#"{{"error":{{"message":"{}","code":"{}"}}}}"#,
            "m".repeat(100_000),
            "c".repeat(5000)
        );
        let e = ApiError::from_body(400, huge.as_bytes());
        assert!(e.message.chars().count() <= 1001 && e.code.unwrap().chars().count() <= 101);
        let long = vec![b'x'; 5000];
        assert!(ApiError::from_body(502, &long).message.len() < 300);
        assert!(
            ApiError::from_body(429, br#"{"error":{"type":"rate_limit_error"}}"#)
                .to_string()
                .contains("HTTP 429 rate_limit_error")
        );
    }
}
