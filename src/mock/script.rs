//! Canned responses a test queues for a path; the server answers with them before doing anything
//! else.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode};

/// One canned response. Served for any method on its path, before authentication and quota: it is
/// not counted against any key, not in the record, and gets no rate-limit headers except those
/// given here.
///
/// ```
/// use fabraix_scheduler::mock::ScriptedResponse;
/// let html = ScriptedResponse::new(502)
///     .header("content-type", "text/html")
///     .body("<html><body>Bad Gateway</body></html>");
/// let odd = ScriptedResponse::json(429, serde_json::json!({"error": {"retry_after": "abc"}}));
/// assert_eq!(odd.status, 429);
/// assert!(ScriptedResponse::drop_connection().drop_connection);
/// # let _ = html;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedResponse {
    /// The status code (100 to 999; anything else is sent as 500).
    pub status: u16,
    /// Headers, in order. Invalid names or values are skipped.
    pub headers: Vec<(String, String)>,
    /// The body, sent as is (empty: no body).
    pub body: String,
    /// Close the connection without any response instead.
    pub drop_connection: bool,
}

impl ScriptedResponse {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            drop_connection: false,
        }
    }

    /// A response with this status and a JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A connection closed without a response.
    pub fn drop_connection() -> Self {
        Self {
            drop_connection: true,
            ..Self::new(0)
        }
    }

    /// The same response with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same response with this body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = status;
        for (name, value) in &self.headers {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(n), Ok(v)) => {
                    response.headers_mut().append(n, v);
                }
                _ => tracing::warn!(header = %name, "mock: skipping an invalid scripted header"),
            }
        }
        response
    }
}

/// The path a script is filed under: the endpoint path without the `/v1` prefix, so `/event` and
/// `/v1/event` name the same queue.
pub(crate) fn script_path(path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    match path.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path,
    }
}

/// Queues of canned responses, by path.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    queues: Mutex<HashMap<String, VecDeque<ScriptedResponse>>>,
}

impl Scripts {
    pub(crate) fn push(&self, path: &str, responses: impl IntoIterator<Item = ScriptedResponse>) {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queues
            .entry(script_path(path))
            .or_default()
            .extend(responses);
    }

    /// The next canned response for a request path, if any is queued.
    pub(crate) fn next(&self, request_path: &str) -> Option<ScriptedResponse> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queues.get_mut(&script_path(request_path))?.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_v1_share_a_queue() {
        assert_eq!(script_path("/v1/event"), "/event");
        assert_eq!(script_path("event"), "/event");
        assert_eq!(script_path("/v1x"), "/v1x");
        let s = Scripts::default();
        s.push(
            "/event",
            [ScriptedResponse::new(503), ScriptedResponse::new(408)],
        );
        assert_eq!(s.next("/v1/event").unwrap().status, 503);
        assert_eq!(s.next("/v1/event").unwrap().status, 408);
        assert!(s.next("/v1/event").is_none());
    }
}
