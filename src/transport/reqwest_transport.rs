//! The default transport: reqwest with rustls.

use std::time::Duration;

use super::{
    HttpRequest, HttpResponse, Transport, TransportError, TransportErrorKind, TransportFuture,
};

/// Timeouts of the default transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Time allowed to open a connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, from sending to the last byte of the response.
    /// Default 60 s.
    pub request_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// reqwest + rustls. Follows redirects only within the same origin (scheme, host, port), at most 5,
/// so the `x-api-key` header is never sent to another origin.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
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
            .redirect(policy)
            .no_proxy()
            .build()
            .map_err(|e| TransportError {
                kind: TransportErrorKind::Other,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self { client })
    }
}

fn transport_error(e: &reqwest::Error) -> TransportError {
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
    TransportError { kind, message }
}

impl Transport for ReqwestTransport {
    fn send(&self, request: HttpRequest) -> TransportFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(|e| TransportError {
                kind: TransportErrorKind::Other,
                message: format!("invalid request: {e}"),
            })?;
            let response = client
                .execute(request)
                .await
                .map_err(|e| transport_error(&e))?;
            if response.status().is_redirection()
                && response.headers().contains_key(http::header::LOCATION)
            {
                // The policy stopped: the redirect leads to another origin (or past 5 hops).
                return Err(TransportError {
                    kind: TransportErrorKind::CrossOriginRedirect,
                    message: format!(
                        "HTTP {} redirect not followed (another origin, or more than 5 hops)",
                        response.status().as_u16()
                    ),
                });
            }
            let status = response.status();
            let version = response.version();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| transport_error(&e))?;
            let mut out = HttpResponse::new(body);
            *out.status_mut() = status;
            *out.version_mut() = version;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}
