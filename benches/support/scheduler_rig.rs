//! What the scheduler benchmarks share (`benches/scheduler.rs`, `examples/many_keys_paired.rs`):
//! a transport that answers at once, the job they send, a scheduler with n keys, and a batch.

use std::sync::Arc;

use bytes::Bytes;
use fabraix_scheduler::{
    ApiKey, HttpRequest, HttpResponse, Job, KeyConfig, KeyId, Quota, Scheduler, Transport,
    TransportFuture,
};
use http::Method;

/// Answers every request with an empty 200 at once.
pub struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, _request: HttpRequest) -> TransportFuture {
        Box::pin(async { Ok(HttpResponse::new(Bytes::new())) })
    }
}

/// The job every benchmark sends.
pub fn job() -> Job {
    Job::new(Method::POST, "/event").with_body(Bytes::from_static(b"{\"n\":1}"))
}

/// A scheduler with `keys` keys (unlimited quota, queues of `capacity`) on the no-op transport.
pub async fn scheduler_with_keys(keys: usize, capacity: usize) -> (Scheduler, Vec<KeyId>) {
    let scheduler = Scheduler::builder()
        .transport(Arc::new(NoopTransport))
        .seed(1)
        .build()
        .expect("scheduler builds");
    let mut ids = Vec::with_capacity(keys);
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
        ids.push(id);
    }
    (scheduler, ids)
}

/// Submits `n` jobs round-robin over `keys` (starting at `offset`), then awaits every outcome.
pub async fn run_batch(scheduler: &Scheduler, keys: &[KeyId], n: usize, offset: usize) {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[(offset + i) % keys.len()];
        tickets.push(scheduler.submit(key, job()).await.expect("submitted"));
    }
    for t in tickets {
        t.await.expect("success");
    }
}

/// `n` jobs from 2 spawned submitters (n / 2 each, the second starting halfway through `keys`).
pub async fn run_two_submitters(scheduler: &Scheduler, keys: &Arc<[KeyId]>, n: usize) {
    let half = n / 2;
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            let (s, k) = (scheduler.clone(), Arc::clone(keys));
            tokio::spawn(async move { run_batch(&s, &k, half, t * half).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("submitter finished");
    }
}
