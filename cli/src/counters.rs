//! What a run has done so far, shared by its reader, its result writer and its progress display.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one run. Lines are input lines that hold a job (blank lines are not counted).
#[derive(Debug, Default)]
pub struct RunCounters {
    /// Lines read from the input.
    pub read: AtomicU64,
    /// Lines skipped because their id was already in the output (`--resume`).
    pub skipped: AtomicU64,
    /// Jobs handed to the scheduler.
    pub submitted: AtomicU64,
    /// Results written: successes.
    pub succeeded: AtomicU64,
    /// Results written: failures (bad input lines included).
    pub failed: AtomicU64,
    /// Jobs not sent because the run was stopped (not written; `--resume` sends them).
    pub unsent: AtomicU64,
    /// Lines not sent because an earlier line has their id (not written).
    pub duplicate_ids: AtomicU64,
    /// The most lines read but not yet finished (written, skipped or unsent) at any time.
    pub max_read_ahead: AtomicU64,
    failed_by_kind: Mutex<BTreeMap<String, u64>>,
}

impl RunCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one failed result of `kind`.
    pub fn fail(&self, kind: &str) {
        Self::bump(&self.failed);
        let mut map = self
            .failed_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(kind.to_string()).or_default() += 1;
    }

    /// Failures by kind so far.
    pub fn failed_by_kind(&self) -> BTreeMap<String, u64> {
        self.failed_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Lines finished: results written, skipped, left unsent by a stop, or repeating an id.
    pub fn finished(&self) -> u64 {
        Self::get(&self.succeeded)
            + Self::get(&self.failed)
            + Self::get(&self.skipped)
            + Self::get(&self.unsent)
            + Self::get(&self.duplicate_ids)
    }

    /// Notes that one more line was read, and the read-ahead it makes.
    pub fn line_read(&self) {
        let read = self.read.fetch_add(1, Ordering::Relaxed) + 1;
        let ahead = read.saturating_sub(self.finished());
        self.max_read_ahead.fetch_max(ahead, Ordering::Relaxed);
    }
}
