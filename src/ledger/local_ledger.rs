//! A key's ledger held in this process, as a store hands it to the scheduler.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::Ledger;

/// The ledger of a key that its store keeps in this process, returned by
/// [`LedgerStore::local_ledger`](super::LedgerStore::local_ledger): the scheduler then takes and
/// gives back the key's slots through it directly, with no lookup and no future per call.
///
/// It is opaque: only this crate's stores keep one ([`MemoryLedgerStore`](super::MemoryLedgerStore)
/// does). A store of your own keeps the trait's default (`None`: its ledgers are not in this
/// process) or hands on the one of a store it wraps. Cloning it is cheap; a clone is the same
/// ledger ([`same_as`](Self::same_as)).
#[derive(Clone)]
pub struct LocalLedger(Arc<Mutex<Ledger>>);

impl LocalLedger {
    /// The ledger `shared`, as the store keeps it.
    pub(crate) fn new(shared: Arc<Mutex<Ledger>>) -> Self {
        LocalLedger(shared)
    }

    /// The ledger, shared with its store.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Mutex<Ledger>> {
        &self.0
    }

    /// The ledger, shared with its store.
    pub(crate) fn into_shared(self) -> Arc<Mutex<Ledger>> {
        self.0
    }

    /// Whether `self` and `other` are the same ledger (not merely equal ones).
    pub fn same_as(&self, other: &LocalLedger) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for LocalLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalLedger(..)")
    }
}
