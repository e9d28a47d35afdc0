//! One limit read as a sliding-window counter (two fixed windows weighted by elapsed time, as
//! HAProxy's stick tables, Cloudflare and many Redis recipes count): for servers known to count
//! that way.
//!
//! At `t`, `elapsed` into window k, such a server estimates `prev × (W − elapsed)/W + curr`
//! (`prev`, `curr`: calls counted in windows k − 1 and k) and accepts a call iff the estimate plus
//! the call is at most N. The windows are laid from the first call the server counts, and laid
//! again from a call that comes two windows or more after the current one began (HAProxy's
//! `update_freq_ctr_period`); this account lays them from its own first call the same way.
//!
//! What the server sees differs from the slots by the calls' latency: a call sent just before a
//! boundary may be counted just after it, and the first call's latency shifts the server's
//! windows against these. So no slot is planned within one guard of a boundary (on either side),
//! and a slot's elapsed time is read one guard early (when the previous window weighs more).
//! With a guard of 100 ms on a one-minute window that costs 0.33 % of the window.

use super::recent_calls::RecentCalls;

/// The state of one limit (N per W): 112 bytes, whatever N, nothing on the heap.
#[derive(Clone, Debug)]
pub(crate) struct WindowCounter {
    count: u32,
    window_ns: u64,
    guard_ns: u64,
    /// Where the windows start (ns since the ledger's origin): the first call, or the first after
    /// a gap of two windows; `None` before any call.
    anchor_ns: Option<u64>,
    /// The window, counted from the anchor, of the latest call recorded.
    index: u64,
    /// Calls recorded in window `index − 1`.
    prev: u64,
    /// Calls recorded in window `index`.
    curr: u64,
    /// With no anchor: the earliest time (ns) a call is sure to lay the server's windows again
    /// (refunds emptied the windows held, but the server's last call may lie two windows back).
    fresh_from_ns: u64,
    recent: RecentCalls,
}

/// The counts a call in some window would be read against.
#[derive(Clone, Copy, Debug)]
struct Counts {
    prev: u64,
    curr: u64,
}

impl WindowCounter {
    pub(crate) fn new(count: u32, window_ns: u64, guard_ns: u64) -> Self {
        Self {
            count,
            window_ns: window_ns.max(1),
            guard_ns,
            anchor_ns: None,
            index: 0,
            prev: 0,
            curr: 0,
            fresh_from_ns: 0,
            recent: RecentCalls::new(window_ns),
        }
    }

    /// Makes the guard `guard_ns` (see the module notes).
    pub(crate) fn set_guard(&mut self, guard_ns: u64) {
        self.guard_ns = guard_ns;
    }

    /// The guard as used: at most a quarter of the window, so that every window keeps room.
    fn guard(&self) -> u64 {
        self.guard_ns.min(self.window_ns / 4)
    }

    /// The counts a call in window `k` (from the anchor) is read against, or `None` if a call in
    /// it would lay the windows again (two windows or more after the latest call's).
    fn counts_in(&self, k: u64) -> Option<Counts> {
        let latest = self.latest();
        match k.checked_sub(latest) {
            Some(0) => Some(Counts {
                prev: self.prev,
                curr: self.curr,
            }),
            // The window after the latest call's: that window weighs in.
            Some(1) if latest == self.index => Some(Counts {
                prev: self.curr,
                curr: 0,
            }),
            Some(1) => Some(Counts {
                prev: self.prev,
                curr: 0,
            }),
            _ => None,
        }
    }

    /// The window of the latest call that went: `index`, or the one before if refunds emptied
    /// `index` (the server never saw a call there, so it lays the windows again two windows on
    /// from the one before).
    fn latest(&self) -> u64 {
        if self.curr == 0 {
            self.index.saturating_sub(1)
        } else {
            self.index
        }
    }

    /// The earliest elapsed time (ns, `>= from`) into window `k` with `counts` at which one more
    /// call is accepted and clear of the boundaries' guards (the first window has no boundary
    /// before it); `None` if none is.
    fn earliest_elapsed(&self, k: u64, counts: Counts, from: u64) -> Option<u64> {
        let (n, w, g) = (
            u128::from(self.count),
            u128::from(self.window_ns),
            self.guard(),
        );
        let room = n.checked_sub(u128::from(counts.curr) + 1)?;
        let from = if k == 0 { from } else { from.max(g) };
        // prev × (W − (e − g)) <= room × W, i.e. e >= W + g − room × W / prev.
        let needed = if counts.prev == 0 {
            0
        } else {
            let allowed = room * w / u128::from(counts.prev);
            u64::try_from((w + u128::from(g)).saturating_sub(allowed)).unwrap_or(u64::MAX)
        };
        let e = from.max(needed);
        (e < self.window_ns.saturating_sub(g)).then_some(e)
    }

    /// The earliest time (ns) not before `t_ns` at which one more call is accepted.
    pub(crate) fn earliest_from(&self, t_ns: u64) -> u64 {
        let Some(anchor) = self.anchor_ns else {
            return t_ns.max(self.fresh_from_ns);
        };
        let w = self.window_ns;
        let mut k = t_ns.saturating_sub(anchor) / w;
        let mut from = t_ns.saturating_sub(anchor) % w;
        if t_ns < anchor || k < self.index {
            // Slots are planned in time order: none before the latest call's window.
            (k, from) = (self.index, 0);
        }
        // At most two windows to look through: the third from the latest call lays them again.
        while let Some(counts) = self.counts_in(k) {
            if let Some(e) = self.earliest_elapsed(k, counts, from) {
                return anchor.saturating_add(k.saturating_mul(w)).saturating_add(e);
            }
            k += 1;
            from = 0;
        }
        // A call here lays the windows again; one guard into the window, so that the server,
        // whose windows start up to a guard later, lays them again too.
        let lead = if k == self.latest() + 2 {
            self.guard()
        } else {
            0
        };
        t_ns.max(
            anchor
                .saturating_add(k.saturating_mul(w))
                .saturating_add(lead),
        )
    }

    /// Records a call at `t_ns` (not earlier than any recorded before).
    pub(crate) fn record(&mut self, t_ns: u64) {
        self.recent.add(t_ns);
        let Some(anchor) = self.anchor_ns else {
            self.anchor_ns = Some(t_ns);
            self.curr = 1;
            return;
        };
        let k = t_ns.saturating_sub(anchor) / self.window_ns;
        match self.counts_in(k) {
            Some(counts) => {
                if k != self.index {
                    self.index = k;
                    self.prev = counts.prev;
                }
                self.curr = counts.curr + 1;
            }
            None => {
                self.anchor_ns = Some(t_ns);
                self.index = 0;
                self.prev = 0;
                self.curr = 1;
            }
        }
    }

    /// Takes back a call recorded at `t_ns`, if it is still in one of the two windows held. The
    /// windows stay where they were laid unless neither holds a call any more (a first call
    /// given back while later ones went leaves them laid from it: up to that gap early).
    pub(crate) fn forget(&mut self, t_ns: u64) -> bool {
        self.recent.remove(t_ns);
        let Some(anchor) = self.anchor_ns.filter(|&a| a <= t_ns) else {
            return false;
        };
        let k = (t_ns - anchor) / self.window_ns;
        let count = if k == self.index {
            &mut self.curr
        } else if k + 1 == self.index {
            &mut self.prev
        } else {
            return false;
        };
        if *count == 0 {
            return false;
        }
        *count -= 1;
        if self.prev == 0 && self.curr == 0 {
            // Neither window held has a call that went: the server's latest lies two windows
            // back or more (or there is none), so it lays the windows from the next call — once
            // that call is clear of the window it would otherwise fall in.
            self.fresh_from_ns = if self.index >= 2 {
                anchor
                    .saturating_add(self.index.saturating_mul(self.window_ns))
                    .saturating_add(self.guard())
            } else {
                0
            };
            self.anchor_ns = None;
            (self.index, self.prev, self.curr) = (0, 0, 0);
        }
        true
    }

    /// The counts the server reads at `t_ns` (not before the latest call's window), or `None` if
    /// the windows are not laid or a call at `t_ns` would lay them again.
    fn counts_at(&self, t_ns: u64) -> Option<(Counts, u64)> {
        let anchor = self.anchor_ns.filter(|&a| a <= t_ns)?;
        let k = (t_ns - anchor) / self.window_ns;
        let counts = self.counts_in(k.max(self.index))?;
        let elapsed = t_ns.saturating_sub(anchor.saturating_add(k.saturating_mul(self.window_ns)));
        Some((counts, if k < self.index { 0 } else { elapsed }))
    }

    /// The calls such a server would accept at `t_ns`, one after another (`⌊N − curr − prev ×
    /// (W − elapsed)/W⌋`, exact, no guard): what its `RateLimit-Remaining` says then.
    pub(crate) fn remaining_at(&self, t_ns: u64) -> u64 {
        let n = u128::from(self.count);
        let Some((counts, elapsed)) = self.counts_at(t_ns) else {
            return u64::from(self.count);
        };
        let w = u128::from(self.window_ns);
        let held = u128::from(counts.curr) * w
            + u128::from(counts.prev) * w.saturating_sub(u128::from(elapsed));
        u64::try_from((n * w).saturating_sub(held) / w).unwrap_or(0)
    }

    /// Whether such a server, having counted the calls recorded, would refuse one of them at
    /// `t_ns` (its estimate there exceeds N, read one guard early as the plan is), past the first
    /// window: what a refusal that a sliding log would not have made looks like on a counter.
    pub(crate) fn over_at(&self, t_ns: u64) -> bool {
        let Some((counts, elapsed)) = self.counts_at(t_ns) else {
            return false;
        };
        if self.index == 0 && counts.prev == 0 {
            return false;
        }
        let (n, w) = (u128::from(self.count), u128::from(self.window_ns));
        let early = u128::from(elapsed.saturating_sub(self.guard()));
        u128::from(counts.curr) * w + u128::from(counts.prev) * w.saturating_sub(early) > n * w
    }

    /// Whether the windows have been laid and the first has ended by `t_ns`.
    pub(crate) fn past_first_window(&self, t_ns: u64) -> bool {
        self.anchor_ns
            .is_some_and(|a| t_ns >= a.saturating_add(self.window_ns))
    }

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

    const S: u64 = 1_000_000_000;

    /// Reserves `k` calls one after another from `now`, as the ledger does.
    fn plan(c: &mut WindowCounter, now: u64, k: usize) -> Vec<u64> {
        let mut t = now;
        (0..k)
            .map(|_| {
                t = c.earliest_from(t);
                c.record(t);
                t
            })
            .collect()
    }

    #[test]
    fn a_burst_then_the_previous_window_paces_the_next() {
        // 4 per 4 s, no guard: 4 at once; in the next window the previous one weighs 4 × (1 − e/4 s),
        // so the k-th call there goes once 4 × (4 − e) <= (3 − k) × 4, i.e. at e = k + 1 s.
        let mut c = WindowCounter::new(4, 4 * S, 0);
        let slots = plan(&mut c, 0, 8);
        assert_eq!(&slots[..4], &[0, 0, 0, 0]);
        assert_eq!(&slots[4..7], &[5 * S, 6 * S, 7 * S]);
        // Window 1 holds 3: window 2 starts with prev = 3, and its first call may go at once.
        assert_eq!(slots[7], 8 * S);
    }

    #[test]
    fn guards_keep_slots_off_the_boundaries() {
        let g = S / 10;
        let mut c = WindowCounter::new(4, 4 * S, g);
        let slots = plan(&mut c, 0, 5);
        // The first call lays the windows; the next three fit in its window (no boundary before).
        assert_eq!(&slots[..4], &[0, 0, 0, 0]);
        // Read one guard early: 4 × (4 s − (e − g)) <= 3 × 4 s, i.e. e >= 1 s + g.
        assert_eq!(slots[4], 4 * S + S + g);
        // A slot is never planned within one guard before a boundary.
        let mut c = WindowCounter::new(100, 4 * S, g);
        c.record(0);
        assert_eq!(c.earliest_from(4 * S - g / 2), 4 * S + g);
    }

    #[test]
    fn a_gap_of_two_windows_lays_them_again() {
        let mut c = WindowCounter::new(2, 4 * S, 0);
        plan(&mut c, 0, 2);
        assert_eq!(c.earliest_from(0), 4 * S + 2 * S);
        c.record(9 * S);
        assert_eq!(c.anchor_ns, Some(9 * S));
        assert_eq!(c.earliest_from(9 * S), 9 * S);
    }

    #[test]
    fn forget_takes_back_a_call_of_either_window() {
        let mut c = WindowCounter::new(3, 4 * S, 0);
        plan(&mut c, 0, 3);
        let late = c.earliest_from(0);
        c.record(late);
        assert!(c.forget(0), "a call of the previous window");
        assert!(c.forget(late), "a call of the current window");
        assert!(!c.forget(late), "no call left there");
        assert!(c.earliest_from(0) < late);
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// The figure the docs give for a limit read as a counter (here and in `WindowSemantics`).
    #[test]
    fn a_counter_is_112_bytes_whatever_its_count() {
        assert_eq!(std::mem::size_of::<WindowCounter>(), 112);
        assert_eq!(std::mem::size_of::<RecentCalls>(), 40);
    }
}
