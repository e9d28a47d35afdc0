//! The scheduler under an HTTP stack a user has already: a tower layer ([`QuotaLayer`], feature
//! `tower`) and a reqwest middleware ([`QuotaMiddleware`], feature `reqwest-middleware`).
//!
//! Both turn each request into a [`Job`] of its key and await the job's outcome, so the request is
//! sent when the key's quota allows, and 429s and transient failures are retried as the scheduler
//! retries any job. Each attempt is sent by the caller's own stack (the inner service, the rest of
//! the middleware chain): the job's transport relays the attempt back to the waiting request
//! ([`relay`]). The answer is the server's last response, whatever its status (a 404 stays a 404);
//! an error only when there was none ([`AdapterError`]).

mod job_of_request;
mod relay;
#[cfg(feature = "reqwest-middleware")]
mod reqwest_middleware;
#[cfg(feature = "tower")]
mod tower_layer;

#[cfg(feature = "reqwest-middleware")]
pub use reqwest_middleware::QuotaMiddleware;
#[cfg(feature = "tower")]
pub use tower_layer::{QuotaLayer, QuotaService};

use crate::cause::Cause;
use crate::job_error::{JobError, SubmitError};
use crate::key_id::KeyId;

/// Request bodies longer than this are refused, by default: 16 MiB (a body is kept whole, to be
/// sent again by a retry).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// Why a request through [`QuotaLayer`] or [`QuotaMiddleware`] has no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// `call` without a ready `poll_ready` before it (a caller breaking tower's contract).
    #[error("the service was called before poll_ready was ready")]
    NotReady,
    /// The key chosen for the request was never added to the scheduler (or was removed).
    #[error("no key {0} was added to the scheduler")]
    UnknownKey(KeyId),
    /// The request's body could not be read, or is longer than the limit.
    #[error("request body: {message}")]
    Body {
        /// What is wrong with it.
        message: String,
        /// The body's error, if reading it failed.
        source: Option<Cause>,
    },
    /// The request goes elsewhere than under its key's base URL: it is not sent (the key would go
    /// with it).
    #[error("the request to {uri} is not under its key's base URL {base}; not sent")]
    OtherOrigin {
        /// The request's URI, without its query.
        uri: String,
        /// The key's base URL.
        base: String,
    },
    /// The scheduler did not take the job (the key's queue is full with [`Overflow::Reject`](crate::Overflow::Reject), it is shutting down, ...).
    #[error(transparent)]
    Submit(Box<SubmitError>),
    /// The job failed without a response to show: not sent (cancelled, shut down, a revoked key),
    /// or its last attempt failed on the way.
    #[error(transparent)]
    Job(JobError),
}
