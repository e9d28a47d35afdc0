//! What the scheduler benchmarks share (`benches/scheduler.rs`, `examples/many_keys_paired.rs`,
//! `examples/overhead_paired.rs`): a transport that answers at once, the job they send, a
//! scheduler with n keys, a batch, and the raw mpsc + oneshot reference; and two recipes a user
//! might write instead (tower's buffer + rate limit, governor + a semaphore under `join_all`).

use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use fabraix_scheduler::{
    ApiKey, Clock, HttpResponse, Job, JobError, KeyConfig, KeyHandle, KeyId, Ledger, LedgerConfig,
    Outcome, OutgoingRequest, Quota, Response, Scheduler, TokioClock, Transport, TransportFuture,
};
use http::{HeaderValue, Method, Uri};
use tokio::sync::{mpsc, oneshot};

/// Answers every request with an empty 200 at once.
pub struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, _request: OutgoingRequest<'_>) -> TransportFuture {
        Box::pin(async { Ok(HttpResponse::new(Bytes::new())) })
    }
}

/// The job every benchmark sends.
pub fn job() -> Job {
    Job::new(Method::POST, "/event").with_body(Bytes::from_static(b"{\"n\":1}"))
}

/// How the benchmark names the key of each job it submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `Scheduler::submit(&id, job)`: the key is looked up in the key map on every submit.
    Id,
    /// `KeyHandle::submit(job)`: a handle per key, looked up once.
    Handle,
}

impl Via {
    /// `--via id|handle` from the command line, or `default`.
    #[allow(dead_code)] // The examples' only; criterion has its own arguments.
    pub fn from_args(default: Via) -> Via {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.iter().position(|a| a == "--via") {
            None => default,
            Some(i) => match args.get(i + 1).map(String::as_str) {
                Some("id") => Via::Id,
                Some("handle") => Via::Handle,
                _ => panic!("--via id|handle"),
            },
        }
    }
}

/// The keys of a benchmark scheduler: their ids and a handle of each.
pub struct Keys {
    pub ids: Vec<KeyId>,
    pub handles: Vec<KeyHandle>,
}

/// A scheduler with `keys` keys (unlimited quota, queues of `capacity`) on the no-op transport.
pub async fn scheduler_with_keys(keys: usize, capacity: usize) -> (Scheduler, Arc<Keys>) {
    let scheduler = Scheduler::builder()
        .transport(Arc::new(NoopTransport))
        .seed(1)
        .build()
        .expect("scheduler builds");
    let mut ids = Vec::with_capacity(keys);
    let mut handles = Vec::with_capacity(keys);
    for i in 0..keys {
        let id = KeyId::new(format!("k{i}"));
        let config = KeyConfig::new(
            id.clone(),
            ApiKey::new(format!("secret-{i}")).expect("key"),
            "http://127.0.0.1:9/v1",
            Quota::unlimited(),
        )
        .expect("loopback endpoint")
        .queue_capacity(capacity);
        scheduler.add_key(config).await.expect("key added");
        handles.push(scheduler.key(&id).expect("key just added"));
        ids.push(id);
    }
    (scheduler, Arc::new(Keys { ids, handles }))
}

/// Submits `n` jobs round-robin over the keys (starting at `offset`), naming each key `via` its
/// id or its handle, then awaits every outcome.
pub async fn run_batch(scheduler: &Scheduler, keys: &Keys, via: Via, n: usize, offset: usize) {
    // A function per way, each the plain loop a user would write.
    match via {
        Via::Id => by_id(scheduler, &keys.ids, n, offset).await,
        Via::Handle => by_handle(&keys.handles, n, offset).await,
    }
}

async fn by_id(scheduler: &Scheduler, keys: &[KeyId], n: usize, offset: usize) {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[(offset + i) % keys.len()];
        tickets.push(scheduler.submit(key, job()).await.expect("submitted"));
    }
    for t in tickets {
        t.await.expect("success");
    }
}

async fn by_handle(keys: &[KeyHandle], n: usize, offset: usize) {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[(offset + i) % keys.len()];
        tickets.push(key.submit(job()).await.expect("submitted"));
    }
    for t in tickets {
        t.await.expect("success");
    }
}

/// `n` jobs from 2 spawned submitters (n / 2 each, the second starting halfway through the keys).
pub async fn run_two_submitters(scheduler: &Scheduler, keys: &Arc<Keys>, via: Via, n: usize) {
    let half = n / 2;
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            let (s, k) = (scheduler.clone(), Arc::clone(keys));
            tokio::spawn(async move { run_batch(&s, &k, via, half, t * half).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("submitter finished");
    }
}

/// The raw reference of the overhead benchmark: one task answering (job, oneshot) pairs from an
/// unbounded mpsc channel. Call inside a runtime.
pub fn raw_server() -> mpsc::UnboundedSender<(Job, oneshot::Sender<u16>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Job, oneshot::Sender<u16>)>();
    tokio::spawn(async move {
        while let Some((job, reply)) = rx.recv().await {
            drop(job);
            let _ = reply.send(200);
        }
    });
    tx
}

/// Sends `n` jobs to the raw server, each with its oneshot, then awaits every reply.
pub async fn raw_batch(tx: &mpsc::UnboundedSender<(Job, oneshot::Sender<u16>)>, n: usize) {
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let (reply, rx) = oneshot::channel();
        tx.send((job(), reply)).expect("server alive");
        replies.push(rx);
    }
    for r in replies {
        r.await.expect("answered");
    }
}

/// How much of the lower bound [`floor_server`] does: each level adds to the one before.
#[allow(dead_code)] // The overhead benchmarks' only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// The raw round trip, its answer a [`Response`] (an `Outcome`) instead of a status code.
    Outcome,
    /// And the call through the [`Transport`] trait: its boxed future, awaited in place.
    Transport,
    /// And a reservation in an unlimited [`Ledger`], the clock read once per 64 jobs (as a shard
    /// reads it once per turn): the whole lower bound.
    Ledger,
}

/// Calls between two clock reads of [`Floor::Ledger`] (a shard's batch).
const FLOOR_CLOCK_EVERY: u32 = 64;

/// The lower bound of the overhead benchmark: the raw round trip (one task answering jobs from an
/// unbounded mpsc channel through a `oneshot` each) plus only what every scheduler with this
/// library's contract adds per job, each done the cheapest way (see [`Floor`]): a [`Response`] as
/// the outcome, the call through [`Transport`] (awaited in place: right only for a transport that
/// answers at once, as here), a reservation in an unlimited [`Ledger`] and the clock. No key
/// lookup, queue, priorities, in-flight count, ETA or retry. Call inside a runtime.
#[allow(dead_code)] // The overhead benchmarks' only.
pub fn floor_server(level: Floor) -> mpsc::UnboundedSender<(Job, oneshot::Sender<Outcome>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Job, oneshot::Sender<Outcome>)>();
    tokio::spawn(async move {
        let transport: Arc<dyn Transport> = Arc::new(NoopTransport);
        let clock = TokioClock::new();
        let mut now = clock.now();
        let mut ledger = Ledger::new(&Quota::unlimited(), LedgerConfig::default(), now);
        let uri: Uri = "http://127.0.0.1:9/v1/event".parse().expect("uri");
        let mut api_key = HeaderValue::from_static("secret-0");
        api_key.set_sensitive(true);
        let mut calls = 0u32;
        while let Some((job, reply)) = rx.recv().await {
            let sent_at = if level == Floor::Ledger {
                if calls.is_multiple_of(FLOOR_CLOCK_EVERY) {
                    now = clock.now();
                }
                calls = calls.wrapping_add(1);
                ledger.reserve(now)
            } else {
                now
            };
            let result = if level == Floor::Outcome {
                Ok(HttpResponse::new(Bytes::new()))
            } else {
                let request = OutgoingRequest::new(job.method(), &uri, &api_key, None, job.body());
                transport.send(request).await
            };
            drop(job);
            let outcome = match result {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Ok(Response {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                        attempts: 1,
                        sent_at,
                    })
                }
                Err(e) => Err(JobError::Internal(e.to_string())),
            };
            let _ = reply.send(outcome);
        }
    });
    tx
}

/// Sends `n` jobs to a [`floor_server`], each with its oneshot, then awaits every outcome.
#[allow(dead_code)] // The overhead benchmarks' only.
pub async fn floor_batch(tx: &mpsc::UnboundedSender<(Job, oneshot::Sender<Outcome>)>, n: usize) {
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let (reply, rx) = oneshot::channel();
        tx.send((job(), reply)).expect("server alive");
        replies.push(rx);
    }
    for r in replies {
        r.await.expect("answered").expect("success");
    }
}

/// The no-op service under tower's recipe: answers every job with 200 at once.
#[allow(dead_code)] // The overhead benchmarks' only.
#[derive(Clone, Copy, Debug)]
pub struct NoopService;

impl tower::Service<Job> for NoopService {
    type Response = u16;
    type Error = Infallible;
    type Future = Ready<Result<u16, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        drop(job);
        std::future::ready(Ok(200))
    }
}

/// tower's recipe for a rate-limited client: `ServiceBuilder::new().buffer(1024).rate_limit(..)`
/// over [`NoopService`].
#[allow(dead_code)] // The overhead benchmarks' only.
pub type TowerRecipe = tower::buffer::Buffer<Job, Ready<Result<u16, Infallible>>>;

/// [`TowerRecipe`] at 1,000,000,000 calls a second (never the bound, like the scheduler's
/// unlimited quota): a buffer of 1,024 whose worker task drives the rate limit. Call inside a
/// runtime (the worker is spawned).
#[allow(dead_code)] // The overhead benchmarks' only.
pub fn tower_recipe() -> TowerRecipe {
    tower::ServiceBuilder::new()
        .buffer(1024)
        .rate_limit(1_000_000_000, std::time::Duration::from_secs(1))
        .service(NoopService)
}

/// Calls `n` jobs through a clone of `service` (each once it is ready), then awaits every answer.
#[allow(dead_code)] // The overhead benchmarks' only.
pub async fn tower_batch(service: &TowerRecipe, n: usize) {
    use tower::{Service, ServiceExt};
    let mut service = service.clone();
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let ready = service.ready().await.expect("buffer open");
        replies.push(ready.call(job()));
    }
    for r in replies {
        r.await.expect("answered");
    }
}

/// governor's recipe with a concurrency limit: each call waits `until_ready` on a direct limiter
/// (u32::MAX a second: never the bound), then for one of 64 permits of a tokio `Semaphore`, then
/// calls a no-op; the batch under `join_all`.
#[allow(dead_code)] // The overhead benchmarks' only.
pub struct GovernorRecipe {
    limiter: governor::DefaultDirectRateLimiter,
    permits: tokio::sync::Semaphore,
}

#[allow(dead_code)] // The overhead benchmarks' only.
impl GovernorRecipe {
    pub fn new() -> Self {
        Self {
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::MAX,
            )),
            permits: tokio::sync::Semaphore::new(64),
        }
    }

    async fn call(&self, job: Job) -> u16 {
        self.limiter.until_ready().await;
        let _permit = self.permits.acquire().await.expect("semaphore open");
        drop(job);
        200
    }
}

/// `n` jobs through the [`GovernorRecipe`], all awaited together (`join_all`).
#[allow(dead_code)] // The overhead benchmarks' only.
pub async fn governor_batch(recipe: &GovernorRecipe, n: usize) {
    let calls = (0..n).map(|_| recipe.call(job()));
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(answers.len(), n);
}
