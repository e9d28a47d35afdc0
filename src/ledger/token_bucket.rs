//! One limit read as a token bucket (GCRA): rate N / W, burst N — for servers known to count that
//! way. Not the default: a token bucket admits up to 2N − 1 calls in one sliding window, which a
//! sliding-log server refuses.

use super::recent_calls::RecentCalls;

/// GCRA state of one limit (virtual scheduling): the theoretical arrival time of the next call.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    count: u32,
    window_ns: u64,
    /// T = W / N, rounded up (ns).
    interval_ns: u64,
    /// How far ahead of the theoretical arrival time a call may go: (N − 1) × T less the guard,
    /// so that a call arriving up to one guard early is still within the server's burst.
    tolerance_ns: u64,
    /// Theoretical arrival time of the next call (ns since the ledger's origin).
    tat_ns: u64,
    last_ns: Option<u64>,
    recent: RecentCalls,
}

impl TokenBucket {
    pub(crate) fn new(count: u32, window_ns: u64, guard_ns: u64) -> Self {
        let interval_ns = window_ns.div_ceil(u64::from(count.max(1)));
        let tolerance_ns = (interval_ns.saturating_mul(u64::from(count.saturating_sub(1))))
            .saturating_sub(guard_ns);
        Self {
            count,
            window_ns,
            interval_ns,
            tolerance_ns,
            tat_ns: 0,
            last_ns: None,
            recent: RecentCalls::new(window_ns),
        }
    }

    /// Makes the guard `guard_ns` (see [`new`](Self::new)).
    pub(crate) fn set_guard(&mut self, guard_ns: u64) {
        self.tolerance_ns = Self::new(self.count, self.window_ns, guard_ns).tolerance_ns;
    }

    /// Rebuilt from what a shared store keeps of it.
    #[cfg(feature = "redis")]
    pub(crate) fn from_shared(
        count: u32,
        window_ns: u64,
        guard_ns: u64,
        tat_ns: u64,
        last_ns: Option<u64>,
        recent: RecentCalls,
    ) -> Self {
        let mut bucket = Self::new(count, window_ns, guard_ns);
        bucket.tat_ns = tat_ns;
        bucket.last_ns = last_ns;
        bucket.recent = recent;
        bucket
    }

    /// The earliest time (ns) at which one more call conforms.
    pub(crate) fn earliest_ns(&self) -> u64 {
        self.tat_ns.saturating_sub(self.tolerance_ns)
    }

    pub(crate) fn record(&mut self, t_ns: u64) {
        self.tat_ns = self.tat_ns.max(t_ns).saturating_add(self.interval_ns);
        self.last_ns = Some(t_ns);
        self.recent.add(t_ns);
    }

    /// After calls replayed from an earlier run (only the recent ones: the bucket's state also
    /// depends on older calls, and the replay can read it fuller than the server does): takes the
    /// bucket as empty just after the newest of them, at `newest_ns`. A server's bucket holds its
    /// theoretical arrival time at most N × T past a call it accepted, so this is never less
    /// cautious than the server.
    pub(crate) fn drained_after(&mut self, newest_ns: u64) {
        let full = self.interval_ns.saturating_mul(u64::from(self.count));
        self.tat_ns = self.tat_ns.max(newest_ns.saturating_add(full));
    }

    /// Takes back the latest call; an older one is left counted (the safe side: removing it
    /// exactly would need the whole history).
    pub(crate) fn forget(&mut self, t_ns: u64) -> bool {
        self.recent.remove(t_ns);
        if self.last_ns == Some(t_ns) {
            self.tat_ns = self.tat_ns.saturating_sub(self.interval_ns).max(t_ns);
            self.last_ns = None;
            true
        } else {
            false
        }
    }

    pub(crate) fn recent_calls(&self, now_ns: u64) -> u64 {
        self.recent.around(now_ns)
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}
