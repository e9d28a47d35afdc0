//! How requests reach the server: a [`Transport`] over the `http` crate's types. The default is
//! [`ReqwestTransport`] (rustls, no OpenSSL); tests and benchmarks plug in their own.

mod outgoing_request;
mod reqwest_transport;
#[cfg(feature = "tower")]
mod tower_transport;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::cause::Cause;

pub use outgoing_request::{OutgoingRequest, USER_AGENT};
#[cfg(feature = "reqwest-middleware")]
pub(crate) use reqwest_transport::transport_error;
pub use reqwest_transport::{ReqwestTransport, TransportConfig};
#[cfg(feature = "tower")]
pub(crate) use tower_transport::{call_service, BoxError};

/// Response bodies longer than this are refused by the adapters' transports, by default: 1 MiB
/// (as [`TransportConfig::max_response_bytes`]).
#[cfg(any(feature = "tower", feature = "reqwest-middleware"))]
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
#[cfg(feature = "tower")]
pub use tower_transport::ServiceTransport;

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
///
/// Built with [`new`](Self::new), and [`with_source`](Self::with_source) when an underlying error
/// exists (an HTTP client's, an I/O error): [`source`](std::error::Error::source) returns it.
///
/// ```
/// use std::error::Error;
/// use fabraix_scheduler::{TransportError, TransportErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = TransportError::new(TransportErrorKind::Connect, "connection refused").with_source(io);
/// assert_eq!(e.to_string(), "connection failed: connection refused");
/// assert_eq!(e.source().unwrap().to_string(), "refused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// A description (never containing the key). It may already quote the underlying error's
    /// text, which [`source`](std::error::Error::source) returns as an error.
    pub message: String,
    /// The underlying error, if any.
    source: Option<Cause>,
}

impl TransportError {
    /// A failure of `kind`, described by `message` (which must not contain the key), with no
    /// underlying error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same failure, with `source` as its underlying error (its text must not contain the
    /// key either).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Cause::new(source));
        self
    }

    /// The underlying error, if any (as [`source`](std::error::Error::source), but as a
    /// [`Cause`]).
    pub fn cause(&self) -> Option<&Cause> {
        self.source.as_ref()
    }

    /// [`with_source`](Self::with_source) for a boxed error (which is not itself an `Error`).
    #[cfg(feature = "tower")]
    pub(crate) fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        self.source = Some(Cause::from_boxed(source));
        self
    }

    /// The same failure with the key's every occurrence in `message` replaced by its
    /// fingerprint, and without its underlying error if any text of that error's chain holds the
    /// key (a transport's message may quote a URL the server chose, a redirect's).
    pub(crate) fn redacted(mut self, key: &crate::ApiKey) -> Self {
        if let std::borrow::Cow::Owned(clean) = key.redact(&self.message) {
            self.message = clean;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_ref().map(|c| c as _);
        while let Some(e) = next {
            if matches!(key.redact(&e.to_string()), std::borrow::Cow::Owned(_)) {
                self.source = None;
                break;
            }
            next = e.source();
        }
        self
    }
}

/// The kinds of transport failure, by what they imply for a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The caller that waited for this call gave it up (its future was dropped) before it was
    /// answered: nobody waits for a retry, so none is made.
    Abandoned,
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
                | TransportErrorKind::Abandoned
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
            TransportErrorKind::Abandoned => "given up by its caller",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|c| c as _)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::ApiKey;

    #[test]
    fn redaction_drops_a_source_whose_text_holds_the_key() {
        let key = ApiKey::new("s3cr3t-key").unwrap();
        let quoting = std::io::Error::other("redirected to https://x/?k=s3cr3t-key");
        let e = TransportError::new(TransportErrorKind::Other, "to https://x/?k=s3cr3t-key")
            .with_source(quoting)
            .redacted(&key);
        assert!(!e.message.contains("s3cr3t-key"), "{e}");
        assert!(e.message.contains(key.fingerprint()), "{e}");
        assert!(e.source().is_none());

        let clean = std::io::Error::other("connection reset");
        let e = TransportError::new(TransportErrorKind::Interrupted, "reset")
            .with_source(clean)
            .redacted(&key);
        assert_eq!(e.source().unwrap().to_string(), "connection reset");
    }
}
