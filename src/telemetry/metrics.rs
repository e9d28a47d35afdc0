//! Counters of a sender: kept as atomics (read them with
//! [`TelemetrySender::backlog`](super::TelemetrySender::backlog)) and mirrored to the
//! [`metrics`](https://docs.rs/metrics) facade, so any exporter a user installs (Prometheus,
//! StatsD, ...) sees them. Without an installed recorder the facade costs a few nanoseconds.
//!
//! | name                                   | kind    | labels                |
//! |----------------------------------------|---------|-----------------------|
//! | `fabraix_telemetry_recorded_total`     | counter | `to` = memory / spool |
//! | `fabraix_telemetry_delivered_total`    | counter |                       |
//! | `fabraix_telemetry_failed_total`       | counter | `kind` (error kind)   |
//! | `fabraix_telemetry_dropped_total`      | counter | `reason`              |
//! | `fabraix_telemetry_refused_total`      | counter | (Block policy, full)  |
//! | `fabraix_telemetry_backlog`            | gauge   | `where` = memory / spool / in_flight |

use std::sync::atomic::{AtomicU64, Ordering};

/// Counter names, for users wiring an exporter.
pub const RECORDED: &str = "fabraix_telemetry_recorded_total";
/// Events the server acknowledged.
pub const DELIVERED: &str = "fabraix_telemetry_delivered_total";
/// Events the server refused for good (dead-lettered).
pub const FAILED: &str = "fabraix_telemetry_failed_total";
/// Events dropped by the full-spool policy.
pub const DROPPED: &str = "fabraix_telemetry_dropped_total";
/// Events handed back to the producer (Block policy, spool full).
pub const REFUSED: &str = "fabraix_telemetry_refused_total";
/// The backlog gauge.
pub const BACKLOG: &str = "fabraix_telemetry_backlog";

/// Why events were dropped, by count. Every drop is counted here; none is silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Oldest unsent records evicted by [`FullPolicy::DropOldest`](super::FullPolicy::DropOldest).
    pub oldest: u64,
    /// New events dropped because the spool was full.
    pub newest: u64,
    /// Events sampled out by [`FullPolicy::SampleByEventType`](super::FullPolicy::SampleByEventType).
    pub sampled: u64,
    /// Events that could not be written to the spool (disk error; each also logged).
    pub io_error: u64,
}

impl DropCounts {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.oldest + self.newest + self.sampled + self.io_error
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recorded: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) dropped_sampled: AtomicU64,
    pub(crate) dropped_io: AtomicU64,
}

impl Counters {
    pub(crate) fn recorded(&self, to_spool: bool) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(RECORDED, "to" => if to_spool { "spool" } else { "memory" }).increment(1);
    }

    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DELIVERED).increment(1);
    }

    pub(crate) fn failed(&self, kind: &'static str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FAILED, "kind" => kind).increment(1);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REFUSED).increment(1);
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        let c = match reason {
            "oldest" => &self.dropped_oldest,
            "sampled" => &self.dropped_sampled,
            "io_error" => &self.dropped_io,
            _ => &self.dropped_newest,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DROPPED, "reason" => reason).increment(1);
    }

    pub(crate) fn drops(&self) -> DropCounts {
        DropCounts {
            oldest: self.dropped_oldest.load(Ordering::Relaxed),
            newest: self.dropped_newest.load(Ordering::Relaxed),
            sampled: self.dropped_sampled.load(Ordering::Relaxed),
            io_error: self.dropped_io.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn gauges(memory: u64, spool: u64, in_flight: u64) {
        metrics::gauge!(BACKLOG, "where" => "memory").set(memory as f64);
        metrics::gauge!(BACKLOG, "where" => "spool").set(spool as f64);
        metrics::gauge!(BACKLOG, "where" => "in_flight").set(in_flight as f64);
    }
}
