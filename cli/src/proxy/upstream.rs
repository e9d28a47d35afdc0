//! The proxy's transport to the API: reqwest (rustls), no redirects followed (a redirect goes back
//! to the client as the API sent it), responses read up to a size limit, and the API's own answer
//! kept for each call whose job fails, so that the client gets it as it was (the scheduler's
//! outcome of a failed job carries the parsed error, not the response).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fabraix_scheduler::{
    HttpResponse, OutgoingRequest, Transport, TransportError, TransportErrorKind, TransportFuture,
};
use http::{HeaderName, HeaderValue, StatusCode};

/// The header that ties a call to its request's capture slot (set by the proxy, removed here;
/// a client's `x-fabraix-*` headers never get this far).
pub const CALL_HEADER: HeaderName = HeaderName::from_static("x-fabraix-proxy-call");

/// The last non-2xx answer of each call still waited for, by call id.
#[derive(Debug, Default)]
pub struct Captures {
    slots: Mutex<HashMap<u64, Option<HttpResponse>>>,
    next: AtomicU64,
}

/// A request's capture slot; freed when dropped (a vanished client leaves nothing behind).
#[derive(Debug)]
pub struct Capture {
    captures: Arc<Captures>,
    id: u64,
}

impl Capture {
    /// A new slot in `captures`.
    pub fn new(captures: &Arc<Captures>) -> Self {
        let id = captures.next.fetch_add(1, Ordering::Relaxed);
        captures.lock().insert(id, None);
        Self {
            captures: Arc::clone(captures),
            id,
        }
    }

    /// The slot's id.
    #[cfg(test)]
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The header value naming this slot.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from(self.id)
    }

    /// The last non-2xx answer the API gave this call, if any.
    pub fn take(&self) -> Option<HttpResponse> {
        self.captures
            .lock()
            .get_mut(&self.id)
            .and_then(Option::take)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.captures.lock().remove(&self.id);
    }
}

impl Captures {
    /// Whether no slot is held.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<HttpResponse>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `response` for call `id` if its slot is still held.
    pub(super) fn keep(&self, id: u64, response: &HttpResponse) {
        if let Some(slot) = self.lock().get_mut(&id) {
            let mut copy = HttpResponse::new(response.body().clone());
            *copy.status_mut() = response.status();
            *copy.headers_mut() = response.headers().clone();
            *slot = Some(copy);
        }
    }
}

/// reqwest without redirects, with a response size limit, keeping failed calls' answers.
#[derive(Debug)]
pub struct UpstreamTransport {
    client: reqwest::Client,
    captures: Arc<Captures>,
    max_response_bytes: usize,
}

impl UpstreamTransport {
    /// A transport whose calls time out after `timeout` and whose answers over
    /// `max_response_bytes` end their job (the client gets 502).
    pub fn new(
        timeout: Duration,
        max_response_bytes: usize,
        captures: Arc<Captures>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            captures,
            max_response_bytes,
        })
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
    TransportError::new(kind, message)
}

/// An answer over the size limit: kept as the proxy's 502 for the client, and given to the
/// scheduler as a 400 (not retried: the same call would bring the same answer).
fn too_large(limit: usize) -> (HttpResponse, HttpResponse) {
    let body = super::envelope::body(
        &format!("the API's response is larger than the proxy's limit of {limit} bytes"),
        "proxy_error",
        "upstream_response_too_large",
    );
    let mut client = HttpResponse::new(Bytes::from(body.clone()));
    *client.status_mut() = StatusCode::BAD_GATEWAY;
    client.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut scheduler = HttpResponse::new(Bytes::from(body));
    *scheduler.status_mut() = StatusCode::BAD_REQUEST;
    (client, scheduler)
}

impl Transport for UpstreamTransport {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let mut headers = request.headers();
        let call = headers
            .remove(CALL_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let built = reqwest::Url::parse(&request.uri().to_string()).map(|url| {
            let mut out = reqwest::Request::new(request.method().clone(), url);
            *out.headers_mut() = headers;
            *out.body_mut() = Some(reqwest::Body::from(request.body().clone()));
            out
        });
        let client = self.client.clone();
        let captures = Arc::clone(&self.captures);
        let limit = self.max_response_bytes;
        Box::pin(async move {
            let request = built.map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Other,
                    format!("invalid request URL: {e}"),
                )
            })?;
            let mut response = client
                .execute(request)
                .await
                .map_err(|e| transport_error(&e))?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
                if body.len() + chunk.len() > limit {
                    let (client_answer, scheduler_answer) = too_large(limit);
                    if let Some(id) = call {
                        captures.keep(id, &client_answer);
                    }
                    return Ok(scheduler_answer);
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = HttpResponse::new(body.freeze());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            if let (Some(id), false) = (call, status.is_success()) {
                captures.keep(id, &out);
            }
            Ok(out)
        })
    }
}
