//! The slot timers of one shard: for each key waiting for the slot it reserved, when that slot is
//! due, earliest first. A timer whose key has since given its slot back stays in the heap until it
//! is due and is then found stale (its id no longer matches the key's held slot).

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::key_queue::KeyQueue;
use crate::clock::Instant;

/// A key waiting for its reserved slot.
pub(crate) struct Timer {
    at: Instant,
    pub(crate) id: u64,
    pub(crate) q: Arc<KeyQueue>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

/// The timers of one shard, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    next_id: u64,
}

impl Timers {
    /// Sets a timer for `q`'s slot at `at`; returns its id (kept in the key's held slot).
    pub(crate) fn add(&mut self, at: Instant, q: &Arc<KeyQueue>) -> u64 {
        self.next_id += 1;
        self.heap.push(Reverse(Timer {
            at,
            id: self.next_id,
            q: Arc::clone(q),
        }));
        self.next_id
    }

    /// When the earliest timer is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// The earliest timer due at or before `through`, taken out of the heap.
    pub(crate) fn pop_due(&mut self, through: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.at <= through => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scheduler::key_queue::Shard;
    use crate::scheduler::KeyConfig;
    use crate::{ApiKey, KeyId, Quota};

    fn key(name: &str) -> Arc<KeyQueue> {
        let config = KeyConfig::new(
            KeyId::new(name),
            ApiKey::new("secret").unwrap(),
            "http://127.0.0.1:9/v1",
            Quota::unlimited(),
        )
        .unwrap();
        Arc::new(KeyQueue::new(
            &config,
            Arc::new(Shard::default()),
            None,
            None,
            Arc::new(crate::clock::TokioClock::new()),
        ))
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_ties_in_order_of_setting() {
        let t0 = tokio::time::Instant::now();
        let (a, b) = (key("a"), key("b"));
        let mut timers = Timers::default();
        let late = timers.add(t0 + Duration::from_secs(2), &a);
        let first = timers.add(t0 + Duration::from_secs(1), &b);
        let tie = timers.add(t0 + Duration::from_secs(1), &a);
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(1)));
        assert!(timers.pop_due(t0).is_none(), "nothing is due yet");
        let through = t0 + Duration::from_millis(1_500);
        let got = timers.pop_due(through).unwrap();
        assert_eq!((got.id, got.q.id.as_str()), (first, "b"));
        assert_eq!(timers.pop_due(through).unwrap().id, tie);
        assert!(timers.pop_due(through).is_none());
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(2)).unwrap().id,
            late
        );
        assert_eq!(timers.next_at(), None);
    }
}
