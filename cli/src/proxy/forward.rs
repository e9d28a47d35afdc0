//! One client request: routed (`/v1/…`, `/healthz`, `/metrics`), checked (token, lane, size,
//! time), submitted to the scheduler as a job, and answered with the API's answer as it came.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fabraix_scheduler::{
    Instant, Job, JobError, KeyId, Outcome, Priority, Scheduler, SubmitError, Ticket,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::access::ClientToken;
use super::envelope::{self, proxy_error};
use super::headers::{forwarded_request_headers, lane, returned_response_headers};
use super::metrics::{self, ProxyCounters, Refusal};
use super::upstream::{Capture, Captures, CALL_HEADER};

/// What every request of the proxy shares.
#[derive(Debug)]
pub struct ProxyState {
    /// The scheduler the calls go through.
    pub scheduler: Scheduler<crate::store::CliStore>,
    /// The key they go with.
    pub key: KeyId,
    /// The token clients must present, if any.
    pub token: ClientToken,
    /// The API's answers to failed calls, for their clients.
    pub captures: Arc<Captures>,
    /// The proxy's counters.
    pub counters: ProxyCounters,
    /// The largest request body taken, in bytes.
    pub max_request_bytes: usize,
    /// Time a client has to send its body.
    pub client_timeout: Duration,
    /// Set once the proxy is stopping (`/healthz` then answers 503).
    pub stopping: AtomicBool,
}

type Answer = Response<Full<Bytes>>;

/// Answers one request (never fails: every error is an answer).
pub async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let path = req.uri().path();
    let answer = if path == "/healthz" {
        healthz(&state)
    } else if path == "/metrics" {
        if state.token.admits(req.headers()) {
            metrics_page(&state).await
        } else {
            token_refused(&state)
        }
    } else if path.starts_with("/v1/") {
        forward(&state, req).await
    } else {
        proxy_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the proxy forwards /v1/<path>; it also serves /healthz and /metrics",
        )
    };
    Ok(answer)
}

fn healthz(state: &ProxyState) -> Answer {
    let (status, text) = if state.stopping.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn metrics_page(state: &ProxyState) -> Answer {
    let stats = state.scheduler.stats(&state.key).unwrap_or_default();
    let now = state.scheduler.clock().now();
    let eta = match state.scheduler.drain_eta(&state.key).await {
        Ok(Some(at)) => at.saturating_duration_since(now),
        _ => Duration::ZERO,
    };
    let text = metrics::render(
        &state.counters,
        &metrics::Snapshot {
            stats,
            queue_eta: eta,
        },
    );
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn token_refused(state: &ProxyState) -> Answer {
    state.counters.refused(Refusal::Token);
    let body = envelope::body(
        "this proxy needs its client token: send Authorization: Bearer TOKEN",
        "authentication_error",
        "proxy_token_required",
    );
    envelope::json(StatusCode::UNAUTHORIZED, body)
}

fn bad_request(state: &ProxyState, status: StatusCode, code: &str, message: &str) -> Answer {
    state.counters.refused(Refusal::BadRequest);
    proxy_error(status, code, message)
}

/// `/v1/<path>` → the job for `<path>`, through the scheduler, and the API's answer.
async fn forward(state: &ProxyState, req: Request<Incoming>) -> Answer {
    if !state.token.admits(req.headers()) {
        return token_refused(state);
    }
    let (parts, body) = req.into_parts();
    let full = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = full.strip_prefix("/v1").unwrap_or(full).to_string();
    let lane = match lane(&path, &parts.headers) {
        Ok(lane) => lane,
        Err(message) => {
            return bad_request(state, StatusCode::BAD_REQUEST, "bad_priority", &message)
        }
    };
    let body = match read_body(state, &parts.headers, body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let capture = Capture::new(&state.captures);
    let mut headers = forwarded_request_headers(&parts.headers);
    headers.insert(CALL_HEADER, capture.header());
    let job = Job::new(parts.method.clone(), path)
        .with_body(body)
        .with_headers(headers)
        .with_priority(lane);
    let taken = state.scheduler.clock().now();
    match state.scheduler.submit(&state.key, job).await {
        Ok(ticket) => {
            let outcome = InQueue::new(state, ticket, lane, taken).outcome().await;
            answer(outcome, &capture, parts.method == Method::HEAD)
        }
        Err(e) => refused(state, e).await,
    }
}

/// The request's body, read within the client timeout and the size limit.
async fn read_body(
    state: &ProxyState,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, Answer> {
    let limit = state.max_request_bytes;
    let too_large = || {
        let message = format!("the request body is larger than the proxy's limit of {limit} bytes");
        bad_request(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &message,
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(state.client_timeout, Limited::new(body, limit).collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(bad_request(
            state,
            StatusCode::BAD_REQUEST,
            "request_body_unreadable",
            "the request body could not be read",
        )),
        Err(_) => Err(bad_request(
            state,
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!(
                "the request body did not arrive within {:?}",
                state.client_timeout
            ),
        )),
    }
}

/// A job waiting for its outcome; dropped before it (the client went away), the job is cancelled
/// if it was not sent yet (its slot refunded) and its answer dropped otherwise.
struct InQueue<'a> {
    state: &'a ProxyState,
    ticket: Ticket,
    lane: Priority,
    taken: Instant,
    done: bool,
}

impl<'a> InQueue<'a> {
    fn new(state: &'a ProxyState, ticket: Ticket, lane: Priority, taken: Instant) -> Self {
        state.counters.forwarded(lane);
        Self {
            state,
            ticket,
            lane,
            taken,
            done: false,
        }
    }

    async fn outcome(mut self) -> Outcome {
        let outcome = (&mut self.ticket).await;
        self.done = true;
        let waited = self
            .state
            .scheduler
            .clock()
            .now()
            .saturating_duration_since(self.taken);
        self.state.counters.done(self.lane, Some(waited));
        outcome
    }
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ticket.cancel();
            self.state.counters.done(self.lane, None);
        }
    }
}

/// The answer to the client: the API's (a success, or the failed call's own answer), or the
/// proxy's envelope when the API gave none (timeout, connection lost, key revoked).
fn answer(outcome: Outcome, capture: &Capture, head: bool) -> Answer {
    let (status, headers, body) = match outcome {
        Ok(r) => (r.status, r.headers, r.body),
        Err(e) => match (e.status(), capture.take()) {
            (Some(_), Some(raw)) => {
                let (parts, body) = raw.into_parts();
                (parts.status, parts.headers, body)
            }
            _ => return from_error(&e),
        },
    };
    let mut r = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *r.status_mut() = status;
    *r.headers_mut() = returned_response_headers(&headers);
    r
}

fn from_error(e: &JobError) -> Answer {
    let message = e.to_string();
    let (status, code) = match e {
        JobError::KeyRevoked { .. } | JobError::Unauthorized { .. } => {
            let body = envelope::body(&message, "authentication_error", "proxy_key_refused");
            return envelope::json(StatusCode::BAD_GATEWAY, body);
        }
        JobError::Transient {
            status: None,
            message: m,
            ..
        } if m.contains("timed out") => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        JobError::Transient { .. } => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
        JobError::Cancelled | JobError::ShutDown => {
            (StatusCode::SERVICE_UNAVAILABLE, "proxy_stopping")
        }
        JobError::InvalidRequest { .. } => (StatusCode::BAD_GATEWAY, "upstream_invalid"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, e.kind()),
    };
    proxy_error(status, code, &message)
}

/// A job the scheduler did not take.
async fn refused(state: &ProxyState, e: SubmitError) -> Answer {
    match e {
        SubmitError::QueueFull { capacity, .. } => {
            state.counters.refused(Refusal::QueueFull);
            envelope::queue_full(capacity, next_room(state).await)
        }
        SubmitError::ShuttingDown { .. } => {
            state.counters.refused(Refusal::Stopping);
            proxy_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy_stopping",
                "the proxy is stopping",
            )
        }
        SubmitError::InvalidJob { reason, .. } => {
            bad_request(state, StatusCode::BAD_REQUEST, "invalid_path", &reason)
        }
        e => proxy_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

/// Until the queue has room again: the key's next free slot in the ledger's plan (by then the
/// first queued job has gone).
async fn next_room(state: &ProxyState) -> Duration {
    let now = state.scheduler.clock().now();
    match state.scheduler.plan(&state.key, 1).await {
        Ok(slots) => slots
            .first()
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
        Err(_) => Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(r: Answer) -> serde_json::Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_without_an_api_answer_get_the_proxys_envelope() {
        let cases = [
            (
                JobError::KeyRevoked {
                    fingerprint: "key#0".into(),
                    attempts: 0,
                },
                502,
                "proxy_key_refused",
            ),
            (
                JobError::Transient {
                    attempts: 3,
                    status: None,
                    code: None,
                    message: "timed out: operation timed out".into(),
                    why: "retries exhausted",
                    source: None,
                },
                504,
                "upstream_timeout",
            ),
            (
                JobError::Transient {
                    attempts: 1,
                    status: None,
                    code: None,
                    message: "connection failed: refused".into(),
                    why: "retries exhausted",
                    source: None,
                },
                502,
                "upstream_unreachable",
            ),
            (JobError::ShutDown, 503, "proxy_stopping"),
        ];
        for (error, status, code) in cases {
            let r = from_error(&error);
            assert_eq!(r.status(), status, "{error:?}");
            let body = body_json(r).await;
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_calls_own_answer_is_passed_back() {
        let captures = Arc::new(Captures::default());
        let capture = Capture::new(&captures);
        let api = fabraix_scheduler::ApiError::from_body(422, br#"{"detail":"bad"}"#);
        let error = JobError::Rejected { api, attempts: 1 };
        // No answer kept: the proxy's envelope.
        let r = answer(Err(error.clone()), &capture, false);
        assert_eq!(r.status(), 500);
        // The API's answer kept: passed back as it came, hop-by-hop headers dropped.
        let mut raw =
            fabraix_scheduler::HttpResponse::new(Bytes::from_static(br#"{"detail":"bad"}"#));
        *raw.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        raw.headers_mut()
            .insert("x-request-id", "r1".parse().unwrap());
        raw.headers_mut()
            .insert("connection", "close".parse().unwrap());
        captures.keep(capture.id(), &raw);
        let r = answer(Err(error), &capture, false);
        assert_eq!(r.status(), 422);
        assert_eq!(r.headers()["x-request-id"], "r1");
        assert!(r.headers().get("connection").is_none());
        assert_eq!(body_json(r).await["detail"], "bad");
        drop(capture);
        assert!(captures.is_empty(), "a dropped capture frees its slot");
    }
}
