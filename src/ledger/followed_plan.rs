//! The plan a ledger keeps of its next slots, so that the ETA of a queued job costs O(1) amortised
//! while calls go out: reservations that land on the plan are followed, not planned again.

use std::collections::VecDeque;

use super::key_ledger::Ledger;

/// A ledger's next slots by rank, planned on a copy of the ledger (the shadow) and followed as the
/// ledger reserves them.
///
/// Exact while every reservation lands on its planned slot: the ledger then holds what the shadow
/// held at that rank, so the rest of the plan is what planning afresh would give. A reservation
/// elsewhere (a call that went later than its slot: the sender lagged, a full wire) makes the plan
/// an estimate — its slots then lie early by about that lateness, since later calls leave every
/// window later — and it is planned again once the reservations followed since it was last
/// planned reach half of what it planned then, so that replanning costs O(1) per reservation,
/// amortised. Any other change of the ledger (a refund, a block, a pace, a server's window, calls
/// from elsewhere) drops the plan.
#[derive(Debug)]
pub(crate) struct FollowedPlan {
    /// The ledger as it would be after the planned slots.
    shadow: Ledger,
    /// The planned slots (ns on the ledger's scale), oldest first: the front is the next
    /// reservation's. Memory: 8 bytes a planned slot (a job queued).
    slots: VecDeque<u64>,
    /// Whether every reservation followed so far landed on its planned slot.
    exact: bool,
    /// Slots planned when the plan was made, and reservations followed since (see above).
    planned_at_start: usize,
    followed: usize,
}

impl FollowedPlan {
    /// A plan starting from `ledger` (a copy without a plan of its own).
    pub(crate) fn new(shadow: Ledger) -> Self {
        Self {
            shadow,
            slots: VecDeque::new(),
            exact: true,
            planned_at_start: 0,
            followed: 0,
        }
    }

    /// Whether an estimate has been followed long enough to be planned again.
    pub(crate) fn due_for_replanning(&self) -> bool {
        !self.exact && self.followed.saturating_mul(2) >= self.planned_at_start.max(1)
    }

    /// The `k`-th next slot (1-based, `k >= 1`), planning further at `now_ns` if the plan is
    /// shorter, and whether it is exact. A plan whose next slot `now_ns` has passed is an
    /// estimate from then on (the next reservation lands at `now_ns` or later, not on it).
    pub(crate) fn nth(&mut self, k: usize, now_ns: u64) -> (u64, bool) {
        if self.slots.front().is_some_and(|&first| first < now_ns) {
            self.exact = false;
        }
        while self.slots.len() < k {
            let t = self.shadow.earliest_ns(now_ns);
            self.shadow.commit(t, now_ns);
            self.slots.push_back(t);
        }
        if self.planned_at_start == 0 {
            self.planned_at_start = self.slots.len();
        }
        let t = self.slots.get(k - 1).copied().unwrap_or(now_ns);
        (t.max(now_ns), self.exact)
    }

    /// The ledger reserved `t_ns` (the slot of rank 1) at `now_ns`. False when the plan has
    /// nothing left to say: it planned no slot for this reservation, and it is an estimate (an
    /// exact one whose slots are used up still holds: its shadow is the ledger).
    pub(crate) fn follow(&mut self, t_ns: u64, now_ns: u64) -> bool {
        self.followed += 1;
        match self.slots.pop_front() {
            Some(planned) => {
                self.exact &= planned == t_ns;
                true
            }
            None => {
                // An exact shadow with nothing planned is the ledger before this reservation.
                self.shadow.commit(t_ns, now_ns);
                self.exact
            }
        }
    }

    /// Heap bytes it holds: its copy of the ledger and its slots.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shadow.heap_bytes() + self.slots.capacity() * std::mem::size_of::<u64>()
    }
}
