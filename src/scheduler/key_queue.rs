//! One key as its shard, its calls and its tickets share it: its configuration, its state
//! ([`KeyState`], behind one lock, short and never held across an `.await`) and the handles that
//! reach it (the shard's list of keys to serve, its journal, its metrics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::call_journal::CallJournal;
use super::config::{KeyConfig, Overflow};
use super::counter_learning::{read_headers, Switch};
use super::key_state::{KeyStart, KeyState, Queued};
use super::latency_guard::LatencyGuard;
use super::outcome_slab::OutcomeSender;
use super::refusals::{ProbeVerdict, RefusedCalls};
use super::shard_link;
use super::stats::{Counters, KeyStats};
use crate::api_key::ApiKey;
use crate::clock::{Clock, Instant};
use crate::endpoint::Endpoint;
use crate::job_error::JobError;
use crate::key_id::KeyId;
use crate::ledger::{Ledger, WindowSemantics};
use crate::quota::Quota;
use crate::retry::ServerWindow;
use crate::scheduler_metrics::KeyMetrics;

/// The link to a key's shard (see [`shard_link`]).
pub(crate) type Shard = shard_link::Shard<KeyQueue>;
/// Work for a shard of keys.
pub(crate) type Ready = shard_link::Ready<KeyQueue>;
/// A call for a shard to start.
pub(crate) type DueCall = shard_link::DueCall<KeyQueue>;

#[derive(Debug)]
pub(crate) struct KeyQueue {
    pub(crate) id: KeyId,
    pub(crate) endpoint: Endpoint,
    pub(crate) quota: Quota,
    /// Whether its guard follows the answers' latency (see `latency_guard`).
    pub(crate) guard_follows: bool,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    state: Mutex<KeyState>,
    /// The shard that dispatches this key.
    pub(crate) shard: Arc<Shard>,
    /// The key's ledger, if the store keeps it in this process (see `slots`).
    pub(crate) ledger: Option<Arc<Mutex<Ledger>>>,
    /// Whether the key is on its shard's list of keys to serve (set by `wake`, cleared by the
    /// shard before it serves the key).
    pub(crate) scheduled: AtomicBool,
    /// Wakes submitters waiting for room.
    pub(crate) space: Notify,
    /// Notified when the key's shard lets it go ([`Lifecycle::Retired`](super::key_state::Lifecycle::Retired)): closed, empty, nothing
    /// on the wire ([`Scheduler::remove_key`](crate::Scheduler::remove_key) waits for it).
    pub(crate) let_go: Notify,
    pub(crate) counters: Counters,
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
            guard_follows: config.guard_from_latency,
            capacity: config.queue_capacity,
            overflow: config.overflow,
            state: Mutex::new(KeyState::new(KeyStart {
                api_key: config.api_key.clone(),
                max_in_flight: config.max_in_flight,
                capacity: config.queue_capacity,
                endpoint: config.endpoint.clone(),
                refused_calls: config.refused_calls,
                guard: latency_guard_of(config),
                depth: metrics.depth.clone(),
                quota: config.quota.clone(),
                semantics: config.ledger.semantics,
                learn_semantics: config.learn_semantics,
            })),
            shard,
            ledger,
            scheduled: AtomicBool::new(false),
            space: Notify::new(),
            let_go: Notify::new(),
            counters: Counters::default(),
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
        tracing::info!(key = %self.id, from = %st.api_key().fingerprint(), to = %api_key.fingerprint(), "key rotated");
        st.rotate(api_key);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
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
    /// the key learns from it (see [`super::refusals`]).
    pub(crate) fn settle_probe(&self, st: &mut KeyState, slot: Instant, verdict: ProbeVerdict) {
        if !st.probing() {
            return;
        }
        let now = self.clock.now();
        let mut ledger = self.lock_ledger();
        match st.settle_probe(slot, verdict, ledger.as_deref_mut(), now) {
            Some(RefusedCalls::DoNotCount) => {
                tracing::info!(key = %self.id, "a probe was accepted: refused calls do not count on this server");
            }
            Some(RefusedCalls::Count) => {
                tracing::info!(key = %self.id, "probes were refused: refused calls count on this server");
            }
            _ => {}
        }
    }

    /// The server's rate-limit `window` on the answer to the call in `slot`, sent at `sent_at`:
    /// if it shows a sliding-window counter (see `counter_learning`), the key plans its limits as
    /// one from now on; if it shows the learned counter wrong, as window logs again. Only for a
    /// key whose ledger is in this process.
    pub(crate) fn learn_from_headers(
        self: &Arc<Self>,
        window: &ServerWindow,
        slot: Instant,
        sent_at: Instant,
    ) {
        let mut st = self.lock();
        if !st.semantics_may_switch() {
            return;
        }
        let Some(mut ledger) = self.lock_ledger() else {
            return;
        };
        let guard = st.guard().current();
        let Some(reading) = read_headers(&self.quota, window, &ledger, slot, sent_at, guard) else {
            return;
        };
        let Some(switch) = st.semantics_on_headers(&reading) else {
            return;
        };
        if !switch_ledger(&mut ledger, switch) {
            return;
        }
        drop(ledger);
        st.switched(switch, self.clock.now());
        drop(st);
        match switch {
            Switch::ToCounter(_) => {
                tracing::info!(key = %self.id, "the server's rate-limit headers show a sliding-window counter: planning against its estimate")
            }
            Switch::ToLog(_) => {
                tracing::warn!(key = %self.id, "the server's rate-limit headers count more than the sliding-window counter learned: planning as sliding windows again")
            }
        }
        self.wake();
    }

    /// A call in `slot`, sent at `sent_at`, was refused: if a sliding-window counter of the
    /// key's calls would have refused it where the window log had room (see `counter_learning`),
    /// and this is the second such refusal, the key plans its limits as one from now on; if the
    /// learned counter sent it where the log would not have, as window logs again. True if it
    /// switched now. Only for a key whose ledger is in this process; called while the refused
    /// call is still recorded.
    pub(crate) fn learn_from_refusal(
        &self,
        st: &mut KeyState,
        slot: Instant,
        sent_at: Instant,
    ) -> bool {
        if !st.semantics_may_switch() {
            return false;
        }
        let Some(mut ledger) = self.lock_ledger() else {
            return false;
        };
        let Some(switch) = st.semantics_on_refusal(&ledger, slot, sent_at) else {
            return false;
        };
        if !switch_ledger(&mut ledger, switch) {
            return false;
        }
        drop(ledger);
        st.switched(switch, self.clock.now());
        match switch {
            Switch::ToCounter(_) => {
                tracing::info!(key = %self.id, "a refusal fits a sliding-window counter: planning against its estimate")
            }
            Switch::ToLog(_) => {
                tracing::warn!(key = %self.id, "a refusal fits a sliding log, not the sliding-window counter learned: planning as sliding windows again")
            }
        }
        true
    }

    pub(crate) fn cancel(self: &Arc<Self>, id: u64) -> bool {
        let (removed, reslot) = self.lock().cancel(id);
        if reslot {
            // The held slot has no job left: give it back now.
            self.wake();
        }
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
        self.lock().close();
        self.wake();
        self.space.notify_waiters();
    }

    /// Hands back every queued job (shutdown, removal) and every job put back later (a 429, a
    /// retry), and drops the slot the shard waits for.
    pub(crate) fn hand_back_queued(self: &Arc<Self>) {
        let mut st = self.lock();
        for job in st.start_handing_back() {
            self.hand_back(&mut st, job);
        }
        drop(st);
        // Before the wake below: the shard then sees it at its next turn.
        self.shard.handing_back.store(true, Ordering::Release);
        self.wake();
    }

    /// Marks the key's removal done ([`Scheduler::remove_key`](crate::Scheduler::remove_key)):
    /// those waiting in [`removed`](Self::removed) go on.
    pub(crate) fn mark_removed(&self) {
        self.lock().mark_removal_over();
        self.let_go.notify_waiters();
    }

    /// Waits until the key's removal is done (see [`mark_removed`](Self::mark_removed)).
    pub(crate) async fn removed(&self) {
        self.wait_until(KeyState::removal_over).await;
    }

    /// Waits until the key's shard has let it go (see [`close`](Self::close)).
    pub(crate) async fn let_go(&self) {
        self.wait_until(KeyState::is_retired).await;
    }

    /// Waits until `done` holds of the key's state, looked at each time `let_go` is notified.
    async fn wait_until(&self, done: impl Fn(&KeyState) -> bool) {
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
        let (jobs, newly) = self.lock().quarantine();
        if newly {
            self.shard.retire();
        }
        self.let_go.notify_waiters();
        self.space.notify_waiters();
        jobs
    }

    /// Hands a job back (shutdown): its ticket resolves to `ShutDown`, the job goes to the report.
    pub(crate) fn hand_back(&self, st: &mut KeyState, q: Queued) {
        let outcome = st.hand_back(&self.id, q);
        self.handed_back(outcome);
    }

    /// A job was handed back (its record kept in the key's state): its ticket resolves to
    /// `ShutDown`.
    pub(crate) fn handed_back(&self, outcome: OutcomeSender) {
        Counters::bump(&self.counters.handed_back);
        Counters::bump(&self.counters.failed);
        outcome.send(Err(JobError::ShutDown));
    }

    /// A call sent at `sent_at` was answered at `now`: a key whose guard follows the latency
    /// learns from it, and gives its ledger (if in this process) the new guard when it changes.
    pub(crate) fn observe_latency(&self, st: &mut KeyState, sent_at: Instant, now: Instant) {
        if let Some(guard) = st.observe_latency(now.saturating_duration_since(sent_at)) {
            if let Some(mut ledger) = self.lock_ledger() {
                ledger.set_guard(guard);
            }
        }
    }

    pub(crate) fn stats(&self) -> KeyStats {
        let st = self.lock();
        let mut stats =
            self.counters
                .snapshot(st.calls(), st.len(), st.in_flight(), st.refused_calls());
        stats.guard = st.guard().current();
        stats.latency_spread = st.guard().spread();
        stats.paced = st.pace_spacing(&self.quota);
        stats.server_limits = st.server_limits();
        stats.learned_semantics = st.learned_semantics();
        stats.semantics = match st.current_semantics() {
            // (A ledger in a shared store plans a counter as sliding windows.)
            WindowSemantics::SlidingWindowCounter if self.ledger.is_none() => {
                WindowSemantics::Sliding
            }
            semantics => semantics,
        };
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

/// Makes `ledger` plan as `switch` says; true if it changed.
fn switch_ledger(ledger: &mut Ledger, switch: Switch) -> bool {
    match switch {
        Switch::ToCounter(_) => ledger.learn_counter_semantics(),
        Switch::ToLog(_) => ledger.learn_log_semantics(),
    }
}
