//! A dispatch shard: one task that dispatches many keys.
//!
//! Each key is given to a shard when it is added (round robin). The shard keeps a list of keys
//! that asked for service ([`KeyQueue::wake`]: a job arrived, a call ended, a slot must be given
//! back, the key closed), a timer per key waiting for its reserved slot, and every call of its keys
//! on the wire (driven here, in its [`Wire`], rather than one spawned task per call).
//!
//! Serving a key: while it has jobs and room on the wire, reserve its next slot in the ledger; a
//! slot that is due now takes the highest-priority job at once; a later one is held and the job is
//! chosen only when the slot is due (so an agent's `/check` overtakes a backlog of `/event`s, and
//! a cancelled job never holds a slot). A key holds at most one future slot at a time.
//!
//! An idle key (nothing queued, no slot held, room on the wire) whose next slot is due when a job
//! is submitted does not wait to be served: `submit` reserves the slot and counts the call on the
//! wire under the key's lock, as serving would, and hands the shard the call itself
//! ([`Ready::Start`]), which the shard only starts. A job on a key of its own then crosses to the
//! shard's thread once, with what starting it needs, instead of the shard fetching the key's
//! queue, ledger and addressing again.
//!
//! Why shards: a task per key costs a wake, a poll and a spawned send task per call; with 10,000
//! keys each holding one job that is all there is. A shard serves whichever of its keys are ready
//! in one pass, and a call costs a push and a poll. The shard exits when all its keys are retired
//! (closed, empty, nothing on the wire), and is started again if a key is added later.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::addressing::Addressing;
use super::call_journal::Unflushed;
use super::dispatch::{
    finish_plain_success, finish_unsent, on_answer, requeue_after_backoff, send, Answer, Backoff,
};
use super::key_queue::{KeyQueue, PendingSlot, QueueState, Queued};
use super::outcome_slab::OutcomeSlab;
use super::panics::panic_message;
use super::refusals::ProbeVerdict;
use super::slot_timers::Timers;
use super::wire::Wire;
use super::Inner;
use crate::clock::{Instant, Sleep};
use crate::job_error::JobError;
use crate::ledger::{LedgerStore, StoreError};

/// After the key was held back at least this long (a full window, a 429 pause), calls ramp up
/// again: one on the wire, then twice as many after each success, up to `max_in_flight`. If the
/// server still disagrees at the boundary, one or two calls are refused instead of a whole burst;
/// the cost is a few round trips per hold.
const RAMP_AFTER_HOLD: Duration = Duration::from_secs(1);

/// Keys served, or answers handled, per turn of a shard's loop.
const BATCH: usize = 64;

/// The part of a shard that keys and the scheduler share: the keys to serve and the shard's life.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Keys to serve and calls to start. A channel rather than a locked list: submitters on other
    /// threads add work without contending for a lock, and the shard wakes on the channel itself.
    ready: mpsc::UnboundedSender<Ready>,
    /// The receiving end, held by the shard's task while it runs.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Ready>>>,
    life: Mutex<ShardLife>,
    /// Set when one of its keys starts handing its jobs back (shutdown, removal): the jobs of
    /// that key waiting out a backoff are handed back at the shard's next turn, not when their
    /// backoff ends.
    pub(crate) handing_back: AtomicBool,
    /// Where the outcomes of its keys' unfinished jobs wait for their tickets: one slab for all
    /// its keys, so that 10,000 quiet keys do not keep 10,000 slabs (or their cache lines) warm.
    pub(crate) outcomes: Arc<OutcomeSlab>,
    /// Its keys' call journals with records of calls started this turn, written before the
    /// turn's calls are polled.
    pub(crate) unflushed: Unflushed,
}

impl Default for Shard {
    fn default() -> Self {
        let (ready, receiver) = mpsc::unbounded_channel();
        Self {
            ready,
            receiver: Mutex::new(Some(receiver)),
            life: Mutex::default(),
            handing_back: AtomicBool::new(false),
            outcomes: Arc::default(),
            unflushed: Unflushed::default(),
        }
    }
}

/// Work for a shard.
// A due call is moved once through the channel; a box would cost an allocation per call instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Ready {
    /// Serve this key (see [`KeyQueue::wake`]).
    Serve(Arc<KeyQueue>),
    /// Start this call: its slot was reserved and its place on the wire counted when it was
    /// submitted to an idle key (see `Scheduler::submit`).
    Start(DueCall),
}

/// A job whose slot is due, taken at submission by a key with nothing queued and room on the
/// wire: the shard only starts it.
#[derive(Debug)]
pub(crate) struct DueCall {
    pub(crate) q: Arc<KeyQueue>,
    pub(crate) job: Queued,
    pub(crate) to: Arc<Addressing>,
    /// Its slot, reserved at submission (when it was due).
    pub(crate) slot: Instant,
}

#[derive(Debug, Default)]
struct ShardLife {
    /// Keys given to this shard and not retired.
    live: usize,
    /// Whether the shard's task runs.
    running: bool,
}

impl Shard {
    /// Puts `q` on the list of keys to serve (through [`KeyQueue::wake`], which makes sure a key
    /// is listed once).
    pub(crate) fn schedule(&self, q: Arc<KeyQueue>) {
        // The receiver lives in the shard as long as the shard does: this cannot fail.
        let _ = self.ready.send(Ready::Serve(q));
    }

    /// Hands the shard a call to start (its key counts it on the wire already).
    pub(crate) fn start(&self, call: DueCall) {
        // As in `schedule`: the receiver lives as long as the shard.
        let _ = self.ready.send(Ready::Start(call));
    }

    /// A key joins the shard. True if the shard's task is not running and must be started.
    pub(crate) fn join(&self) -> bool {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.live += 1;
        !std::mem::replace(&mut life.running, true)
    }

    pub(crate) fn retire(&self) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.live = life.live.saturating_sub(1);
    }

    /// If no key is left, the shard counts as stopped and takes its receiver back from `ready`
    /// (under the same lock as `join`, so a task started next finds it): true.
    fn stop_if_done(&self, ready: &mut Option<mpsc::UnboundedReceiver<Ready>>) -> bool {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        if life.live == 0 {
            life.running = false;
            *self.receiver.lock().unwrap_or_else(|p| p.into_inner()) = ready.take();
            true
        } else {
            false
        }
    }
}

/// What a shard's loop holds between its turns: kept outside the loop's future, so that after a
/// panic in it every job it held can still be given an outcome.
#[derive(Default)]
struct Held {
    wire: Wire,
    backoffs: FuturesUnordered<BackoffWait>,
    timers: Timers,
    sleep: Option<(Instant, Sleep)>,
    /// The deadline of the last sleep that ended: timers up to it are due, whatever the clock says.
    woke_for: Option<Instant>,
    asked: Option<Ready>,
    /// Answers that are not a plain success, to be handled after the wait of the turn.
    others: Vec<Answer>,
}

/// Runs one shard until every key it was given is retired.
///
/// A panic in the shard's work (in the scheduler, or in a store or clock it calls) is caught: the
/// shard's keys are closed, and every job they hold (queued, on the wire, waiting out a backoff,
/// being started) fails with [`JobError::Internal`] naming the panic; the shard then lets them
/// go, so shutdown and removal return, and keys of other shards go on. (A panic in a transport's
/// future is caught closer, in the [`Wire`]: only its call fails.)
pub(crate) async fn run_shard<S: LedgerStore>(inner: Arc<Inner<S>>, shard: Arc<Shard>) {
    // A stopping task hands the receiver back before a new one can be started (see `stop_if_done`).
    let mut ready = shard
        .receiver
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if ready.is_none() {
        return;
    }
    let mut held = Held::default();
    loop {
        let turns = std::panic::AssertUnwindSafe(shard_loop(&inner, &shard, &mut ready, &mut held));
        match turns.catch_unwind().await {
            Ok(()) => return,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                fail_after_panic(&inner, &shard, &mut ready, &mut held, &message);
            }
        }
    }
}

/// After a panic in the shard's loop: closes every key of the shard and fails every job it holds
/// with the panic's message (see [`run_shard`]).
fn fail_after_panic<S: LedgerStore>(
    inner: &Inner<S>,
    shard: &Arc<Shard>,
    ready: &mut Option<mpsc::UnboundedReceiver<Ready>>,
    held: &mut Held,
    message: &str,
) {
    let error = JobError::Internal(format!(
        "a panic in the scheduler's dispatch task ended the job: {message}"
    ));
    let fail = |job: Queued| {
        job.outcome.send(Err(error.clone()));
    };
    let ours: Vec<Arc<KeyQueue>> = inner
        .keys
        .iter()
        .map(|e| Arc::clone(e.value()))
        .chain(inner.removing.iter().map(|e| Arc::clone(e.value())))
        .filter(|q| Arc::ptr_eq(&q.shard, shard))
        .collect();
    tracing::error!(panic = %message, keys = ours.len(), "a dispatch task panicked: its keys are closed and their jobs fail");
    for call in held.wire.take_all() {
        fail(call.job);
    }
    for mut waiting in std::mem::take(&mut held.backoffs) {
        if let Some(backoff) = waiting.backoff.take() {
            fail(backoff.job);
        }
    }
    for answer in held.others.drain(..) {
        fail(answer.into_job());
    }
    let mut asked = held.asked.take();
    while let Some(work) = asked
        .take()
        .or_else(|| ready.as_mut().and_then(|r| r.try_recv().ok()))
    {
        if let Ready::Start(due) = work {
            fail(due.job);
        }
    }
    held.timers = Timers::default();
    held.sleep = None;
    held.woke_for = None;
    for q in &ours {
        for job in q.quarantine() {
            fail(job);
        }
    }
}

/// The shard's loop (see [`run_shard`]): returns once every key it was given is retired.
async fn shard_loop<S: LedgerStore>(
    inner: &Inner<S>,
    shard: &Shard,
    ready_slot: &mut Option<mpsc::UnboundedReceiver<Ready>>,
    held: &mut Held,
) {
    let Held {
        wire,
        backoffs,
        timers,
        sleep,
        woke_for,
        asked,
        others,
    } = held;
    loop {
        let Some(ready) = ready_slot.as_mut() else {
            return;
        };
        // The clock is read once per turn: the calls of one turn go out within microseconds of
        // each other (with the in-memory store), far inside the guard the ledger keeps at each
        // window's edge. A wait for a store that is not in this process reads it again.
        let mut now = None;
        // Backoffs that have ended. Checked every turn, not only when nothing else is ready: the
        // wait below prefers answers, and a wire that is never idle must not hold retries back.
        while let Some(Some(backoff)) = backoffs.next().now_or_never() {
            requeue_after_backoff(backoff);
        }
        // A key handing its jobs back: those waiting out a backoff go back now.
        // (A load first: the usual turn costs no read-modify-write.)
        if shard.handing_back.load(Ordering::Acquire)
            && shard.handing_back.swap(false, Ordering::AcqRel)
            && !backoffs.is_empty()
        {
            for mut waiting in std::mem::take(backoffs) {
                match waiting.backoff.take() {
                    Some(backoff) if backoff.q.lock().hand_back => requeue_after_backoff(backoff),
                    kept => {
                        waiting.backoff = kept;
                        backoffs.push(waiting);
                    }
                }
            }
        }
        // Keys that asked to be served, and calls to start that were submitted to idle keys, a
        // batch at a time: the calls started are answered before more are started, so the set of
        // calls stays small and warm in cache.
        for _ in 0..BATCH {
            let q = match asked.take().or_else(|| ready.try_recv().ok()) {
                None => break,
                Some(Ready::Serve(q)) => q,
                Some(Ready::Start(due)) => {
                    let DueCall { q, job, to, slot } = due;
                    let (call, response) = send(inner, q, job, to, slot, slot);
                    wire.push(call, response);
                    continue;
                }
            };
            q.scheduled.store(false, Ordering::Release);
            // Borrowed `&mut`: a shared borrow would need the calls to be `Sync`.
            let calls = &mut *wire;
            let mut start = move |q: &Arc<KeyQueue>, job, to, slot, sent_at| {
                let (call, response) = send(inner, Arc::clone(q), job, to, slot, sent_at);
                calls.push(call, response);
            };
            serve(inner, &q, None, &mut now, timers, &mut start).await;
        }

        // Slots that are due.
        if timers.next_at().is_some() {
            let now = *now.get_or_insert_with(|| inner.clock.now());
            let through = woke_for.take().map_or(now, |at| at.max(now));
            while let Some(t) = timers.pop_due(through) {
                let calls = &mut *wire;
                let mut start = move |q: &Arc<KeyQueue>, job, to, slot, sent_at| {
                    let (call, response) = send(inner, Arc::clone(q), job, to, slot, sent_at);
                    calls.push(call, response);
                };
                serve(inner, &t.q, Some(t.id), &mut Some(now), timers, &mut start).await;
            }
        }

        if wire.is_empty() && backoffs.is_empty() && shard.stop_if_done(ready_slot) {
            return;
        }
        let Some(ready) = ready_slot.as_mut() else {
            return;
        };

        // Wait for a call to end, a key to ask, or the next slot.
        let next_at = timers.next_at();
        if sleep.as_ref().map(|(at, _)| *at) != next_at {
            *sleep = next_at.map(|at| (at, inner.clock.sleep_until(at)));
        }
        let slot_due = async {
            match sleep.as_mut() {
                Some((_, s)) => s.as_mut().await,
                None => std::future::pending().await,
            }
        };
        // The records of the calls started this turn reach their journals before the calls go.
        shard.unflushed.flush();
        tokio::select! {
            biased;
            // The plain success is handled as it is polled, without creating (and moving) a
            // future; the rest is handled here.
            () = wire.answers(BATCH, |call, result| {
                call.q.metrics.answered(&result); // [metrics]
                if let Some(answer) = finish_plain_success(inner, call, result) {
                    others.push(answer);
                }
            }), if !wire.is_empty() => {
                for answer in others.drain(..) {
                    handle(inner, answer, backoffs).await;
                }
            }
            Some(backoff) = backoffs.next(), if !backoffs.is_empty() => requeue_after_backoff(backoff),
            Some(work) = ready.recv() => *asked = Some(work),
            () = slot_due => {
                *woke_for = sleep.take().map(|(at, _)| at);
            }
        }
    }
}

/// Handles an answered call that is not a plain success; a transient failure's backoff joins
/// `backoffs`.
async fn handle<S: LedgerStore>(
    inner: &Inner<S>,
    answer: Answer,
    backoffs: &mut FuturesUnordered<BackoffWait>,
) {
    // Boxed: the full handler is a large future, kept out of the shard's own.
    if let Some(backoff) = Box::pin(on_answer(inner, answer)).await {
        backoffs.push(BackoffWait {
            sleep: inner.clock.sleep_until(backoff.until),
            backoff: Some(backoff),
        });
    }
}

/// A job's backoff: ready with the job when the sleep ends.
struct BackoffWait {
    sleep: Sleep,
    backoff: Option<Backoff>,
}

impl Future for BackoffWait {
    type Output = Backoff;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Backoff> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.backoff.take() {
            Some(backoff) => Poll::Ready(backoff),
            // Polled again after it was ready (a `FuturesUnordered` never does).
            None => Poll::Pending,
        }
    }
}

/// Starts a call: `(key, job, its addressing, its slot, when it goes)`.
pub(crate) type Start<'s> =
    dyn FnMut(&Arc<KeyQueue>, Queued, Arc<Addressing>, Instant, Instant) + Send + 's;

/// What serving a key does next, decided under the key's lock and done without it.
// The job moves once or twice per call; a box would cost an allocation per call instead.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Nothing more for now.
    Idle,
    /// Send this job, addressed so, in this slot, at this instant; then look for the next job
    /// if `more` (the queue had more when this one was taken).
    Send(Queued, Arc<Addressing>, Instant, Instant, bool),
    /// Fail this job (its path does not form a URI) and give its slot back.
    Invalid(Queued, Instant, String),
    /// Give this slot back: no job takes it.
    Refund(Instant),
    /// Ask the store (not in this process) for a slot, reserved at this instant with this epoch.
    AskStore(Instant, u64),
}

/// Serves one key: gives back or uses the slot it holds, then reserves and sends while it has
/// jobs and room on the wire. `timer` is set when the key's slot timer fired. With the key's
/// ledger in this process, each call costs one lock of the queue and one of the ledger, and
/// nothing is awaited; only a store elsewhere makes this wait (boxed, see [`serve_waiting`]).
async fn serve<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    timer: Option<u64>,
    now: &mut Option<Instant>,
    timers: &mut Timers,
    start: &mut Start<'_>,
) {
    let step = held_slot(inner, q, timer, now, timers);
    // Bound before the `.await`, so that no step is kept in the shard's future.
    let Some(wait) = serve_now(inner, q, step, now, timers, start) else {
        return;
    };
    Box::pin(serve_waiting(inner, q, wait, now, timers, start)).await;
}

/// Does `step` and the steps that follow it as long as none needs to wait for a store elsewhere;
/// returns that one (`Step::AskStore`, or `Step::Refund` without an in-process ledger), or `None`
/// when the key has nothing more to do for now.
fn serve_now<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    step: Step,
    now: &mut Option<Instant>,
    timers: &mut Timers,
    start: &mut Start<'_>,
) -> Option<Step> {
    let mut step = step;
    loop {
        step = match step {
            Step::Idle => return None,
            Step::Send(job, to, slot, sent_at, more) => {
                q.space.notify_one();
                start(q, job, to, slot, sent_at);
                if !more {
                    // The queue was empty once this job was taken, and the key has a call on
                    // the wire, so it is not finished: looking again would find nothing to do.
                    // A job queued since then wakes the key (it was unlisted before serving).
                    return None;
                }
                fill(inner, q, q.lock(), None, now, timers)
            }
            Step::Invalid(job, slot, reason) => {
                let attempts = job.attempts;
                finish_unsent(q, job, Err(JobError::InvalidRequest { reason, attempts }));
                Step::Refund(slot)
            }
            Step::Refund(slot) => {
                if !inner.refund_in_process(q, slot) {
                    return Some(Step::Refund(slot));
                }
                q.settle_probe(slot, ProbeVerdict::Undecided, inner.clock.as_ref());
                fill(inner, q, q.lock(), None, now, timers)
            }
            Step::AskStore(at, epoch) => return Some(Step::AskStore(at, epoch)),
        };
    }
}

/// Serving a key whose ledger the store keeps outside this process: waits for the store at each
/// `Step::AskStore` or `Step::Refund`, and does what follows with [`serve_now`].
async fn serve_waiting<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    wait: Step,
    now: &mut Option<Instant>,
    timers: &mut Timers,
    start: &mut Start<'_>,
) {
    let mut wait = wait;
    loop {
        let step = match wait {
            Step::Refund(slot) => {
                if let Err(e) = inner.refund_slot(q, slot).await {
                    tracing::warn!(key = %q.id, error = %e, "could not refund an unused slot");
                }
                // No probe to settle: probes need the key's ledger in this process.
                *now = None;
                fill(inner, q, q.lock(), None, now, timers)
            }
            Step::AskStore(at, epoch) => {
                let reserved = inner.store.reserve(&q.id, at).await;
                *now = None;
                fill(inner, q, q.lock(), Some((reserved, at, epoch)), now, timers)
            }
            other => other,
        };
        match serve_now(inner, q, step, now, timers, start) {
            Some(next) => wait = next,
            None => return,
        }
    }
}

/// The slot the key holds: due now (take a job), to be given back (reserve again), or still ahead
/// (nothing to do). Without one, [`fill`].
fn held_slot<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    timer: Option<u64>,
    now: &mut Option<Instant>,
    timers: &mut Timers,
) -> Step {
    let mut st = q.lock();
    let Some(held) = st.pending else {
        return fill(inner, q, st, None, now, timers);
    };
    let due = timer == Some(held.timer);
    let stale = q.reslot_epoch.load(Ordering::SeqCst) != held.epoch;
    if !due && !stale {
        return Step::Idle;
    }
    st.pending = None;
    match take_for_slot(q, &mut st, held, due && !stale) {
        // Sent when the timer fired: now, not when the slot was reserved.
        Step::Send(job, to, slot, _, more) => Step::Send(job, to, slot, inner.clock.now(), more),
        other => other,
    }
}

/// The next reservation of a key with jobs and room on the wire: a slot due now takes a job, a
/// later one is held (with a timer). `reserved` is the store's answer to [`Step::AskStore`].
fn fill<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    mut st: MutexGuard<'_, QueueState>,
    reserved: Option<(Result<Instant, StoreError>, Instant, u64)>,
    now: &mut Option<Instant>,
    timers: &mut Timers,
) -> Step {
    let (slot, at, epoch) = match reserved {
        Some((Ok(slot), at, epoch)) => (slot, at, epoch),
        Some((Err(e), _, _)) => {
            // The store cannot answer: fail the head job rather than spin.
            let job = st.pop_highest();
            drop(st);
            if let Some(job) = job {
                finish_unsent(q, job, Err(JobError::Store(e)));
            }
            return fill(inner, q, q.lock(), None, now, timers);
        }
        None => {
            if st.finished() {
                if !std::mem::replace(&mut st.retired, true) {
                    drop(st);
                    q.shard.retire();
                    q.let_go.notify_waiters();
                }
                return Step::Idle;
            }
            if !st.has_jobs() || st.in_flight >= st.ramp {
                return Step::Idle;
            }
            let epoch = q.reslot_epoch.load(Ordering::SeqCst);
            let at = *now.get_or_insert_with(|| inner.clock.now());
            match q.lock_ledger() {
                // In this process: reserved under the queue's lock, nothing to wait for.
                Some(mut ledger) => {
                    let (slot, probe) = st.refusals.reserve(&mut ledger, at, &q.quota);
                    if st.len() <= 1 {
                        // The ETAs of later jobs are asked one place from the front at most: the
                        // ledger's plan of the queue is of no further use (it holds a copy of it).
                        ledger.forget_plan();
                    }
                    if probe {
                        // The probe goes alone: its answer decides how the next calls count.
                        st.ramp = 1;
                        q.probing.store(true, Ordering::Release);
                    }
                    (slot, at, epoch)
                }
                None => return Step::AskStore(at, epoch),
            }
        }
    };
    q.metrics.slot_reserved(slot.saturating_duration_since(at)); // [metrics]
    let held = PendingSlot {
        slot,
        reserved_at: at,
        epoch,
        timer: 0,
    };
    if slot > at {
        let timer = timers.add(slot, q);
        st.pending = Some(PendingSlot { timer, ..held });
        return Step::Idle;
    }
    let keep = q.reslot_epoch.load(Ordering::SeqCst) == epoch;
    take_for_slot(q, &mut st, held, keep)
}

/// Takes the highest-priority job for a slot that is due (none if the slot must be given back or
/// the key is handing jobs back), counts it on the wire, and returns it with its addressing.
fn take_for_slot(q: &KeyQueue, st: &mut QueueState, held: PendingSlot, keep: bool) -> Step {
    // (Compared first: a slot due when reserved, the usual case, skips the subtraction.)
    if held.slot > held.reserved_at
        && held.slot.saturating_duration_since(held.reserved_at) >= RAMP_AFTER_HOLD
    {
        st.ramp = 1;
    }
    if !keep || st.hand_back {
        return Step::Refund(held.slot);
    }
    let Some(job) = st.pop_highest() else {
        return Step::Refund(held.slot);
    };
    let more = st.has_jobs();
    // The path was checked at submission with this endpoint, so this does not fail; if it did,
    // the job fails rather than the shard.
    let to = match st
        .addressing
        .addressing_for(&q.endpoint, &st.api_key_header, &job.job.path)
    {
        Ok(to) => Arc::clone(to),
        Err(reason) => return Step::Invalid(job, held.slot, reason),
    };
    st.in_flight += 1;
    st.calls.sent += 1;
    Step::Send(job, to, held.slot, held.reserved_at, more)
}
