//! The check that Redis still holds each key's state, made often enough that a process re-seeds
//! a lost state within its settle even while it makes no call of its own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{lock, KeyState, RedisLedgerStore};
use crate::key_id::KeyMap;

/// The shortest period between two checks of one key.
const MIN_WATCH: Duration = Duration::from_millis(10);

impl RedisLedgerStore {
    /// Starts the watch task once per store (a clone shares it), if the config asks for one and
    /// a tokio runtime runs. It ends when the last clone of the store is dropped.
    pub(super) fn start_watch(&self) {
        let Some(every) = self.watch_period() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let keys = Arc::downgrade(&self.keys);
        let mut template = self.clone();
        template.keys = Arc::default();
        runtime.spawn(watch(keys, template, every));
    }

    /// [`RedisStoreConfig::reseed_watch`](super::RedisStoreConfig::reseed_watch), at most a
    /// quarter of the settle, at least [`MIN_WATCH`].
    fn watch_period(&self) -> Option<Duration> {
        let every = self.config.reseed_watch?;
        let settle = self.config.reseed_settle;
        let every = if settle.is_zero() {
            every
        } else {
            every.min(settle / 4)
        };
        Some(every.max(MIN_WATCH))
    }

    /// One round of checks: every key whose calls still count and that had no answer from
    /// Redis for `every` is checked (and re-seeded if Redis lost its state). Errors are left to
    /// the key's next call, which meets them too.
    async fn check_keys(&self, every: Duration) {
        let states: Vec<Arc<Mutex<KeyState>>> =
            self.keys.iter().map(|e| Arc::clone(e.value())).collect();
        for ks in states {
            let now = self.clock.now();
            let due = {
                let s = lock(&ks);
                s.own.any_counting(now) && s.last_reply.is_none_or(|t| t + every <= now)
            };
            if due {
                let _ = self.run(&ks, "check", now, &[]).await;
            }
        }
    }
}

/// Checks the keys of the store whose map `keys` is, every `every`, until the store is gone.
async fn watch(
    keys: Weak<KeyMap<Arc<Mutex<KeyState>>>>,
    template: RedisLedgerStore,
    every: Duration,
) {
    loop {
        let next = template.clock.now() + every;
        template.clock.sleep_until(next).await;
        let Some(keys) = keys.upgrade() else {
            return;
        };
        let store = RedisLedgerStore {
            keys,
            ..template.clone()
        };
        store.check_keys(every).await;
    }
}
