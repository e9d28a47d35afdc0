//! The scheduler: per-key queues with priority lanes, planned dispatch, retries, shutdown.
//!
//! ```text
//! submit(job) ─▶ key queue (lanes: interactive > normal > bulk; FIFO within a lane; bounded)
//!                  │ key's shard: ledger.reserve(now) ─▶ sleep until the slot ─▶ bind the best job
//!                  ▼
//!              transport.send ─▶ classify: success │ 429 │ transient │ 401 │ 403 │ fatal
//! ```
//! Every submitted job ends with exactly one outcome, delivered through its [`Ticket`].
//!
//! A few dispatch tasks ("shards", [`SchedulerBuilder::dispatch_tasks`]) serve all keys: each key is
//! given to one when it is added, and the shard reserves its slots, binds its jobs and drives its
//! calls. 10,000 keys cost as many tasks as the machine has cores, not 10,000.
//!
//! A panic never strands a job. One in a transport's future fails that call's job with
//! [`JobError::Internal`](crate::JobError::Internal) naming the panic, and the key goes on. One
//! elsewhere in a shard's work (the scheduler, a [`LedgerStore`] or [`Clock`] it calls) closes
//! that shard's keys: every job they hold fails with `Internal` naming it, later submits to them
//! are refused with [`SubmitError::ShuttingDown`](crate::SubmitError::ShuttingDown), shutdown and
//! removal return, and keys of other shards go on.
//!
//! Delivery is **at-least-once** by default: a call whose outcome is unknown (timeout, 5xx,
//! connection dropped after sending) is retried, so the server may see it twice. Choose
//! [`Delivery::AtMostOnce`](crate::Delivery::AtMostOnce) per job or per scheduler to fail such a
//! call instead. Calls refused with 429 or never connected are always retried: the server did not
//! process them.

mod addressing;
mod answers;
mod call_journal;
mod config;
mod counter_learning;
mod key_handle;
mod key_queue;
mod key_state;
mod latency_guard;
mod outcome_slab;
mod pacing;
mod panics;
mod refusals;
mod server_limits;
mod settle;
mod shard;
mod shard_link;
mod slot_timers;
mod slots;
mod stats;
mod submit;
mod ticket;
mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use call_journal::CallJournal;

use tokio::task::JoinHandle;

pub use call_journal::read_call_journal;
pub use config::{KeyConfig, Overflow, ShutdownMode};
pub use counter_learning::{LearnedFrom, LearnedSemantics};
pub use key_handle::KeyHandle;
pub use key_state::ReturnedJob;
pub use refusals::RefusedCalls;
pub use stats::KeyStats;
pub use ticket::Ticket;

use crate::api_key::ApiKey;
use crate::cause::Cause;
use crate::clock::{Clock, Instant, TokioClock};
use crate::key_id::{KeyId, KeyMap};
use crate::ledger::{LedgerStore, LocalLedger, MemoryLedgerStore, StoreError};
use crate::retry::{RetryBudget, RetryPolicy};
use crate::transport::{ReqwestTransport, Transport, TransportConfig, TransportError};
use key_queue::KeyQueue;
use key_queue::Shard;

pub(crate) struct Inner<S> {
    pub(crate) store: S,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry: RetryPolicy,
    pub(crate) budget: RetryBudget,
    pub(crate) adaptive_pacing: bool,
    keys: KeyMap<Arc<KeyQueue>>,
    shards: Vec<Arc<Shard>>,
    /// The shard the next key goes to (round robin).
    next_shard: AtomicUsize,
    shard_tasks: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    /// Held while a key is added, one of them per id (by the id's hash): two adds of one id at
    /// once are one add and one rotation (the second would otherwise find the first's call
    /// journal locked, or register the key's ledger again over the first's), while adds of other
    /// ids seldom wait for each other (a journal's file work, a store elsewhere).
    adding: [tokio::sync::Mutex<()>; ADDING_LOCKS],
    /// Keys being removed ([`Scheduler::remove_key`]) until their removal is done: an add or a
    /// removal of the same id waits for it.
    removing: KeyMap<Arc<KeyQueue>>,
}

/// A key's entry in `Inner::removing`, taken out (and the removal marked done, so that whoever
/// waits for it goes on) when this is dropped: when the removal is done, or if its future is
/// dropped before.
struct Removing<'a, S> {
    inner: &'a Inner<S>,
    key: &'a KeyId,
    queue: Arc<KeyQueue>,
}

impl<S> Drop for Removing<'_, S> {
    fn drop(&mut self) {
        self.inner.removing.remove(self.key);
        self.queue.mark_removed();
    }
}

/// Locks that adds of keys are spread over (see `Inner::adding`).
const ADDING_LOCKS: usize = 64;

impl<S> Inner<S> {
    /// Closes every key: no new jobs; what is queued is still sent, and each key's shard lets it
    /// go once it is empty and nothing of it is on the wire. Returns the keys.
    fn close_all(&self) -> Vec<Arc<KeyQueue>> {
        let queues: Vec<Arc<KeyQueue>> = self.keys.iter().map(|e| Arc::clone(e.value())).collect();
        for q in &queues {
            q.close();
        }
        queues
    }
}

/// Sends jobs for any number of keys, each as fast as its quota allows and never faster.
/// Cheap to clone (a handle). Call [`shutdown`](Scheduler::shutdown) to stop it and choose what
/// becomes of queued jobs; dropping the last handle closes every key instead, like
/// [`ShutdownMode::Drain`] without waiting: what is queued is still sent (its tickets resolve),
/// then the dispatch tasks end.
pub struct Scheduler<S: LedgerStore = MemoryLedgerStore> {
    inner: Arc<Inner<S>>,
    /// Shared by every clone of this handle (and by nothing else).
    handle: Arc<LastHandle<S>>,
}

/// Closes every key when the last [`Scheduler`] handle is dropped. The dispatch tasks hold the
/// scheduler's state, not a handle: without this they would wait for jobs that can no longer come.
struct LastHandle<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Drop for LastHandle<S> {
    fn drop(&mut self) {
        self.inner.close_all();
    }
}

impl<S: LedgerStore> Clone for Scheduler<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<S: LedgerStore> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("keys", &self.inner.keys.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder<S: LedgerStore = MemoryLedgerStore> {
    store: S,
    transport: Option<Arc<dyn Transport>>,
    transport_config: TransportConfig,
    clock: Option<Arc<dyn Clock>>,
    retry: RetryPolicy,
    budget: RetryBudget,
    seed: Option<u64>,
    adaptive_pacing: bool,
    shards: Option<usize>,
}

impl Scheduler {
    /// A builder with the defaults: in-memory ledgers, reqwest transport, tokio's clock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::Scheduler;
    /// let scheduler = Scheduler::builder().seed(7).build().unwrap();
    /// # let _ = scheduler; }
    /// ```
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::with_store(MemoryLedgerStore::new())
    }
}

impl<S: LedgerStore> SchedulerBuilder<S> {
    /// A builder whose ledgers live in `store`.
    pub fn with_store(store: S) -> Self {
        Self {
            store,
            transport: None,
            transport_config: TransportConfig::default(),
            clock: None,
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
            seed: None,
            adaptive_pacing: true,
            shards: None,
        }
    }

    /// The same builder with its ledgers in `store` instead (a
    /// [`RedisLedgerStore`](crate::LedgerStore) shared by a fleet, say).
    ///
    /// ```
    /// use fabraix_scheduler::{MemoryLedgerStore, Scheduler};
    /// let builder = Scheduler::builder().seed(7).store(MemoryLedgerStore::new());
    /// # let _ = builder;
    /// ```
    pub fn store<T: LedgerStore>(self, store: T) -> SchedulerBuilder<T> {
        SchedulerBuilder {
            store,
            transport: self.transport,
            transport_config: self.transport_config,
            clock: self.clock,
            retry: self.retry,
            budget: self.budget,
            seed: self.seed,
            adaptive_pacing: self.adaptive_pacing,
            shards: self.shards,
        }
    }

    /// The transport (default: [`ReqwestTransport`]).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Timeouts of the default transport.
    pub fn transport_config(mut self, config: TransportConfig) -> Self {
        self.transport_config = config;
        self
    }

    /// The clock (default: [`TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The retry rules.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry budget shared by all keys.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Seeds the jitter generator (deterministic tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a key slows to even spacing when the server refuses what the quota allows
    /// (default true; see the pacing notes in the crate docs).
    pub fn adaptive_pacing(mut self, on: bool) -> Self {
        self.adaptive_pacing = on;
        self
    }

    /// How many tasks dispatch the keys (1 ..; default: the machine's parallelism, at most 8).
    /// Each key is served by one of them, given round robin as keys are added; a task serves
    /// all of its keys' calls, so one is enough for a current-thread runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::Scheduler;
    /// let scheduler = Scheduler::builder().dispatch_tasks(1).build().unwrap();
    /// # let _ = scheduler; }
    /// ```
    pub fn dispatch_tasks(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// Builds the scheduler. Fails only if the default transport cannot be built.
    pub fn build(self) -> Result<Scheduler<S>, TransportError> {
        let transport = match self.transport {
            Some(t) => t,
            None => Arc::new(ReqwestTransport::new(self.transport_config)?),
        };
        // Each shard draws its retry jitter from a generator of its own (no lock is shared on a
        // 429): seeded, the first shard's is the seed's, the next ones follow from it.
        let seed = self.seed;
        let rng_of = |n: usize| match seed {
            Some(seed) => fastrand::Rng::with_seed(seed.wrapping_add(n as u64)),
            None => fastrand::Rng::new(),
        };
        let shards = self
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)));
        let inner = Arc::new(Inner {
            store: self.store,
            transport,
            clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
            retry: self.retry,
            budget: self.budget,
            adaptive_pacing: self.adaptive_pacing,
            keys: KeyMap::default(),
            shards: (0..shards)
                .map(|n| Arc::new(Shard::new(rng_of(n))))
                .collect(),
            next_shard: AtomicUsize::new(0),
            shard_tasks: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            adding: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            removing: KeyMap::default(),
        });
        Ok(Scheduler {
            handle: Arc::new(LastHandle {
                inner: Arc::clone(&inner),
            }),
            inner,
        })
    }
}

/// What [`Scheduler::shutdown`] returns.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Jobs that were not sent and are handed back to the caller.
    pub returned: Vec<ReturnedJob>,
}

impl<S: LedgerStore> Scheduler<S> {
    /// Adds a key and gives it to a dispatch task (call it inside a tokio runtime). If the id exists
    /// already, only its API key is replaced, as [`rotate_key`](Self::rotate_key) does: the queue
    /// and the ledger (with its record of recent calls) stay as they are. Adds of one id are taken
    /// one at a time, so two at once are an add and a rotation.
    pub async fn add_key(&self, config: KeyConfig) -> Result<(), StoreError> {
        let _adding = self.adding_guard(&config.id).await;
        if self.rotate_key(&config.id, config.api_key.clone()) {
            return Ok(());
        }
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall_now();
        // Calls made before: told of, and (with a journal) recorded; the journal keeps both.
        let (journal, earlier) = match &config.call_journal {
            Some(path) => {
                let keep = config.counted_for();
                let most = config.quota.limits().iter().map(|l| l.count()).max();
                let told = &config.sent_earlier;
                let (journal, earlier) =
                    CallJournal::open(path, keep, most.unwrap_or(0), wall, told).map_err(|e| {
                        StoreError::Journal {
                            kind: e.kind(),
                            message: format!("{} (key {}): {e}", path.display(), config.id),
                            source: Cause::new(e),
                        }
                    })?;
                (Some(Arc::new(journal)), earlier)
            }
            None => (None, config.sent_earlier.clone()),
        };
        self.inner
            .store
            .bind_fingerprint(&config.id, config.api_key.fingerprint());
        let ages: Vec<Duration> = earlier
            .iter()
            .map(|&t| wall.duration_since(t).unwrap_or(Duration::ZERO))
            .collect();
        self.inner
            .store
            .register_with_earlier_calls(&config.id, &config.quota, config.ledger, now, &ages)
            .await?;
        let n = self.inner.next_shard.fetch_add(1, Ordering::Relaxed);
        let shard = Arc::clone(&self.inner.shards[n % self.inner.shards.len()]);
        let ledger = self
            .inner
            .store
            .local_ledger(&config.id)
            .map(LocalLedger::into_shared);
        let queue = Arc::new(KeyQueue::new(
            &config,
            Arc::clone(&shard),
            ledger,
            journal,
            Arc::clone(&self.inner.clock),
        ));
        match self.inner.keys.entry(config.id.clone()) {
            // Not while `adding` is held; were it added otherwise, that queue would stand.
            dashmap::Entry::Occupied(_) => return Ok(()),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(queue);
            }
        }
        if shard.join() {
            let handle = tokio::spawn(shard::run_shard(Arc::clone(&self.inner), shard));
            self.inner
                .shard_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
        Ok(())
    }

    /// Removes a key, ending its jobs as `mode` says, as [`shutdown`](Self::shutdown) does for
    /// all keys: with [`ShutdownMode::Drain`] what is queued is still sent (as the quota allows);
    /// with [`ShutdownMode::ReturnUnsent`] it is handed back in the report (its tickets resolve to
    /// [`JobError::ShutDown`](crate::JobError::ShutDown)); with [`ShutdownMode::DrainUntil`] what
    /// is left at the deadline is. Calls on the wire finish and deliver their outcomes (so, as for
    /// `shutdown`, a transport that never answers keeps this from returning, whatever the
    /// deadline). Returns once none of the key's jobs is left, with the jobs handed back; `None`
    /// if no such key was added. Other keys are not touched. An add or a removal of the same id
    /// meanwhile waits until this one is done (a removal then finds no key: `None`). Dropped before
    /// it returns, the key stays closed and its jobs end as `mode` says, but the jobs handed back
    /// are not reported.
    ///
    /// From the start of the call, `submit` for the id answers
    /// [`SubmitError::UnknownKey`](crate::SubmitError::UnknownKey), and a [`KeyHandle`] of it
    /// [`SubmitError::ShuttingDown`](crate::SubmitError::ShuttingDown). The key's queue and its
    /// journal ([`KeyConfig::call_journal`], closed, so another program may open it) are let go.
    /// The store keeps the key's ledger: the key added again with the same quota counts the calls
    /// it made, rather than be refused for them
    /// ([`MemoryLedgerStore::forget`](crate::MemoryLedgerStore::forget) frees it once they no
    /// longer matter). Added again with another quota, it starts from the calls it is told of
    /// (its journal, [`KeyConfig::sent_earlier`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, Scheduler, ShutdownMode};
    /// let scheduler = Scheduler::builder().build().unwrap();
    /// let id = KeyId::new("tenant-42");
    /// let config = KeyConfig::new(id.clone(), ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development()).unwrap();
    /// scheduler.add_key(config).await.unwrap();
    /// let report = scheduler.remove_key(&id, ShutdownMode::ReturnUnsent).await.unwrap();
    /// assert!(report.returned.is_empty());
    /// assert!(scheduler.key(&id).is_none());
    /// assert!(scheduler.remove_key(&id, ShutdownMode::Drain).await.is_none());
    /// # }
    /// ```
    pub async fn remove_key(&self, key: &KeyId, mode: ShutdownMode) -> Option<ShutdownReport> {
        // Not while the id is being added, nor removed already (that removal is waited for).
        let removing = {
            let _adding = self.adding_guard(key).await;
            let (_, q) = self.inner.keys.remove(key)?;
            self.inner.removing.insert(key.clone(), Arc::clone(&q));
            Removing {
                inner: &self.inner,
                key,
                queue: q,
            }
        };
        let q = &removing.queue;
        q.close();
        match mode {
            ShutdownMode::Drain => q.let_go().await,
            ShutdownMode::ReturnUnsent => {
                q.hand_back_queued();
                q.let_go().await;
            }
            ShutdownMode::DrainUntil(deadline) => {
                tokio::select! {
                    () = q.let_go() => {}
                    () = self.inner.clock.sleep_until(deadline) => {
                        q.hand_back_queued();
                        q.let_go().await;
                    }
                }
            }
        }
        if let Some(journal) = &q.journal {
            journal.close();
        }
        let returned = q.lock().take_returned();
        tracing::info!(key = %key, handed_back = returned.len(), "key removed");
        drop(removing);
        Some(ShutdownReport { returned })
    }

    /// The add lock of `key` (see `Inner::adding`), taken once no removal of `key` is under way
    /// (one is waited for first, without the lock).
    async fn adding_guard(&self, key: &KeyId) -> tokio::sync::MutexGuard<'_, ()> {
        loop {
            let guard = self.adding_lock(key).lock().await;
            let removing = self.inner.removing.get(key).map(|e| Arc::clone(e.value()));
            match removing {
                None => return guard,
                Some(q) => {
                    drop(guard);
                    q.removed().await;
                }
            }
        }
    }

    /// The lock held while `key` is added (shared with the ids of the same hash).
    fn adding_lock(&self, key: &KeyId) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(key, &mut hasher);
        let stripe = std::hash::Hasher::finish(&hasher) % ADDING_LOCKS as u64;
        &self.inner.adding[stripe as usize]
    }

    fn queue(&self, key: &KeyId) -> Option<Arc<KeyQueue>> {
        self.inner.keys.get(key).map(|e| Arc::clone(e.value()))
    }

    /// A handle of the key `key` (`None` if no such key was added), whose
    /// [`submit`](KeyHandle::submit) never looks the key up by its id: the way to submit to
    /// thousands of keys at the lowest cost per job.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, Scheduler};
    /// let scheduler = Scheduler::builder().build().unwrap();
    /// let id = KeyId::new("tenant-42");
    /// let config = KeyConfig::new(
    ///     id.clone(),
    ///     ApiKey::new("secret").unwrap(),
    ///     "https://api.fabraix.com/v1",
    ///     Quota::development(),
    /// )
    /// .unwrap();
    /// scheduler.add_key(config).await.unwrap();
    /// let tenant = scheduler.key(&id).unwrap();
    /// assert_eq!(tenant.id(), &id);
    /// assert!(scheduler.key(&KeyId::new("tenant-43")).is_none());
    /// # }
    /// ```
    pub fn key(&self, key: &KeyId) -> Option<KeyHandle<S>> {
        self.queue(key).map(|q| KeyHandle::new(self.clone(), q))
    }

    /// Swaps the key behind `key` at run time: queued jobs stay queued and go out with the new
    /// key; a key marked revoked by a 401 is usable again. Returns false for an unknown id.
    pub fn rotate_key(&self, key: &KeyId, api_key: ApiKey) -> bool {
        match self.queue(key) {
            Some(q) => {
                q.rotate(api_key);
                true
            }
            None => false,
        }
    }

    /// When the next `k` calls of `key` could go (the ledger's plan; commits nothing). For a
    /// person, each as a wait or a wall-clock time: [`clock`](Self::clock)`().`[`until`](Clock::until)
    /// or [`wall_at`](Clock::wall_at).
    pub async fn plan(&self, key: &KeyId, k: usize) -> Result<Vec<Instant>, StoreError> {
        self.inner.store.plan(key, self.inner.clock.now(), k).await
    }

    /// When everything queued for `key` now would have been sent, at the quota (`None` if
    /// nothing is queued). For a person: [`clock`](Self::clock)`().`[`until`](Clock::until)`(eta)`
    /// is the wait, [`wall_at`](Clock::wall_at) the wall-clock time.
    pub async fn drain_eta(&self, key: &KeyId) -> Result<Option<Instant>, StoreError> {
        let Some(q) = self.queue(key) else {
            return Err(StoreError::UnknownKey(key.clone()));
        };
        let (queued, pending) = {
            let st = q.lock();
            (st.len(), st.held_slot())
        };
        if queued == 0 {
            return Ok(None);
        }
        let now = self.inner.clock.now();
        match pending {
            Some(slot) if queued == 1 => Ok(Some(slot)),
            Some(_) => self.inner.nth_slot(&q, now, queued - 1).await.map(Some),
            None => self.inner.nth_slot(&q, now, queued).await.map(Some),
        }
    }

    /// A snapshot of one key's counters.
    pub fn stats(&self, key: &KeyId) -> Option<KeyStats> {
        self.queue(key).map(|q| q.stats())
    }

    /// The fraction of the binding limit's rate the key paces at, if the server has refused what
    /// the quota allows (see the pacing notes).
    pub fn pace_factor(&self, key: &KeyId) -> Option<f64> {
        self.queue(key)?.lock().pace_factor()
    }

    /// The clock the scheduler runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The ledger store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Stops taking jobs and ends as `mode` says; returns the jobs handed back. Calls already on the
    /// wire always finish and deliver their outcomes.
    pub async fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let queues = self.inner.close_all();
        let mut handles: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .inner
                .shard_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let hand_back_all = |queues: &[Arc<KeyQueue>]| {
            for q in queues {
                q.hand_back_queued();
            }
        };
        match mode {
            ShutdownMode::Drain => {}
            ShutdownMode::ReturnUnsent => hand_back_all(&queues),
            ShutdownMode::DrainUntil(deadline) => {
                let all = async {
                    for h in handles.iter_mut() {
                        let _ = h.await;
                    }
                };
                tokio::select! {
                    () = all => {}
                    () = self.inner.clock.sleep_until(deadline) => hand_back_all(&queues),
                }
            }
        }
        for h in handles.iter_mut() {
            if !h.is_finished() {
                let _ = h.await;
            }
        }
        let mut report = ShutdownReport::default();
        for q in &queues {
            report.returned.append(&mut q.lock().take_returned());
            // No call goes any more: the next run (in this process too) may open the journal.
            if let Some(journal) = &q.journal {
                journal.close();
            }
        }
        report
    }
}
