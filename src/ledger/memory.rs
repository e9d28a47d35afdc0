//! The in-process ledger store: one [`Ledger`] per key in a concurrent map.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Ledger, LedgerConfig, LedgerStore, LocalLedger, StoreError};
use crate::clock::Instant;
use crate::key_id::{KeyId, KeyMap};
use crate::quota::Quota;

/// Ledgers kept in this process. Each key's ledger sits behind its own short-held mutex; the map's
/// guard is released before the ledger is touched and nothing is held across an `.await`.
#[derive(Debug, Default, Clone)]
pub struct MemoryLedgerStore {
    ledgers: Arc<KeyMap<Held>>,
}

/// One key's ledger, and the quota and config it was registered with.
#[derive(Debug)]
struct Held {
    ledger: Arc<Mutex<Ledger>>,
    quota: Quota,
    config: LedgerConfig,
}

impl Held {
    /// Whether a ledger for `quota` and `config` would space calls as this one does: the same
    /// limits, guard and semantics.
    fn spaces_alike(&self, quota: &Quota, config: LedgerConfig) -> bool {
        self.quota == *quota
            && self.config.semantics == config.semantics
            && self.config.guard_for(&self.quota) == config.guard_for(quota)
    }
}

impl MemoryLedgerStore {
    /// An empty store.
    ///
    /// ```
    /// use fabraix_scheduler::MemoryLedgerStore;
    /// let store = MemoryLedgerStore::new();
    /// # let _ = store;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, key: &KeyId, f: impl FnOnce(&mut Ledger) -> R) -> Result<R, StoreError> {
        let ledger = self
            .ledgers
            .get(key)
            .map(|entry| Arc::clone(&entry.value().ledger))
            .ok_or_else(|| StoreError::UnknownKey(key.clone()))?;
        let mut guard = ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&mut guard))
    }

    /// Frees the ledger of `key` (false if there is none). For a key removed from every
    /// scheduler on this store ([`Scheduler::remove_key`](crate::Scheduler::remove_key)), once its
    /// calls are older than its quota's longest window plus the guard
    /// ([`LedgerConfig::counted_for`]): a key added again after this starts with empty windows.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::{KeyId, LedgerConfig, LedgerStore, MemoryLedgerStore, Quota};
    /// let store = MemoryLedgerStore::new();
    /// let key = KeyId::new("k");
    /// store.register(&key, &Quota::development(), LedgerConfig::default(), tokio::time::Instant::now()).await.unwrap();
    /// assert!(store.forget(&key));
    /// assert!(store.snapshot(&key).is_none());
    /// assert!(!store.forget(&key));
    /// # }
    /// ```
    pub fn forget(&self, key: &KeyId) -> bool {
        self.ledgers.remove(key).is_some()
    }

    /// A copy of one key's ledger (for inspection and tests).
    pub fn snapshot(&self, key: &KeyId) -> Option<Ledger> {
        self.with(key, |l| l.clone()).ok()
    }
}

impl LedgerStore for MemoryLedgerStore {
    async fn register(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.register_with_earlier_calls(key, quota, config, now, &[])
            .await
    }

    async fn register_with_earlier_calls(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
        ages: &[Duration],
    ) -> Result<(), StoreError> {
        match self.ledgers.entry(key.clone()) {
            // Registered again with the same quota and the same spacing (a key removed and added
            // again, a second scheduler on this store): the ledger stands, with every call it
            // recorded, and takes the earlier calls newer than its own newest (made elsewhere
            // since). Its pace is dropped: it belongs to the pacer of the queue that set it,
            // and a new queue starts unpaced.
            dashmap::Entry::Occupied(entry) if entry.get().spaces_alike(quota, config) => {
                let mut ledger = entry.get().ledger.lock().unwrap_or_else(|p| p.into_inner());
                ledger.add_later_calls(now, ages);
                ledger.set_pace(None);
            }
            // A new quota: replaced in place, so that a scheduler holding this key's ledger
            // keeps seeing it.
            dashmap::Entry::Occupied(mut entry) => {
                let mut ledger = Ledger::with_earlier_calls(quota, config, now, ages);
                let held = entry.get_mut();
                {
                    let mut old = held.ledger.lock().unwrap_or_else(|p| p.into_inner());
                    ledger.replaces(&old);
                    *old = ledger;
                }
                held.quota = quota.clone();
                held.config = config;
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Held {
                    ledger: Arc::new(Mutex::new(Ledger::with_earlier_calls(
                        quota, config, now, ages,
                    ))),
                    quota: quota.clone(),
                    config,
                });
            }
        }
        Ok(())
    }

    fn local_ledger(&self, key: &KeyId) -> Option<LocalLedger> {
        self.ledgers
            .get(key)
            .map(|entry| LocalLedger::new(Arc::clone(&entry.value().ledger)))
    }

    async fn reserve(&self, key: &KeyId, now: Instant) -> Result<Instant, StoreError> {
        self.with(key, |l| l.reserve(now))
    }

    async fn refund(&self, key: &KeyId, slot: Instant) -> Result<(), StoreError> {
        self.with(key, |l| l.refund(slot))
    }

    async fn nth_slot(&self, key: &KeyId, now: Instant, k: usize) -> Result<Instant, StoreError> {
        self.with(key, |l| l.forecast(now, k).at)
    }

    async fn plan(&self, key: &KeyId, now: Instant, k: usize) -> Result<Vec<Instant>, StoreError> {
        self.with(key, |l| l.plan(now, k))
    }

    async fn block_until(&self, key: &KeyId, until: Instant) -> Result<(), StoreError> {
        self.with(key, |l| l.block_until(until))
    }

    async fn apply_server_window(
        &self,
        key: &KeyId,
        remaining: u32,
        reset_at: Instant,
    ) -> Result<(), StoreError> {
        self.with(key, |l| l.apply_server_window(remaining, reset_at))
    }

    async fn set_pace(&self, key: &KeyId, spacing: Option<Duration>) -> Result<(), StoreError> {
        self.with(key, |l| l.set_pace(spacing))
    }

    async fn recent_utilisation(&self, key: &KeyId, now: Instant) -> Result<Vec<f64>, StoreError> {
        self.with(key, |l| l.recent_utilisation(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ledger_handed_out_stays_current_when_its_key_is_registered_again() {
        let store = MemoryLedgerStore::new();
        let key = KeyId::new("k");
        let now = tokio::time::Instant::now();
        let one: Quota = "1/1m".parse().unwrap();
        store
            .register(&key, &one, LedgerConfig::default(), now)
            .await
            .unwrap();
        let held = store.local_ledger(&key).expect("in this process");
        assert!(store.local_ledger(&KeyId::new("other")).is_none());
        assert_eq!(held.shared().lock().unwrap().reserve(now), now);
        // The store and the holder see the same ledger: the minute is used up for both.
        assert!(store.nth_slot(&key, now, 1).await.unwrap() > now);

        // Registered again with room for more: the held ledger is the new one.
        let more: Quota = "10/1m".parse().unwrap();
        store
            .register(&key, &more, LedgerConfig::default(), now)
            .await
            .unwrap();
        assert_eq!(held.shared().lock().unwrap().reserve(now), now);
        assert_eq!(store.nth_slot(&key, now, 1).await.unwrap(), now);
        assert!(held.same_as(&store.local_ledger(&key).unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn registered_again_alike_a_ledger_keeps_its_calls_takes_later_ones_and_drops_its_pace() {
        let store = MemoryLedgerStore::new();
        let key = KeyId::new("k");
        let start = tokio::time::Instant::now();
        let quota: Quota = "3/10s".parse().unwrap();
        let config = LedgerConfig::default();
        store.register(&key, &quota, config, start).await.unwrap();
        let held = store.local_ledger(&key).unwrap();
        assert_eq!(held.shared().lock().unwrap().reserve(start), start);
        store
            .set_pace(&key, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        // 2 s later, registered again with the same quota (the guard given as its default
        // value) and told of two calls: one older than the ledger's own call (its own, taken as
        // recorded), one made elsewhere a second ago (new to it).
        let now = start + Duration::from_secs(2);
        let same = LedgerConfig {
            guard: Some(config.guard_for(&quota)),
            ..config
        };
        let ages = [Duration::from_secs(3), Duration::from_secs(1)];
        store
            .register_with_earlier_calls(&key, &quota, same, now, &ages)
            .await
            .unwrap();
        let ledger = store.snapshot(&key).unwrap();
        assert_eq!(
            ledger.pace(),
            None,
            "the pace belonged to the queue that set it"
        );
        // Its own call and the one of a second ago fill two of three: one more now, the next
        // when its own call leaves the window (10 s after it, plus the 100 ms guard).
        assert_eq!(ledger.nth_slot(now, 1), now);
        assert_eq!(
            ledger.nth_slot(now, 2),
            start + Duration::from_millis(10_100)
        );
        assert!(held.same_as(&store.local_ledger(&key).unwrap()));
    }
}
