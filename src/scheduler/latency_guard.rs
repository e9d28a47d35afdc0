//! A latency guard that follows what it measures: the spread of a key's send-to-answer times.
//!
//! The ledger adds its guard after each window frees a slot, so that two calls sent exactly W
//! apart still arrive at least W apart although each takes its own time to reach the server. What
//! that needs is the spread of those times, not their size: a call that always takes 80 ms moves
//! every call alike. A key that follows its latency ([`KeyConfig::guard_from_latency`]) keeps its
//! last [`SAMPLES`] send-to-answer times and, every [`EVERY`] answers, sets its guard to twice the
//! spread between their 1st and 99th percentiles, within [`FLOOR`] and the key's ceiling (the
//! default guard's bound: 10 % of its shortest window). A loaded or distant sender, whose answers
//! vary by tens of milliseconds, gets a guard to match; a fast, quiet one on loopback waits a
//! millisecond, not 100.
//!
//! [`KeyConfig::guard_from_latency`]: super::KeyConfig::guard_from_latency

use std::time::Duration;

/// Send-to-answer times kept (the most recent).
pub(crate) const SAMPLES: usize = 512;

/// Answers between two looks at the spread (and the first look: before it, the configured guard
/// holds).
pub(crate) const EVERY: usize = 128;

/// The smallest guard a key following its latency keeps: timers and clocks are not finer.
pub(crate) const FLOOR: Duration = Duration::from_millis(1);

/// How much larger than the measured spread the guard is: the tail beyond the 99th percentile.
const MARGIN: u32 = 2;

/// A change of less than this fraction of the guard in force is not made (each change drops the
/// ledger's plan of the queue).
const HYSTERESIS_DIVISOR: u32 = 4;

/// A key's guard: fixed, or following the spread of its send-to-answer times.
#[derive(Debug)]
pub(crate) struct LatencyGuard {
    /// The guard in force.
    current: Duration,
    /// How the guard follows the latency, if it does.
    following: Option<Box<Following>>,
}

#[derive(Debug)]
struct Following {
    ceiling: Duration,
    /// Send-to-answer times in µs, a ring of the last [`SAMPLES`].
    samples: Vec<u32>,
    next: usize,
    since_look: usize,
    /// The last spread measured (99th − 1st percentile).
    spread: Option<Duration>,
}

impl LatencyGuard {
    /// A guard that stays `guard`.
    pub(crate) fn fixed(guard: Duration) -> Self {
        Self {
            current: guard,
            following: None,
        }
    }

    /// A guard that starts at `initial` and follows the latency, never above `ceiling`.
    pub(crate) fn following(initial: Duration, ceiling: Duration) -> Self {
        Self {
            current: initial,
            following: Some(Box::new(Following {
                ceiling,
                samples: Vec::with_capacity(SAMPLES),
                next: 0,
                since_look: 0,
                spread: None,
            })),
        }
    }

    /// The guard in force.
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// The last spread of send-to-answer times measured, if any.
    pub(crate) fn spread(&self) -> Option<Duration> {
        self.following.as_ref().and_then(|f| f.spread)
    }

    /// One call answered `latency` after it was sent. Returns the new guard when it changes.
    pub(crate) fn observe(&mut self, latency: Duration) -> Option<Duration> {
        let f = self.following.as_deref_mut()?;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if f.samples.len() < SAMPLES {
            f.samples.push(micros);
        } else {
            f.samples[f.next] = micros;
        }
        f.next = (f.next + 1) % SAMPLES;
        f.since_look += 1;
        if f.since_look < EVERY {
            return None;
        }
        f.since_look = 0;
        let spread = spread_of(&f.samples);
        f.spread = Some(spread);
        let wanted = (spread * MARGIN).clamp(FLOOR, f.ceiling.max(FLOOR));
        let change = wanted.abs_diff(self.current);
        if change == Duration::ZERO || change < self.current / HYSTERESIS_DIVISOR {
            return None;
        }
        self.current = wanted;
        Some(wanted)
    }
}

/// The 99th percentile less the 1st of `samples` (µs), as a duration.
fn spread_of(samples: &[u32]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |p: usize| sorted[(sorted.len() - 1) * p / 100];
    Duration::from_micros(u64::from(at(99).saturating_sub(at(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(
        guard: &mut LatencyGuard,
        n: usize,
        latency: impl Fn(usize) -> Duration,
    ) -> Vec<Duration> {
        (0..n).filter_map(|i| guard.observe(latency(i))).collect()
    }

    #[test]
    fn a_fixed_guard_never_moves() {
        let mut g = LatencyGuard::fixed(Duration::from_millis(100));
        assert!(feed(&mut g, 1_000, |_| Duration::from_micros(50)).is_empty());
        assert_eq!(g.current(), Duration::from_millis(100));
    }

    #[test]
    fn a_steady_fast_answer_shrinks_the_guard_to_the_floor() {
        let mut g = LatencyGuard::following(Duration::from_millis(100), Duration::from_millis(100));
        // Nothing changes before the first look.
        assert!(feed(&mut g, EVERY - 1, |_| Duration::from_micros(200)).is_empty());
        assert_eq!(g.current(), Duration::from_millis(100));
        assert_eq!(g.observe(Duration::from_micros(200)), Some(FLOOR));
        assert_eq!(g.spread(), Some(Duration::ZERO));
    }

    #[test]
    fn a_constant_delay_is_not_a_spread_but_a_varying_one_is() {
        let mut g = LatencyGuard::following(Duration::from_millis(100), Duration::from_secs(1));
        // 80 ms every time (a distant server): every call moves alike; the floor is enough.
        feed(&mut g, SAMPLES, |_| Duration::from_millis(80));
        assert_eq!(g.current(), FLOOR);
        // Then 80–110 ms (a loaded sender): the guard covers twice the spread.
        feed(&mut g, SAMPLES, |i| {
            Duration::from_millis(80 + (i % 31) as u64)
        });
        let spread = g.spread().unwrap();
        assert!(spread >= Duration::from_millis(28), "{spread:?}");
        // (Within the quarter it ignores of the last spread measured.)
        let guard = g.current();
        assert!(guard >= spread * 3 / 2 && guard <= spread * 2, "{guard:?}");
    }

    #[test]
    fn the_guard_stays_within_its_ceiling_and_ignores_small_changes() {
        let ceiling = Duration::from_millis(50);
        let mut g = LatencyGuard::following(Duration::from_millis(10), ceiling);
        feed(&mut g, SAMPLES, |i| {
            Duration::from_millis((i % 2) as u64 * 900)
        });
        assert_eq!(g.current(), ceiling);
        // A spread within a quarter of the guard in force changes nothing.
        let mut g = LatencyGuard::following(Duration::from_millis(20), Duration::from_secs(1));
        let changes = feed(&mut g, EVERY, |i| {
            Duration::from_millis(if i % 2 == 0 { 0 } else { 11 })
        });
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(g.current(), Duration::from_millis(20));
    }
}
