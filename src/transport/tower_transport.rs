//! Any tower [`Service`] over `http` types as the scheduler's transport: a user's own client, a
//! client with their own layers, or a test double (feature `tower`).

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower::Service;

use super::DEFAULT_MAX_RESPONSE_BYTES;
use super::{
    HttpResponse, OutgoingRequest, Transport, TransportError, TransportErrorKind, TransportFuture,
};

/// A boxed error, as tower services return them.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// A tower [`Service`] taking `http::Request<RB>` as a [`Transport`]: each attempt is sent on a
/// clone of the service (after `poll_ready`), and its response body is read whole, up to
/// [`max_response_bytes`](Self::max_response_bytes). `RB` is the service's request body, built
/// from the attempt's bytes (`Full<Bytes>`, the default, suits hyper's client).
///
/// Errors are sorted for the retry rules by what they hold: tower's `Elapsed` (from
/// `tower::timeout`) or an I/O time-out is [`TransportErrorKind::Timeout`], a refused or failed
/// connection [`TransportErrorKind::Connect`], anything else [`TransportErrorKind::Interrupted`]
/// (the server may have seen the call). The service must not follow redirects to another origin:
/// the request carries the key.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use fabraix_scheduler::{Scheduler, ServiceTransport};
/// use http_body_util::Full;
/// // A test double: every call answered 200 with `{}`.
/// let double = tower::service_fn(|_request: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
/// });
/// let scheduler = Scheduler::builder().transport(Arc::new(ServiceTransport::new(double))).build().unwrap();
/// # let _ = scheduler;
/// ```
pub struct ServiceTransport<S, RB = Full<Bytes>> {
    /// Cloned for each attempt (behind a lock, so that the service need not be `Sync`).
    service: Mutex<S>,
    max_response_bytes: usize,
    body: PhantomData<fn() -> RB>,
}

impl<S, RB> ServiceTransport<S, RB> {
    /// `service` as a transport, reading response bodies up to 1 MiB.
    pub fn new(service: S) -> Self {
        Self {
            service: Mutex::new(service),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            body: PhantomData,
        }
    }

    /// Response bodies longer than `bytes` fail the job, not retried
    /// ([`TransportErrorKind::ResponseTooLarge`]).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

impl<S, RB> fmt::Debug for ServiceTransport<S, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTransport")
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl<S, RB, ResBody> Transport for ServiceTransport<S, RB>
where
    S: Service<http::Request<RB>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: From<Bytes> + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let service = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let request = request.to_http().map(RB::from);
        Box::pin(call_service(service, request, self.max_response_bytes))
    }
}

/// Sends `request` on `service` once it is ready and reads the response body whole (at most
/// `max_response_bytes`).
pub(crate) async fn call_service<S, RB, ResBody>(
    mut service: S,
    request: http::Request<RB>,
    max_response_bytes: usize,
) -> Result<HttpResponse, TransportError>
where
    S: Service<http::Request<RB>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| error_from_boxed(e.into()))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| error_from_boxed(e.into()))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_response_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                TransportError::new(
                    TransportErrorKind::ResponseTooLarge,
                    format!("response body longer than {max_response_bytes} bytes"),
                )
            } else {
                error_from_boxed(e)
            }
        })?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

/// A service's error, sorted by what it holds (its whole chain of sources is searched).
pub(crate) fn error_from_boxed(error: BoxError) -> TransportError {
    let mut kind = TransportErrorKind::Interrupted;
    let mut message = error.to_string();
    let mut current: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(e) = current {
        if e.is::<tower::timeout::error::Elapsed>() {
            kind = TransportErrorKind::Timeout;
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kind = match io.kind() {
                std::io::ErrorKind::TimedOut => TransportErrorKind::Timeout,
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound => TransportErrorKind::Connect,
                _ => kind,
            };
        }
        current = e.source();
        if let Some(next) = current {
            message.push_str(": ");
            message.push_str(&next.to_string());
        }
    }
    TransportError::new(kind, message).with_boxed_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_their_sources() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            error_from_boxed(Box::new(refused)).kind,
            TransportErrorKind::Connect
        );
        let elapsed = tower::timeout::error::Elapsed::new();
        assert_eq!(
            error_from_boxed(Box::new(elapsed)).kind,
            TransportErrorKind::Timeout
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = error_from_boxed(Box::new(reset));
        assert_eq!(e.kind, TransportErrorKind::Interrupted);
    }

    #[test]
    fn the_service_error_is_the_source() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let e = error_from_boxed(Box::new(refused));
        let source = StdError::source(&e).expect("the service's error is kept");
        assert_eq!(source.to_string(), "refused here");
        let held = e.cause().unwrap().get_ref();
        let io = held.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
