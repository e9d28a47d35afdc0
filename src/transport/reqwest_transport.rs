//! The default transport: reqwest with rustls.

use std::time::Duration;

use super::{
    HttpResponse, OutgoingRequest, Transport, TransportError, TransportErrorKind, TransportFuture,
};

/// Timeouts and the response size limit of the default transport. Build it from
/// [`TransportConfig::default`] and the `with_*` setters (fields may be added).
///
/// The defaults suit a batch against an API that answers small JSON quickly: a dead or
/// drip-feeding server costs an attempt at most [`request_timeout`](Self::request_timeout)
/// (30 s), one that accepts and never answers [`read_timeout`](Self::read_timeout) (15 s), one that
/// does not accept [`connect_timeout`](Self::connect_timeout) (5 s); each such failure is retried
/// under the retry policy, like any timeout.
///
/// ```
/// use fabraix_scheduler::TransportConfig;
/// use std::time::Duration;
/// let config = TransportConfig::default()
///     .request_timeout(Duration::from_secs(10))
///     .max_response_bytes(64 * 1024);
/// assert_eq!(config.connect_timeout, Duration::from_secs(5));
/// assert_eq!(config.max_response_bytes, 65_536);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Time allowed to open a connection (TCP and TLS). Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole attempt, from sending to the last byte of the response: bounds a
    /// server that drips its answer. Default 30 s.
    pub request_timeout: Duration,
    /// Longest silence allowed while waiting for the response: before its first byte (a server
    /// that accepts and never answers) and between any two reads after it. Default 15 s.
    pub read_timeout: Duration,
    /// Largest response body read, in bytes. A body announced or found to be larger fails the job
    /// with [`JobError::ResponseTooLarge`](crate::JobError::ResponseTooLarge) (not retried: the
    /// server would send it again) as soon as the limit is passed, so a call holds at most this
    /// much, and the scheduler at most this much times the calls on the wire. Default 1 MiB: the
    /// API's answers are small JSON objects (well under a kilobyte).
    pub max_response_bytes: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(15),
            max_response_bytes: 1024 * 1024,
        }
    }
}

impl TransportConfig {
    /// Sets the field `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the field `request_timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the field `read_timeout`.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the field `max_response_bytes`.
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// reqwest + rustls. Follows redirects only within the same origin (scheme, host, port), at most 5,
/// so the `x-api-key` header is never sent to another origin.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_response_bytes: u64,
}

impl ReqwestTransport {
    /// A transport with these timeouts.
    ///
    /// ```
    /// use fabraix_scheduler::{ReqwestTransport, TransportConfig};
    /// let transport = ReqwestTransport::new(TransportConfig::default()).unwrap();
    /// # let _ = transport;
    /// ```
    pub fn new(config: TransportConfig) -> Result<Self, TransportError> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > 5 || !same_origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .read_timeout(config.read_timeout)
            .redirect(policy)
            .no_proxy()
            .build()
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Other,
                    format!("cannot build the HTTP client: {e}"),
                )
                .with_source(e)
            })?;
        Ok(Self {
            client,
            max_response_bytes: config.max_response_bytes,
        })
    }
}

pub(crate) fn transport_error(e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_request() || e.is_body() || e.is_decode() {
        TransportErrorKind::Interrupted
    } else {
        TransportErrorKind::Other
    };
    // reqwest's message names the URL, never headers: the key cannot appear in it.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    TransportError::new(kind, message)
}

/// [`transport_error`], holding `e` (without its URL) as the source.
fn owned_transport_error(e: reqwest::Error) -> TransportError {
    transport_error(&e).with_source(e.without_url())
}

/// reqwest's request for `request`: built before the call's future, which must own what it uses.
fn reqwest_request(request: &OutgoingRequest<'_>) -> Result<reqwest::Request, TransportError> {
    // reqwest wants a `Url`; the scheduler's URI is absolute and already checked.
    let url = reqwest::Url::parse(&request.uri().to_string()).map_err(|e| {
        TransportError::new(
            TransportErrorKind::Other,
            format!("invalid request URL: {e}"),
        )
        .with_source(e)
    })?;
    let mut out = reqwest::Request::new(request.method().clone(), url);
    *out.headers_mut() = request.headers();
    *out.body_mut() = Some(reqwest::Body::from(request.body().clone()));
    Ok(out)
}

/// The body of `response`, read chunk by chunk and refused as soon as it passes `limit` bytes (or
/// announces more): memory held is bounded by the limit, whatever the server sends.
async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<bytes::Bytes, TransportError> {
    let status = response.status().as_u16();
    let too_large = |what: String| {
        TransportError::new(
            TransportErrorKind::ResponseTooLarge,
            format!("HTTP {status} response body {what} (TransportConfig::max_response_bytes)"),
        )
    };
    if let Some(announced) = response.content_length().filter(|&n| n > limit) {
        return Err(too_large(format!(
            "of {announced} bytes announced, over the limit of {limit} bytes"
        )));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(owned_transport_error)? {
        let len = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
        if len > limit {
            return Err(too_large(format!("passed the limit of {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl Transport for ReqwestTransport {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let client = self.client.clone();
        let limit = self.max_response_bytes;
        let request = reqwest_request(&request);
        Box::pin(async move {
            let request = request?;
            let response = client
                .execute(request)
                .await
                .map_err(owned_transport_error)?;
            if response.status().is_redirection()
                && response.headers().contains_key(http::header::LOCATION)
            {
                // The policy stopped: the redirect leads to another origin (or past 5 hops).
                return Err(TransportError::new(
                    TransportErrorKind::CrossOriginRedirect,
                    format!(
                        "HTTP {} redirect not followed (another origin, or more than 5 hops)",
                        response.status().as_u16()
                    ),
                ));
            }
            let status = response.status();
            let version = response.version();
            let headers = response.headers().clone();
            let body = read_body(response, limit).await?;
            let mut out = HttpResponse::new(body);
            *out.status_mut() = status;
            *out.version_mut() = version;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a loopback listener received: the request head, lower-cased, and the body.
    async fn serve_once(listener: tokio::net::TcpListener) -> (String, Vec<u8>) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the request head ended");
            received.extend_from_slice(&buf[..n]);
            if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(received[..head_end].to_vec())
            .unwrap()
            .to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while received.len() < head_end + length {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the body ended");
            received.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nx-reply: yes\r\n\r\nok")
            .await
            .unwrap();
        (head, received[head_end..].to_vec())
    }

    #[tokio::test]
    async fn sends_the_method_path_key_user_agent_job_headers_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: http::Uri = format!("http://{}/v1/event", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let server = tokio::spawn(serve_once(listener));
        let key = crate::ApiKey::new("secret-value").unwrap().header_value();
        let mut own = http::HeaderMap::new();
        own.insert("x-trace", http::HeaderValue::from_static("t1"));
        let body = bytes::Bytes::from_static(b"{\"n\":1}");
        let transport = ReqwestTransport::new(TransportConfig::default()).unwrap();
        let request = OutgoingRequest::new(&http::Method::POST, &uri, &key, Some(&own), &body);
        let response = transport.send(request).await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-reply"], "yes");
        assert_eq!(response.body().as_ref(), b"ok");
        let (head, sent_body) = server.await.unwrap();
        assert!(head.starts_with("post /v1/event http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nx-api-key: secret-value\r\n"), "{head}");
        let agent = format!("\r\nuser-agent: {}\r\n", crate::USER_AGENT);
        assert!(head.contains(&agent), "{head}");
        assert!(head.contains("\r\nx-trace: t1\r\n"), "{head}");
        assert_eq!(sent_body, b"{\"n\":1}");
    }
}
