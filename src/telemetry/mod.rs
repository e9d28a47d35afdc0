//! Agent telemetry without blocking the agent: [`TelemetrySender`].
//!
//! An agent emits `/event` records far faster than a Development key carries them (60/minute and
//! 1,000/hour: 0.28/s in the long run), while its blocking `/check` calls must still be answered
//! at once. The sender:
//!
//! - takes events with [`record`](TelemetrySender::record), which returns at once (never waits
//!   for the network, the quota or the disk, never panics; about 2 µs at p99 with a million
//!   events waiting: `cargo bench --bench telemetry_record`, BENCHMARKS.md);
//! - keeps up to `memory_capacity` events in memory and the rest in a crash-safe spool on disk
//!   (framed, checksummed segment files; a torn tail is detected, reported and cut off; replayed
//!   in order on the next start; removed once acknowledged). Spooling is a group commit: `record`
//!   appends to a write buffer and a writer task writes it, one `write` per batch, at least every
//!   [`commit_records`](TelemetryConfig::commit_records) events (default 256) or
//!   [`commit_delay`](TelemetryConfig::commit_delay) (default 5 ms). [`Recorded::Spooled`]`(seq)`
//!   is durable (survives the process being killed) once
//!   [`durable_through`](TelemetrySender::durable_through) `>= seq`;
//!   [`wait_durable`](TelemetrySender::wait_durable), `flush` and `shutdown` make it so at once;
//! - applies an explicit [`FullPolicy`] when the spool is full, counting every drop;
//! - hands the scheduler only a small window of events at a time, in the bulk lane, so a
//!   [`check`](TelemetrySender::check) goes out at the key's next free slot, ahead of the backlog;
//! - shows its [`Backlog`] with a drain ETA from the ledger's plan and a [`RateWarning`] when
//!   events arrive faster than the key can ever carry;
//! - [`flush`](TelemetrySender::flush)es or [`shut`](TelemetrySender::shutdown)s down by a deadline:
//!   sends what the quota allows, persists the rest, reports the counts;
//! - emits tracing events for each send and state change, and counters through the `metrics`
//!   facade (names in [`metrics`]).
//!
//! Delivery is at-least-once: an event counts as delivered when its call succeeded; after a
//! crash, events acknowledged since the spool's ack cursor was last written are sent again.

mod backlog;
mod config;
mod frame;
mod item;
pub mod metrics;
mod policy;
mod sender;
mod spool;
#[cfg(test)]
mod spool_proptest;

pub use backlog::{Backlog, RateWarning};
pub use config::TelemetryConfig;
pub use frame::FrameError;
pub use item::{DropReason, Recorded, Telemetry};
pub use metrics::DropCounts;
pub use policy::{FullPolicy, Sampling};
pub use sender::{TelemetryReport, TelemetrySender};
pub use spool::{Damage, RecoveryReport, DEFAULT_SEGMENT_BYTES};
