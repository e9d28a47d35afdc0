//! Why a job failed, and why a submission was not taken.

use crate::api_error::ApiError;
use crate::job::Job;
use crate::key_id::KeyId;
use crate::ledger::StoreError;
use crate::transport::TransportError;

/// A job's failure outcome. Carries the server's type, code and message where there was one;
/// never the API key (only its `fingerprint`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// 400, 404, 422 or another 4xx: the request is wrong and retrying cannot help.
    #[error("rejected by the server: {api}")]
    Rejected {
        /// The server's error.
        api: ApiError,
        /// Times the call was sent, this one included (more than 1 after transient failures
        /// or 429s).
        attempts: u32,
    },
    /// 401: the key is invalid or revoked.
    #[error("key {fingerprint} is invalid or revoked: {api}")]
    Unauthorized {
        /// The API key's [fingerprint](crate::ApiKey::fingerprint) (never the key).
        fingerprint: String,
        /// The server's error.
        api: ApiError,
        /// Times the call was sent, this one included.
        attempts: u32,
    },
    /// 403: the key may not make this call.
    #[error("key {fingerprint} may not make this call: {api}")]
    Forbidden {
        /// The API key's [fingerprint](crate::ApiKey::fingerprint) (never the key).
        fingerprint: String,
        /// The server's error.
        api: ApiError,
        /// Times the call was sent, this one included.
        attempts: u32,
    },
    /// Not sent (again): another call of the same key was answered 401, so the key is treated
    /// as revoked until it is rotated.
    #[error("not sent: key {fingerprint} was refused with 401 (rotate the key to resume)")]
    KeyRevoked {
        /// The API key's [fingerprint](crate::ApiKey::fingerprint) (never the key).
        fingerprint: String,
        /// Times the call had been sent before (after transient failures or 429s; usually 0).
        attempts: u32,
    },
    /// The key was answered 429 more times in a row than the retry policy allows
    /// ([`RetryPolicy::max_rate_limited`](crate::RetryPolicy::max_rate_limited)): this job and
    /// every job queued for the key failed together.
    #[error("gave up after {attempts} attempts, {rate_limited} of them answered 429, in a storm of 429s on the key: {last}")]
    RateLimited {
        /// Times the call was sent.
        attempts: u32,
        /// Of those, answered 429.
        rate_limited: u32,
        /// The last 429's error.
        last: ApiError,
    },
    /// A transient failure (5xx, 408, timeout, connection error) that was not retried further:
    /// retries exhausted, the retry budget spent, or at-most-once delivery.
    #[error("failed after {attempts} attempts ({why}): {message}")]
    Transient {
        /// Times the call was sent.
        attempts: u32,
        /// The HTTP status, if there was a response.
        status: Option<u16>,
        /// The server's error code, if any.
        code: Option<String>,
        /// What happened last.
        message: String,
        /// Why it was not retried again.
        why: &'static str,
        /// The transport's error, if the last attempt had no response (its
        /// [`source`](std::error::Error::source) is the HTTP client's error, where there is one).
        source: Option<TransportError>,
    },
    /// The job cannot be sent as given: its path would leave the key's origin, say, or the
    /// server redirected it to another origin (which is refused: the key would go with it).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
        /// Times the call was sent: 0 for a path refused before sending; with a transport
        /// failure that no retry can help (a redirect to another origin), the sends so far.
        attempts: u32,
        /// The transport's error, for a failure on the way (none for a path refused before
        /// sending).
        source: Option<TransportError>,
    },
    /// The response's body was larger than the transport allows
    /// ([`TransportConfig::max_response_bytes`](crate::TransportConfig::max_response_bytes)); it
    /// was not read further, and the call is not retried.
    #[error("response too large: {reason}")]
    ResponseTooLarge {
        /// What was received, and the limit.
        reason: String,
        /// Times the call was sent, this one included.
        attempts: u32,
        /// The transport's error that refused the body.
        source: TransportError,
    },
    /// Cancelled through its ticket before it was sent.
    #[error("cancelled before it was sent")]
    Cancelled,
    /// The scheduler shut down before the job was sent; the job was handed back in the
    /// shutdown report.
    #[error("not sent: the scheduler shut down and handed the job back")]
    ShutDown,
    /// The quota store failed.
    #[error("quota store: {0}")]
    Store(#[source] StoreError),
    /// A bug ended the job: the task carrying it ended without an outcome, or a panic (in the
    /// transport, the store, the clock or the scheduler) was caught; the message names it.
    /// Reported, never silent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl JobError {
    /// A short stable name for the kind of failure (for output files and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Rejected { .. } => "rejected",
            JobError::Unauthorized { .. } => "unauthorized",
            JobError::Forbidden { .. } => "forbidden",
            JobError::KeyRevoked { .. } => "key_revoked",
            JobError::RateLimited { .. } => "rate_limited",
            JobError::Transient { .. } => "transient",
            JobError::InvalidRequest { .. } => "invalid_request",
            JobError::ResponseTooLarge { .. } => "response_too_large",
            JobError::Cancelled => "cancelled",
            JobError::ShutDown => "shut_down",
            JobError::Store(_) => "store",
            JobError::Internal(_) => "internal",
        }
    }

    /// The HTTP status of the last response, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            JobError::Rejected { api, .. }
            | JobError::Unauthorized { api, .. }
            | JobError::Forbidden { api, .. } => Some(api.status),
            JobError::RateLimited { last, .. } => Some(last.status),
            JobError::Transient { status, .. } => *status,
            _ => None,
        }
    }

    /// Times the job's call was sent before this outcome (each attempt once), where the error
    /// records it: `None` for [`Cancelled`](Self::Cancelled), [`ShutDown`](Self::ShutDown),
    /// [`Store`](Self::Store) and [`Internal`](Self::Internal), which do not.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiError, JobError};
    /// let e = JobError::Rejected { api: ApiError::from_body(422, b""), attempts: 3 };
    /// assert_eq!(e.attempts(), Some(3));
    /// assert_eq!(JobError::Cancelled.attempts(), None);
    /// ```
    pub fn attempts(&self) -> Option<u32> {
        match self {
            JobError::Rejected { attempts, .. }
            | JobError::Unauthorized { attempts, .. }
            | JobError::Forbidden { attempts, .. }
            | JobError::KeyRevoked { attempts, .. }
            | JobError::RateLimited { attempts, .. }
            | JobError::Transient { attempts, .. }
            | JobError::InvalidRequest { attempts, .. }
            | JobError::ResponseTooLarge { attempts, .. } => Some(*attempts),
            JobError::Cancelled
            | JobError::ShutDown
            | JobError::Store(_)
            | JobError::Internal(_) => None,
        }
    }

    /// The server's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            JobError::Rejected { api, .. }
            | JobError::Unauthorized { api, .. }
            | JobError::Forbidden { api, .. } => api.code.as_deref(),
            JobError::RateLimited { last, .. } => last.code.as_deref(),
            JobError::Transient { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Why [`Scheduler::submit`](crate::Scheduler::submit) did not take a job. The job is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The key's queue is full and its overflow policy is to reject.
    #[error("the queue of key {key} is full ({capacity} jobs)")]
    QueueFull {
        /// The key.
        key: KeyId,
        /// The queue's capacity.
        capacity: usize,
        /// The job, handed back.
        job: Job,
    },
    /// The scheduler is shutting down and takes no new jobs.
    #[error("the scheduler is shutting down")]
    ShuttingDown {
        /// The job, handed back.
        job: Job,
    },
    /// No key with this id was added.
    #[error("no key {key} was added to the scheduler")]
    UnknownKey {
        /// The key id.
        key: KeyId,
        /// The job, handed back.
        job: Job,
    },
    /// The job's path cannot be sent to the key's origin.
    #[error("invalid job: {reason}")]
    InvalidJob {
        /// What is wrong.
        reason: String,
        /// The job, handed back.
        job: Job,
    },
}

impl SubmitError {
    /// The job that was not taken.
    pub fn into_job(self) -> Job {
        match self {
            SubmitError::QueueFull { job, .. }
            | SubmitError::ShuttingDown { job }
            | SubmitError::UnknownKey { job, .. }
            | SubmitError::InvalidJob { job, .. } => job,
        }
    }
}

/// The outcome of every job: exactly one per submitted job.
pub type Outcome = Result<crate::response::Response, JobError>;
