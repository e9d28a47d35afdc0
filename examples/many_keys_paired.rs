//! Many keys against one key, measured in pairs: the `many_keys` workload of
//! `benches/scheduler.rs` (10,000 jobs from 2 submitting tasks on a 2-worker runtime, unlimited
//! quota, no-op transport), run alternately on a scheduler with 1 key and one with 10,000 keys.
//!
//! Criterion measures the two cases one after the other, so a change in this shared machine's load
//! between them moves their ratio (0.59× to 1.11× over ten runs). Here each round times one batch
//! of each, back to back, in alternating order, and the ratio is taken per round: a load change
//! affects both halves of a round alike. Prints the median, quartiles and range of the per-round
//! throughput ratio (10,000 keys / 1 key; the goal of issue 4 is ≥ 0.8).
//!
//! ```text
//! cargo run --release --example many_keys_paired              # 60 rounds after 5 warm-up rounds
//! cargo run --release --example many_keys_paired -- --rounds 200
//! cargo run --release --example many_keys_paired -- --via handle   # one way only
//! ```
//!
//! Each job names its key by its id (`Scheduler::submit`, a lookup in the key map per job) and,
//! in a second set of rounds, by the key's handle (`KeyHandle::submit`, looked up once);
//! `--via id|handle` runs one of the two.

#[path = "../benches/support/paired.rs"]
mod paired;
#[path = "../benches/support/scheduler_rig.rs"]
#[allow(dead_code)] // The raw reference is the overhead example's.
mod scheduler_rig;

use std::sync::Arc;
use std::time::Duration;

use paired::{in_pairs, means, rounds_arg, spread};
use scheduler_rig::{run_two_submitters, scheduler_with_keys, Keys, Via};

const JOBS: usize = 10_000;
const WARM_UP_ROUNDS: usize = 5;

/// The number of keys of `--case one|many`, if given.
fn case_arg() -> Option<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let i = args.iter().position(|a| a == "--case")?;
    match args.get(i + 1).map(String::as_str) {
        Some("one") => Some(1),
        Some("many") => Some(JOBS),
        _ => panic!("--case one|many"),
    }
}

fn main() {
    let rounds = rounds_arg(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Wall-clock timing is the point of this example (it is a benchmark, not library code).
    let timed = |scheduler: &fabraix_scheduler::Scheduler, keys: &Arc<Keys>, via: Via| {
        let start = std::time::Instant::now();
        rt.block_on(run_two_submitters(scheduler, keys, via, JOBS));
        start.elapsed()
    };
    let vias = if std::env::args().any(|a| a == "--via") {
        vec![Via::from_args(Via::Id)]
    } else {
        vec![Via::Id, Via::Handle]
    };
    if let Some(keys) = case_arg() {
        let (scheduler, ids) = rt.block_on(scheduler_with_keys(keys, JOBS));
        for via in vias {
            let total: Duration = (0..rounds).map(|_| timed(&scheduler, &ids, via)).sum();
            println!(
                "{keys} key(s) by {via:?}, {rounds} batches of {JOBS} jobs: mean batch {:.2} ms",
                total.as_secs_f64() * 1e3 / rounds as f64
            );
        }
        return;
    }
    let (one, one_keys) = rt.block_on(scheduler_with_keys(1, JOBS));
    let (many, many_keys) = rt.block_on(scheduler_with_keys(JOBS, JOBS));

    println!("{rounds} rounds of {JOBS} jobs per case, 2 submitters, 2 workers");
    for via in vias {
        let pairs = in_pairs(
            WARM_UP_ROUNDS,
            rounds,
            || timed(&one, &one_keys, via),
            || timed(&many, &many_keys, via),
        );
        // Throughput ratio per round: (JOBS / t_many) / (JOBS / t_one).
        let ratios: Vec<f64> = pairs
            .iter()
            .map(|(one, many)| one.as_secs_f64() / many.as_secs_f64())
            .collect();
        let below = ratios.iter().filter(|&&r| r < 0.8).count();
        let (one_mean, many_mean) = means(&pairs);
        let s = spread(ratios);
        println!("keys named by {via:?}:");
        println!(
            "  mean batch: 1 key {:.2} ms, 10,000 keys {:.2} ms",
            one_mean.as_secs_f64() * 1e3,
            many_mean.as_secs_f64() * 1e3
        );
        println!(
            "  throughput ratio 10,000 keys / 1 key: median {:.2}×, quartiles {:.2}–{:.2}×, range {:.2}–{:.2}×",
            s.median, s.q1, s.q3, s.min, s.max
        );
        println!("  rounds below 0.8×: {below} of {rounds}");
    }
    rt.block_on(one.shutdown(fabraix_scheduler::ShutdownMode::Drain));
    rt.block_on(many.shutdown(fabraix_scheduler::ShutdownMode::Drain));
}
