//! How busy a limit was lately, in 16 bytes whatever its count.

/// Calls per fixed window `[kW, (k+1)W)`, for the current and the previous k. Survives the expiry
/// of a log's entries, so that after a 429 the scheduler can tell which limit was busy.
#[derive(Clone, Debug)]
pub(crate) struct RecentCalls {
    window_ns: u64,
    slots: [(u64, u64); 2],
}

impl RecentCalls {
    pub(crate) fn new(window_ns: u64) -> Self {
        Self {
            window_ns: window_ns.max(1),
            slots: [(u64::MAX, 0); 2],
        }
    }

    /// Rebuilt from its two `(fixed window index, calls)` slots (`u64::MAX`: none), as a shared
    /// store keeps them.
    #[cfg(feature = "redis")]
    pub(crate) fn from_slots(window_ns: u64, slots: [(u64, u64); 2]) -> Self {
        Self {
            window_ns: window_ns.max(1),
            slots,
        }
    }

    /// One call at `t_ns`.
    pub(crate) fn add(&mut self, t_ns: u64) {
        let index = t_ns / self.window_ns;
        let slot = &mut self.slots[(index % 2) as usize];
        if slot.0 != index {
            *slot = (index, 0);
        }
        slot.1 += 1;
    }

    /// One call at `t_ns` taken back.
    pub(crate) fn remove(&mut self, t_ns: u64) {
        let index = t_ns / self.window_ns;
        if let Some(slot) = self.slots.iter_mut().find(|s| s.0 == index) {
            slot.1 = slot.1.saturating_sub(1);
        }
    }

    /// Calls in the fixed window holding `now_ns` and the one before it.
    pub(crate) fn around(&self, now_ns: u64) -> u64 {
        let index = now_ns / self.window_ns;
        self.slots
            .iter()
            .filter(|(i, _)| *i == index || i.checked_add(1) == Some(index))
            .map(|(_, c)| c)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_and_the_previous_window() {
        let mut r = RecentCalls::new(10);
        r.add(1);
        r.add(2);
        r.add(15);
        assert_eq!(r.around(15), 3);
        assert_eq!(r.around(25), 1);
        assert_eq!(r.around(35), 0);
        r.remove(15);
        assert_eq!(r.around(15), 2);
    }
}
