//! Scheduler overhead and many keys.
//!
//! - `scheduler_overhead`: a batch of jobs through the whole scheduler (queue, ledger, dispatch,
//!   outcome) with a no-op transport (200 at once) and an unlimited quota, against a raw tokio
//!   mpsc + oneshot round trip of the same batch, on the same current-thread runtime; and the
//!   lower bound of any scheduler with this library's contract (`floor_server`: the raw round trip
//!   plus a `Response` as the outcome, the call through the `Transport` trait, a reservation); and
//!   two recipes a user might write instead, over a no-op service: tower's
//!   `ServiceBuilder::new().buffer(1024).rate_limit(..)`, and governor's `until_ready` with a tokio
//!   `Semaphore` of 64 under `join_all`.
//! - `scheduler_overhead/quota_layer_noop_service`: the same batch as requests through a
//!   `QuotaLayer` over a no-op tower service (200 at once), all in flight at once as the
//!   scheduler's batch is: beside `scheduler_noop_transport`, the layer's cost per request (the
//!   request made a job, its body read, its attempt relayed to the caller, the response made).
//! - `many_keys`: 10,000 jobs submitted from 2 tasks on a 2-worker multi-thread runtime, spread
//!   over 10,000 keys against all on 1 key (unlimited quota, no-op transport), each key named by
//!   its id (`Scheduler::submit`, a map lookup per job) and by its handle (`KeyHandle::submit`).
//!
//! `cargo bench --bench scheduler`

#[path = "support/scheduler_rig.rs"]
mod scheduler_rig;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scheduler_rig::{
    floor_batch, floor_server, governor_batch, raw_batch, raw_server, run_batch,
    run_two_submitters, scheduler_with_keys, tower_batch, tower_recipe, Floor, GovernorRecipe, Via,
};

const BATCH: usize = 1_000;
const MANY: usize = 10_000;

fn scheduler_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (scheduler, keys) = rt.block_on(scheduler_with_keys(1, MANY));
    let raw = rt.block_on(async { raw_server() });
    let floor = rt.block_on(async { floor_server(Floor::Ledger) });
    let tower = rt.block_on(async { tower_recipe() });
    let governor = GovernorRecipe::new();
    let mut group = c.benchmark_group("scheduler_overhead");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("scheduler_noop_transport", BATCH), |b| {
        b.to_async(&rt)
            .iter(|| run_batch(&scheduler, &keys, Via::Id, BATCH, 0))
    });
    group.bench_function(BenchmarkId::new("raw_mpsc_oneshot", BATCH), |b| {
        b.to_async(&rt).iter(|| raw_batch(&raw, BATCH))
    });
    group.bench_function(BenchmarkId::new("floor_of_the_contract", BATCH), |b| {
        b.to_async(&rt).iter(|| floor_batch(&floor, BATCH))
    });
    group.bench_function(BenchmarkId::new("tower_buffer_rate_limit", BATCH), |b| {
        b.to_async(&rt).iter(|| tower_batch(&tower, BATCH))
    });
    group.bench_function(
        BenchmarkId::new("governor_semaphore_join_all", BATCH),
        |b| b.to_async(&rt).iter(|| governor_batch(&governor, BATCH)),
    );
    group.finish();
}

/// The `QuotaLayer` row of `scheduler_overhead` (a function of its own: the group's other rows
/// are another's to change).
fn quota_layer_overhead(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Service, ServiceBuilder, ServiceExt};

    type Request = http::Request<Full<Bytes>>;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (scheduler, keys) = rt.block_on(scheduler_with_keys(1, MANY));
    let layer = fabraix_scheduler::QuotaLayer::new(&scheduler, &keys.ids[0])
        .expect("key added")
        .max_pending(MANY);
    let noop = tower::service_fn(|_request: Request| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
    });
    let service = ServiceBuilder::new().layer(layer).service(noop);
    let batch = |n: usize| {
        let mut service = service.clone();
        async move {
            let mut calls = Vec::with_capacity(n);
            for _ in 0..n {
                let ready = ServiceExt::<Request>::ready(&mut service).await;
                let request = http::Request::post("http://127.0.0.1:9/v1/event")
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("request");
                calls.push(ready.expect("ready").call(request));
            }
            for response in futures_util::future::join_all(calls).await {
                assert_eq!(response.expect("response").status(), 200);
            }
        }
    };
    let mut group = c.benchmark_group("scheduler_overhead");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("quota_layer_noop_service", BATCH), |b| {
        b.to_async(&rt).iter(|| batch(BATCH))
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
    for (via, name) in [(Via::Id, "by_id"), (Via::Handle, "by_handle")] {
        for keys in [1usize, MANY] {
            let (scheduler, ids) = rt.block_on(scheduler_with_keys(keys, MANY));
            let id = BenchmarkId::new(format!("keys_2_submitters_{name}"), keys);
            group.bench_function(id, |b| {
                b.to_async(&rt)
                    .iter(|| run_two_submitters(&scheduler, &ids, via, MANY))
            });
            rt.block_on(scheduler.shutdown(fabraix_scheduler::ShutdownMode::Drain));
        }
    }
    group.finish();
}

criterion_group!(benches, scheduler_overhead, quota_layer_overhead, many_keys);
criterion_main!(benches);
