//! What a call's answer does: success, 429 (pause the key, put the job back), transient failure
//! (back off, retry under the budget), 401/403, fatal. The shard ([`super::shard`]) decides when a
//! call goes and puts it on the wire ([`send`]); this carries out what its answer leads to, with
//! the key's state ([`super::key_state`]) and the retry policy's decisions
//! ([`RetryPolicy`](crate::RetryPolicy)). Each answer is classified once ([`Classified`]).
//!
//! Nothing here waits: what an answer tells a store elsewhere (a 429's pause, the server's window,
//! a pace), and a key's refresh after a 401, are left for the shard to wait for ([`Settle`]).

use std::sync::Arc;
use std::time::Duration;

use super::addressing::Addressing;
use super::counter_learning::window_for_counter;
use super::key_queue::KeyQueue;
use super::key_state::Queued;
use super::refusals::ProbeVerdict;
use super::settle::{PaceWrite, Settle, Writes};
use super::stats::Counters;
use super::Inner;
use crate::api_error::ApiError;
use crate::api_key::ApiKey;
use crate::clock::Instant;
use crate::job_error::{JobError, Outcome};
use crate::ledger::LedgerStore;
use crate::response::Response;
use crate::retry::answer::Classified;
use crate::retry::network_time::instant_after;
use crate::retry::{Class, ServerWindow};
use crate::transport::{
    HttpResponse, OutgoingRequest, TransportError, TransportErrorKind, TransportFuture,
};

/// Ends a job that never went on the wire.
pub(crate) fn finish_unsent(q: &Arc<KeyQueue>, job: Queued, outcome: Outcome) {
    Counters::bump(&q.counters.failed);
    job.outcome.send(outcome);
    q.space.notify_one();
    q.wake();
}

/// Ends a job that was on the wire: frees its in-flight place and delivers its outcome.
fn finish(q: &Arc<KeyQueue>, job: Queued, outcome: Outcome) {
    if outcome.is_err() {
        Counters::bump(&q.counters.failed);
    }
    // With nothing queued the key has nothing to do until a job arrives (which wakes it), unless
    // it is closing and may now be done.
    let accepted = outcome.as_ref().ok().map(|r| r.sent_at);
    let serve = q.lock().call_ended(accepted);
    job.outcome.send(outcome);
    if serve {
        q.wake();
    }
}

/// Puts a job back at the front of its lane (or hands it back if the key is handing back).
fn requeue_front(q: &Arc<KeyQueue>, job: Queued, from_backoff: bool) {
    let handed_back = q.lock().put_back(&q.id, job, from_backoff);
    if let Some(outcome) = handed_back {
        q.handed_back(outcome);
    }
    q.wake();
}

/// A call on the wire, as its answer will need it: its key, its job, its slot, when it went.
pub(crate) struct OnWire {
    pub(crate) q: Arc<KeyQueue>,
    pub(crate) job: Queued,
    pub(crate) slot: Instant,
    pub(crate) sent_at: Instant,
    /// Where it went, with the key it carried (a 401 tells whether the key rotated since).
    pub(crate) to: Arc<Addressing>,
}

/// A call that has been answered (its response classified), or failed on the way.
pub(crate) struct Answer {
    call: OnWire,
    result: Result<(HttpResponse, Classified), TransportError>,
}

impl Answer {
    /// The job of the answered call (its answer unused: after a panic in the shard).
    pub(crate) fn into_job(self) -> Queued {
        self.call.job
    }
}

/// What an answer leaves to the shard: a backoff to wait out before the job's retry, and what its
/// key waits for before it reserves again.
#[derive(Default)]
pub(crate) struct Handled {
    pub(crate) backoff: Option<Backoff>,
    pub(crate) settle: Option<Settle>,
}

impl Handled {
    fn settle(settle: Option<Settle>) -> Self {
        Self {
            backoff: None,
            settle,
        }
    }
}

/// A job waiting out its backoff after a transient failure; it goes back to the front of its lane
/// at `until` ([`requeue_after_backoff`]).
pub(crate) struct Backoff {
    pub(crate) q: Arc<KeyQueue>,
    pub(crate) job: Queued,
    pub(crate) until: Instant,
}

/// Puts one attempt of `job` on the wire (its `slot`, sent at `sent_at`, addressed `to`): the
/// call, to be kept until it is answered, and the transport's future of its answer. What the
/// answer leads to is [`finish_plain_success`]'s and [`on_answer`]'s work.
pub(crate) fn send<S: LedgerStore>(
    inner: &Inner<S>,
    q: Arc<KeyQueue>,
    mut job: Queued,
    to: Arc<Addressing>,
    slot: Instant,
    sent_at: Instant,
) -> (OnWire, TransportFuture) {
    job.attempts += 1;
    if job.attempts == 1 {
        inner.budget.deposit();
    }
    tracing::trace!(key = %q.id, job = job.id, attempt = job.attempts, path = %job.job.path, "sending");
    if let Some(journal) = &q.journal {
        // Before the call goes: written by the shard's flush before it polls the call's future,
        // so a crash after the call went cannot leave it unrecorded.
        if journal.record(inner.clock.wall_now()) {
            q.shard.unflushed.add(journal);
        }
    }
    let request = OutgoingRequest::new(
        &job.job.method,
        &to.uri,
        &to.api_key,
        job.job.headers.as_deref(),
        &job.job.body,
    );
    // [adapters] A job of the tower / reqwest-middleware adapters carries its own transport.
    let transport = job.job.via.as_ref().map_or(&inner.transport, |via| &via.0);
    // [metrics] The attempt's span (its future runs in it only when the span is enabled).
    let span = q
        .metrics
        .call_span(&q.id, job.job.priority, slot, job.attempts);
    let response = if span.is_disabled() {
        transport.send(request)
    } else {
        let _entered = span.enter();
        let response = transport.send(request);
        Box::pin(tracing::Instrument::instrument(response, span.clone()))
    };
    q.metrics.sent(); // [metrics]
    (
        OnWire {
            q,
            job,
            slot,
            sent_at,
            to,
        },
        response,
    )
}

/// The common answer, handled without an `.await`: a success without rate-limit headers on a key
/// that is neither paced nor probing delivers its outcome at once (`None`), in one lock of the key.
/// Anything else is given back, classified, for [`on_answer`]. (An awaited handler is a large
/// future, moved on every call; this is not.)
pub(crate) fn finish_plain_success<S: LedgerStore>(
    inner: &Inner<S>,
    call: OnWire,
    result: Result<HttpResponse, TransportError>,
) -> Option<Answer> {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return Some(Answer {
                call,
                result: Err(error),
            })
        }
    };
    let cap = inner
        .retry
        .retry_after_cap_for(call.q.quota.longest_window());
    let classified = Classified::response(
        response.status(),
        response.headers(),
        response.body(),
        || inner.clock.wall_now(),
        cap,
    );
    if call.q.guard_follows || !classified.is_plain_success() {
        return Some(Answer {
            call,
            result: Ok((response, classified)),
        });
    }
    let serve = {
        let mut st = call.q.lock();
        if !st.plain_success_will_do() {
            drop(st);
            return Some(Answer {
                call,
                result: Ok((response, classified)),
            });
        }
        st.call_ended(Some(call.sent_at))
    };
    let OnWire {
        q, job, sent_at, ..
    } = call;
    let response = success(job.attempts, response, sent_at);
    job.outcome.send(Ok(response));
    if serve {
        q.wake();
    }
    None
}

/// The outcome of attempt `attempts` sent at `sent_at` and answered with success `response`.
fn success(attempts: u32, response: HttpResponse, sent_at: Instant) -> Response {
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status,
        headers: parts.headers,
        body,
        attempts,
        sent_at,
    }
}

/// Delivers a success: the `response` of the attempt sent at `sent_at`.
fn succeed(q: &Arc<KeyQueue>, job: Queued, response: HttpResponse, sent_at: Instant) {
    let response = success(job.attempts, response, sent_at);
    finish(q, job, Ok(response));
}

/// Acts on an answered call: delivers the outcome, or pauses the key and puts the job back (429),
/// or returns the backoff a transient failure waits out before its retry, with what the store is
/// to be told. `rng` is the shard's generator for the jitter.
pub(crate) fn on_answer<S: LedgerStore>(
    inner: &Inner<S>,
    answer: Answer,
    rng: &mut fastrand::Rng,
) -> Handled {
    let Answer {
        call:
            OnWire {
                q,
                job,
                slot,
                sent_at,
                to,
            },
        result,
    } = answer;
    {
        let mut st = q.lock();
        if q.guard_follows && result.is_ok() {
            q.observe_latency(&mut st, sent_at, inner.clock.now());
        }
        let verdict = match &result {
            Ok((_, c)) if c.class == Class::Success => ProbeVerdict::Accepted,
            Ok((_, c)) if c.class == Class::RateLimited => ProbeVerdict::Refused,
            _ => ProbeVerdict::Undecided,
        };
        q.settle_probe(&mut st, slot, verdict);
    }
    match result {
        Ok((response, c)) if c.class == Class::Unauthorized => {
            Handled::settle(on_unauthorized(&q, job, response, &to))
        }
        Ok((response, c)) => {
            let call = Answered {
                q: &q,
                slot,
                sent_at,
            };
            on_response(inner, call, job, response, c, rng)
        }
        Err(error) => Handled {
            backoff: on_transport_error(inner, &q, job, error, rng),
            settle: None,
        },
    }
}

/// A backoff ended: the job goes back to the front of its lane.
pub(crate) fn requeue_after_backoff(backoff: Backoff) {
    requeue_front(&backoff.q, backoff.job, true);
}

/// The call an answer is for: its key, its slot, when it went.
#[derive(Clone, Copy)]
struct Answered<'a> {
    q: &'a Arc<KeyQueue>,
    slot: Instant,
    sent_at: Instant,
}

fn on_response<S: LedgerStore>(
    inner: &Inner<S>,
    call: Answered<'_>,
    job: Queued,
    response: HttpResponse,
    c: Classified,
    rng: &mut fastrand::Rng,
) -> Handled {
    let q = call.q;
    let status = response.status();
    if c.class == Class::RateLimited {
        let body = response.into_body();
        return Handled::settle(on_rate_limited(inner, call, job, &body, c, rng));
    }
    // The server answered: whatever storm the key was in is over.
    q.lock().answered_not_refused();
    let mut writes = Writes::default();
    if let Some(window) = c.window {
        if let Some(announced) = window.clamped_from {
            let cap = inner.retry.retry_after_cap_for(q.quota.longest_window());
            tracing::warn!(key = %q.id, announced_s = announced.as_secs_f64(), cap_s = cap.as_secs_f64(), "server's rate-limit reset clamped");
        }
        // (A refusal's window may be a lockout, not the limit's: learnt from answers only.)
        q.learn_from_headers(&window, call.slot, call.sent_at);
        // (A 429's window is applied with its `retry_after`, which it may not outlast.)
        let others = q.lock().in_flight().saturating_sub(1);
        writes.window = server_window(inner, q, window, window.reset_in, others);
    }
    if c.class == Class::Success {
        let spacing = {
            let mut st = q.lock();
            // The clock is read only for a key that is being paced.
            if st.pace_factor().is_some() {
                st.pace_after_success(inner.clock.now(), &q.quota)
            } else {
                None
            }
        };
        if let Some(spacing) = spacing {
            tracing::debug!(key = %q.id, spacing_ms = spacing.as_millis() as u64, "pace raised after a quiet window");
            writes.pace = PaceWrite::Set(spacing);
        }
    }
    // (Before the outcome: the key reserves nothing until the store has the writes.)
    let settle = Settle::writes(q, writes);
    let backoff = match c.class {
        Class::Success => {
            succeed(q, job, response, call.sent_at);
            None
        }
        Class::RateLimited => unreachable!("a 429 is handled above"),
        Class::Transient => {
            let api = api_error(q, status.as_u16(), response.body());
            let failure = TransientFailure {
                status: Some(status.as_u16()),
                message: api.to_string(),
                code: api.code,
                may_have_reached_server: true,
                transport: None,
            };
            retry_or_fail(inner, q, job, failure, rng)
        }
        Class::Unauthorized => {
            let api = api_error(q, status.as_u16(), response.body());
            revoke(q, job, api);
            None
        }
        Class::Forbidden => {
            let api = api_error(q, status.as_u16(), response.body());
            let fingerprint = q.lock().api_key().fingerprint().to_string();
            tracing::warn!(key = %q.id, fingerprint = %fingerprint, status = 403, "call forbidden for this key");
            let attempts = job.attempts;
            let error = JobError::Forbidden {
                fingerprint,
                api,
                attempts,
            };
            finish(q, job, Err(error));
            None
        }
        Class::Fatal => {
            let api = api_error(q, status.as_u16(), response.body());
            let attempts = job.attempts;
            finish(q, job, Err(JobError::Rejected { api, attempts }));
            None
        }
    };
    Handled { backoff, settle }
}

/// 401: sent again if the key rotated since the call went, or if the key's refresh
/// ([`KeyConfig::on_unauthorized`](super::KeyConfig::on_unauthorized)) gives another key
/// (waited for by the shard: the [`Settle`] returned, then [`refreshed`]); otherwise the key is
/// revoked ([`revoke`]).
fn on_unauthorized(
    q: &Arc<KeyQueue>,
    job: Queued,
    response: HttpResponse,
    to: &Addressing,
) -> Option<Settle> {
    let (refused, ask) = {
        let mut st = q.lock();
        let refused = (*st.api_key_header() == to.api_key).then(|| st.api_key().clone());
        // No call goes with the refused key while its source is asked for another, and it is
        // asked once: a 401 while it is asked waits for its answer.
        let ask = refused.is_some() && q.key_refresh.is_some() && st.refresh_started();
        (refused, ask)
    };
    let Some(refused) = refused else {
        requeue_front(q, job, false);
        return None;
    };
    if let Some(refresh) = &q.key_refresh {
        if !ask {
            requeue_front(q, job, false);
            return None;
        }
        let refresh = Arc::clone(refresh);
        return Some(Settle::refresh(q, refresh, refused, response, job));
    }
    refreshed(q, job, &refused, response, None);
    None
}

/// The key's source answered the refresh of `refused` (a 401 for `job`, its `response`) with
/// `new`: the job is sent again with a new key, or the key is revoked.
pub(crate) fn refreshed(
    q: &Arc<KeyQueue>,
    job: Queued,
    refused: &ApiKey,
    response: HttpResponse,
    new: Option<ApiKey>,
) {
    if let Some(new) = new {
        if new != *refused {
            tracing::warn!(key = %q.id, refused = %refused.fingerprint(), new = %new.fingerprint(), "401: the key's source gave a new key; sending again with it");
            q.rotate(new);
            return requeue_front(q, job, false);
        }
    }
    let api = api_error(q, 401, response.body());
    revoke(q, job, api);
}

/// The server's error from `body`, with the key's value replaced by its fingerprint wherever the
/// server echoed it.
fn api_error(q: &KeyQueue, status: u16, body: &[u8]) -> ApiError {
    let st = q.lock();
    ApiError::from_body_redacted(status, body, st.api_key())
}

/// What the store is to be told the server said is left: `window.remaining` calls (less
/// `others`, ours still on the wire) before `reset_in` from now, as `(remaining, reset_at)`. A key
/// reading its limits as sliding-window counters takes only an empty window, less its reset's
/// rounding (see `counter_learning`); `None` for any other.
fn server_window<S: LedgerStore>(
    inner: &Inner<S>,
    q: &KeyQueue,
    window: ServerWindow,
    reset_in: Duration,
    others: usize,
) -> Option<(u32, Instant)> {
    // (A ledger in a shared store is planned as sliding windows whatever the configuration.)
    let reads_as_counter = q.ledger.is_some() && q.lock().reads_as_counter();
    let reset_in = if reads_as_counter {
        window_for_counter(&window, reset_in)?
    } else {
        reset_in
    };
    let now = inner.clock.now();
    let remaining = window
        .remaining
        .saturating_sub(u32::try_from(others).unwrap_or(u32::MAX));
    Some((remaining, instant_after(now, reset_in)))
}

/// 401: this job fails, and so does every job queued for the key, at once, until the key rotates.
fn revoke(q: &Arc<KeyQueue>, job: Queued, api: ApiError) {
    let (fingerprint, queued) = {
        let mut st = q.lock();
        let queued = st.revoke();
        (st.api_key().fingerprint().to_string(), queued)
    };
    // A held slot with no job left is given back now, so that a key closing (shutdown, removal)
    // need not wait for it.
    q.wake();
    tracing::error!(key = %q.id, fingerprint = %fingerprint, failed_fast = queued.len(), "401: key invalid or revoked");
    for other in queued {
        let error = JobError::KeyRevoked {
            fingerprint: fingerprint.clone(),
            attempts: other.attempts,
        };
        finish_unsent(q, other, Err(error));
    }
    let attempts = job.attempts;
    finish(
        q,
        job,
        Err(JobError::Unauthorized {
            fingerprint,
            api,
            attempts,
        }),
    );
}

/// Two uniform samples in `[0, 1)`: a decision's draws from the shard's generator.
fn unit_pair(rng: &mut fastrand::Rng) -> (f64, f64) {
    (rng.f64(), rng.f64())
}

/// 429: the key pauses (the store blocks it until the pause ends: the writes returned, the key
/// reserving nothing until they are in), may slow to even spacing, and the job goes back to the
/// front of its lane — or, past the policy's storm limit, every job of the key fails.
fn on_rate_limited<S: LedgerStore>(
    inner: &Inner<S>,
    call: Answered<'_>,
    mut job: Queued,
    body: &[u8],
    c: Classified,
    rng: &mut fastrand::Rng,
) -> Option<Settle> {
    let q = call.q;
    Counters::bump(&q.counters.rate_limited);
    job.rate_limited += 1;
    let (in_a_row, refund, others, pace_nothing) = {
        let mut st = q.lock();
        // (Before its slot may be refunded: the counter's estimate counts the refused call.) A
        // call that went before the key learned its server's counting paces nothing either.
        let pace_nothing = q.learn_from_refusal(&mut st, call.slot, call.sent_at)
            || st.sent_before_learning(call.sent_at);
        let (in_a_row, refund) = st.refused(call.slot);
        for p in &c.retry_after_problems {
            let reason = st.api_key().redact(&p.reason);
            tracing::warn!(key = %q.id, source = p.source, reason = %reason, "unusable retry_after");
        }
        (
            in_a_row,
            refund,
            st.in_flight().saturating_sub(1),
            pace_nothing,
        )
    };
    let mut writes = Writes::default();
    if refund && !inner.refund_in_process(q, call.slot) {
        writes.refund = Some(call.slot);
    }
    let now = inner.clock.now();
    let pause = inner
        .retry
        .pause_after_refusal(in_a_row, c.retry_after, unit_pair(rng));
    if let Some(asked) = pause.clamped_from {
        let cap = inner.retry.retry_after_cap_for(q.quota.longest_window());
        tracing::warn!(key = %q.id, asked_s = asked.as_secs_f64(), cap_s = cap.as_secs_f64(), "retry_after clamped");
    }
    let resume = instant_after(now, pause.wait);
    tracing::info!(key = %q.id, job = job.id, wait_ms = pause.wait.as_millis() as u64, in_a_row, "429: pausing the key");
    if let Some(window) = c.window {
        // The server's window may hold the key no longer than its (capped) `retry_after`.
        writes.window = server_window(inner, q, window, window.reset_in.min(pause.wait), others);
    }
    writes.block = Some(resume);
    if pace_nothing {
        // The counter's estimate plans the calls now: no pace.
        writes.pace = PaceWrite::Drop;
    } else if inner.adaptive_pacing {
        // A 429 the quota allowed: the key may slow to even spacing (see the pacing notes).
        writes.pace = PaceWrite::Adapt(now);
    }
    // (Before the job goes back: the key reserves nothing until the store has the pause.)
    let settle = Settle::writes(q, writes);
    if pause.give_up {
        give_up_storm(q, job, body, in_a_row);
    } else {
        let handed_back = {
            let mut st = q.lock();
            st.reslot();
            st.put_back(&q.id, job, false)
        };
        if let Some(outcome) = handed_back {
            q.handed_back(outcome);
        }
        q.wake();
    }
    settle
}

/// The key's storm outlasted the policy: the refused job and every job queued fail with
/// `RateLimited` together (none is left waiting behind one that failed).
fn give_up_storm(q: &Arc<KeyQueue>, job: Queued, body: &[u8], in_a_row: u32) {
    let (queued, last) = {
        let mut st = q.lock();
        st.reslot();
        let last = ApiError::from_body_redacted(429, body, st.api_key());
        (st.take_all(), last)
    };
    q.wake();
    tracing::error!(key = %q.id, in_a_row, failed = queued.len() + 1, "429s in a row beyond the retry policy: the key's jobs fail");
    for other in queued {
        let error = JobError::RateLimited {
            attempts: other.attempts,
            rate_limited: other.rate_limited,
            last: last.clone(),
        };
        finish_unsent(q, other, Err(error));
    }
    let (attempts, rate_limited) = (job.attempts, job.rate_limited);
    finish(
        q,
        job,
        Err(JobError::RateLimited {
            attempts,
            rate_limited,
            last,
        }),
    );
}

fn on_transport_error<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    job: Queued,
    error: TransportError,
    rng: &mut fastrand::Rng,
) -> Option<Backoff> {
    // A transport's message may quote a URL the server chose (a redirect's): it may hold the key.
    let error = error.redacted(q.lock().api_key());
    tracing::debug!(key = %q.id, job = job.id, error = %error, "transport error");
    if error.kind == TransportErrorKind::Panicked {
        tracing::error!(key = %q.id, job = job.id, panic = %error.message, "the transport panicked");
        finish(q, job, Err(JobError::Internal(error.to_string())));
        return None;
    }
    if error.kind == TransportErrorKind::ResponseTooLarge {
        tracing::warn!(key = %q.id, job = job.id, error = %error, "response too large");
        let error = JobError::ResponseTooLarge {
            reason: error.message.clone(),
            attempts: job.attempts,
            source: error,
        };
        finish(q, job, Err(error));
        return None;
    }
    if !error.kind.is_transient() {
        let error = JobError::InvalidRequest {
            reason: error.to_string(),
            attempts: job.attempts,
            source: Some(error),
        };
        finish(q, job, Err(error));
        return None;
    }
    let failure = TransientFailure {
        status: None,
        code: None,
        message: error.to_string(),
        may_have_reached_server: error.kind.may_have_reached_server(),
        transport: Some(error),
    };
    retry_or_fail(inner, q, job, failure, rng)
}

/// A transient failure, as the job's error would tell it.
struct TransientFailure {
    status: Option<u16>,
    code: Option<String>,
    message: String,
    may_have_reached_server: bool,
    /// The transport's error, when no response came.
    transport: Option<TransportError>,
}

/// Fails the job, or returns the backoff it waits out before its retry (as the policy decides,
/// [`RetryPolicy::after_transient`](crate::RetryPolicy)).
fn retry_or_fail<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    mut job: Queued,
    failure: TransientFailure,
    rng: &mut fastrand::Rng,
) -> Option<Backoff> {
    let decided = inner.retry.after_transient(
        job.job.delivery,
        failure.may_have_reached_server,
        job.transient_retries,
        &inner.budget,
    );
    if let Err(why) = decided {
        let attempts = job.attempts;
        let TransientFailure {
            status,
            code,
            message,
            transport,
            ..
        } = failure;
        let error = JobError::Transient {
            attempts,
            status,
            code,
            message,
            why,
            source: transport,
        };
        finish(q, job, Err(error));
        return None;
    }
    // A key handing its jobs back (shutdown, removal) does not wait out a backoff first.
    let backing_off = q.lock().back_off(&q.id, job);
    q.wake();
    job = match backing_off {
        Ok(job) => job,
        Err(outcome) => {
            q.handed_back(outcome);
            return None;
        }
    };
    Counters::bump(&q.counters.retries);
    let delay: Duration = inner.retry.backoff(job.transient_retries, unit_pair(rng).0);
    job.transient_retries += 1;
    tracing::debug!(key = %q.id, job = job.id, delay_ms = delay.as_millis() as u64, "transient failure: backing off");
    Some(Backoff {
        q: Arc::clone(q),
        job,
        until: instant_after(inner.clock.now(), delay),
    })
}
