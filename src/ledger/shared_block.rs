//! [`SharedBlock`]: a pause of one key that another process sharing its ledger raised.

use crate::clock::Instant;

/// A pause of one key raised elsewhere in the fleet (another process's 429, a server window
/// with nothing left), as this process knows it: when it ends, and since when this process knows
/// of it. Both are instants of this process's clock.
///
/// The scheduler gives back a slot it holds for later when the pause would cover it and the slot
/// was reserved before the pause was known (see [`SharedBlock::stops`]); a slot reserved since
/// was placed after the pause by the store.
///
/// ```
/// use std::time::Duration;
/// use fabraix_scheduler::SharedBlock;
///
/// let now = tokio::time::Instant::now();
/// let block = SharedBlock::new(now, now + Duration::from_secs(2));
/// assert_eq!(block.until(), now + Duration::from_secs(2));
/// assert!(block.stops(now + Duration::from_millis(500), now - Duration::from_millis(10), now));
/// assert!(!block.stops(now + Duration::from_millis(500), now, now), "reserved knowing of it");
/// assert!(!block.stops(now + Duration::from_secs(3), now - Duration::from_millis(10), now));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBlock {
    known_since: Instant,
    until: Instant,
}

impl SharedBlock {
    /// A pause known of since `known_since` that ends at `until`.
    pub fn new(known_since: Instant, until: Instant) -> Self {
        Self { known_since, until }
    }

    /// When the pause ends.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Since when this process knows of the pause.
    pub fn known_since(&self) -> Instant {
        self.known_since
    }

    /// Whether a slot at `slot`, asked of the store at `reserved_at`, must not be used at `now`:
    /// the pause is not over, covers the slot, and was not known when the slot was asked for.
    pub fn stops(&self, slot: Instant, reserved_at: Instant, now: Instant) -> bool {
        now < self.until && slot < self.until && reserved_at < self.known_since
    }
}
