//! The record of one [`Limit`](crate::Limit)'s recent calls, compact and conservative.

use std::collections::VecDeque;

use super::recent_calls::RecentCalls;

/// Ticks per window for a limit whose count is at most [`EXACT_MAX_COUNT`]: fine enough that the
/// rounding (at most W / 4,194,304, about 14 µs for a minute) is negligible.
const FINE_TICKS_PER_WINDOW: u64 = 1 << 22;

/// Ticks per window beyond [`EXACT_MAX_COUNT`]: each call's time is rounded *up* to a tick of
/// W / 1,024, so a large limit holds at most about 1,026 entries whatever its count. The rounding
/// makes the ledger release a slot up to W / 1,024 late (0.1 % of the window), never early.
const COARSE_TICKS_PER_WINDOW: u64 = 1 << 10;

/// Largest count recorded call by call (one entry per distinct fine tick).
pub(crate) const EXACT_MAX_COUNT: u32 = 1024;

/// Hard cap on entries of a coarse log; beyond it the two oldest entries merge (conservatively).
const COARSE_MAX_ENTRIES: usize = COARSE_TICKS_PER_WINDOW as usize + 8;

/// One tick with the number of calls recorded at it; the tick is relative to the log's base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tick: u32,
    calls: u32,
}

/// The calls of one limit (N per W) as `(tick, calls)` entries, oldest first.
///
/// A call at time `t` (nanoseconds since the ledger's origin) is recorded at the tick
/// `ceil(t / quantum)`, i.e. as if it happened a little *later*; it therefore leaves the window a
/// little later too. That keeps the invariant (never more than N calls in any window of length W)
/// while the memory stays at most `min(N, 1,026)` entries of 8 bytes.
#[derive(Clone, Debug)]
pub(crate) struct WindowLog {
    count: u32,
    window_ns: u64,
    quantum_ns: u64,
    base_tick: u64,
    entries: VecDeque<Entry>,
    max_entries: usize,
    /// Sum of `calls` over `entries`.
    total: u64,
    /// Latest recorded time (ns) of a call dropped from the log because N newer calls exist.
    /// Used, conservatively, as the N-th most recent call when refunds leave fewer than N.
    evicted_floor_ns: Option<u64>,
    /// How busy the limit was lately, after its entries have expired.
    recent: RecentCalls,
}

impl WindowLog {
    pub(crate) fn new(count: u32, window_ns: u64) -> Self {
        let ticks = if count <= EXACT_MAX_COUNT {
            FINE_TICKS_PER_WINDOW
        } else {
            COARSE_TICKS_PER_WINDOW
        };
        let quantum_ns = window_ns.div_ceil(ticks).max(1);
        let max_entries = if count <= EXACT_MAX_COUNT {
            count as usize + 1
        } else {
            COARSE_MAX_ENTRIES
        };
        Self {
            count,
            window_ns,
            quantum_ns,
            base_tick: 0,
            entries: VecDeque::new(),
            max_entries,
            total: 0,
            evicted_floor_ns: None,
            recent: RecentCalls::new(window_ns),
        }
    }

    /// Rebuilt from what a shared store keeps of it: `entries` are `(tick, calls)` relative to
    /// `base_tick`, oldest first (the Redis script keeps the same log, see `ledger.lua`).
    #[cfg(feature = "redis")]
    pub(crate) fn from_shared(
        count: u32,
        window_ns: u64,
        base_tick: u64,
        entries: &[(u32, u32)],
        evicted_floor_ns: Option<u64>,
        recent: RecentCalls,
    ) -> Self {
        let mut log = Self::new(count, window_ns);
        log.base_tick = base_tick;
        log.entries = entries
            .iter()
            .map(|&(tick, calls)| Entry { tick, calls })
            .collect();
        log.total = entries.iter().map(|&(_, calls)| u64::from(calls)).sum();
        log.evicted_floor_ns = evicted_floor_ns;
        log.recent = recent;
        log
    }

    fn time_of(&self, e: &Entry) -> u64 {
        (self.base_tick + u64::from(e.tick)).saturating_mul(self.quantum_ns)
    }

    /// The earliest time (ns) at which one more call keeps this limit, ignoring the guard.
    pub(crate) fn earliest_ns(&self) -> u64 {
        let nth_most_recent = if self.total >= u64::from(self.count) {
            self.entries.front().map(|e| self.time_of(e))
        } else {
            self.evicted_floor_ns
        };
        nth_most_recent.map_or(0, |t| t.saturating_add(self.window_ns))
    }

    /// The calls a sliding log holding these would accept at `t_ns`: N less those recorded after
    /// `t_ns − W` (later slots included), at least 0.
    pub(crate) fn remaining_at(&self, t_ns: u64) -> u64 {
        let since = t_ns.saturating_sub(self.window_ns);
        let held: u64 = self
            .entries
            .iter()
            .rev()
            .take_while(|e| self.time_of(e) > since)
            .map(|e| u64::from(e.calls))
            .sum();
        u64::from(self.count).saturating_sub(held)
    }

    /// The calls recorded in `(t_ns − W, t_ns]` (later ones not counted). Of the calls dropped
    /// because N newer ones exist, the latest is counted if it is in that window (one call: so a
    /// window that held N + 1 shows N + 1, though the log keeps N).
    pub(crate) fn held_through(&self, t_ns: u64) -> u64 {
        let since = t_ns.saturating_sub(self.window_ns);
        // (A call at `t_ns` is recorded at its tick, rounded up.)
        let through = t_ns
            .div_ceil(self.quantum_ns)
            .saturating_mul(self.quantum_ns);
        let in_window = |t: u64| t > since && t <= through;
        let kept: u64 = self
            .entries
            .iter()
            .filter(|e| in_window(self.time_of(e)))
            .map(|e| u64::from(e.calls))
            .sum();
        let dropped = self.evicted_floor_ns.is_some_and(in_window);
        kept + u64::from(dropped)
    }

    /// Records a call at `t_ns`; calls that left the window by `expiry_ns` go (the caller's now,
    /// less the guard it keeps after a window). `t_ns` must not be earlier than any call recorded
    /// before (the ledger reserves in time order).
    pub(crate) fn record(&mut self, t_ns: u64, expiry_ns: u64) {
        let tick = t_ns.div_ceil(self.quantum_ns);
        if self.entries.is_empty() {
            self.base_tick = tick;
        }
        let mut rel = tick.saturating_sub(self.base_tick);
        if rel > u64::from(u32::MAX) {
            self.rebase(tick);
            rel = tick.saturating_sub(self.base_tick);
        }
        let rel = u32::try_from(rel).unwrap_or(u32::MAX);
        match self.entries.back_mut() {
            Some(back) if back.tick >= rel && back.calls < u32::MAX => back.calls += 1,
            _ => {
                self.grow_if_full();
                self.entries.push_back(Entry {
                    tick: rel,
                    calls: 1,
                });
            }
        }
        self.total += 1;
        self.recent.add(t_ns);
        self.trim(expiry_ns);
    }

    /// Forgets one call recorded at `t_ns` (a slot that was never used). Returns whether it was
    /// found; if not (already merged or expired), nothing changes, which is the safe side.
    pub(crate) fn forget(&mut self, t_ns: u64) -> bool {
        let tick = t_ns.div_ceil(self.quantum_ns);
        self.recent.remove(t_ns);
        let Some(rel) = tick.checked_sub(self.base_tick) else {
            return false;
        };
        let Ok(rel) = u32::try_from(rel) else {
            return false;
        };
        let Some(index) = self.entries.iter().rposition(|e| e.tick == rel) else {
            return false;
        };
        self.entries[index].calls -= 1;
        if self.entries[index].calls == 0 {
            self.entries.remove(index);
        }
        self.total -= 1;
        true
    }

    fn trim(&mut self, expiry_ns: u64) {
        // Calls older than the N most recent can never decide a later slot...
        while let Some(front) = self.entries.front().copied() {
            if self.total - u64::from(front.calls) >= u64::from(self.count) {
                let t = self.time_of(&front);
                self.evicted_floor_ns = Some(self.evicted_floor_ns.map_or(t, |f| f.max(t)));
                self.total -= u64::from(front.calls);
                self.entries.pop_front();
            } else {
                break;
            }
        }
        // ...nor can calls that left the window by `expiry_ns`.
        while let Some(front) = self.entries.front().copied() {
            if self.time_of(&front).saturating_add(self.window_ns) <= expiry_ns {
                self.total -= u64::from(front.calls);
                self.entries.pop_front();
            } else {
                break;
            }
        }
        // Hard memory cap: merge the oldest entry into the next (treats its calls as later).
        while self.entries.len() > self.max_entries {
            if let Some(front) = self.entries.pop_front() {
                if let Some(next) = self.entries.front_mut() {
                    next.calls = next.calls.saturating_add(front.calls);
                }
            }
        }
    }

    /// Moves the base to the oldest entry so that `tick` fits in 32 bits. Entries only span more
    /// than 2^32 ticks if reservations ran about 1,000 windows ahead of now; then every recorded call
    /// is treated as happening at `tick` (later than it did: the safe side).
    fn rebase(&mut self, tick: u64) {
        let front_abs = self
            .entries
            .front()
            .map_or(tick, |e| self.base_tick + u64::from(e.tick));
        if tick - front_abs > u64::from(u32::MAX) {
            let calls = u32::try_from(self.total).unwrap_or(u32::MAX);
            self.entries.clear();
            self.entries.push_back(Entry { tick: 0, calls });
            self.base_tick = tick;
            return;
        }
        let shift = front_abs - self.base_tick;
        for e in &mut self.entries {
            e.tick = u32::try_from(u64::from(e.tick) - shift).unwrap_or(u32::MAX);
        }
        self.base_tick = front_abs;
    }

    fn grow_if_full(&mut self) {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            let target = (len * 2).max(4).min(self.max_entries + 1).max(len + 1);
            self.entries.reserve_exact(target - len);
        }
    }

    /// Heap bytes held by this log.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Calls in the fixed window holding `now_ns` and the one before (utilisation estimates).
    pub(crate) fn recent_calls(&self, now_ns: u64) -> u64 {
        self.recent.around(now_ns)
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_window_releases_after_w() {
        let mut log = WindowLog::new(3, 1_000);
        for t in [0, 10, 20] {
            assert!(log.earliest_ns() <= t);
            log.record(t, t);
        }
        let e = log.earliest_ns();
        assert!((1_000..1_001).contains(&e), "{e}");
    }

    #[test]
    fn forget_reopens_room() {
        let mut log = WindowLog::new(2, 1_000_000);
        log.record(0, 0);
        log.record(5, 0);
        assert!(log.earliest_ns() >= 1_000_000);
        assert!(log.forget(5));
        assert!(log.earliest_ns() < 1_000_000);
        assert!(!log.forget(5_000_000));
    }

    #[test]
    fn a_window_over_its_limit_shows_though_the_log_keeps_n() {
        let s = 1_000_000_000u64;
        let mut log = WindowLog::new(10, 10 * s);
        // One call at 0, nine from 9.0 s to 9.8 s, one at 11 s: (1 s, 11 s] holds ten.
        let mut times = vec![0];
        times.extend((0..9).map(|i| 9 * s + i * s / 10));
        times.push(11 * s);
        for &t in &times {
            log.record(t, t);
        }
        assert_eq!(log.held_through(11 * s), 10);
        // One more at 12 s, on its own tick: (2 s, 12 s] holds eleven, the log ten.
        log.record(12 * s, 12 * s);
        assert_eq!(log.entries.len(), 10);
        assert_eq!(log.held_through(12 * s), 11);
        // At 19.5 s the dropped call (9.0 s) is out of the window: 9.5 s to 9.8 s, 11 s, 12 s.
        assert_eq!(log.held_through(19_500_000_000), 6);
    }

    #[test]
    fn coarse_log_stays_small() {
        let window = 3_600_000_000_000;
        let mut log = WindowLog::new(1_000_000, window);
        let mut t = 0;
        for _ in 0..200_000 {
            log.record(t, t);
            t += 36_000_000; // 100 per second
        }
        assert!(log.entries.len() <= COARSE_MAX_ENTRIES);
        assert!(log.heap_bytes() <= (COARSE_MAX_ENTRIES + 1) * 8);
    }
}
