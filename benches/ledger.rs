//! Ledger cost: one `reserve` and one `plan` on a steady-state ledger (every window full, the fake
//! `now` advancing at the quota's long-run rate so windows keep rolling), for Development,
//! Production and 1,000,000/1h; governor's `check()` in the same group as the reference. And the
//! ETAs of a filling queue (`ledger_eta`): the k-th slot for k = 1, 2, …, 1,000 on a steady-state
//! Development ledger, each planned afresh against one plan extended as the queue grows. And the
//! ETA of a job submitted behind `depth` others while calls go out (`ledger_eta_under_load`): each
//! iteration one call reserves its slot and one job asks for its place at the queue's tail, at
//! depths 10, 1,000 and 100,000 — `forecast` (the plan the ledger follows) against `nth_slot_with`
//! (a plan kept outside the ledger, made again after every change), on a Production key whose
//! calls go in their slots (the plan stays exact) and on a 1,000,000/1s key whose sender lags
//! its slots by 1 µs a call (the plan is an estimate, made again as it is followed).
//!
//! `cargo bench --bench ledger`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fabraix_scheduler::{Instant, Ledger, LedgerConfig, Quota};
use governor::clock::FakeRelativeClock;

fn quotas() -> Vec<(&'static str, Quota)> {
    vec![
        ("development", Quota::development()),
        ("production", Quota::production()),
        (
            "1000000_per_hour",
            "1000000/1h".parse().expect("valid quota"),
        ),
    ]
}

/// The spacing of a saturated key: one call per 1 / (long-run rate).
fn step_of(quota: &Quota) -> Duration {
    Duration::from_secs_f64(1.0 / quota.rate_per_second())
}

/// A ledger that has sent at its quota's rate long enough that every window is full and rolling,
/// and the `now` it has reached.
fn steady_ledger(quota: &Quota) -> (Ledger, Instant, Duration) {
    let origin = Instant::now();
    let mut ledger = Ledger::new(quota, LedgerConfig::default(), origin);
    let step = step_of(quota);
    let longest = quota.limits().iter().map(|l| l.count()).max().unwrap_or(1);
    let mut now = origin;
    // Twice the largest count: the logs are full and have wrapped at least once.
    for _ in 0..(2 * u64::from(longest)).min(2_200_000) {
        let slot = ledger.reserve(now);
        now = (now + step).max(slot);
    }
    (ledger, now, step)
}

fn ledger_reserve(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_reserve");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, quota) in quotas() {
        let (mut ledger, mut now, step) = steady_ledger(&quota);
        group.bench_function(BenchmarkId::new("reserve", name), |b| {
            b.iter(|| {
                let slot = ledger.reserve(black_box(now));
                now = (now + step).max(slot);
                slot
            })
        });
    }
    // Reference: governor's check() on one window (600/min), a fake clock advanced every call.
    let clock = FakeRelativeClock::default();
    let limiter = governor::RateLimiter::direct_with_clock(
        governor::Quota::per_minute(NonZeroU32::new(600).expect("nonzero")),
        clock.clone(),
    );
    group.bench_function(BenchmarkId::new("governor_check", "600_per_minute"), |b| {
        b.iter(|| {
            clock.advance(Duration::from_millis(100));
            black_box(limiter.check()).is_ok()
        })
    });
    group.finish();
}

fn ledger_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_plan");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, quota) in quotas() {
        let (ledger, now, _) = steady_ledger(&quota);
        for k in [1usize, 100] {
            group.bench_function(BenchmarkId::new(format!("plan_{k}"), name), |b| {
                b.iter(|| ledger.plan(black_box(now), k))
            });
        }
        group.bench_function(BenchmarkId::new("nth_slot_100", name), |b| {
            b.iter(|| ledger.nth_slot(black_box(now), 100))
        });
    }
    group.finish();
}

/// The ETAs of 1,000 jobs queued one after another: what `submit` asks the ledger.
fn ledger_eta(c: &mut Criterion) {
    const QUEUED: usize = 1_000;
    let mut group = c.benchmark_group("ledger_eta");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let (ledger, now, _) = steady_ledger(&Quota::development());
    group.bench_function(BenchmarkId::new("fresh_plan_per_job", QUEUED), |b| {
        b.iter(|| (1..=QUEUED).fold(now, |_, k| ledger.nth_slot(black_box(now), k)))
    });
    group.bench_function(BenchmarkId::new("plan_cursor", QUEUED), |b| {
        b.iter(|| {
            let mut cursor = None;
            (1..=QUEUED).fold(now, |_, k| {
                ledger.nth_slot_with(&mut cursor, black_box(now), k)
            })
        })
    });
    group.finish();
}

/// A key with `depth` jobs queued whose calls go out: each iteration the next call reserves its
/// slot (at it, or `late` after the previous one, whichever is later) and a job joins the tail.
struct Load {
    ledger: Ledger,
    now: Instant,
    late: Duration,
    depth: usize,
}

impl Load {
    fn new(quota: &Quota, late: Duration, depth: usize) -> Self {
        let (ledger, now, _) = steady_ledger(quota);
        Self {
            ledger,
            now,
            late,
            depth,
        }
    }

    /// One call goes out; the job submitted now is told its ETA by `eta`.
    fn step(&mut self, eta: impl FnOnce(&mut Ledger, Instant, usize) -> Instant) -> Instant {
        let slot = self.ledger.reserve(self.now);
        self.now = slot.max(self.now + self.late);
        eta(&mut self.ledger, self.now, self.depth)
    }
}

fn ledger_eta_under_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_eta_under_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sampling_mode(criterion::SamplingMode::Flat);
    let keys = [
        ("production_on_plan", Quota::production(), Duration::ZERO),
        (
            "1000000_per_second_lagging",
            "1000000/1s".parse().expect("valid quota"),
            Duration::from_micros(1),
        ),
    ];
    for (name, quota, late) in keys {
        for depth in [10usize, 1_000, 100_000] {
            let mut load = Load::new(&quota, late, depth);
            group.bench_function(BenchmarkId::new(format!("forecast/{name}"), depth), |b| {
                b.iter(|| load.step(|l, now, k| l.forecast(black_box(now), k).at))
            });
            let mut load = Load::new(&quota, late, depth);
            let mut cursor = None;
            group.bench_function(
                BenchmarkId::new(format!("nth_slot_with/{name}"), depth),
                |b| {
                    b.iter(|| {
                        load.step(|l, now, k| l.nth_slot_with(&mut cursor, black_box(now), k))
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    ledger_reserve,
    ledger_plan,
    ledger_eta,
    ledger_eta_under_load
);
criterion_main!(benches);
