//! One key's queue: priority lanes, in-flight count, and the state shared by its dispatch shard,
//! its calls on the wire and its tickets. Every lock here is short and never held across an
//! `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::Notify;

use super::addressing::AddressingCache;
use super::call_journal::CallJournal;
use super::config::{KeyConfig, Overflow};
use super::latency_guard::LatencyGuard;
use super::outcome_slab::OutcomeSender;
use super::pacing::Pacer;
use super::refusals::{ProbeVerdict, RefusalAccounting};
use super::shard::Shard;
use super::stats::{CallCounts, Counters, KeyStats};
use crate::api_key::ApiKey;
use crate::clock::{Clock, Instant};
use crate::endpoint::Endpoint;
use crate::job::{Job, Priority};
use crate::job_error::JobError;
use crate::key_id::KeyId;
use crate::ledger::Ledger;
use crate::quota::Quota;
use crate::scheduler_metrics::{KeyMetrics, LaneDepth};

/// A job in a queue, with what its attempts so far have cost.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) id: u64,
    pub(crate) job: Job,
    pub(crate) attempts: u32,
    pub(crate) rate_limited: u32,
    pub(crate) transient_retries: u32,
    pub(crate) outcome: OutcomeSender,
}

impl Queued {
    /// A job just submitted, never sent, its outcome to go through `outcome`.
    pub(crate) fn new(id: u64, job: Job, outcome: OutcomeSender) -> Self {
        Self {
            id,
            job,
            attempts: 0,
            rate_limited: 0,
            transient_retries: 0,
            outcome,
        }
    }
}

/// A job handed back at shutdown.
#[derive(Debug)]
pub struct ReturnedJob {
    /// The key it was queued for.
    pub key: KeyId,
    /// The job, as submitted.
    pub job: Job,
    /// Times it had been sent already (non-zero if it was waiting to be retried).
    pub attempts: u32,
}

#[derive(Debug)]
pub(crate) struct QueueState {
    lanes: [VecDeque<Queued>; 3],
    pub(crate) in_flight: usize,
    /// The in-flight limit in force: `max_in_flight`, or less while ramping up after a hold.
    pub(crate) ramp: usize,
    pub(crate) backing_off: usize,
    pub(crate) closed: bool,
    pub(crate) hand_back: bool,
    pub(crate) revoked: bool,
    /// 429s in a row, with no other answer in between: the key's storm (see
    /// [`RetryPolicy::max_rate_limited`](crate::RetryPolicy::max_rate_limited)).
    pub(crate) refused_in_a_row: u32,
    pub(crate) api_key: ApiKey,
    /// `api_key` as a sensitive header value, made once per key (and rotation), not per call.
    pub(crate) api_key_header: HeaderValue,
    /// Addressing (absolute URI and key header) of the paths submitted lately, so a repeated path
    /// is not parsed again and a call copies nothing of it.
    pub(crate) addressing: AddressingCache,
    /// The slot reserved for the next call, while the shard waits for it.
    pub(crate) pending: Option<PendingSlot>,
    /// The key's shard has let it go: closed, empty, nothing on the wire.
    pub(crate) retired: bool,
    /// The key's removal is done: let go, its journal closed, its returned jobs reported.
    pub(crate) removed: bool,
    pub(crate) calls: CallCounts,
    pub(crate) returned: Vec<ReturnedJob>,
    /// Whether refused calls count, as configured or learned.
    pub(crate) refusals: RefusalAccounting,
    /// [metrics] The lanes' depth gauges, kept as the lanes change.
    depth: LaneDepth,
    /// The latency guard in force, and how it follows the answers' latency if it does.
    pub(crate) guard: LatencyGuard,
}

/// A slot reserved in the ledger that the key's shard waits for; the job is chosen when it is due.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingSlot {
    /// When the call may go.
    pub(crate) slot: Instant,
    /// When it was reserved (a long hold makes the key ramp up again).
    pub(crate) reserved_at: Instant,
    /// `KeyQueue::reslot_epoch` at reservation: a later value means "reserve again".
    pub(crate) epoch: u64,
    /// Matches the shard's timer for this slot.
    pub(crate) timer: u64,
}

impl QueueState {
    /// The slot the shard waits for, if any.
    pub(crate) fn pending_slot(&self) -> Option<Instant> {
        self.pending.map(|p| p.slot)
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn has_jobs(&self) -> bool {
        self.lanes.iter().any(|l| !l.is_empty())
    }

    /// Jobs that go before a new job of `priority`.
    pub(crate) fn ahead_of(&self, priority: Priority) -> usize {
        self.lanes[priority.lane()..]
            .iter()
            .map(VecDeque::len)
            .sum()
    }

    pub(crate) fn push_back(&mut self, q: Queued) {
        let lane = q.job.priority.lane();
        self.depth.joined(lane); // [metrics]
        self.lanes[lane].push_back(q);
    }

    pub(crate) fn push_front(&mut self, q: Queued) {
        let lane = q.job.priority.lane();
        self.depth.joined(lane); // [metrics]
        self.lanes[lane].push_front(q);
    }

    pub(crate) fn pop_highest(&mut self) -> Option<Queued> {
        let q = self.lanes.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.depth.left(q.job.priority.lane(), 1); // [metrics]
        Some(q)
    }

    fn remove(&mut self, id: u64) -> Option<Queued> {
        for (n, lane) in self.lanes.iter_mut().enumerate() {
            if let Some(i) = lane.iter().position(|q| q.id == id) {
                self.depth.left(n, 1); // [metrics]
                return lane.remove(i);
            }
        }
        None
    }

    pub(crate) fn take_all(&mut self) -> Vec<Queued> {
        let mut all = Vec::with_capacity(self.len());
        for (n, lane) in self.lanes.iter_mut().enumerate().rev() {
            self.depth.left(n, lane.len()); // [metrics]
            all.extend(lane.drain(..));
        }
        all
    }

    /// Whether the key may retire from its shard: closed, nothing queued, nothing on the wire or
    /// waiting to be retried.
    pub(crate) fn finished(&self) -> bool {
        self.closed && !self.has_jobs() && self.in_flight == 0 && self.backing_off == 0
    }
}

#[derive(Debug)]
pub(crate) struct KeyQueue {
    pub(crate) id: KeyId,
    pub(crate) endpoint: Endpoint,
    pub(crate) quota: Quota,
    pub(crate) max_in_flight: usize,
    /// Whether its guard follows the answers' latency (see `latency_guard`).
    pub(crate) guard_follows: bool,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    state: Mutex<QueueState>,
    /// The shard that dispatches this key.
    pub(crate) shard: Arc<Shard>,
    /// The key's ledger, if the store keeps it in this process (see `slots`).
    pub(crate) ledger: Option<Arc<Mutex<Ledger>>>,
    /// Whether the key is on its shard's list of keys to serve (set by `wake`, cleared by the
    /// shard before it serves the key).
    pub(crate) scheduled: AtomicBool,
    /// Wakes submitters waiting for room.
    pub(crate) space: Notify,
    /// Notified when the key's shard lets it go (`QueueState::retired`): closed, empty, nothing on
    /// the wire ([`Scheduler::remove_key`](crate::Scheduler::remove_key) waits for it).
    pub(crate) let_go: Notify,
    /// Bumped when the slot the shard waits for must be given back and reserved again: the key
    /// was paused, or the slot's job was cancelled.
    pub(crate) reslot_epoch: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) pacer: Mutex<Pacer>,
    /// Whether `pacer` has started pacing (it never stops), readable without its lock.
    pub(crate) paced: AtomicBool,
    /// Whether a probe of refused-call accounting is out (`refusals`), readable without the lock.
    pub(crate) probing: AtomicBool,
    /// Where each call is recorded before it goes, if the key keeps a journal.
    pub(crate) journal: Option<Arc<CallJournal>>,
    /// [metrics] The key's metric handles.
    pub(crate) metrics: KeyMetrics,
    /// The scheduler's clock (a ticket tells its ETA from now, or as a wall-clock time).
    pub(crate) clock: Arc<dyn Clock>,
    /// Asked for a new key on a 401 ([`KeyConfig::on_unauthorized`]).
    pub(crate) key_refresh: Option<Arc<dyn crate::key_provider::KeyRefresh>>,
}

impl KeyQueue {
    pub(crate) fn new(
        config: &KeyConfig,
        shard: Arc<Shard>,
        ledger: Option<Arc<Mutex<Ledger>>>,
        journal: Option<Arc<CallJournal>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // [metrics] Labelled by the user's label, else the key's fingerprint.
        let label = match &config.metrics_label {
            Some(label) => label.clone(),
            None => config.api_key.fingerprint().to_string(),
        };
        let metrics = KeyMetrics::new(&label);
        Self {
            id: config.id.clone(),
            endpoint: config.endpoint.clone(),
            quota: config.quota.clone(),
            max_in_flight: config.max_in_flight,
            guard_follows: config.guard_from_latency,
            capacity: config.queue_capacity,
            overflow: config.overflow,
            state: Mutex::new(QueueState {
                lanes: Default::default(),
                in_flight: 0,
                ramp: config.max_in_flight,
                backing_off: 0,
                closed: false,
                hand_back: false,
                revoked: false,
                refused_in_a_row: 0,
                api_key: config.api_key.clone(),
                api_key_header: config.api_key.header_value(),
                addressing: AddressingCache::default(),
                pending: None,
                retired: false,
                removed: false,
                calls: CallCounts::default(),
                returned: Vec::new(),
                refusals: RefusalAccounting::new(config.refused_calls),
                depth: metrics.depth.clone(),
                guard: latency_guard_of(config),
            }),
            shard,
            ledger,
            scheduled: AtomicBool::new(false),
            space: Notify::new(),
            let_go: Notify::new(),
            reslot_epoch: AtomicU64::new(0),
            counters: Counters::default(),
            pacer: Mutex::new(Pacer::default()),
            paced: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            journal,
            metrics,
            clock,
            key_refresh: config.key_refresh.clone(),
        }
    }

    /// Swaps the key's API key: queued jobs go out with the new one; a key revoked by a 401 is
    /// usable again.
    pub(crate) fn rotate(&self, api_key: ApiKey) {
        let mut st = self.lock();
        tracing::info!(key = %self.id, from = %st.api_key.fingerprint(), to = %api_key.fingerprint(), "key rotated");
        st.api_key_header = api_key.header_value();
        st.addressing.clear();
        st.api_key = api_key;
        st.revoked = false;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key's in-process ledger, locked; `None` if its store keeps it elsewhere.
    pub(crate) fn lock_ledger(&self) -> Option<MutexGuard<'_, Ledger>> {
        self.ledger
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the key's shard to serve it: reserve and send if there are jobs and room, drop a slot
    /// that must be reserved again, or let the key go once it is closed and done.
    pub(crate) fn wake(self: &Arc<Self>) {
        // A key already listed (the usual case while it is busy) costs a load, not a swap: what
        // changed before this call is seen by the shard, which clears the flag before it locks
        // the queue to serve the key.
        if self.scheduled.load(Ordering::Acquire) {
            return;
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.shard.schedule(Arc::clone(self));
        }
    }

    /// The call in `slot` ended with `verdict`: if it was the probe of refused-call accounting,
    /// the key learns from it (see [`super::refusals`]). Costs an atomic load otherwise.
    pub(crate) fn settle_probe(&self, slot: Instant, verdict: ProbeVerdict, clock: &dyn Clock) {
        if !self.probing.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        let now = clock.now();
        let mut ledger = self.lock_ledger();
        st.refusals
            .settle(slot, verdict, ledger.as_deref_mut(), now);
        self.probing.store(st.refusals.probing(), Ordering::Release);
    }

    /// Makes the shard drop the slot it waits for and reserve again.
    pub(crate) fn reslot(self: &Arc<Self>) {
        self.reslot_epoch.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn cancel(self: &Arc<Self>, id: u64) -> bool {
        let removed = {
            let mut st = self.lock();
            let removed = st.remove(id);
            if removed.is_some() && !st.has_jobs() && st.pending.is_some() {
                // The held slot has no job left: give it back now.
                drop(st);
                self.reslot();
            }
            removed
        };
        match removed {
            Some(q) => {
                Counters::bump(&self.counters.cancelled);
                Counters::bump(&self.counters.failed);
                q.outcome.send(Err(JobError::Cancelled));
                self.space.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes the key: no new jobs; what is queued is still sent (unless handed back), and its
    /// shard lets it go once it is empty and nothing of it is on the wire.
    pub(crate) fn close(self: &Arc<Self>) {
        self.lock().closed = true;
        self.wake();
        self.space.notify_waiters();
    }

    /// Hands back every queued job (shutdown, removal) and every job put back later (a 429, a
    /// retry), and drops the slot the shard waits for.
    pub(crate) fn hand_back_queued(self: &Arc<Self>) {
        let mut st = self.lock();
        st.hand_back = true;
        for job in st.take_all() {
            self.hand_back(&mut st, job);
        }
        drop(st);
        // Before the wake below: the shard then sees it at its next turn.
        self.shard.handing_back.store(true, Ordering::Release);
        self.reslot();
    }

    /// Marks the key's removal done ([`Scheduler::remove_key`](crate::Scheduler::remove_key)):
    /// those waiting in [`removed`](Self::removed) go on.
    pub(crate) fn mark_removed(&self) {
        self.lock().removed = true;
        self.let_go.notify_waiters();
    }

    /// Waits until the key's removal is done (see [`mark_removed`](Self::mark_removed)).
    pub(crate) async fn removed(&self) {
        self.wait_until(|st| st.removed).await;
    }

    /// Waits until the key's shard has let it go (see [`close`](Self::close)).
    pub(crate) async fn let_go(&self) {
        self.wait_until(|st| st.retired).await;
    }

    /// Waits until `done` holds of the key's state, looked at each time `let_go` is notified.
    async fn wait_until(&self, done: impl Fn(&QueueState) -> bool) {
        loop {
            let notified = self.let_go.notified();
            tokio::pin!(notified);
            // Registered before the look, so a change between the two is not missed.
            notified.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// After a panic in the key's shard: the key is closed (no new jobs), its queued jobs are
    /// returned for the caller to fail, the slot it held dropped, and it counts as let go (its
    /// calls on the wire were the shard's, which fails them), so shutdown and removal do not
    /// wait for it.
    pub(crate) fn quarantine(&self) -> Vec<Queued> {
        let mut st = self.lock();
        st.closed = true;
        st.pending = None;
        let jobs = st.take_all();
        let newly = !std::mem::replace(&mut st.retired, true);
        drop(st);
        if newly {
            self.shard.retire();
        }
        self.let_go.notify_waiters();
        self.space.notify_waiters();
        jobs
    }

    /// Hands a job back (shutdown): its ticket resolves to `ShutDown`, the job goes to the report.
    pub(crate) fn hand_back(&self, st: &mut QueueState, q: Queued) {
        Counters::bump(&self.counters.handed_back);
        Counters::bump(&self.counters.failed);
        st.returned.push(ReturnedJob {
            key: self.id.clone(),
            job: q.job,
            attempts: q.attempts,
        });
        q.outcome.send(Err(JobError::ShutDown));
    }

    /// A call sent at `sent_at` was answered at `now`: a key whose guard follows the latency
    /// learns from it, and gives its ledger (if in this process) the new guard when it changes.
    pub(crate) fn observe_latency(&self, sent_at: Instant, now: Instant) {
        let mut st = self.lock();
        if let Some(guard) = st.guard.observe(now.saturating_duration_since(sent_at)) {
            if let Some(mut ledger) = self.lock_ledger() {
                ledger.set_guard(guard);
            }
        }
    }

    pub(crate) fn stats(&self) -> KeyStats {
        let paced = (self.pacer.lock().unwrap_or_else(|p| p.into_inner())).spacing(&self.quota);
        let st = self.lock();
        let mut stats =
            self.counters
                .snapshot(st.calls, st.len(), st.in_flight, st.refusals.rule());
        stats.guard = st.guard.current();
        stats.latency_spread = st.guard.spread();
        stats.paced = paced;
        stats
    }
}

/// The guard a key starts with: its ledger's, following the latency if configured so (up to a
/// tenth of the quota's shortest window).
fn latency_guard_of(config: &KeyConfig) -> LatencyGuard {
    let guard = config.ledger.guard_for(&config.quota);
    if !config.guard_from_latency {
        return LatencyGuard::fixed(guard);
    }
    let ceiling = config
        .quota
        .limits()
        .first()
        .map_or(Duration::ZERO, |l| l.window() / 10);
    LatencyGuard::following(guard, ceiling)
}
