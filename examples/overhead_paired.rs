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
//! ```

#[path = "../benches/support/paired.rs"]
mod paired;
#[path = "../benches/support/scheduler_rig.rs"]
#[allow(dead_code)] // The two-submitter workload is the many-keys example's.
mod scheduler_rig;

use paired::{in_pairs, means, rounds_arg, spread};
use scheduler_rig::{raw_batch, raw_server, run_batch, scheduler_with_keys, Via};

const BATCH: usize = 1_000;
const WARM_UP_ROUNDS: usize = 200;

fn main() {
    let rounds = rounds_arg(2_000);
    let via = Via::from_args(Via::Id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (scheduler, keys) = rt.block_on(scheduler_with_keys(1, BATCH));
    let raw = rt.block_on(async { raw_server() });
    // Wall-clock timing is the point of this example (it is a benchmark, not library code).
    let time_scheduler = || {
        let start = std::time::Instant::now();
        rt.block_on(run_batch(&scheduler, &keys, via, BATCH, 0));
        start.elapsed()
    };
    let time_raw = || {
        let start = std::time::Instant::now();
        rt.block_on(raw_batch(&raw, BATCH));
        start.elapsed()
    };
    let pairs = in_pairs(WARM_UP_ROUNDS, rounds, time_scheduler, time_raw);
    rt.block_on(scheduler.shutdown(fabraix_scheduler::ShutdownMode::Drain));

    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(sched, raw)| sched.as_secs_f64() / raw.as_secs_f64())
        .collect();
    let above = ratios.iter().filter(|&&r| r > 2.0).count();
    let (sched_mean, raw_mean) = means(&pairs);
    let s = spread(ratios);
    println!(
        "{rounds} rounds of {BATCH} jobs per case, one current-thread runtime, key by {via:?}"
    );
    println!(
        "mean per job: scheduler {:.0} ns, raw mpsc + oneshot {:.0} ns",
        sched_mean.as_secs_f64() * 1e9 / BATCH as f64,
        raw_mean.as_secs_f64() * 1e9 / BATCH as f64
    );
    println!(
        "time ratio scheduler / raw: median {:.2}×, quartiles {:.2}–{:.2}×, range {:.2}–{:.2}×",
        s.median, s.q1, s.q3, s.min, s.max
    );
    println!("rounds above 2×: {above} of {rounds}");
}
