//! A Fabraix-compatible mock server that enforces quotas, for tests, the demo and local testing
//! (feature `mock`).
//!
//! It serves `POST /v1/register-agent-run`, `/v1/event` and `/v1/check` on loopback with the
//! documented bodies and errors, counts every call of every key against the key's quota under a
//! chosen [`ServerModel`], answers 429 with `retry_after` like the real API, can inject faults
//! ([`Faults`]) and canned responses ([`ScriptedResponse`]), and records every accepted call so a
//! test can check ([`verify_quota`], [`MockServer::verify`]) that a client never exceeded a limit
//! in any sliding window. All time goes through the injected [`Clock`](crate::Clock), so it runs
//! on tokio's paused clock.
//!
//! ```
//! use fabraix_scheduler::mock::{MockServer, ServerModel, TEST_DEV_KEY};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockServer::builder()
//!     .with_test_keys()
//!     .model(ServerModel::SlidingLog)
//!     .start()
//!     .await?;
//! let http = reqwest::Client::builder().no_proxy().build()?;
//! let response = http
//!     .post(format!("{}/check", server.base_url()))
//!     .header("x-api-key", TEST_DEV_KEY)
//!     .body(r#"{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"ls","schema":"{}"}"#)
//!     .send()
//!     .await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(server.record().len(), 1);
//! server.verify()?;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod bodies;
mod faults;
mod headers;
mod keys;
mod model;
mod record;
mod script;
mod server;
mod validate;

pub use faults::Faults;
pub use headers::RetryAfterHeader;
pub use keys::{
    key_fingerprint, KeyAccess, KeyProfile, TEST_DEV_KEY, TEST_PROD_KEY, TEST_RESTRICTED_KEY,
    TEST_REVOKED_KEY,
};
pub use model::{ParseServerModelError, ServerModel};
pub use record::{
    max_in_any_window, verify_arrivals, verify_quota, AcceptedCall, MockKeyStats, WindowViolation,
};
pub use script::ScriptedResponse;
pub use server::{MockServer, MockServerBuilder};
