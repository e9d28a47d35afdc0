//! What the scheduler benchmarks share (`benches/scheduler.rs`, `examples/many_keys_paired.rs`,
//! `examples/overhead_paired.rs`): a transport that answers at once, the job they send, a
//! scheduler with n keys, a batch, and the raw mpsc + oneshot reference.

use std::sync::Arc;

use bytes::Bytes;
use fabraix_scheduler::{
    ApiKey, HttpResponse, Job, KeyConfig, KeyHandle, KeyId, OutgoingRequest, Quota, Scheduler,
    Transport, TransportFuture,
};
use http::Method;
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
