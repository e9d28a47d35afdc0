//! A dispatch shard: one task that dispatches many keys.
//!
//! Each key is given to a shard when it is added (round robin). The shard keeps a list of keys
//! that asked for service ([`KeyQueue::wake`]: a job arrived, a call ended, a slot must be given
//! back, the key closed), a timer per key waiting for its reserved slot, and every call of its keys
//! on the wire (driven here, in its [`Wire`], rather than one spawned task per call).
//!
//! The shard is the driver of its keys' state machines ([`KeyState`]): each decides what its key
//! does next, and the shard carries it out — it sets the timers, gets slots from the ledger (at
//! once when the store keeps it in this process), puts the calls on the wire and hands their
//! answers to [`super::answers`].
//!
//! A store that keeps the ledger elsewhere (Redis) answers after a round trip: its reservations
//! and refunds are futures the shard polls beside its calls and backoffs ([`StoreCall`]), and the
//! key is carried on when its answer comes. Meanwhile the shard serves its other keys, and each of
//! them has its own request out: one slow answer holds up only its own key, and a shard's keys
//! do not reserve one round trip at a time. A key has at most one request of the store out, so
//! its slots come in the order it asked for them. What an answer tells such a store (a 429's
//! pause, the server's window, a pace) and a key's refresh after a 401 are waited for the same way
//! ([`super::settle`]): the key reserves again once they are in, its shard's other keys going on
//! meanwhile.
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::addressing::Addressing;
use super::answers::{
    finish_plain_success, finish_unsent, on_answer, requeue_after_backoff, send, Answer, Backoff,
};
use super::key_queue::{DueCall, KeyQueue, Ready, Shard};
use super::key_state::{KeyState, Queued, Serve};
use super::panics::panic_message;
use super::refusals::ProbeVerdict;
use super::settle::{carry, settled, Settle, Settled};
use super::slot_timers::Timers;
use super::wire::Wire;
use super::Inner;
use crate::clock::{Instant, Sleep};
use crate::job_error::JobError;
use crate::ledger::{LedgerStore, StoreError};

/// Keys served, or answers handled, per turn of a shard's loop.
const BATCH: usize = 64;

/// What a shard's loop holds between its turns: kept outside the loop's future, so that after a
/// panic in it every job it held can still be given an outcome. `'a`: the scheduler's state, which
/// the requests of a store elsewhere borrow.
struct Held<'a> {
    /// The generator of the retry decisions' jitter, the shard's own.
    rng: fastrand::Rng,
    wire: Wire,
    backoffs: FuturesUnordered<BackoffWait>,
    /// Reservations and refunds asked of a store elsewhere, at most one per key, and what answers
    /// wait for ([`Settle`]).
    asks: FuturesUnordered<StoreCall<'a>>,
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
    let Some((ready, rng)) = shard.take_receiver() else {
        return;
    };
    let mut ready = Some(ready);
    let mut held = Held {
        rng,
        wire: Wire::default(),
        backoffs: FuturesUnordered::new(),
        asks: FuturesUnordered::new(),
        timers: Timers::default(),
        sleep: None,
        woke_for: None,
        asked: None,
        others: Vec::new(),
    };
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
    held: &mut Held<'_>,
    message: &str,
) {
    let error = JobError::Internal(format!(
        "a panic in the scheduler's dispatch task ended the job: {message}"
    ));
    let fail = |job: Queued| {
        job.outcome.send(Err(error.clone()));
    };
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
    // Their keys are closed below; a job waiting for its key's refresh fails with the others.
    for mut call in std::mem::take(&mut held.asks) {
        if let Some(job) = call.job.take() {
            fail(job);
        }
    }
    // The channel is emptied before the shard's keys are listed: a key that joined meanwhile and
    // asked (or started a call) is closed with the others, not left listed with no one to serve it.
    let mut asked_by: Vec<Arc<KeyQueue>> = Vec::new();
    let mut asked = held.asked.take();
    while let Some(work) = asked
        .take()
        .or_else(|| ready.as_mut().and_then(|r| r.try_recv().ok()))
    {
        match work {
            Ready::Start(due) => {
                asked_by.push(Arc::clone(&due.q));
                fail(due.job);
            }
            Ready::Serve(q) => asked_by.push(q),
        }
    }
    let mut ours: Vec<Arc<KeyQueue>> = inner
        .keys
        .iter()
        .map(|e| Arc::clone(e.value()))
        .chain(inner.removing.iter().map(|e| Arc::clone(e.value())))
        .filter(|q| Arc::ptr_eq(&q.shard, shard))
        .collect();
    for q in asked_by {
        if !ours.iter().any(|o| Arc::ptr_eq(o, &q)) {
            ours.push(q);
        }
    }
    tracing::error!(panic = %message, keys = ours.len(), "a dispatch task panicked: its keys are closed and their jobs fail");
    held.timers = Timers::default();
    held.sleep = None;
    held.woke_for = None;
    for q in &ours {
        for job in q.quarantine() {
            fail(job);
        }
    }
}

/// The shard's loop (see [`run_shard`]): returns once every key it was given is retired. A turn:
/// backoffs that ended, answers of a store elsewhere, keys that asked to be served, slots that
/// are due, then a wait.
async fn shard_loop<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    shard: &Shard,
    ready_slot: &mut Option<mpsc::UnboundedReceiver<Ready>>,
    held: &mut Held<'a>,
) {
    loop {
        let Some(ready) = ready_slot.as_mut() else {
            return;
        };
        // The clock is read once per turn: the calls of one turn go out within microseconds of
        // each other (with the in-memory store), far inside the guard the ledger keeps at each
        // window's edge.
        let mut now = None;
        requeue_backoffs(shard, &mut held.backoffs);
        take_store_answers(inner, held, &mut now);
        serve_asked(inner, ready, held, &mut now);
        serve_due(inner, held, &mut now);
        if held.wire.is_empty()
            && held.backoffs.is_empty()
            && held.asks.is_empty()
            && shard.stop_if_done(ready_slot, &held.rng)
        {
            return;
        }
        let Some(ready) = ready_slot.as_mut() else {
            return;
        };
        // The records of the calls started this turn reach their journals before the calls go:
        // a call goes out only when the wire polls its future, in the wait.
        shard.unflushed.flush(|| inner.clock.wall_now());
        wait_turn(inner, ready, held).await;
    }
}

/// Backoffs that have ended go back to their lanes, and so, at once, do those of a key handing
/// its jobs back. Checked every turn, not only when nothing else is ready: the wait prefers
/// answers, and a wire that is never idle must not hold retries back.
fn requeue_backoffs(shard: &Shard, backoffs: &mut FuturesUnordered<BackoffWait>) {
    while let Some(Some(backoff)) = backoffs.next().now_or_never() {
        requeue_after_backoff(backoff);
    }
    // (A load first: the usual turn costs no read-modify-write.)
    if shard.handing_back.load(Ordering::Acquire)
        && shard.handing_back.swap(false, Ordering::AcqRel)
        && !backoffs.is_empty()
    {
        for mut waiting in std::mem::take(backoffs) {
            match waiting.backoff.take() {
                Some(backoff) if backoff.q.lock().hands_back() => requeue_after_backoff(backoff),
                kept => {
                    waiting.backoff = kept;
                    backoffs.push(waiting);
                }
            }
        }
    }
}

/// Puts calls on `wire` as serving a key decides them.
fn starter<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    wire: &'a mut Wire,
) -> impl FnMut(&Arc<KeyQueue>, Queued, Arc<Addressing>, Instant, Instant) + Send + 'a {
    // Borrowed `&mut`: a shared borrow would need the calls to be `Sync`.
    move |q: &Arc<KeyQueue>, job, to, slot, sent_at| {
        let (call, response) = send(inner, Arc::clone(q), job, to, slot, sent_at);
        wire.push(call, response);
    }
}

/// Keys that asked to be served, and calls to start that were submitted to idle keys, a batch at a
/// time: the calls started are answered before more are started, so the set of calls stays small
/// and warm in cache.
fn serve_asked<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    ready: &mut mpsc::UnboundedReceiver<Ready>,
    held: &mut Held<'a>,
    now: &mut Option<Instant>,
) {
    for _ in 0..BATCH {
        let q = match held.asked.take().or_else(|| ready.try_recv().ok()) {
            None => break,
            Some(Ready::Serve(q)) => q,
            Some(Ready::Start(due)) => {
                let DueCall { q, job, to, slot } = due;
                let (call, response) = send(inner, q, job, to, slot, slot);
                held.wire.push(call, response);
                continue;
            }
        };
        q.scheduled.store(false, Ordering::Release);
        let mut start = starter(inner, &mut held.wire);
        let mut driver = Driver {
            now,
            timers: &mut held.timers,
            start: &mut start,
            asks: &mut held.asks,
        };
        serve(inner, &q, None, &mut driver);
    }
}

/// Serves the keys whose slot is due (through the deadline of the sleep that ended, whatever
/// the clock says).
fn serve_due<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    held: &mut Held<'a>,
    now: &mut Option<Instant>,
) {
    if held.timers.next_at().is_none() {
        return;
    }
    let now = *now.get_or_insert_with(|| inner.clock.now());
    let through = held.woke_for.take().map_or(now, |at| at.max(now));
    while let Some(t) = held.timers.pop_due(through) {
        let mut start = starter(inner, &mut held.wire);
        let mut driver = Driver {
            now: &mut Some(now),
            timers: &mut held.timers,
            start: &mut start,
            asks: &mut held.asks,
        };
        serve(inner, &t.q, Some(t.id), &mut driver);
    }
}

/// Answers of a store elsewhere that are in: each key is carried on from its answer. Checked
/// every turn, as backoffs are: the wait prefers the calls' answers.
fn take_store_answers<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    held: &mut Held<'a>,
    now: &mut Option<Instant>,
) {
    if held.asks.is_empty() {
        return;
    }
    while let Some(Some((answer, job))) = held.asks.next().now_or_never() {
        let mut start = starter(inner, &mut held.wire);
        let mut driver = Driver {
            now,
            timers: &mut held.timers,
            start: &mut start,
            asks: &mut held.asks,
        };
        store_answered(inner, answer, job, &mut driver);
    }
}

/// Waits for a call to end, a key to ask, a backoff to end, or the next slot, and takes it in.
async fn wait_turn<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    ready: &mut mpsc::UnboundedReceiver<Ready>,
    held: &mut Held<'a>,
) {
    let Held {
        rng,
        wire,
        backoffs,
        asks,
        timers,
        sleep,
        woke_for,
        asked,
        others,
    } = held;
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
    // The wire is polled below: whatever must be done before a call's future is first polled
    // (the journals' records of this turn's calls, written by `shard_loop`) is done by here.
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
            if !others.is_empty() {
                let mut start = starter(inner, wire);
                let mut driver = Driver { now: &mut None, timers, start: &mut start, asks };
                for answer in others.drain(..) {
                    handle(inner, answer, backoffs, rng, &mut driver);
                }
            }
        }
        Some((answer, job)) = asks.next(), if !asks.is_empty() => {
            let mut start = starter(inner, wire);
            let mut driver = Driver { now: &mut None, timers, start: &mut start, asks };
            store_answered(inner, answer, job, &mut driver);
        }
        Some(backoff) = backoffs.next(), if !backoffs.is_empty() => requeue_after_backoff(backoff),
        Some(work) = ready.recv() => *asked = Some(work),
        () = slot_due => {
            *woke_for = sleep.take().map(|(at, _)| at);
        }
    }
}

/// Handles an answered call that is not a plain success; a transient failure's backoff joins
/// `backoffs`, and what the answer waits for the shard's requests of the store.
fn handle<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    answer: Answer,
    backoffs: &mut FuturesUnordered<BackoffWait>,
    rng: &mut fastrand::Rng,
    driver: &mut Driver<'_, 'a>,
) {
    let handled = on_answer(inner, answer, rng);
    if let Some(backoff) = handled.backoff {
        backoffs.push(BackoffWait {
            sleep: inner.clock.sleep_until(backoff.until),
            backoff: Some(backoff),
        });
    }
    if let Some(settle) = handled.settle {
        settle_answer(inner, settle, driver);
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

/// A request of a store elsewhere for one key (or a refresh of its API key), answered when its
/// future is ready, with the job it holds if any (kept out of the future: after a panic in the
/// shard, it is failed with the others).
struct StoreCall<'a> {
    answer: Pin<Box<dyn Future<Output = StoreAnswer> + Send + 'a>>,
    job: Option<Queued>,
}

impl Future for StoreCall<'_> {
    type Output = (StoreAnswer, Option<Queued>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = std::task::ready!(self.answer.as_mut().poll(cx));
        Poll::Ready((answer, self.job.take()))
    }
}

/// What a store elsewhere was asked for a key ([`carry_out`] stops at it).
enum StoreAsk {
    /// The key's next slot, asked for at `at` in `epoch` (from [`Serve::NeedSlot`]).
    Reserve { at: Instant, epoch: u64 },
    /// Take back a slot no call went in.
    Refund(Instant),
}

/// A store's answer, for its key.
struct StoreAnswer {
    q: Arc<KeyQueue>,
    answer: StoreAnswered,
}

enum StoreAnswered {
    Reserved {
        at: Instant,
        epoch: u64,
        slot: Result<Instant, StoreError>,
    },
    Refunded(Result<(), StoreError>),
    /// What an answer waited for is in.
    Settled(Settled),
}

/// What carrying out a key's decisions needs of its shard: the time of the turn (read once, if
/// needed), the slot timers, the wire (through `start`) and the requests of a store elsewhere.
struct Driver<'d, 'a> {
    now: &'d mut Option<Instant>,
    timers: &'d mut Timers,
    start: &'d mut Start<'d>,
    asks: &'d mut FuturesUnordered<StoreCall<'a>>,
}

impl Driver<'_, '_> {
    /// The time of the turn, read once.
    fn now<S: LedgerStore>(&mut self, inner: &Inner<S>) -> Instant {
        *self.now.get_or_insert_with(|| inner.clock.now())
    }
}

/// Serves one key: carries out what its state decides ([`KeyState::next`]) until it has nothing
/// more to do for now, or waits for a store elsewhere. `timer` is set when the key's slot timer
/// fired. With the key's ledger in this process each step costs one lock of the key (the
/// ledger's taken inside it); a store elsewhere is asked with a future the shard polls (see
/// [`ask_store`]).
fn serve<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    q: &Arc<KeyQueue>,
    timer: Option<u64>,
    driver: &mut Driver<'_, 'a>,
) {
    // A held slot is due: a pause another process raised may stop it (a store elsewhere only).
    let block = timer.and_then(|_| inner.store.shared_block(&q.id));
    let step = {
        let mut st = q.lock();
        if let Some(block) = block {
            if st.stop_held_for(block, driver.now(inner)) {
                tracing::info!(key = %q.id, "paused by another process of the fleet: the slot held goes back");
            }
        }
        let step = st.next(timer, || driver.now(inner), || inner.clock.now());
        decided(q, &mut st, step, driver.timers)
    };
    carry_on(inner, q, step, driver);
}

/// Carries out `step` and what follows it ([`carry_out`]); a request of a store elsewhere it
/// comes to joins the shard's.
fn carry_on<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    q: &Arc<KeyQueue>,
    step: Serve,
    driver: &mut Driver<'_, 'a>,
) {
    if let Some(ask) = carry_out(inner, q, step, driver) {
        driver.asks.push(ask_store(inner, Arc::clone(q), ask));
    }
}

/// Completes a decision under the key's lock where it needs no waiting: a slot asked of a ledger
/// in this process is reserved at once and given to the key; a slot held for later gets its timer.
/// A slot to be asked of a store elsewhere is left to the caller, the key marked as waiting for it.
fn decided(q: &Arc<KeyQueue>, st: &mut KeyState, step: Serve, timers: &mut Timers) -> Serve {
    let step = match step {
        Serve::NeedSlot { at, epoch } => match q.lock_ledger() {
            Some(mut ledger) => {
                let (slot, probe) = st.reserve_in(&mut ledger, at, &q.quota);
                drop(ledger);
                if probe {
                    tracing::info!(key = %q.id, "refused calls alone hold the key back: probing whether the server counts them");
                }
                q.metrics.slot_reserved(slot.saturating_duration_since(at)); // [metrics]
                st.slot_given(slot, at, epoch, || at)
            }
            None => {
                st.store_asked();
                return Serve::NeedSlot { at, epoch };
            }
        },
        other => other,
    };
    if let Serve::WakeAt(slot) = step {
        st.timer_set(timers.add(slot, q));
        return Serve::Idle;
    }
    step
}

/// Carries out `step` and the steps that follow it as long as none needs a store elsewhere;
/// returns what that store is to be asked (the key is marked as waiting for it), or `None` when
/// the key has nothing more to do for now.
fn carry_out<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    step: Serve,
    driver: &mut Driver<'_, '_>,
) -> Option<StoreAsk> {
    let mut step = step;
    loop {
        step = match step {
            Serve::Idle => return None,
            Serve::Retired => {
                q.shard.retire();
                q.let_go.notify_waiters();
                return None;
            }
            Serve::Send {
                job,
                to,
                slot,
                sent_at,
                more,
            } => {
                q.space.notify_one();
                (driver.start)(q, job, to, slot, sent_at);
                if !more {
                    // The queue was empty once this job was taken, and the key has a call on
                    // the wire, so it is not finished: looking again would find nothing to do.
                    // A job queued since then wakes the key (it was unlisted before serving).
                    return None;
                }
                want_slot(inner, q, driver)
            }
            Serve::Invalid { job, slot, reason } => {
                let attempts = job.attempts;
                finish_unsent(
                    q,
                    job,
                    Err(JobError::InvalidRequest {
                        reason,
                        attempts,
                        source: None,
                    }),
                );
                Serve::Refund(slot)
            }
            Serve::Refund(slot) => {
                if !inner.refund_in_process(q, slot) {
                    q.lock().store_asked();
                    return Some(StoreAsk::Refund(slot));
                }
                let mut st = q.lock();
                q.settle_probe(&mut st, slot, ProbeVerdict::Undecided);
                let step = st.want_slot(|| driver.now(inner));
                decided(q, &mut st, step, driver.timers)
            }
            Serve::NeedSlot { at, epoch } => return Some(StoreAsk::Reserve { at, epoch }),
            Serve::WakeAt(_) => unreachable!("a held slot's timer is set under the key's lock"),
        };
    }
}

/// The key's next step after a call went or a slot went back.
fn want_slot<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    driver: &mut Driver<'_, '_>,
) -> Serve {
    let mut st = q.lock();
    let step = st.want_slot(|| driver.now(inner));
    decided(q, &mut st, step, driver.timers)
}

/// The future that asks the store elsewhere `ask` for `q`, and answers with its answer.
fn ask_store<S: LedgerStore>(inner: &Inner<S>, q: Arc<KeyQueue>, ask: StoreAsk) -> StoreCall<'_> {
    let answer: Pin<Box<dyn Future<Output = StoreAnswer> + Send + '_>> = match ask {
        StoreAsk::Reserve { at, epoch } => Box::pin(async move {
            let slot = inner.store.reserve(&q.id, at).await;
            StoreAnswer {
                q,
                answer: StoreAnswered::Reserved { at, epoch, slot },
            }
        }),
        StoreAsk::Refund(slot) => Box::pin(async move {
            let refunded = inner.store.refund(&q.id, slot).await;
            StoreAnswer {
                q,
                answer: StoreAnswered::Refunded(refunded),
            }
        }),
    };
    StoreCall { answer, job: None }
}

/// Waits for what an answer left ([`Settle`]) beside the shard's other work; a store that answers
/// at once (one in this process) is taken at once, in this turn.
fn settle_answer<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    mut settle: Settle,
    driver: &mut Driver<'_, 'a>,
) {
    let q = Arc::clone(&settle.q);
    let job = settle.take_job();
    let answer = Box::pin(async move {
        let settled = carry(inner, settle).await;
        StoreAnswer {
            q,
            answer: StoreAnswered::Settled(settled),
        }
    });
    let mut call = StoreCall { answer, job };
    match (&mut call).now_or_never() {
        Some((answer, job)) => store_answered(inner, answer, job, driver),
        None => driver.asks.push(call),
    }
}

/// A store elsewhere answered for a key (`job`: the one its request held): the key takes the
/// answer and is carried on from it.
fn store_answered<'a, S: LedgerStore>(
    inner: &'a Inner<S>,
    answer: StoreAnswer,
    job: Option<Queued>,
    driver: &mut Driver<'_, 'a>,
) {
    let StoreAnswer { q, answer } = answer;
    let step = match answer {
        StoreAnswered::Reserved { at, epoch, slot } => {
            slot_from_store(inner, &q, slot, at, epoch, driver)
        }
        StoreAnswered::Refunded(refunded) => {
            if let Err(e) = refunded {
                tracing::warn!(key = %q.id, error = %e, "could not refund an unused slot");
            }
            // No probe to settle: probes need the key's ledger in this process.
            q.lock().store_refunded();
            want_slot(inner, &q, driver)
        }
        StoreAnswered::Settled(done) => {
            if let Some(more) = settled(done, job) {
                return settle_answer(inner, more, driver);
            }
            // Served with the keys that asked, as after any answer (its other answers of the
            // turn are taken in first).
            return q.wake();
        }
    };
    carry_on(inner, &q, step, driver);
}

/// Gives the key the slot the store `reserved` for it at `at`; a store that cannot answer fails
/// the head job rather than spin.
fn slot_from_store<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    reserved: Result<Instant, StoreError>,
    at: Instant,
    epoch: u64,
    driver: &mut Driver<'_, '_>,
) -> Serve {
    match reserved {
        Ok(slot) => {
            q.metrics.slot_reserved(slot.saturating_duration_since(at)); // [metrics]
                                                                         // Reserved before a pause another process raised, and answered after it: given back.
            let block = inner.store.shared_block(&q.id);
            let mut st = q.lock();
            if block.is_some_and(|b| b.stops(slot, at, driver.now(inner))) {
                st.reslot();
            }
            // The call goes now, which may be long after the slot was asked for.
            let step = st.slot_given(slot, at, epoch, || driver.now(inner));
            decided(q, &mut st, step, driver.timers)
        }
        Err(e) => {
            let job = q.lock().slot_failed();
            if let Some(job) = job {
                finish_unsent(q, job, Err(JobError::Store(e)));
            }
            want_slot(inner, q, driver)
        }
    }
}
