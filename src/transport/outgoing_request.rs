//! One attempt as the scheduler hands it to a transport: the job's parts and the key's, borrowed.
//!
//! Nothing is built per call on the scheduler's side: the transport assembles what it sends
//! (reqwest builds its own request anyway), and a transport that needs an `http::Request` asks
//! for one with [`OutgoingRequest::to_http`].

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::HttpRequest;

/// The user agent sent unless the job sets its own: `fabraix-scheduler/<version>`.
pub const USER_AGENT: &str = concat!("fabraix-scheduler/", env!("CARGO_PKG_VERSION"));

/// The key's header, checked once at compile time rather than on every call.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// One attempt of a job, borrowed from the scheduler for the duration of [`Transport::send`]
/// (which must copy what its future needs). The headers to send are the job's own, then
/// `x-api-key` (always the key's, whatever the job set), then `user-agent` ([`USER_AGENT`]) if
/// the job set none: see [`headers`](Self::headers).
///
/// Its `Debug` output never shows the key.
///
/// [`Transport::send`]: super::Transport::send
#[derive(Clone, Copy)]
pub struct OutgoingRequest<'a> {
    method: &'a Method,
    uri: &'a Uri,
    api_key: &'a HeaderValue,
    job_headers: Option<&'a HeaderMap>,
    body: &'a Bytes,
}

impl<'a> OutgoingRequest<'a> {
    /// An attempt of `method` to the absolute `uri` with `body`, carrying `api_key` (mark it
    /// sensitive: [`HeaderValue::set_sensitive`]) and the job's own headers, if any. The
    /// scheduler makes these; a transport's own tests may too.
    ///
    /// ```
    /// use fabraix_scheduler::OutgoingRequest;
    /// use http::{HeaderValue, Method, Uri};
    /// let (method, uri, body) = (Method::GET, Uri::from_static("http://127.0.0.1:9/v1/status"), bytes::Bytes::new());
    /// let mut key = HeaderValue::from_static("secret");
    /// key.set_sensitive(true);
    /// let request = OutgoingRequest::new(&method, &uri, &key, None, &body);
    /// assert_eq!(request.headers()["x-api-key"], "secret");
    /// assert!(!format!("{request:?}").contains("secret"));
    /// ```
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        api_key: &'a HeaderValue,
        job_headers: Option<&'a HeaderMap>,
        body: &'a Bytes,
    ) -> Self {
        Self {
            method,
            uri,
            api_key,
            job_headers,
            body,
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The absolute URI (the key's base URL joined with the job's path).
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The value of the `x-api-key` header, marked sensitive. A secret: never log it.
    pub fn api_key(&self) -> &'a HeaderValue {
        self.api_key
    }

    /// The job's own headers, if it has any (without `x-api-key`, which a job cannot set).
    pub fn job_headers(&self) -> Option<&'a HeaderMap> {
        self.job_headers
    }

    /// The body.
    pub fn body(&self) -> &'a Bytes {
        self.body
    }

    /// Every header to send, in a new map: the job's own, `x-api-key`, and `user-agent` unless
    /// the job set one.
    pub fn headers(&self) -> HeaderMap {
        let own = self.job_headers.map_or(0, HeaderMap::len);
        let mut headers = HeaderMap::with_capacity(own + 2);
        for (name, value) in self.job_headers.into_iter().flatten() {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(X_API_KEY, self.api_key.clone());
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
        }
        headers
    }

    /// The attempt as an owned `http::Request` (headers as [`headers`](Self::headers)).
    pub fn to_http(&self) -> HttpRequest {
        let mut request = http::Request::new(self.body.clone());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers();
        request
    }
}

impl fmt::Debug for OutgoingRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key's value is sensitive, which `HeaderValue`'s Debug honours; said outright here
        // so that no change of the header's flag can print it.
        f.debug_struct("OutgoingRequest")
            .field("method", self.method)
            .field("uri", self.uri)
            .field("api_key", &"<redacted>")
            .field("job_headers", &self.job_headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::ApiKey;

    fn parts() -> (Method, Uri, HeaderValue, Bytes) {
        let key = ApiKey::new("secret-value").unwrap();
        (
            Method::POST,
            Uri::from_static("http://127.0.0.1:9/v1/event"),
            key.header_value(),
            Bytes::from_static(b"{}"),
        )
    }

    #[test]
    fn a_plain_job_carries_the_key_and_the_user_agent() {
        let (method, uri, key, body) = parts();
        let request = OutgoingRequest::new(&method, &uri, &key, None, &body).to_http();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:9/v1/event");
        assert_eq!(request.body().as_ref(), b"{}");
        assert_eq!(request.headers()["x-api-key"], "secret-value");
        assert!(request.headers()["x-api-key"].is_sensitive());
        assert_eq!(request.headers()[http::header::USER_AGENT], USER_AGENT);
        assert_eq!(request.headers().len(), 2);
    }

    #[test]
    fn the_key_header_wins_and_a_job_user_agent_stays() {
        let (method, uri, key, body) = parts();
        let mut own = HeaderMap::new();
        own.insert("x-api-key", HeaderValue::from_static("forged"));
        own.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("agent/1"),
        );
        own.append("x-trace", HeaderValue::from_static("t1"));
        own.append("x-trace", HeaderValue::from_static("t2"));
        let headers = OutgoingRequest::new(&method, &uri, &key, Some(&own), &body).headers();
        let keys: Vec<_> = headers.get_all("x-api-key").iter().collect();
        assert_eq!(keys, ["secret-value"]);
        assert_eq!(headers[http::header::USER_AGENT], "agent/1");
        let traces: Vec<_> = headers.get_all("x-trace").iter().collect();
        assert_eq!(traces, ["t1", "t2"]);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (method, uri, key, body) = parts();
        let request = OutgoingRequest::new(&method, &uri, &key, None, &body);
        let printed = format!("{request:?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("/v1/event"), "{printed}");
    }
}
