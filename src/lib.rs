//! # fabraix-scheduler
//!
//! Sends requests to rate-limited APIs — first the [Fabraix API](https://docs.fabraix.com) — as
//! fast as every quota window allows and never faster.
//!
//! - A [`Quota`] is several [`Limit`]s that hold at once (Development: 60/minute and 1,000/hour).
//!   The [`Ledger`] plans every call ahead so that no window of any limit ever holds more than its
//!   count — the strictest reading of a quota, accepted by fixed-window, sliding-log and
//!   token-bucket servers alike.
//! - The [`Scheduler`] keeps a queue per key with priority lanes (an agent's `/check` overtakes
//!   queued telemetry), honors 429s (`retry_after` in the body, `Retry-After` in the header) by
//!   pausing the whole key, retries transient failures with full-jitter backoff under a budget,
//!   fails fast on 401, and gives every job exactly one outcome.
//! - Time is injected ([`Clock`]): an hour of quota runs in milliseconds on tokio's paused clock.
//! - The [`ApiKey`] is a secret: only its fingerprint appears in Debug output, logs and errors, and
//!   it is never sent over plain http to a non-loopback host or to another origin.
//!
//! ## Quick start
//!
//! ```no_run
//! use fabraix_scheduler::{ApiKey, Clock, Event, EventType, FabraixClient, KeyConfig, Quota, TokioClock};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::from_env()?; // FABRAIX_API_KEY, or a .env file
//! let config = KeyConfig::new("default", key, "https://api.fabraix.com/v1", Quota::development())?;
//! let client = FabraixClient::new(config).await?;
//! let at = TokioClock::new().wall_now(); // any SystemTime
//! let event = Event::new(EventType::User, "trace-id", &"hello", &serde_json::json!({"type": "string"}), at)?;
//! let ack = client.event(&event).await?; // waits for its slot; never gets the key refused
//! println!("stored {}", ack.event_id);
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod api_error;
mod api_key;
mod clock;
mod endpoint;
mod fabraix;
mod job;
mod job_error;
mod key_id;
mod ledger;
#[cfg(feature = "mock")]
pub mod mock;
mod quota;
mod response;
mod retry;
mod scheduler;
pub mod telemetry;
mod transport;

pub use api_error::ApiError;
pub use api_key::{ApiKey, ApiKeyError, API_KEY_ENV};
pub use clock::{Clock, Instant, Sleep, TokioClock};
pub use endpoint::{Endpoint, EndpointError, FABRAIX_BASE_URL};
pub use fabraix::{
    ActionCheck, AgentRun, CheckVerdict, ClientError, Event, EventAck, EventType, FabraixClient,
    RegisterAgentRun,
};
pub use job::{Job, Priority};
pub use job_error::{JobError, Outcome, SubmitError};
pub use key_id::KeyId;
pub use ledger::{
    Forecast, Ledger, LedgerConfig, LedgerStore, MemoryLedgerStore, PlanCursor, StoreError,
    WindowSemantics, DEFAULT_GUARD,
};
pub use quota::{Limit, Quota, QuotaError, Tier, MAX_WINDOW, MIN_WINDOW};
pub use response::Response;
pub use retry::{
    classify_status, parse_rate_limit_headers, parse_retry_after, Class, Delivery, RetryAfter,
    RetryAfterProblem, RetryBudget, RetryPolicy, ServerWindow,
};
pub use scheduler::{
    read_call_journal, KeyConfig, KeyHandle, KeyStats, Overflow, RefusedCalls, ReturnedJob,
    Scheduler, SchedulerBuilder, ShutdownMode, ShutdownReport, Ticket,
};
pub use telemetry::{TelemetryConfig, TelemetrySender};
pub use transport::{
    HttpRequest, HttpResponse, OutgoingRequest, ReqwestTransport, Transport, TransportConfig,
    TransportError, TransportErrorKind, TransportFuture, USER_AGENT,
};
