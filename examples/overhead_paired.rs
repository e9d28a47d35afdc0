//! Scheduler overhead, measured in pairs: the `scheduler_overhead` workload of
//! `benches/scheduler.rs` (1,000 jobs through the whole scheduler on one key with an unlimited
//! quota and a no-op transport, against the same 1,000 jobs through a raw tokio mpsc + oneshot
//! round trip), on one current-thread runtime.
//!
//! Criterion measures the two cases one after the other, so a change in this shared machine's load
//! between them moves their ratio. Here each round times one batch of each, back to back, in
//! alternating order, and the ratio is taken per round. Prints the median, quartiles and range of
//! the per-round time ratio (scheduler / raw; the goal of issue 4 is ≤ 2).
//!
//! ```text
//! cargo run --release --example overhead_paired              # 2,000 rounds after 200 warm-up rounds
//! cargo run --release --example overhead_paired -- --rounds 5000
//! cargo run --release --example overhead_paired -- --via handle   # KeyHandle::submit
//! cargo run --release --example overhead_paired -- --case floor    # the lower bound instead
//! cargo run --release --example overhead_paired -- --case tower    # tower's recipe instead
//! ```
//!
//! `--case floor` pairs the raw round trip with its lower bound (`floor_server` in
//! `benches/support/scheduler_rig.rs`) instead of the scheduler: the same round trip plus only
//! what any scheduler with this library's contract must add per job, each done the cheapest way
//! (a `Response` as the outcome, the call through the `Transport` trait, a reservation and the
//! clock). It shows how much of the 2× the contract itself takes. `--case floor-outcome` and
//! `--case floor-transport` stop after the first one and the first two of these. `--case raw`
//! pairs the raw round trip with itself: a check of the method (its median ratio is about 1), and
//! under callgrind the raw side's instruction count (half the run's). `--case tower` pairs it with
//! tower's `ServiceBuilder::new().buffer(1024).rate_limit(..)` over a no-op service, and
//! `--case governor` with governor's `until_ready` plus a tokio `Semaphore` of 64 under `join_all`
//! (both in `benches/support/scheduler_rig.rs`): what a user might write instead of the scheduler.

#[path = "../benches/support/paired.rs"]
mod paired;
#[path = "../benches/support/scheduler_rig.rs"]
#[allow(dead_code)] // The two-submitter workload is the many-keys example's.
mod scheduler_rig;

use paired::{in_pairs, means, rounds_arg, spread};
use scheduler_rig::{
    floor_batch, floor_server, governor_batch, raw_batch, raw_server, run_batch,
    scheduler_with_keys, tower_batch, tower_recipe, Floor, GovernorRecipe, Via,
};

const BATCH: usize = 1_000;
const WARM_UP_ROUNDS: usize = 200;

fn main() {
    let rounds = rounds_arg(2_000);
    let via = Via::from_args(Via::Id);
    let case = case_arg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (scheduler, keys) = rt.block_on(scheduler_with_keys(1, BATCH));
    let raw = rt.block_on(async { raw_server() });
    let lower_bound = match case {
        Case::Floor(level) => Some(rt.block_on(async { floor_server(level) })),
        _ => None,
    };
    let tower = (case == Case::Tower).then(|| rt.block_on(async { tower_recipe() }));
    let governor = (case == Case::Governor).then(GovernorRecipe::new);
    // Wall-clock timing is the point of this example (it is a benchmark, not library code).
    let time_case = || {
        let start = std::time::Instant::now();
        match (case, &lower_bound) {
            (Case::Raw, _) => rt.block_on(raw_batch(&raw, BATCH)),
            (Case::Tower, _) => rt.block_on(tower_batch(tower.as_ref().expect("made"), BATCH)),
            (Case::Governor, _) => {
                rt.block_on(governor_batch(governor.as_ref().expect("made"), BATCH))
            }
            (_, Some(lower_bound)) => rt.block_on(floor_batch(lower_bound, BATCH)),
            _ => rt.block_on(run_batch(&scheduler, &keys, via, BATCH, 0)),
        }
        start.elapsed()
    };
    let time_raw = || {
        let start = std::time::Instant::now();
        rt.block_on(raw_batch(&raw, BATCH));
        start.elapsed()
    };
    let pairs = in_pairs(WARM_UP_ROUNDS, rounds, time_case, time_raw);
    rt.block_on(scheduler.shutdown(fabraix_scheduler::ShutdownMode::Drain));

    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(sched, raw)| sched.as_secs_f64() / raw.as_secs_f64())
        .collect();
    let above = ratios.iter().filter(|&&r| r > 2.0).count();
    let (sched_mean, raw_mean) = means(&pairs);
    let s = spread(ratios);
    let name = match case {
        Case::Scheduler => "scheduler",
        Case::Raw => "raw (again)",
        Case::Tower => "tower buffer + rate_limit",
        Case::Governor => "governor + semaphore",
        Case::Floor(Floor::Outcome) => "floor (outcome)",
        Case::Floor(Floor::Transport) => "floor (outcome, transport)",
        Case::Floor(Floor::Ledger) => "floor",
    };
    if case != Case::Scheduler {
        println!("{rounds} rounds of {BATCH} jobs per case, one current-thread runtime, {name}");
    } else {
        println!(
            "{rounds} rounds of {BATCH} jobs per case, one current-thread runtime, key by {via:?}"
        );
    }
    println!(
        "mean per job: {name} {:.0} ns, raw mpsc + oneshot {:.0} ns",
        sched_mean.as_secs_f64() * 1e9 / BATCH as f64,
        raw_mean.as_secs_f64() * 1e9 / BATCH as f64
    );
    println!(
        "time ratio {name} / raw: median {:.2}×, quartiles {:.2}–{:.2}×, range {:.2}–{:.2}×",
        s.median, s.q1, s.q3, s.min, s.max
    );
    println!("rounds above 2×: {above} of {rounds}");
}

/// What is paired with the raw round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// The whole scheduler (the default).
    Scheduler,
    /// A lower bound (`floor_server`), to the level given.
    Floor(Floor),
    /// The raw round trip itself.
    Raw,
    /// tower's buffer + rate limit over a no-op service.
    Tower,
    /// governor's `until_ready` and a semaphore under `join_all`.
    Governor,
}

/// `--case scheduler|floor|floor-outcome|floor-transport|raw`.
fn case_arg() -> Case {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().position(|a| a == "--case") {
        None => Case::Scheduler,
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("scheduler") => Case::Scheduler,
            Some("floor") => Case::Floor(Floor::Ledger),
            Some("floor-outcome") => Case::Floor(Floor::Outcome),
            Some("floor-transport") => Case::Floor(Floor::Transport),
            Some("raw") => Case::Raw,
            Some("tower") => Case::Tower,
            Some("governor") => Case::Governor,
            _ => panic!("--case scheduler|floor|floor-outcome|floor-transport|raw|tower|governor"),
        },
    }
}
