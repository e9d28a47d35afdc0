//! What happens to a new event when the spool is full: an explicit choice, and every event it
//! drops is counted (see [`DropCounts`](super::DropCounts)).

use std::collections::HashMap;

use crate::fabraix::EventType;

/// The full-spool policy.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum FullPolicy {
    /// Refuse the new event: [`record`](super::TelemetrySender::record) hands it back with
    /// [`Recorded::Full`](super::Recorded::Full) (the producer decides; nothing is dropped), and
    /// [`record_wait`](super::TelemetrySender::record_wait) waits until there is room.
    Block,
    /// Drop the oldest unsent record in the spool to make room (counted as `dropped_oldest`).
    DropOldest,
    /// Drop the new event (counted as `dropped_newest`). The default: what is already spooled is
    /// kept in order.
    #[default]
    DropNewest,
    /// Keep only a sample of some event types once the spool is filling up, then drop the newest
    /// when it is full (counted as `dropped_sampled` and `dropped_newest`).
    SampleByEventType(Sampling),
}

/// Per-type sampling for [`FullPolicy::SampleByEventType`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Once the spool holds at least this fraction of its capacity (0.0 ..= 1.0), events of a type
    /// listed in `keep_one_in` are kept only one in N.
    pub from_fill: f64,
    /// Event type → keep one in N (N ≥ 1; 1 keeps all). Types not listed are all kept until the
    /// spool is full. `/register-agent-run` records are never sampled.
    pub keep_one_in: HashMap<EventType, u32>,
}

impl Sampling {
    /// Sampling from `from_fill` of the capacity on, with no type sampled yet.
    ///
    /// ```
    /// use fabraix_scheduler::telemetry::Sampling;
    /// use fabraix_scheduler::EventType;
    /// let s = Sampling::new(0.5).keep_one_in(EventType::ModelInput, 10);
    /// assert_eq!(s.keep_one_in[&EventType::ModelInput], 10);
    /// ```
    pub fn new(from_fill: f64) -> Self {
        Self {
            from_fill: from_fill.clamp(0.0, 1.0),
            keep_one_in: HashMap::new(),
        }
    }

    /// Keeps one in `n` events of `event_type` (n = 0 is read as 1) once sampling applies.
    pub fn keep_one_in(mut self, event_type: EventType, n: u32) -> Self {
        self.keep_one_in.insert(event_type, n.max(1));
        self
    }
}

/// What the policy decides for one new event when space is short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Store it.
    Keep,
    /// Drop the oldest unsent record, then store it.
    EvictOldest,
    /// Drop it: the spool is full.
    DropNewest,
    /// Drop it: sampled out.
    SampledOut,
    /// Hand it back to the producer.
    Refuse,
}

impl FullPolicy {
    /// Decides for a new event of `event_type` (None: not an event) when the spool holds `held`
    /// of `capacity` records. `counter` is the per-type sequence number of this event (for 1-in-N).
    pub(crate) fn decide(
        &self,
        held: u64,
        capacity: u64,
        event_type: Option<EventType>,
        counter: u64,
    ) -> Decision {
        let full = held >= capacity;
        match self {
            FullPolicy::Block if full => Decision::Refuse,
            FullPolicy::DropOldest if full => Decision::EvictOldest,
            FullPolicy::DropNewest if full => Decision::DropNewest,
            FullPolicy::SampleByEventType(s) => {
                if full {
                    return Decision::DropNewest;
                }
                let filling = (held as f64) >= s.from_fill * capacity as f64;
                match event_type.and_then(|t| s.keep_one_in.get(&t)) {
                    Some(&n) if filling && !counter.is_multiple_of(u64::from(n)) => {
                        Decision::SampledOut
                    }
                    _ => Decision::Keep,
                }
            }
            _ => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(FullPolicy::Block.decide(10, 10, None, 0), Decision::Refuse);
        assert_eq!(FullPolicy::Block.decide(9, 10, None, 0), Decision::Keep);
        assert_eq!(
            FullPolicy::DropOldest.decide(10, 10, None, 0),
            Decision::EvictOldest
        );
        let s = FullPolicy::SampleByEventType(Sampling::new(0.5).keep_one_in(EventType::Tool, 4));
        assert_eq!(s.decide(4, 10, Some(EventType::Tool), 1), Decision::Keep);
        assert_eq!(
            s.decide(5, 10, Some(EventType::Tool), 1),
            Decision::SampledOut
        );
        assert_eq!(s.decide(5, 10, Some(EventType::Tool), 4), Decision::Keep);
        assert_eq!(s.decide(5, 10, Some(EventType::User), 1), Decision::Keep);
        assert_eq!(
            s.decide(10, 10, Some(EventType::User), 0),
            Decision::DropNewest
        );
    }
}
