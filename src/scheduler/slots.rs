//! Giving back and forecasting a key's slots (the shard reserves them itself). They go
//! straight to the key's ledger when the store keeps it in this process
//! ([`LedgerStore::local_ledger`]), and through the store otherwise.

use std::sync::{Mutex, MutexGuard};

use super::key_queue::KeyQueue;
use super::Inner;
use crate::clock::Instant;
use crate::ledger::{Ledger, LedgerStore, StoreError};

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: LedgerStore> Inner<S> {
    /// Gives back a slot of `q` whose call was never sent (or was refused and does not count).
    pub(crate) async fn refund_slot(&self, q: &KeyQueue, slot: Instant) -> Result<(), StoreError> {
        match &q.ledger {
            Some(ledger) => {
                lock(ledger).refund(slot);
                Ok(())
            }
            None => self.store.refund(&q.id, slot).await,
        }
    }

    /// When `q`'s `k`-th next call (1-based) could go; commits nothing.
    pub(crate) async fn nth_slot(
        &self,
        q: &KeyQueue,
        now: Instant,
        k: usize,
    ) -> Result<Instant, StoreError> {
        match &q.ledger {
            Some(ledger) => Ok(lock(ledger).nth_slot(now, k)),
            None => self.store.nth_slot(&q.id, now, k).await,
        }
    }
}
