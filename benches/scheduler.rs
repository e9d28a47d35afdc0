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

criterion_group!(benches, scheduler_overhead, many_keys);
criterion_main!(benches);
