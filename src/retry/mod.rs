//! Retries and the server's rate-limit signals. The policy ([`RetryPolicy`], [`RetryBudget`],
//! [`Delivery`]) is also at the crate's root; the parsers of `Retry-After`, `retry_after` and
//! `RateLimit-*` and the classification of statuses are here for transports and tests of your own.

pub(crate) mod answer;
mod budget;
mod classify;
pub(crate) mod decision;
pub(crate) mod network_time;
mod policy;
mod rate_limit_headers;
mod retry_after;

pub use budget::RetryBudget;
pub use classify::{classify_status, Class};
pub use network_time::{seconds_to_duration, MAX_SECONDS as MAX_NETWORK_SECONDS};
pub use policy::{Delivery, RefusalStep, RetryPolicy};
pub use rate_limit_headers::{parse_rate_limit_headers, ServerWindow, MAX_POLICY_WINDOW};
pub use retry_after::{parse_retry_after, RetryAfter, RetryAfterProblem};
