//! How requests reach the server: a [`Transport`] over the `http` crate's types. The default is
//! [`ReqwestTransport`] (rustls, no OpenSSL); tests and benchmarks plug in their own.

mod outgoing_request;
mod reqwest_transport;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use outgoing_request::{OutgoingRequest, USER_AGENT};
pub use reqwest_transport::{ReqwestTransport, TransportConfig};

/// An attempt as an owned `http::Request` ([`OutgoingRequest::to_http`]): absolute URI, headers
/// (with the sensitive `x-api-key`), body.
pub type HttpRequest = http::Request<Bytes>;

/// A complete response.
pub type HttpResponse = http::Response<Bytes>;

/// The future a transport returns.
pub type TransportFuture =
    Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send>>;

/// Sends one request and returns the whole response.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request`, which is borrowed for this call only: the future must own what it
    /// needs (clone the parts, or build the request here, as [`ReqwestTransport`] does). Must not
    /// follow redirects to another origin (the key would leak).
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture;
}

/// Why no response arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// A description (never containing the key).
    pub message: String,
}

/// The kinds of transport failure, by what they imply for a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The connection could not be made: the request certainly did not reach the server.
    Connect,
    /// No response in time: the server may have processed the request.
    Timeout,
    /// The connection failed after the request may have been sent.
    Interrupted,
    /// A redirect to another origin was refused (the key is never sent elsewhere).
    CrossOriginRedirect,
    /// The response body passed [`TransportConfig::max_response_bytes`]: not retried (the
    /// server would send it again); the job fails with
    /// [`JobError::ResponseTooLarge`](crate::JobError::ResponseTooLarge).
    ResponseTooLarge,
    /// Anything else (a malformed response, say).
    Other,
    /// The transport's future panicked (a bug in it). The scheduler catches the panic: the job
    /// fails with [`JobError::Internal`](crate::JobError::Internal) naming it, is not retried,
    /// and the key goes on with its other jobs.
    Panicked,
}

impl TransportErrorKind {
    /// Whether the server may have received and processed the request.
    pub fn may_have_reached_server(self) -> bool {
        !matches!(self, TransportErrorKind::Connect)
    }

    /// Whether a retry may help.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            TransportErrorKind::CrossOriginRedirect
                | TransportErrorKind::Panicked
                | TransportErrorKind::ResponseTooLarge
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TransportErrorKind::Connect => "connection failed",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Interrupted => "connection interrupted",
            TransportErrorKind::CrossOriginRedirect => "redirect to another origin refused",
            TransportErrorKind::ResponseTooLarge => "response too large",
            TransportErrorKind::Other => "transport error",
            TransportErrorKind::Panicked => "the transport panicked",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for TransportError {}
