//! One key's state and the decisions made from it: a synchronous state machine with no I/O.
//!
//! A key's lanes, its lifecycle, its calls on the wire and waiting out a backoff, the slot it holds,
//! what it learns about refused calls, its pacing and its latency guard are all here, owned by one
//! [`KeyState`] behind the key's one lock. Events go in (a job submitted, a slot given, a call
//! answered, the key closed) and decisions come out ([`Admit`], [`Serve`]): the key's shard (the
//! driver, [`super::shard`]) carries them out — it sets the timers, asks the ledger or the store
//! for slots, puts calls on the wire and delivers outcomes. Nothing here waits, logs, or knows its
//! shard, so every decision is tested below without a runtime.
//!
//! Serving a key is one path whether its ledger is in this process or in a store elsewhere:
//! [`KeyState::next`] says [`Serve::NeedSlot`], the driver obtains the slot (synchronously from the
//! in-process ledger through [`KeyState::reserve_in`], or from the store) and gives it back
//! with [`KeyState::slot_given`], which holds it or binds the best job to it. A store elsewhere
//! answers later: the driver marks the key as waiting for it ([`KeyState::store_asked`]), and
//! until the answer comes ([`KeyState::slot_given`], [`KeyState::slot_failed`],
//! [`KeyState::store_refunded`]) the key asks for nothing more and does not retire: at most one
//! request of the store per key is out, so its slots come in the order they were asked for.
//!
//! An answer may leave something to wait for before the key reserves again (what it tells the
//! store elsewhere, a refresh of the key: see `settle`): the key counts those out
//! ([`KeyState::settle_started`], [`KeyState::settle_done`]) and asks for no slot, nor retires,
//! until none is.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::addressing::{Addressing, AddressingCache};
use super::counter_learning::{HeaderReading, LearnedSemantics, SemanticsLearning, Switch};
use super::latency_guard::LatencyGuard;
use super::outcome_slab::OutcomeSender;
use super::pacing::Pacer;
use super::refusals::{ProbeVerdict, RefusalAccounting, RefusedCalls};
use super::server_limits::ServerLimitsSeen;
use super::stats::CallCounts;
use crate::api_key::ApiKey;
use crate::clock::Instant;
use crate::endpoint::Endpoint;
use crate::job::{Job, Priority};
use crate::key_id::KeyId;
use crate::ledger::{Ledger, SharedBlock, WindowSemantics};
use crate::quota::Quota;
use crate::scheduler_metrics::LaneDepth;

/// After the key was held back at least this long (a full window, a 429 pause), calls ramp up
/// again: one on the wire, then twice as many after each success, up to `max_in_flight`. If the
/// server still disagrees at the boundary, one or two calls are refused instead of a whole burst;
/// the cost is a few round trips per hold.
pub(crate) const RAMP_AFTER_HOLD: Duration = Duration::from_secs(1);

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

/// Where a key is in its life. It only moves forward: `Open` → `Draining` → (`HandingBack`) →
/// `Retired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lifecycle {
    /// Takes jobs.
    Open,
    /// Closed (shutdown, removal): takes no job; what is queued is still sent.
    Draining,
    /// Closed, and every job queued or put back later is handed back rather than sent.
    HandingBack,
    /// Let go by its shard: closed, nothing queued, on the wire or backing off.
    Retired,
}

/// The slot reserved for the key's next call, held while its shard waits for it; the job is
/// chosen when it is due.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldSlot {
    /// When the call may go.
    pub(crate) slot: Instant,
    /// When it was reserved (a long hold makes the key ramp up again).
    pub(crate) reserved_at: Instant,
    /// The key's epoch at reservation: a later one means "give it back and reserve again".
    epoch: u64,
    /// Matches the shard's timer for this slot.
    timer: u64,
}

/// What serving the key does next: decided under the key's lock, done by the driver.
// The job moves once or twice per call; a box would cost an allocation per call instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Serve {
    /// Nothing to do until the key is woken (a job, an answer) or its slot's timer fires.
    Idle,
    /// The key has just been let go (closed, nothing left): its shard counts it out.
    Retired,
    /// The key wants its next slot, reserved at `at` (give it with [`KeyState::slot_given`]).
    NeedSlot { at: Instant, epoch: u64 },
    /// A slot was held for later: set a timer for it and tell the key its id
    /// ([`KeyState::timer_set`]).
    WakeAt(Instant),
    /// Send `job` addressed `to` in `slot`, at `sent_at`; then serve the key again if `more` (it
    /// had more jobs when this one was taken).
    Send {
        job: Queued,
        to: Arc<Addressing>,
        slot: Instant,
        sent_at: Instant,
        more: bool,
    },
    /// Fail `job` (its path does not form a URI) and give `slot` back.
    Invalid {
        job: Queued,
        slot: Instant,
        reason: String,
    },
    /// Give `slot` back: no job takes it.
    Refund(Instant),
}

/// What [`KeyState::admit`] decided about a job submitted.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Queue it ([`KeyState::queue`]).
    Queue,
    /// The key is idle (nothing queued, no slot held, room on the wire, nothing being learned):
    /// the job may go at once, addressed `to`, if its slot is due
    /// ([`KeyState::reserve_due_in`], then [`KeyState::started_at_submit`]); else queue it.
    StartIfDue(Arc<Addressing>),
    /// Its path does not form a URI with the key's endpoint.
    Invalid(String),
    /// The key takes no more jobs.
    Closed,
    /// The key was answered 401 and not rotated since: the job fails at once; the key's
    /// fingerprint.
    Revoked(String),
    /// The queue is at its capacity.
    Full,
}

/// One key's state (see the module's notes).
#[derive(Debug)]
pub(crate) struct KeyState {
    lanes: [VecDeque<Queued>; 3],
    /// [metrics] The lanes' depth gauges, kept as the lanes change.
    depth: LaneDepth,
    lifecycle: Lifecycle,
    /// The key's removal is over ([`Scheduler::remove_key`](crate::Scheduler::remove_key) done, or
    /// dropped): a fact of the removal, not of the key's life (a removal dropped early marks it
    /// before the key retires).
    removal_over: bool,
    /// Answered 401 with its current API key: its jobs fail at once until it rotates. Orthogonal to
    /// the lifecycle (a revoked key may be open or closing).
    revoked: bool,
    in_flight: usize,
    /// The in-flight limit in force: `max_in_flight`, or less while ramping up after a hold.
    ramp: usize,
    max_in_flight: usize,
    backing_off: usize,
    capacity: usize,
    /// Where its calls go (with the job's path).
    endpoint: Endpoint,
    /// 429s in a row, with no other answer in between: the key's storm (see
    /// [`RetryPolicy::max_rate_limited`](crate::RetryPolicy::max_rate_limited)).
    refused_in_a_row: u32,
    api_key: ApiKey,
    /// `api_key` as a sensitive header value, made once per key (and rotation), not per call.
    api_key_header: HeaderValue,
    /// Addressing (absolute URI and key header) of the paths submitted lately, so a repeated path
    /// is not parsed again and a call copies nothing of it.
    addressing: AddressingCache,
    /// The slot reserved for the next call, while the shard waits for it.
    held: Option<HeldSlot>,
    /// Bumped when the held slot must be given back and reserved again (the key was paused, the
    /// slot's job was cancelled, the key hands its jobs back).
    epoch: u64,
    /// A slot is being reserved in, or given back to, a store elsewhere: the key waits for the
    /// answer before it asks again (never set with a ledger in this process).
    awaiting_store: bool,
    /// Answers whose writes to the store (or the key's refresh) are still out: until none is, the
    /// key reserves nothing and does not retire. At most one per call on the wire.
    settling: usize,
    /// A refresh of the key's API key is out (after a 401): a later 401 waits for its answer
    /// rather than ask again.
    refreshing: bool,
    calls: CallCounts,
    returned: Vec<ReturnedJob>,
    /// Whether refused calls count, as configured or learned.
    refusals: RefusalAccounting,
    /// Even spacing after the server refused what the quota allows (see `pacing`).
    pacer: Pacer,
    /// How the key reads its limits: as configured, or learned (see `counter_learning`).
    semantics: SemanticsLearning,
    /// The latency guard in force, and how it follows the answers' latency if it does.
    guard: LatencyGuard,
    /// What the server's refusals say of its limits, if they are not the configured ones.
    server_limits: ServerLimitsSeen,
}

/// How a key starts (from its [`KeyConfig`](super::KeyConfig)).
pub(crate) struct KeyStart {
    pub(crate) api_key: ApiKey,
    pub(crate) max_in_flight: usize,
    pub(crate) capacity: usize,
    pub(crate) endpoint: Endpoint,
    pub(crate) refused_calls: RefusedCalls,
    pub(crate) guard: LatencyGuard,
    pub(crate) depth: LaneDepth,
    /// The configured quota, whose windows the server's answers are held against.
    pub(crate) quota: Quota,
    /// How the key's ledger was configured to read its limits.
    pub(crate) semantics: WindowSemantics,
    /// Whether it may learn another reading from the server's answers.
    pub(crate) learn_semantics: bool,
}

impl KeyState {
    pub(crate) fn new(start: KeyStart) -> Self {
        Self {
            lanes: Default::default(),
            depth: start.depth,
            lifecycle: Lifecycle::Open,
            removal_over: false,
            revoked: false,
            in_flight: 0,
            ramp: start.max_in_flight,
            max_in_flight: start.max_in_flight,
            backing_off: 0,
            capacity: start.capacity,
            endpoint: start.endpoint,
            refused_in_a_row: 0,
            api_key_header: start.api_key.header_value(),
            api_key: start.api_key,
            addressing: AddressingCache::default(),
            held: None,
            epoch: 0,
            awaiting_store: false,
            settling: 0,
            refreshing: false,
            calls: CallCounts::default(),
            returned: Vec::new(),
            refusals: RefusalAccounting::new(start.refused_calls),
            pacer: Pacer::default(),
            semantics: SemanticsLearning::new(start.semantics, start.learn_semantics),
            guard: start.guard,
            server_limits: ServerLimitsSeen::new(&start.quota),
        }
    }

    // ---- Lanes ----

    /// Jobs queued.
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

    fn push_back(&mut self, q: Queued) {
        let lane = q.job.priority.lane();
        self.depth.joined(lane); // [metrics]
        self.lanes[lane].push_back(q);
    }

    fn push_front(&mut self, q: Queued) {
        let lane = q.job.priority.lane();
        self.depth.joined(lane); // [metrics]
        self.lanes[lane].push_front(q);
    }

    /// Takes the highest-priority job, the oldest of its lane.
    pub(crate) fn pop_highest(&mut self) -> Option<Queued> {
        let q = self.lanes.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.depth.left(q.job.priority.lane(), 1); // [metrics]
        Some(q)
    }

    /// Takes every queued job, highest priority first.
    pub(crate) fn take_all(&mut self) -> Vec<Queued> {
        let mut all = Vec::with_capacity(self.len());
        for (n, lane) in self.lanes.iter_mut().enumerate().rev() {
            self.depth.left(n, lane.len()); // [metrics]
            all.extend(lane.drain(..));
        }
        all
    }

    /// Takes job `id` out of its lane (cancelled). A held slot left with no job is to be given
    /// back: true in `.1` (the key is to be served).
    pub(crate) fn cancel(&mut self, id: u64) -> (Option<Queued>, bool) {
        let mut found = None;
        for (n, lane) in self.lanes.iter_mut().enumerate() {
            if let Some(i) = lane.iter().position(|q| q.id == id) {
                self.depth.left(n, 1); // [metrics]
                found = lane.remove(i);
                break;
            }
        }
        let reslot = found.is_some() && !self.has_jobs() && self.held.is_some();
        if reslot {
            self.reslot();
        }
        (found, reslot)
    }

    // ---- Lifecycle ----

    #[cfg(test)]
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// Whether the key takes no more jobs.
    pub(crate) fn is_closed(&self) -> bool {
        self.lifecycle > Lifecycle::Open
    }

    /// Whether jobs put back (a 429, a retry) are handed back rather than queued.
    pub(crate) fn hands_back(&self) -> bool {
        self.lifecycle == Lifecycle::HandingBack
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.lifecycle == Lifecycle::Retired
    }

    /// Closes the key: no new jobs; what is queued is still sent.
    pub(crate) fn close(&mut self) {
        self.lifecycle = self.lifecycle.max(Lifecycle::Draining);
    }

    /// Starts handing back (shutdown, removal): returns every queued job to be handed back, and
    /// drops the slot held. A key already let go stays so.
    pub(crate) fn start_handing_back(&mut self) -> Vec<Queued> {
        self.lifecycle = self.lifecycle.max(Lifecycle::HandingBack);
        self.reslot();
        self.take_all()
    }

    /// After a panic in the key's shard: closed, its queued jobs returned to be failed, its slot
    /// dropped, let go (its calls were the shard's). True in `.1` if it was not let go before.
    pub(crate) fn quarantine(&mut self) -> (Vec<Queued>, bool) {
        let newly = self.lifecycle != Lifecycle::Retired;
        self.lifecycle = Lifecycle::Retired;
        self.held = None;
        self.awaiting_store = false;
        self.settling = 0;
        self.refreshing = false;
        (self.take_all(), newly)
    }

    /// Whether the key's removal is over.
    pub(crate) fn removal_over(&self) -> bool {
        self.removal_over
    }

    pub(crate) fn mark_removal_over(&mut self) {
        self.removal_over = true;
    }

    /// Whether the key may retire: closed, nothing queued, on the wire, backing off, asked of a
    /// store elsewhere or settling an answer.
    fn finished(&self) -> bool {
        self.is_closed()
            && !self.has_jobs()
            && self.in_flight == 0
            && self.backing_off == 0
            && !self.awaiting_store
            && self.settling == 0
    }

    /// Records a job handed back; its outcome (`ShutDown`) is the caller's to send.
    pub(crate) fn hand_back(&mut self, key: &KeyId, job: Queued) -> OutcomeSender {
        self.returned.push(ReturnedJob {
            key: key.clone(),
            job: job.job,
            attempts: job.attempts,
        });
        job.outcome
    }

    /// The jobs handed back so far, taken for the report.
    pub(crate) fn take_returned(&mut self) -> Vec<ReturnedJob> {
        std::mem::take(&mut self.returned)
    }

    // ---- The API key ----

    pub(crate) fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    /// The key's header value: a 401 for a call sent with another one is for a key rotated since.
    pub(crate) fn api_key_header(&self) -> &HeaderValue {
        &self.api_key_header
    }

    /// Swaps the API key: queued jobs go out with the new one; a revoked key is usable again.
    pub(crate) fn rotate(&mut self, api_key: ApiKey) {
        self.api_key_header = api_key.header_value();
        self.addressing.clear();
        self.api_key = api_key;
        self.revoked = false;
    }

    /// 401: the key is revoked until it rotates. Returns the queued jobs, to fail at once, and
    /// gives back the held slot.
    pub(crate) fn revoke(&mut self) -> Vec<Queued> {
        self.revoked = true;
        if self.held.is_some() {
            self.reslot();
        }
        self.take_all()
    }

    // ---- Submitting ----

    /// A job for `path` is submitted (see [`Admit`]).
    pub(crate) fn admit(&mut self, path: &str) -> Admit {
        let idle = !self.has_jobs()
            && self.held.is_none()
            && !self.awaiting_store
            && self.settling == 0
            && self.in_flight < self.ramp
            && self.refusals.is_plain();
        // Only an idle key takes the addressing here (taken here otherwise, its reference count
        // would be bumped on this thread and dropped on the shard's: a cache line passed between
        // cores per call); for the others the path is only checked.
        let to = match self
            .addressing
            .addressing_for(&self.endpoint, &self.api_key_header, path)
        {
            Ok(to) => idle.then(|| Arc::clone(to)),
            Err(reason) => return Admit::Invalid(reason),
        };
        if self.is_closed() {
            return Admit::Closed;
        }
        if self.revoked {
            self.calls.submitted += 1;
            return Admit::Revoked(self.api_key.fingerprint().to_string());
        }
        if self.len() >= self.capacity {
            return Admit::Full;
        }
        match to {
            Some(to) => Admit::StartIfDue(to),
            None => Admit::Queue,
        }
    }

    /// Queues an admitted job. True if the key is to be served now (it neither waits for a held
    /// slot, a store's answer or an answer to settle nor has all its calls on the wire: then the
    /// slot or an answer serves it).
    pub(crate) fn queue(&mut self, job: Queued) -> bool {
        self.push_back(job);
        self.calls.submitted += 1;
        self.held.is_none()
            && !self.awaiting_store
            && self.settling == 0
            && self.in_flight < self.ramp
    }

    /// Reserves a slot at `now` in the key's in-process `ledger` only if it is due now (`Ok`);
    /// otherwise commits nothing and gives the earliest slot (`Err`). For a key that [`Admit`]
    /// found idle.
    pub(crate) fn reserve_due_in(
        &mut self,
        ledger: &mut Ledger,
        now: Instant,
    ) -> Result<Instant, Instant> {
        ledger.reserve_if_due(now)
    }

    /// The idle key's job took its due slot at submission: it counts on the wire at once.
    pub(crate) fn started_at_submit(&mut self) {
        self.in_flight += 1;
        self.calls.submitted += 1;
        self.calls.sent += 1;
    }

    /// The slot held, if any (the next queued job's).
    pub(crate) fn held_slot(&self) -> Option<Instant> {
        self.held.map(|h| h.slot)
    }

    // ---- Serving ----

    /// Makes the key give back the slot it holds (or is being given) and reserve again.
    pub(crate) fn reslot(&mut self) {
        self.epoch += 1;
    }

    /// Whether a pause raised elsewhere in the fleet stops the slot held (it would go into the
    /// pause, and was reserved before the pause was known; see [`SharedBlock::stops`]): if so the
    /// key gives the slot back and reserves again, its jobs kept in their order.
    pub(crate) fn stop_held_for(&mut self, block: SharedBlock, now: Instant) -> bool {
        let Some(held) = self.held else {
            return false;
        };
        if !block.stops(held.slot, held.reserved_at, now) {
            return false;
        }
        self.reslot();
        true
    }

    /// What serving the key does now. `timer` is the id of the key's slot timer if it fired;
    /// `now` gives the time to reserve at, `sent_now` the time a held slot's call goes (each read
    /// only if needed).
    pub(crate) fn next(
        &mut self,
        timer: Option<u64>,
        now: impl FnOnce() -> Instant,
        sent_now: impl FnOnce() -> Instant,
    ) -> Serve {
        let Some(held) = self.held else {
            return self.want_slot(now);
        };
        let due = timer == Some(held.timer);
        let stale = held.epoch != self.epoch;
        if !due && !stale {
            return Serve::Idle;
        }
        self.held = None;
        // Sent when the timer fired: now, not when the slot was reserved.
        self.bind(held, due && !stale, sent_now)
    }

    /// After a call went, or a slot was given back or failed: the next step without a held slot
    /// (none while a store elsewhere is still to answer the key, or an answer to settle).
    pub(crate) fn want_slot(&mut self, now: impl FnOnce() -> Instant) -> Serve {
        if self.awaiting_store || self.settling > 0 {
            return Serve::Idle;
        }
        if self.finished() {
            if self.lifecycle == Lifecycle::Retired {
                return Serve::Idle;
            }
            self.lifecycle = Lifecycle::Retired;
            return Serve::Retired;
        }
        if !self.has_jobs() || self.in_flight >= self.ramp {
            return Serve::Idle;
        }
        Serve::NeedSlot {
            at: now(),
            epoch: self.epoch,
        }
    }

    /// Reserves the key's next slot at `at` in its in-process `ledger`; true in `.1` if it is a
    /// probe of refused-call accounting (it goes alone: the in-flight limit drops to one until it
    /// is answered).
    pub(crate) fn reserve_in(
        &mut self,
        ledger: &mut Ledger,
        at: Instant,
        quota: &Quota,
    ) -> (Instant, bool) {
        let (slot, probe) = self.refusals.reserve(ledger, at, quota);
        if self.len() <= 1 {
            // The ETAs of later jobs are asked one place from the front at most: the ledger's plan
            // of the queue is of no further use (it holds a copy of it).
            ledger.forget_plan();
        }
        if probe {
            self.ramp = 1;
        }
        (slot, probe)
    }

    /// The slot asked for at `at` (with `epoch`, from [`Serve::NeedSlot`]) is `slot`: held for
    /// later ([`Serve::WakeAt`]), or bound to the best job now, its call going at `sent_now`
    /// (read only then: `at` from a ledger in this process; the time of the answer from a store
    /// elsewhere, which may answer long after it was asked).
    pub(crate) fn slot_given(
        &mut self,
        slot: Instant,
        at: Instant,
        epoch: u64,
        sent_now: impl FnOnce() -> Instant,
    ) -> Serve {
        self.awaiting_store = false;
        let held = HeldSlot {
            slot,
            reserved_at: at,
            epoch,
            timer: 0,
        };
        let keep = epoch == self.epoch;
        if slot > at {
            // A slot for later with no job left for it (cancelled while the store answered), or
            // asked for before the key reslotted, goes back now rather than being held.
            if !keep || !self.has_jobs() || self.hands_back() {
                return Serve::Refund(slot);
            }
            self.held = Some(held);
            return Serve::WakeAt(slot);
        }
        self.bind(held, keep, sent_now)
    }

    /// The shard set timer `timer` for the held slot ([`Serve::WakeAt`]).
    pub(crate) fn timer_set(&mut self, timer: u64) {
        if let Some(held) = self.held.as_mut() {
            held.timer = timer;
        }
    }

    /// The store could not give a slot: the head job is to fail (rather than spin).
    pub(crate) fn slot_failed(&mut self) -> Option<Queued> {
        self.awaiting_store = false;
        self.pop_highest()
    }

    /// The driver asked a store elsewhere for the key's slot ([`Serve::NeedSlot`]) or to take
    /// one back ([`Serve::Refund`]): until it answers, the key asks for nothing more and does
    /// not retire.
    pub(crate) fn store_asked(&mut self) {
        self.awaiting_store = true;
    }

    /// The store elsewhere took back the slot it was asked to (or failed to): the key may ask
    /// again ([`KeyState::want_slot`]).
    pub(crate) fn store_refunded(&mut self) {
        self.awaiting_store = false;
    }

    /// An answer left something to wait for before the key reserves again (what it tells the
    /// store, a refresh of the key): until [`KeyState::settle_done`], the key asks for no slot
    /// and does not retire.
    pub(crate) fn settle_started(&mut self) {
        self.settling += 1;
    }

    /// What an answer left to wait for is in ([`KeyState::settle_started`]).
    pub(crate) fn settle_done(&mut self) {
        one_less(&mut self.settling);
    }

    /// A 401 refused the key's API key: its source is to be asked for another, unless it is
    /// being asked already (false: the 401's job waits for that answer). Until it answers
    /// ([`KeyState::refresh_done`]) nothing goes with the refused key: the key settles, and the
    /// slot it holds or is being given goes back.
    pub(crate) fn refresh_started(&mut self) -> bool {
        if self.refreshing {
            return false;
        }
        self.refreshing = true;
        self.settle_started();
        self.reslot();
        true
    }

    /// The key's source answered the refresh ([`KeyState::refresh_started`]).
    pub(crate) fn refresh_done(&mut self) {
        self.refreshing = false;
    }

    /// Binds the highest-priority job to a due slot (none if the slot must be given back, `keep`
    /// false, or the key hands its jobs back), counting it on the wire.
    fn bind(&mut self, held: HeldSlot, keep: bool, sent_at: impl FnOnce() -> Instant) -> Serve {
        // (Compared first: a slot due when reserved, the usual case, skips the subtraction.)
        if held.slot > held.reserved_at
            && held.slot.saturating_duration_since(held.reserved_at) >= RAMP_AFTER_HOLD
        {
            self.ramp = 1;
        }
        if !keep || self.hands_back() {
            return Serve::Refund(held.slot);
        }
        let Some(job) = self.pop_highest() else {
            return Serve::Refund(held.slot);
        };
        let more = self.has_jobs();
        // The path was checked at submission with this endpoint, so this does not fail; if it
        // did, the job fails rather than the shard.
        let to = match self.addressing.addressing_for(
            &self.endpoint,
            &self.api_key_header,
            &job.job.path,
        ) {
            Ok(to) => Arc::clone(to),
            Err(reason) => {
                return Serve::Invalid {
                    job,
                    slot: held.slot,
                    reason,
                }
            }
        };
        self.in_flight += 1;
        self.calls.sent += 1;
        Serve::Send {
            job,
            to,
            slot: held.slot,
            sent_at: sent_at(),
            more,
        }
    }

    // ---- Answers ----

    /// A call on the wire ended, `accepted` (with when it was sent) if it succeeded: its place is
    /// free, and a success ends the key's storm, doubles its ramp and counts in the windows the
    /// server's limits are seen in. True if the key is to be served (it has jobs, or is
    /// closing and may now be done).
    pub(crate) fn call_ended(&mut self, accepted: Option<Instant>) -> bool {
        one_less(&mut self.in_flight);
        if let Some(sent_at) = accepted {
            self.refused_in_a_row = 0;
            self.calls.succeeded += 1;
            self.ramp = self.ramp.saturating_mul(2).min(self.max_in_flight);
            self.server_limits.accepted(sent_at);
        }
        self.has_jobs() || self.is_closed()
    }

    /// Puts a job back at the front of its lane: from a backoff that ended, or from the wire (a
    /// 429, a 401 for a key rotated since; then the key ramps up from one call again). A key
    /// handing its jobs back hands it back instead: `Some` with its outcome to send (`ShutDown`).
    pub(crate) fn put_back(
        &mut self,
        key: &KeyId,
        job: Queued,
        from_backoff: bool,
    ) -> Option<OutcomeSender> {
        if from_backoff {
            one_less(&mut self.backing_off);
        } else {
            one_less(&mut self.in_flight);
            self.ramp = 1;
        }
        if self.hands_back() {
            return Some(self.hand_back(key, job));
        }
        self.push_front(job);
        None
    }

    /// A call's transient failure is to be retried after a backoff: `Ok` with the job, now
    /// counted as backing off; `Err` with its outcome to send (`ShutDown`) if the key hands its
    /// jobs back (it does not wait out a backoff first).
    pub(crate) fn back_off(&mut self, key: &KeyId, job: Queued) -> Result<Queued, OutcomeSender> {
        one_less(&mut self.in_flight);
        if self.hands_back() {
            return Err(self.hand_back(key, job));
        }
        self.backing_off += 1;
        Ok(job)
    }

    /// The server answered, and not with a 429: the key's storm is over.
    pub(crate) fn answered_not_refused(&mut self) {
        self.refused_in_a_row = 0;
    }

    /// A 429 for the call in `slot`: returns the 429s in a row so far, and whether the slot is to
    /// be refunded (refused calls do not count, as configured or learned).
    pub(crate) fn refused(&mut self, slot: Instant) -> (u32, bool) {
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        // The calls on the wire besides this one were sent before it: the server may count them.
        self.server_limits
            .refused(slot, self.in_flight.saturating_sub(1) as u64);
        (self.refused_in_a_row, self.refusals.on_refused(slot))
    }

    /// The calls of the key on the wire.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether a success can be delivered without the full path: the key is not paced (a
    /// success may raise its pace) and no probe of refused-call accounting is out.
    pub(crate) fn plain_success_will_do(&self) -> bool {
        self.pacer.factor().is_none() && !self.refusals.probing()
    }

    /// Whether a probe of refused-call accounting is out.
    pub(crate) fn probing(&self) -> bool {
        self.refusals.probing()
    }

    /// The call in `slot` ended with `verdict`: if it was the probe, the key learns from it
    /// (re-counting refunded refusals in `ledger`, if in this process, at `now`). Returns the rule
    /// learned, if learning ended.
    pub(crate) fn settle_probe(
        &mut self,
        slot: Instant,
        verdict: ProbeVerdict,
        ledger: Option<&mut Ledger>,
        now: Instant,
    ) -> Option<RefusedCalls> {
        self.refusals.settle(slot, verdict, ledger, now)
    }

    /// A success at `now`: the new spacing if a paced key's quiet window has passed.
    pub(crate) fn pace_after_success(&mut self, now: Instant, quota: &Quota) -> Option<Duration> {
        self.pacer.on_success(now, quota)
    }

    /// A 429 the quota allowed at `now`, with the ledger's `utilisation` per limit: the new spacing
    /// if the key starts pacing or slows down.
    pub(crate) fn pace_after_refusal(
        &mut self,
        now: Instant,
        quota: &Quota,
        utilisation: &[f64],
    ) -> Option<Duration> {
        self.pacer.on_rate_limited(now, quota, utilisation)
    }

    /// Whether the key's reading of its limits may still switch (see `counter_learning`).
    pub(crate) fn semantics_may_switch(&self) -> bool {
        self.semantics.may_switch()
    }

    /// An answer's rate-limit headers read as `reading`: the switch of the key's reading they
    /// call for, if any (see `counter_learning`).
    pub(crate) fn semantics_on_headers(&mut self, reading: &HeaderReading) -> Option<Switch> {
        self.semantics.on_headers(reading)
    }

    /// The call in `slot`, sent at `sent_at`, was refused: the switch of the key's reading it
    /// calls for, against the key's `ledger` (the refused call still recorded), if any.
    pub(crate) fn semantics_on_refusal(
        &mut self,
        ledger: &Ledger,
        slot: Instant,
        sent_at: Instant,
    ) -> Option<Switch> {
        self.semantics.on_refusal(ledger, slot, sent_at)
    }

    /// Whether the key reads its limits as sliding-window counters (configured or learned).
    pub(crate) fn reads_as_counter(&self) -> bool {
        self.semantics.reads_as_counter()
    }

    /// The key's ledger now plans as `switch` says, learned from the server's answers at `now`:
    /// it stops pacing, and its held slot (reserved under the old reading) is reserved again.
    pub(crate) fn switched(&mut self, switch: Switch, now: Instant) {
        self.semantics.switched(switch, now);
        self.pacer = Pacer::default();
        self.reslot();
    }

    /// Whether a call sent at `sent_at` went before the key last switched its reading.
    pub(crate) fn sent_before_learning(&self, sent_at: Instant) -> bool {
        self.semantics.sent_before_learning(sent_at)
    }

    /// The reading of the key's limits in force (configured or learned).
    pub(crate) fn current_semantics(&self) -> WindowSemantics {
        self.semantics.current()
    }

    /// What the key learned of its server's counting, if anything.
    pub(crate) fn learned_semantics(&self) -> Option<LearnedSemantics> {
        self.semantics.learned()
    }

    /// The fraction of the binding limit's rate the key paces at, if paced.
    pub(crate) fn pace_factor(&self) -> Option<f64> {
        self.pacer.factor()
    }

    /// A call was answered `latency` after it went: the new guard, if the key's guard follows the
    /// latency and it changes.
    pub(crate) fn observe_latency(&mut self, latency: Duration) -> Option<Duration> {
        self.guard.observe(latency)
    }

    // ---- Counts ----

    /// The key's calls submitted, sent and succeeded.
    pub(crate) fn calls(&self) -> CallCounts {
        self.calls
    }

    /// Whether refused calls count, as configured or learned.
    pub(crate) fn refused_calls(&self) -> RefusedCalls {
        self.refusals.rule()
    }

    /// The latency guard in force (and the spread it follows, if it does).
    pub(crate) fn guard(&self) -> &LatencyGuard {
        &self.guard
    }

    /// What the server's limits look like, if it refused far earlier than the configured quota
    /// allows (see `server_limits`).
    pub(crate) fn server_limits(&self) -> Option<Quota> {
        self.server_limits.looks_like()
    }

    /// The even spacing the key keeps since the server refused what its `quota` allowed, if
    /// paced.
    pub(crate) fn pace_spacing(&self, quota: &Quota) -> Option<Duration> {
        self.pacer.spacing(quota)
    }
}

/// One less of a count that a call or a backoff held. Never below zero: a slip in the pairing
/// (a bug) must not wrap the count and keep the key from ever retiring.
fn one_less(count: &mut usize) {
    debug_assert!(*count > 0, "a count of calls or backoffs went below zero");
    *count = count.saturating_sub(1);
}

#[cfg(test)]
mod tests {
    //! The key's decisions, without a runtime: instants from a fixed base, a ledger in hand.

    use http::Method;

    use super::*;
    use crate::ledger::LedgerConfig;
    use crate::scheduler::outcome_slab::OutcomeSlab;
    use crate::scheduler_metrics::KeyMetrics;

    struct Key {
        st: KeyState,
        ledger: Ledger,
        quota: Quota,
        slab: Arc<OutcomeSlab>,
        base: Instant,
        next_id: u64,
    }

    fn key(quota: &str, max_in_flight: usize, capacity: usize) -> Key {
        let quota: Quota = quota.parse().unwrap();
        // A fixed base: nothing here reads a clock but this once, and no runtime is running.
        let base = tokio::time::Instant::now();
        let ledger = Ledger::new(
            &quota,
            LedgerConfig {
                guard: Some(Duration::ZERO),
                ..LedgerConfig::default()
            },
            base,
        );
        let st = KeyState::new(KeyStart {
            api_key: ApiKey::new("secret").unwrap(),
            max_in_flight,
            capacity,
            endpoint: Endpoint::new("http://127.0.0.1:9/v1", true).unwrap(),
            refused_calls: RefusedCalls::Count,
            guard: LatencyGuard::fixed(Duration::ZERO),
            depth: KeyMetrics::new("key-state-test").depth,
            quota: Quota::unlimited(),
            semantics: WindowSemantics::Sliding,
            learn_semantics: true,
        });
        Key {
            st,
            ledger,
            quota,
            slab: Arc::default(),
            base,
            next_id: 0,
        }
    }

    impl Key {
        fn at(&self, ms: u64) -> Instant {
            self.base + Duration::from_millis(ms)
        }

        fn job(&mut self, path: &str, priority: Priority) -> Queued {
            self.next_id += 1;
            let (tx, _rx) = self.slab.pair();
            let job = Job::new(Method::GET, path).with_priority(priority);
            Queued::new(self.next_id, job, tx)
        }

        /// Submits a job the usual way (admitted, then queued).
        fn submit(&mut self, path: &str, priority: Priority) -> u64 {
            let job = self.job(path, priority);
            let id = job.id;
            assert!(matches!(
                self.st.admit(path),
                Admit::Queue | Admit::StartIfDue(_)
            ));
            self.st.queue(job);
            id
        }

        /// Serves the key at `now`, getting slots from the ledger in hand, as the shard does.
        fn serve(&mut self, timer: Option<u64>, now: Instant) -> Serve {
            match self.st.next(timer, || now, || now) {
                Serve::NeedSlot { at, epoch } => {
                    let (slot, _) = self.st.reserve_in(&mut self.ledger, at, &self.quota);
                    self.st.slot_given(slot, at, epoch, || at)
                }
                other => other,
            }
        }
    }

    fn sent(step: Serve) -> (Queued, Instant, bool) {
        match step {
            Serve::Send {
                job, slot, more, ..
            } => (job, slot, more),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn a_due_slot_takes_the_highest_priority_job_and_counts_it_on_the_wire() {
        let mut k = key("10/1s", 4, 100);
        k.submit("/event", Priority::Bulk);
        k.submit("/check", Priority::Interactive);
        let now = k.at(0);
        let (job, slot, more) = sent(k.serve(None, now));
        assert_eq!(job.job.path(), "/check");
        assert_eq!(slot, now);
        assert!(more);
        assert_eq!(k.st.in_flight(), 1);
        let (job, _, more) = sent(k.serve(None, now));
        assert_eq!(job.job.path(), "/event");
        assert!(!more);
        // Nothing left: nothing to do.
        assert!(matches!(k.serve(None, now), Serve::Idle));
        assert_eq!(k.st.calls().sent, 2);
    }

    #[test]
    fn a_later_slot_is_held_and_its_job_chosen_when_it_is_due() {
        let mut k = key("1/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        k.submit("/b", Priority::Bulk);
        sent(k.serve(None, k.at(0)));
        // The next slot is a second away: held, with a timer.
        let step = k.serve(None, k.at(0));
        assert!(
            matches!(step, Serve::WakeAt(t) if t >= k.at(1_000)),
            "{step:?}"
        );
        k.st.timer_set(7);
        assert!(k.st.held_slot().is_some());
        // Woken for anything else, or by another timer, it waits.
        assert!(matches!(k.serve(None, k.at(10)), Serve::Idle));
        assert!(matches!(k.serve(Some(6), k.at(10)), Serve::Idle));
        // An interactive job queued meanwhile takes the slot when it is due.
        k.submit("/check", Priority::Interactive);
        let (job, _, more) = sent(k.serve(Some(7), k.at(1_000)));
        assert_eq!(job.job.path(), "/check");
        assert!(more);
        assert!(k.st.held_slot().is_none());
    }

    #[test]
    fn a_held_slot_goes_back_when_its_job_is_cancelled_or_the_key_reslots() {
        let mut k = key("1/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        sent(k.serve(None, k.at(0)));
        let id = k.submit("/b", Priority::Normal);
        assert!(matches!(k.serve(None, k.at(0)), Serve::WakeAt(_)));
        k.st.timer_set(1);
        let (cancelled, reslot) = k.st.cancel(id);
        assert_eq!(cancelled.map(|q| q.id), Some(id));
        assert!(reslot, "the held slot has no job left");
        let step = k.serve(None, k.at(5));
        assert!(matches!(step, Serve::Refund(_)), "{step:?}");
        // A reservation answered after the key reslotted is given back too.
        k.st.call_ended(Some(k.base));
        let c = k.submit("/c", Priority::Normal);
        let t = k.at(2_000);
        let Serve::NeedSlot { at, epoch } = k.st.want_slot(|| t) else {
            panic!("the key wants a slot");
        };
        k.st.reslot();
        assert!(matches!(
            k.st.slot_given(at, at, epoch, || at),
            Serve::Refund(_)
        ));
        // A later slot from a store elsewhere, answered after its job was cancelled, is not held.
        let id = k.submit("/d", Priority::Normal);
        let t = k.at(3_000);
        let Serve::NeedSlot { at, epoch } = k.st.want_slot(|| t) else {
            panic!("the key wants a slot");
        };
        let _ = k.st.cancel(c);
        let _ = k.st.cancel(id);
        let later = k.at(60_000);
        let step = k.st.slot_given(later, at, epoch, || at);
        assert!(matches!(step, Serve::Refund(_)), "{step:?}");
        assert_eq!(k.st.held_slot(), None);
    }

    #[test]
    fn a_pause_raised_elsewhere_stops_a_slot_held_from_before_it_and_keeps_its_job() {
        let mut k = key("1/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        sent(k.serve(None, k.at(0)));
        k.submit("/b", Priority::Normal);
        // Held at 1 s, reserved at 0.
        assert!(matches!(k.serve(None, k.at(0)), Serve::WakeAt(_)));
        k.st.timer_set(1);
        let slot = k.st.held_slot().unwrap();
        // A pause known since 500 ms, to 3 s: the slot would go into it.
        let pause = SharedBlock::new(k.at(500), k.at(3_000));
        // A pause known since before the slot was asked for placed it already: kept.
        let before = SharedBlock::new(k.at(0), k.at(3_000));
        assert!(!k.st.stop_held_for(before, slot));
        assert!(k.st.stop_held_for(pause, slot));
        let step = k.serve(Some(1), slot);
        assert!(matches!(step, Serve::Refund(s) if s == slot), "{step:?}");
        assert_eq!(k.st.len(), 1, "the job stays queued");
        // Nothing held: a pause stops nothing more.
        assert!(!k.st.stop_held_for(pause, slot));
    }

    #[test]
    fn a_key_waiting_for_a_store_elsewhere_asks_nothing_more_and_does_not_retire() {
        let mut k = key("10/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        let t = k.at(0);
        let Serve::NeedSlot { at, epoch } = k.st.next(None, || t, || t) else {
            panic!("the key wants a slot");
        };
        k.st.store_asked();
        // Until the store answers: no second request, a new job does not serve the key, and
        // closing it with nothing queued does not retire it.
        assert!(matches!(k.st.next(None, || t, || t), Serve::Idle));
        assert!(!matches!(k.st.admit("/b"), Admit::StartIfDue(_)));
        let job = k.job("/b", Priority::Normal);
        assert!(!k.st.queue(job));
        assert_eq!(k.st.take_all().len(), 2);
        k.st.close();
        assert!(matches!(k.st.want_slot(|| t), Serve::Idle));
        assert!(!k.st.is_retired());
        // The answer comes late: its slot has no job left and goes back, through the store too.
        let answered = k.at(5_000);
        let step = k.st.slot_given(at, at, epoch, || answered);
        assert!(matches!(step, Serve::Refund(s) if s == at), "{step:?}");
        k.st.store_asked();
        assert!(matches!(k.st.want_slot(|| t), Serve::Idle));
        k.st.store_refunded();
        assert!(matches!(k.st.want_slot(|| t), Serve::Retired));
    }

    #[test]
    fn a_store_answer_binds_its_job_at_the_time_of_the_answer_or_fails_it() {
        let mut k = key("10/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        k.submit("/b", Priority::Normal);
        let t = k.at(0);
        let Serve::NeedSlot { at, epoch } = k.st.want_slot(|| t) else {
            panic!("the key wants a slot");
        };
        k.st.store_asked();
        // Due when asked, answered two seconds later: the call goes at the answer.
        let answered = k.at(2_000);
        let (job, slot, more) = match k.st.slot_given(at, at, epoch, || answered) {
            Serve::Send {
                job,
                slot,
                sent_at,
                more,
                ..
            } => {
                assert_eq!(sent_at, answered);
                (job, slot, more)
            }
            other => panic!("expected a send, got {other:?}"),
        };
        assert_eq!((job.job.path(), slot, more), ("/a", at, true));
        // The next request fails: its head job is to fail, and the key may ask again.
        assert!(matches!(
            k.st.want_slot(|| answered),
            Serve::NeedSlot { .. }
        ));
        k.st.store_asked();
        assert_eq!(
            k.st.slot_failed().map(|q| q.job.path().to_owned()),
            Some("/b".into())
        );
        k.submit("/c", Priority::Normal);
        assert!(matches!(
            k.st.want_slot(|| answered),
            Serve::NeedSlot { .. }
        ));
    }

    #[test]
    fn after_a_long_hold_the_key_ramps_up_from_one_call() {
        let mut k = key("1/2s", 4, 100);
        k.submit("/a", Priority::Normal);
        sent(k.serve(None, k.at(0)));
        k.st.call_ended(Some(k.base));
        k.submit("/b", Priority::Normal);
        k.submit("/c", Priority::Normal);
        assert!(matches!(k.serve(None, k.at(0)), Serve::WakeAt(_)));
        k.st.timer_set(1);
        // Held two seconds: one call on the wire, not four.
        let (_, _, more) = sent(k.serve(Some(1), k.at(2_000)));
        assert!(more);
        assert!(matches!(k.serve(None, k.at(2_000)), Serve::Idle));
        // Each success doubles the limit again.
        assert!(k.st.call_ended(Some(k.base)));
        let t = k.at(2_000);
        assert!(matches!(k.st.want_slot(|| t), Serve::NeedSlot { .. }));
    }

    #[test]
    fn admission_checks_the_path_the_lifecycle_the_key_and_the_room() {
        let mut k = key("10/1s", 4, 1);
        assert!(matches!(k.st.admit("http://evil/x"), Admit::Invalid(_)));
        // Idle: the job may start at once.
        assert!(matches!(k.st.admit("/a"), Admit::StartIfDue(_)));
        let job = k.job("/a", Priority::Normal);
        assert!(k.st.queue(job), "an idle key is served for its job");
        assert!(matches!(k.st.admit("/b"), Admit::Full));
        let fingerprint = k.st.api_key().fingerprint().to_string();
        let failed = k.st.revoke();
        assert_eq!(failed.len(), 1);
        assert!(matches!(k.st.admit("/b"), Admit::Revoked(f) if f == fingerprint));
        k.st.rotate(ApiKey::new("another").unwrap());
        assert!(matches!(k.st.admit("/b"), Admit::StartIfDue(_)));
        k.st.close();
        assert!(matches!(k.st.admit("/b"), Admit::Closed));
    }

    #[test]
    fn the_lifecycle_only_moves_forward_and_the_key_retires_once() {
        let mut k = key("10/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        k.submit("/b", Priority::Normal);
        sent(k.serve(None, k.at(0)));
        k.st.close();
        assert_eq!(k.st.lifecycle(), Lifecycle::Draining);
        // Handing back: the queued job goes back, and so does one put back from the wire.
        let queued = k.st.start_handing_back();
        assert_eq!(queued.len(), 1);
        for job in queued {
            let id = KeyId::new("k");
            drop(k.st.hand_back(&id, job));
        }
        let (job, ..) = {
            // (The call on the wire is answered with a 429.)
            let job = k.job("/x", Priority::Normal);
            (job, ())
        };
        k.st.in_flight += 1;
        assert!(k.st.put_back(&KeyId::new("k"), job, false).is_some());
        assert_eq!(k.st.take_returned().len(), 2);
        assert!(
            k.st.call_ended(None),
            "a closing key is served once its calls end"
        );
        assert!(matches!(k.serve(None, k.at(1)), Serve::Retired));
        assert!(k.st.is_retired());
        assert!(matches!(k.serve(None, k.at(2)), Serve::Idle));
        // Closing or handing back a retired key leaves it retired.
        k.st.close();
        assert!(k.st.start_handing_back().is_empty());
        assert!(k.st.is_retired());
        assert!(!k.st.removal_over());
        k.st.mark_removal_over();
        assert!(k.st.removal_over());
    }

    #[test]
    fn a_job_backing_off_keeps_the_key_from_retiring() {
        let mut k = key("10/1s", 4, 100);
        k.submit("/a", Priority::Normal);
        let (job, ..) = sent(k.serve(None, k.at(0)));
        let job = k.st.back_off(&KeyId::new("k"), job).expect("backs off");
        k.st.close();
        assert!(matches!(k.serve(None, k.at(1)), Serve::Idle));
        assert!(k.st.put_back(&KeyId::new("k"), job, true).is_none());
        let (job, ..) = sent(k.serve(None, k.at(2)));
        assert_eq!(job.job.path(), "/a");
        k.st.call_ended(Some(k.base));
        assert!(matches!(k.serve(None, k.at(3)), Serve::Retired));
    }

    #[test]
    fn a_storm_counts_429s_in_a_row_until_another_answer() {
        let mut k = key("10/1s", 4, 100);
        let slot = k.at(0);
        assert_eq!(k.st.refused(slot), (1, false));
        assert_eq!(k.st.refused(slot), (2, false));
        k.st.answered_not_refused();
        assert_eq!(k.st.refused(slot).0, 1);
        k.submit("/a", Priority::Normal);
        sent(k.serve(None, k.at(0)));
        k.st.call_ended(Some(k.base));
        assert_eq!(k.st.refused(slot).0, 1, "a success ends the storm");
    }
}
