//! One call on the wire and what its answer does: success, 429 (pause the key, put the job back),
//! transient failure (back off, retry under the budget), 401/403, fatal. The shard
//! ([`super::shard`]) decides when a call goes; this decides what happens after.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::addressing::Addressing;
use super::key_queue::{KeyQueue, Queued};
use super::refusals::ProbeVerdict;
use super::stats::Counters;
use super::Inner;
use crate::api_error::ApiError;
use crate::clock::Instant;
use crate::job_error::JobError;
use crate::ledger::LedgerStore;
use crate::response::Response;
use crate::retry::network_time::instant_after;
use crate::retry::{
    classify_status, parse_rate_limit_headers, parse_retry_after, Class, Delivery, RetryAfter,
    ServerWindow,
};
use crate::transport::{
    HttpResponse, OutgoingRequest, TransportError, TransportErrorKind, TransportFuture,
};

/// Ends a job that never went on the wire.
pub(crate) fn finish_unsent(q: &Arc<KeyQueue>, job: Queued, outcome: crate::job_error::Outcome) {
    Counters::bump(&q.counters.failed);
    job.outcome.send(outcome);
    q.space.notify_one();
    q.wake();
}

/// Ends a job that was on the wire: frees its in-flight place and delivers its outcome.
fn finish(q: &Arc<KeyQueue>, job: Queued, outcome: crate::job_error::Outcome) {
    if outcome.is_err() {
        Counters::bump(&q.counters.failed);
    }
    let serve = {
        let mut st = q.lock();
        st.in_flight -= 1;
        if outcome.is_ok() {
            // An accepted call ends the key's storm, on the plain path as on the full one.
            st.refused_in_a_row = 0;
            st.calls.succeeded += 1;
            st.ramp = (st.ramp * 2).min(q.max_in_flight);
        }
        // With nothing queued the key has nothing to do until a job arrives (which wakes it),
        // unless it is closing and may now be done.
        st.has_jobs() || st.closed
    };
    job.outcome.send(outcome);
    if serve {
        q.wake();
    }
}

/// Puts a job back at the front of its lane (or hands it back if the queue is being emptied).
fn requeue_front(q: &Arc<KeyQueue>, job: Queued, from_backoff: bool) {
    let mut st = q.lock();
    if from_backoff {
        st.backing_off -= 1;
    } else {
        st.in_flight -= 1;
        st.ramp = 1;
    }
    if st.hand_back {
        q.hand_back(&mut st, job);
    } else {
        st.push_front(job);
    }
    drop(st);
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

/// A call that has been answered (or failed on the way).
pub(crate) struct Answer {
    call: OnWire,
    result: Result<HttpResponse, TransportError>,
}

impl Answer {
    /// The job of the answered call (its answer unused: after a panic in the shard).
    pub(crate) fn into_job(self) -> Queued {
        self.call.job
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
/// that is not being paced delivers its outcome at once (`None`). Anything else is given back for
/// [`on_answer`]. (An awaited handler is a large future, moved on every call; this is not.)
pub(crate) fn finish_plain_success<S: LedgerStore>(
    inner: &Inner<S>,
    call: OnWire,
    result: Result<HttpResponse, TransportError>,
) -> Option<Answer> {
    match result {
        // (Any window at all takes the full path, which caps it: no cap is needed to see one.)
        Ok(response)
            if !call.q.guard_follows
                && matches!(classify_status(response.status()), Class::Success)
                && parse_rate_limit_headers(
                    response.headers(),
                    || inner.clock.wall_now(),
                    Duration::MAX,
                )
                .is_none()
                && !q_is_paced(&call.q) =>
        {
            call.q
                .settle_probe(call.slot, ProbeVerdict::Accepted, inner.clock.as_ref());
            let (parts, body) = response.into_parts();
            succeed(&call.q, call.job, parts, body, call.sent_at);
            None
        }
        result => Some(Answer { call, result }),
    }
}

/// Delivers a success: the response (`parts`, `body`) of the attempt sent at `sent_at`.
fn succeed(
    q: &Arc<KeyQueue>,
    job: Queued,
    parts: http::response::Parts,
    body: bytes::Bytes,
    sent_at: Instant,
) {
    let attempts = job.attempts;
    let response = Response {
        status: parts.status,
        headers: parts.headers,
        body,
        attempts,
        sent_at,
    };
    finish(q, job, Ok(response));
}

fn q_is_paced(q: &KeyQueue) -> bool {
    q.paced.load(std::sync::atomic::Ordering::Acquire)
}

/// Classifies an answered call and acts on it: delivers the outcome, or pauses the key and puts
/// the job back (429), or returns the backoff a transient failure waits out before its retry.
pub(crate) async fn on_answer<S: LedgerStore>(inner: &Inner<S>, answer: Answer) -> Option<Backoff> {
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
    if q.guard_follows && result.is_ok() {
        q.observe_latency(sent_at, inner.clock.now());
    }
    let verdict = match &result {
        Ok(response) => match classify_status(response.status()) {
            Class::Success => ProbeVerdict::Accepted,
            Class::RateLimited => ProbeVerdict::Refused,
            _ => ProbeVerdict::Undecided,
        },
        Err(_) => ProbeVerdict::Undecided,
    };
    q.settle_probe(slot, verdict, inner.clock.as_ref());
    match result {
        Ok(response) if response.status() == http::StatusCode::UNAUTHORIZED => {
            on_unauthorized(&q, job, response, &to).await;
            None
        }
        Ok(response) => on_response(inner, &q, job, response, slot, sent_at).await,
        Err(error) => on_transport_error(inner, &q, job, error),
    }
}

/// A backoff ended: the job goes back to the front of its lane.
pub(crate) fn requeue_after_backoff(backoff: Backoff) {
    requeue_front(&backoff.q, backoff.job, true);
}

async fn on_response<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    job: Queued,
    response: HttpResponse,
    slot: Instant,
    sent_at: Instant,
) -> Option<Backoff> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let class = classify_status(status);
    if class != Class::RateLimited {
        // The server answered: whatever storm the key was in is over.
        q.lock().refused_in_a_row = 0;
    }
    let window = server_window(inner, q, &parts.headers);
    if let (Some(window), false) = (window, class == Class::RateLimited) {
        // (A 429's window is applied with its `retry_after`, which it may not outlast.)
        apply_window(inner, q, window, window.reset_in).await;
    }
    match class {
        Class::Success => {
            let spacing = {
                let mut pacer = q.pacer.lock().unwrap_or_else(|p| p.into_inner());
                // The clock is read only for a key that is being paced.
                if pacer.factor().is_some() {
                    pacer.on_success(inner.clock.now(), &q.quota)
                } else {
                    None
                }
            };
            if let Some(spacing) = spacing {
                tracing::debug!(key = %q.id, spacing_ms = spacing.as_millis() as u64, "pace raised after a quiet window");
                let _ = inner.store.set_pace(&q.id, Some(spacing)).await;
            }
            succeed(q, job, parts, body, sent_at);
            None
        }
        Class::RateLimited => {
            Box::pin(async {
                let refund = q.lock().refusals.on_refused(slot);
                if refund {
                    if let Err(e) = inner.refund_slot(q, slot).await {
                        tracing::warn!(key = %q.id, error = %e, "could not refund a refused call");
                    }
                }
                on_rate_limited(inner, q, job, &parts.headers, &body, window).await
            })
            .await;
            None
        }
        Class::Transient => {
            let api = api_error(q, status.as_u16(), &body);
            let message = api.to_string();
            retry_or_fail(
                inner,
                q,
                job,
                Some(status.as_u16()),
                api.code,
                message,
                true,
            )
        }
        Class::Unauthorized => {
            let api = api_error(q, status.as_u16(), &body);
            revoke(q, job, api);
            None
        }
        Class::Forbidden => {
            let api = api_error(q, status.as_u16(), &body);
            let key = q.lock().api_key.fingerprint().to_string();
            tracing::warn!(key = %q.id, fingerprint = %key, status = 403, "call forbidden for this key");
            let attempts = job.attempts;
            finish(q, job, Err(JobError::Forbidden { key, api, attempts }));
            None
        }
        Class::Fatal => {
            let api = api_error(q, status.as_u16(), &body);
            let attempts = job.attempts;
            finish(q, job, Err(JobError::Rejected { api, attempts }));
            None
        }
    }
}

/// 401: sent again if the key rotated since the call went, or if the key's refresh
/// ([`KeyConfig::on_unauthorized`](super::KeyConfig::on_unauthorized)) gives another key;
/// otherwise the key is revoked ([`revoke`]).
async fn on_unauthorized(q: &Arc<KeyQueue>, job: Queued, response: HttpResponse, to: &Addressing) {
    let refused = {
        let st = q.lock();
        (st.api_key_header == to.api_key).then(|| st.api_key.clone())
    };
    let Some(refused) = refused else {
        return requeue_front(q, job, false);
    };
    if let Some(refresh) = &q.key_refresh {
        if let Some(new) = refresh.refresh(&refused).await {
            if new != refused {
                tracing::warn!(key = %q.id, refused = %refused.fingerprint(), new = %new.fingerprint(), "401: the key's source gave a new key; sending again with it");
                q.rotate(new);
                return requeue_front(q, job, false);
            }
        }
    }
    let api = api_error(q, 401, response.body());
    revoke(q, job, api);
}

/// The server's error from `body`, with the key's value replaced by its fingerprint wherever the
/// server echoed it.
fn api_error(q: &KeyQueue, status: u16, body: &[u8]) -> ApiError {
    let st = q.lock();
    ApiError::from_body_redacted(status, body, &st.api_key)
}

/// The server's window from `headers`, capped as a `retry_after` is (and logged when clamped).
fn server_window<S: LedgerStore>(
    inner: &Inner<S>,
    q: &KeyQueue,
    headers: &http::HeaderMap,
) -> Option<ServerWindow> {
    let cap = inner.retry.retry_after_cap_for(q.quota.longest_window());
    let window = parse_rate_limit_headers(headers, || inner.clock.wall_now(), cap)?;
    if let Some(announced) = window.clamped_from {
        tracing::warn!(key = %q.id, announced_s = announced.as_secs_f64(), cap_s = cap.as_secs_f64(), "server's rate-limit reset clamped");
    }
    Some(window)
}

/// Tells the store what the server said is left: `window.remaining` calls (less ours still on
/// the wire) for `reset_in` from now.
async fn apply_window<S: LedgerStore>(
    inner: &Inner<S>,
    q: &KeyQueue,
    window: ServerWindow,
    reset_in: Duration,
) {
    let now = inner.clock.now();
    // Calls of ours still on the wire will count against what the server says is left.
    let others = q.lock().in_flight.saturating_sub(1);
    let remaining = window
        .remaining
        .saturating_sub(u32::try_from(others).unwrap_or(u32::MAX));
    let reset_at = instant_after(now, reset_in);
    if let Err(e) = inner
        .store
        .apply_server_window(&q.id, remaining, reset_at)
        .await
    {
        tracing::warn!(key = %q.id, error = %e, "could not apply the server's rate-limit headers");
    }
}

/// 401: this job fails, and so does every job queued for the key, at once, until the key rotates.
fn revoke(q: &Arc<KeyQueue>, job: Queued, api: ApiError) {
    let (key, queued, held) = {
        let mut st = q.lock();
        st.revoked = true;
        let held = st.pending.is_some();
        (st.api_key.fingerprint().to_string(), st.take_all(), held)
    };
    if held {
        // No job is left for the slot the shard waits for: give it back now, so that a key
        // closing (shutdown, removal) need not wait for it.
        q.reslot();
    }
    tracing::error!(key = %q.id, fingerprint = %key, failed_fast = queued.len(), "401: key invalid or revoked");
    for other in queued {
        let error = JobError::KeyRevoked {
            key: key.clone(),
            attempts: other.attempts,
        };
        finish_unsent(q, other, Err(error));
    }
    let attempts = job.attempts;
    finish(q, job, Err(JobError::Unauthorized { key, api, attempts }));
}

async fn on_rate_limited<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    mut job: Queued,
    headers: &http::HeaderMap,
    body: &[u8],
    window: Option<ServerWindow>,
) {
    let now = inner.clock.now();
    Counters::bump(&q.counters.rate_limited);
    job.rate_limited += 1;
    let in_a_row = {
        let mut st = q.lock();
        st.refused_in_a_row = st.refused_in_a_row.saturating_add(1);
        st.refused_in_a_row
    };
    let policy = &inner.retry;
    let cap = policy.retry_after_cap_for(q.quota.longest_window());
    let (retry_after, problems) = parse_retry_after(headers, body, inner.clock.wall_now(), cap);
    for p in &problems {
        let reason = q.lock().api_key.redact(&p.reason).into_owned();
        tracing::warn!(key = %q.id, source = p.source, reason = %reason, "unusable retry_after");
    }
    let (unit_a, unit_b) = inner.random_pair();
    let server = match retry_after {
        RetryAfter::Wait { wait, clamped_from } => {
            if let Some(asked) = clamped_from {
                tracing::warn!(key = %q.id, asked_s = asked.as_secs_f64(), cap_s = cap.as_secs_f64(), "retry_after clamped");
            }
            Some(wait)
        }
        RetryAfter::Unusable => None,
    };
    let step = policy.after_refusal(in_a_row, server, unit_a);
    let pause = step
        .wait
        .saturating_add(policy.retry_after_jitter.mul_f64(unit_b));
    let resume = instant_after(now, pause);
    tracing::info!(key = %q.id, job = job.id, wait_ms = pause.as_millis() as u64, in_a_row, "429: pausing the key");
    if let Some(window) = window {
        // The server's window may hold the key no longer than its (capped) `retry_after`.
        apply_window(inner, q, window, window.reset_in.min(pause)).await;
    }
    if let Err(e) = inner.store.block_until(&q.id, resume).await {
        tracing::warn!(key = %q.id, error = %e, "could not pause the key in the store");
    }
    if inner.adaptive_pacing {
        adapt_pace(inner, q, now).await;
    }
    q.reslot();
    if step.give_up {
        give_up_storm(q, job, api_error(q, 429, body), in_a_row);
    } else {
        requeue_front(q, job, false);
    }
}

/// A 429 the quota allowed: the key may slow to even spacing (see the pacing notes).
async fn adapt_pace<S: LedgerStore>(inner: &Inner<S>, q: &Arc<KeyQueue>, now: Instant) {
    let utilisation = inner
        .store
        .recent_utilisation(&q.id, now)
        .await
        .unwrap_or_default();
    let spacing = {
        let mut pacer = q.pacer.lock().unwrap_or_else(|p| p.into_inner());
        let spacing = pacer.on_rate_limited(now, &q.quota, &utilisation);
        if pacer.factor().is_some() {
            q.paced.store(true, std::sync::atomic::Ordering::Release);
        }
        spacing
    };
    if let Some(spacing) = spacing {
        tracing::info!(key = %q.id, spacing_ms = spacing.as_millis() as u64, "server counts more strictly than the quota: pacing evenly");
        let _ = inner.store.set_pace(&q.id, Some(spacing)).await;
    }
}

/// The key's storm outlasted the policy: the refused job and every job queued fail with
/// `RateLimited` together (none is left waiting behind one that failed).
fn give_up_storm(q: &Arc<KeyQueue>, job: Queued, last: ApiError, in_a_row: u32) {
    let queued = q.lock().take_all();
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
    mut error: TransportError,
) -> Option<Backoff> {
    // A transport's message may quote a URL the server chose (a redirect's): it may hold the key.
    if let Cow::Owned(clean) = q.lock().api_key.redact(&error.message) {
        error.message = clean;
    }
    tracing::debug!(key = %q.id, job = job.id, error = %error, "transport error");
    if error.kind == TransportErrorKind::Panicked {
        tracing::error!(key = %q.id, job = job.id, panic = %error.message, "the transport panicked");
        finish(q, job, Err(JobError::Internal(error.to_string())));
        return None;
    }
    if error.kind == TransportErrorKind::ResponseTooLarge {
        tracing::warn!(key = %q.id, job = job.id, error = %error, "response too large");
        let error = JobError::ResponseTooLarge {
            reason: error.message,
            attempts: job.attempts,
        };
        finish(q, job, Err(error));
        return None;
    }
    if !error.kind.is_transient() {
        let error = JobError::InvalidRequest {
            reason: error.to_string(),
            attempts: job.attempts,
        };
        finish(q, job, Err(error));
        return None;
    }
    let reached = error.kind.may_have_reached_server();
    retry_or_fail(inner, q, job, None, None, error.to_string(), reached)
}

/// Fails the job, or returns the backoff it waits out before its retry.
#[allow(clippy::too_many_arguments)]
fn retry_or_fail<S: LedgerStore>(
    inner: &Inner<S>,
    q: &Arc<KeyQueue>,
    mut job: Queued,
    status: Option<u16>,
    code: Option<String>,
    message: String,
    may_have_reached_server: bool,
) -> Option<Backoff> {
    let delivery = job.job.delivery.unwrap_or(inner.retry.delivery);
    let why = if delivery == Delivery::AtMostOnce && may_have_reached_server {
        Some("at-most-once delivery: the server may have processed it")
    } else if job.transient_retries >= inner.retry.max_transient_retries {
        Some("retries exhausted")
    } else if !inner.budget.withdraw() {
        Some("retry budget spent")
    } else {
        None
    };
    if let Some(why) = why {
        let attempts = job.attempts;
        finish(
            q,
            job,
            Err(JobError::Transient {
                attempts,
                status,
                code,
                message,
                why,
            }),
        );
        return None;
    }
    {
        // A key handing its jobs back (shutdown, removal) does not wait out a backoff first.
        let mut st = q.lock();
        if st.hand_back {
            st.in_flight -= 1;
            q.hand_back(&mut st, job);
            drop(st);
            q.wake();
            return None;
        }
    }
    Counters::bump(&q.counters.retries);
    let delay: Duration = inner
        .retry
        .backoff(job.transient_retries, inner.random_pair().0);
    job.transient_retries += 1;
    tracing::debug!(key = %q.id, job = job.id, delay_ms = delay.as_millis() as u64, "transient failure: backing off");
    {
        let mut st = q.lock();
        st.in_flight -= 1;
        st.backing_off += 1;
    }
    q.wake();
    Some(Backoff {
        q: Arc::clone(q),
        job,
        until: instant_after(inner.clock.now(), delay),
    })
}
