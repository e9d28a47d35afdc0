//! Scheduler overhead and many keys.
//!
//! - `scheduler_overhead`: a batch of jobs through the whole scheduler (queue, ledger, dispatch,
//!   outcome) with a no-op transport (200 at once) and an unlimited quota, against a raw tokio
//!   mpsc + oneshot round trip of the same batch, on the same current-thread runtime.
//! - `many_keys`: 10,000 jobs submitted from 2 tasks on a 2-worker multi-thread runtime, spread
//!   over 10,000 keys against all on 1 key (unlimited quota, no-op transport).
//!
//! `cargo bench --bench scheduler`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fabraix_scheduler::{
    ApiKey, HttpRequest, HttpResponse, Job, KeyConfig, KeyId, Quota, Scheduler, Transport,
    TransportFuture,
};
use http::Method;
use tokio::sync::{mpsc, oneshot};

/// Answers every request with an empty 200 at once.
struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, _request: HttpRequest) -> TransportFuture {
        Box::pin(async { Ok(HttpResponse::new(Bytes::new())) })
    }
}

const BATCH: usize = 1_000;
const MANY: usize = 10_000;

fn job() -> Job {
    Job::new(Method::POST, "/event").with_body(Bytes::from_static(b"{\"n\":1}"))
}

async fn scheduler_with_keys(keys: usize) -> (Scheduler, Vec<KeyId>) {
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
        .queue_capacity(MANY);
        scheduler.add_key(config).await.expect("key added");
        ids.push(id);
    }
    (scheduler, ids)
}

/// Submits `n` jobs round-robin over `keys`, then awaits every outcome.
async fn run_batch(scheduler: &Scheduler, keys: &[KeyId], n: usize, offset: usize) {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[(offset + i) % keys.len()];
        tickets.push(scheduler.submit(key, job()).await.expect("submitted"));
    }
    for t in tickets {
        t.await.expect("success");
    }
}

/// The raw reference: one server task answering (request, oneshot) pairs from an mpsc channel.
fn raw_server() -> mpsc::UnboundedSender<(Job, oneshot::Sender<u16>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Job, oneshot::Sender<u16>)>();
    tokio::spawn(async move {
        while let Some((job, reply)) = rx.recv().await {
            drop(job);
            let _ = reply.send(200);
        }
    });
    tx
}

async fn raw_batch(tx: &mpsc::UnboundedSender<(Job, oneshot::Sender<u16>)>, n: usize) {
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

fn scheduler_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (scheduler, keys) = rt.block_on(scheduler_with_keys(1));
    let raw = rt.block_on(async { raw_server() });
    let mut group = c.benchmark_group("scheduler_overhead");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("scheduler_noop_transport", BATCH), |b| {
        b.to_async(&rt)
            .iter(|| run_batch(&scheduler, &keys, BATCH, 0))
    });
    group.bench_function(BenchmarkId::new("raw_mpsc_oneshot", BATCH), |b| {
        b.to_async(&rt).iter(|| raw_batch(&raw, BATCH))
    });
    group.finish();
}

fn many_keys(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("many_keys");
    // The noisiest group (two threads, this shared machine): more samples, a longer look.
    group
        .sample_size(40)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(MANY as u64));
    for keys in [1usize, MANY] {
        let (scheduler, ids) = rt.block_on(scheduler_with_keys(keys));
        let ids: Arc<[KeyId]> = ids.into();
        group.bench_function(BenchmarkId::new("keys_2_submitters", keys), |b| {
            b.to_async(&rt).iter(|| {
                let (scheduler, ids) = (scheduler.clone(), Arc::clone(&ids));
                async move {
                    let half = MANY / 2;
                    let tasks: Vec<_> = (0..2)
                        .map(|t| {
                            let (s, k) = (scheduler.clone(), Arc::clone(&ids));
                            tokio::spawn(async move { run_batch(&s, &k, half, t * half).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("submitter finished");
                    }
                }
            })
        });
        rt.block_on(scheduler.shutdown(fabraix_scheduler::ShutdownMode::Drain));
    }
    group.finish();
}

criterion_group!(benches, scheduler_overhead, many_keys);
criterion_main!(benches);
