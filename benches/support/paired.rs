//! Measuring two workloads in pairs (`examples/many_keys_paired.rs`, `examples/overhead_paired.rs`):
//! each round times one run of each, back to back, alternating which goes first, so that a change
//! of this shared machine's load between rounds affects both halves of a round alike; the ratio is
//! taken per round.

use std::time::Duration;

/// `--rounds N` from the command line (at least 1), or `default`.
pub fn rounds_arg(default: usize) -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--rounds N"))
        .unwrap_or(default)
        .max(1)
}

/// The times of `a` and `b` in each of `rounds` rounds, after `warm_up` rounds that are not kept.
pub fn in_pairs(
    warm_up: usize,
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> Vec<(Duration, Duration)> {
    let mut kept = Vec::with_capacity(rounds);
    for round in 0..warm_up + rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let pair = if round % 2 == 0 {
            let t_a = a();
            (t_a, b())
        } else {
            let t_b = b();
            (a(), t_b)
        };
        if round >= warm_up {
            kept.push(pair);
        }
    }
    kept
}

/// The mean of each side of `pairs`.
pub fn means(pairs: &[(Duration, Duration)]) -> (Duration, Duration) {
    let n = pairs.len().max(1) as u32;
    let (a, b) = pairs
        .iter()
        .fold((Duration::ZERO, Duration::ZERO), |(a, b), (x, y)| {
            (a + *x, b + *y)
        });
    (a / n, b / n)
}

/// Median, quartiles and range of per-round ratios.
pub struct Spread {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of `ratios` (at least one).
pub fn spread(mut ratios: Vec<f64>) -> Spread {
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    Spread {
        median: at(0.5),
        q1: at(0.25),
        q3: at(0.75),
        min: ratios[0],
        max: ratios[ratios.len() - 1],
    }
}
