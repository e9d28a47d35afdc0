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
//! Against the embedded mock server (feature `mock`), so it runs anywhere; for the real API, use
//! `ApiKey::from_env()?` (`FABRAIX_API_KEY`, or a `.env` file) and
//! [`FABRAIX_BASE_URL`].
//!
//! ```
//! use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
//! use fabraix_scheduler::{ApiKey, Clock, Event, EventType, FabraixClient, KeyConfig, Quota, TokioClock};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockServer::builder().with_test_keys().start().await?;
//! let key = ApiKey::new(TEST_DEV_KEY)?;
//! let config = KeyConfig::new("default", key, &server.base_url(), Quota::development())?;
//! let client = FabraixClient::new(config).await?;
//! let at = TokioClock::new().wall_now(); // any SystemTime
//! let event = Event::new(EventType::User, "trace-id", &"hello", &serde_json::json!({"type": "string"}), at)?;
//! let ack = client.event(&event).await?; // waits for its slot; never gets the key refused
//! assert!(!ack.event_id.is_empty());
//! server.verify()?; // no window of the quota ever held more calls than its limit
//! # Ok(()) }
//! ```
//!
//! [`Instant`] is tokio's (`tokio::time::Instant`), so the paused test clock moves it.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

#[cfg(any(feature = "tower", feature = "reqwest-middleware"))]
mod adapters;
mod api_error;
mod api_key;
mod cause;
mod clock;
mod endpoint;
mod fabraix;
mod job;
mod job_error;
mod key_id;
mod key_provider;
mod ledger;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod quota;
mod response;
pub mod retry;
mod scheduler;
pub mod scheduler_metrics;
pub mod telemetry;
mod transport;

#[cfg(feature = "reqwest-middleware")]
pub use adapters::QuotaMiddleware;
#[cfg(any(feature = "tower", feature = "reqwest-middleware"))]
pub use adapters::{AdapterError, DEFAULT_MAX_BODY_BYTES};
#[cfg(feature = "tower")]
pub use adapters::{QuotaLayer, QuotaService};
pub use api_error::ApiError;
pub use api_key::{ApiKey, ApiKeyError, API_KEY_ENV};
pub use cause::Cause;
pub use clock::{Clock, Instant, Sleep, TokioClock};
pub use endpoint::{Endpoint, EndpointError, FABRAIX_BASE_URL};
pub use fabraix::{
    ActionCheck, AgentRun, CheckVerdict, ClientError, Event, EventAck, EventType, FabraixClient,
    RegisterAgentRun,
};
pub use job::{Job, Priority};
pub use job_error::{JobError, Outcome, SubmitError};
pub use key_id::KeyId;
pub use key_provider::{
    KeyCommand, KeyProvider, KeyProviderError, KeyRefresh, KeyWatch, RefreshFuture,
    DEFAULT_KEY_COMMAND_TIMEOUT, MAX_KEY_SOURCE_BYTES,
};
pub use ledger::{
    Forecast, Ledger, LedgerConfig, LedgerStore, LocalLedger, MemoryLedgerStore, PlanCursor,
    SharedBlock, StoreError, WindowSemantics, DEFAULT_GUARD,
};
#[cfg(feature = "redis")]
pub use ledger::{RedisLedgerStore, RedisStoreConfig, Unreachable};
pub use quota::{Limit, Quota, QuotaError, Tier, MAX_WINDOW, MIN_WINDOW};
pub use response::Response;
pub use retry::{Delivery, RefusalStep, RetryBudget, RetryPolicy};
pub use scheduler::{
    read_call_journal, KeyConfig, KeyHandle, KeyStats, LearnedFrom, LearnedSemantics, Overflow,
    RefusedCalls, ReturnedJob, Scheduler, SchedulerBuilder, ShutdownMode, ShutdownReport, Ticket,
};
pub use telemetry::{TelemetryConfig, TelemetrySender};
#[cfg(feature = "tower")]
pub use transport::ServiceTransport;
pub use transport::{
    HttpRequest, HttpResponse, OutgoingRequest, ReqwestTransport, Transport, TransportConfig,
    TransportError, TransportErrorKind, TransportFuture, USER_AGENT,
};

/// The README's examples, compiled (and run where they can) as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
