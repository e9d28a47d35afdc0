//! How a [`TelemetrySender`](super::TelemetrySender) is set up: bounds, spool, policy, window.

use std::path::PathBuf;
use std::time::Duration;

use super::policy::FullPolicy;
use super::spool::DEFAULT_SEGMENT_BYTES;
use crate::job::Priority;

/// A sender's configuration. Every bound is explicit; see each setter for its default. Built by
/// [`new`](Self::new) and chained setters, each taking and returning the configuration.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub(crate) spool_dir: PathBuf,
    pub(crate) memory_capacity: usize,
    pub(crate) spool_capacity: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) policy: FullPolicy,
    pub(crate) window: usize,
    pub(crate) priority: Priority,
    pub(crate) rate_window: Duration,
    pub(crate) commit_records: u64,
    pub(crate) commit_delay: Duration,
}

impl TelemetryConfig {
    /// A configuration spooling to `spool_dir` (created if missing; one sender per directory).
    ///
    /// ```
    /// use fabraix_scheduler::telemetry::{FullPolicy, TelemetryConfig};
    /// let config = TelemetryConfig::new("/var/spool/agent")
    ///     .memory_capacity(5_000)
    ///     .spool_capacity(2_000_000)
    ///     .policy(FullPolicy::DropOldest);
    /// assert_eq!(config.get_memory_capacity(), 5_000);
    /// ```
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            memory_capacity: 10_000,
            spool_capacity: 1_000_000,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            policy: FullPolicy::default(),
            window: 4,
            priority: Priority::Bulk,
            rate_window: Duration::from_secs(60),
            commit_records: 256,
            commit_delay: Duration::from_millis(5),
        }
    }

    /// Events held in memory before they overflow to the disk spool (0 ..; 0 spools every event,
    /// so each is crash-safe once the durable watermark passes it: within
    /// [`commit_delay`](Self::commit_delay)). Default 10,000.
    pub fn memory_capacity(mut self, n: usize) -> Self {
        self.memory_capacity = n;
        self
    }

    /// The memory capacity ([`memory_capacity`](Self::memory_capacity)).
    pub fn get_memory_capacity(&self) -> usize {
        self.memory_capacity
    }

    /// Records the disk spool holds at most (1 ..) before the [`FullPolicy`] applies. About
    /// 300 bytes each for a typical event. Default 1,000,000.
    pub fn spool_capacity(mut self, n: u64) -> Self {
        self.spool_capacity = n.max(1);
        self
    }

    /// Bytes after which a new segment file starts (at least 4 KiB). Default 4 MiB.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n.max(4096);
        self
    }

    /// The full-spool policy. Default [`FullPolicy::DropNewest`].
    pub fn policy(mut self, policy: FullPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Telemetry jobs submitted to the scheduler at once (1 ..). The rest wait in the sender, so
    /// the scheduler's queue stays short and a `/check` only ever waits for the key's next free
    /// slot. Default 4.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// The scheduler lane telemetry goes in. Default [`Priority::Bulk`].
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The period the arrival rate is measured over (at least 1 s). Default 60 s.
    pub fn rate_window(mut self, window: Duration) -> Self {
        self.rate_window = window.max(Duration::from_secs(1));
        self
    }

    /// Group commit, by count: the spool's background writer writes its buffer (one `write` call)
    /// as soon as this many records (1 ..) wait in it. Default 256 (about 80 KiB of typical
    /// events).
    pub fn commit_records(mut self, n: u64) -> Self {
        self.commit_records = n.max(1);
        self
    }

    /// Group commit, by age: a spooled record is written at most this long after `record`
    /// returned it (0 ..; 0 writes each batch as soon as the writer task runs). This bounds what
    /// a killed process loses: the records spooled in the last `commit_delay`, plus a batch being
    /// written (a producer faster than the disk makes batches larger, never waits). Measured on
    /// the scheduler's clock. Default 5 ms.
    pub fn commit_delay(mut self, delay: Duration) -> Self {
        self.commit_delay = delay;
        self
    }
}
