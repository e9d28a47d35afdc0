//! Giving back and forecasting a key's slots (the shard reserves them itself). They go
//! straight to the key's ledger when the store keeps it in this process
//! ([`LedgerStore::local_ledger`]), and through the store otherwise.

use super::key_queue::KeyQueue;
use super::Inner;
use crate::clock::Instant;
use crate::ledger::{LedgerStore, StoreError};

impl<S: LedgerStore> Inner<S> {
    /// Gives back a slot of `q` whose call was never sent (or was refused and does not count) to
    /// its ledger if the ledger is in this process (true); false, doing nothing, if the store
    /// keeps it elsewhere (the shard asks it then, without waiting for it).
    pub(crate) fn refund_in_process(&self, q: &KeyQueue, slot: Instant) -> bool {
        match q.lock_ledger() {
            Some(mut ledger) => {
                ledger.refund(slot);
                true
            }
            None => false,
        }
    }

    /// When `q`'s `k`-th next call (1-based) could go; commits nothing.
    pub(crate) async fn nth_slot(
        &self,
        q: &KeyQueue,
        now: Instant,
        k: usize,
    ) -> Result<Instant, StoreError> {
        if let Some(mut ledger) = q.lock_ledger() {
            return Ok(ledger.forecast(now, k).at);
        }
        self.store.nth_slot(&q.id, now, k).await
    }
}
