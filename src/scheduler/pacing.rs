//! Pacing when the server counts more strictly than the quota says, for a key that has not
//! learned to read its limits as the server's counter (see `counter_learning`).
//!
//! The Fabraix docs do not say how the server counts. Against a sliding-window *counter* (two fixed
//! windows weighted by elapsed time, as HAProxy and many Redis recipes do), a burst that a sliding
//! log accepts can still be refused: the counter assumes the previous window's calls were spread
//! evenly. On such a 429 the key switches to even spacing at the *counter's own rate* for the
//! binding limit, N − 1 calls per window: whatever the counter's alignment, calls at least
//! W / (N − 1) apart put at most N − 1 in the previous window and at most `elapsed × (N − 1)/W`
//! in the current one, so the estimate plus the call stays within N. (Even spacing at the full
//! N / W is refused once a window has passed: the previous window then weighs in with N, and the
//! estimate plus the call exceeds N at every alignment.) A further 429 on the same limit in a later
//! window (another client on the key, a stricter server) multiplies the rate by 0.8, at most once
//! per window of that limit, and it creeps back up by 5 % of the rate after each quiet window, up
//! to the counter's rate. Once a key has been paced it stays evenly spaced: bursts are what such
//! a server refuses.

use std::time::Duration;

use crate::clock::Instant;
use crate::quota::Quota;

/// Each further decrease multiplies the fraction by this.
const DECREASE: f64 = 0.8;
/// The lowest fraction.
const FLOOR: f64 = 0.25;
/// Pacing starts only if the binding limit used at least this share of its count over its last
/// two windows (0.25: half a window's worth).
const MIN_UTILISATION: f64 = 0.25;
/// Each quiet window adds this to the fraction.
const INCREASE: f64 = 0.05;

#[derive(Debug, Default)]
pub(crate) struct Pacer {
    state: Option<Paced>,
}

#[derive(Debug, Clone, Copy)]
struct Paced {
    factor: f64,
    limit: usize,
    last_change: Instant,
}

impl Pacer {
    /// A 429 arrived. `utilisation` is the ledger's per-limit use over its last two windows.
    /// Returns the new spacing, if it changed.
    pub(crate) fn on_rate_limited(
        &mut self,
        now: Instant,
        quota: &Quota,
        utilisation: &[f64],
    ) -> Option<Duration> {
        // The binding limit: the most used (the shortest window on a tie). A 429 while every
        // limit is lightly used is not a counting disagreement (another client on the key, or a
        // different quota): retry_after and the RateLimit headers handle that, pacing would not.
        let (limit, used) = utilisation.iter().copied().enumerate().fold(
            None,
            |best: Option<(usize, f64)>, (i, u)| match best {
                Some((_, b)) if b >= u => best,
                _ => Some((i, u)),
            },
        )?;
        if used < MIN_UTILISATION {
            return None;
        }
        let binding = quota.limits().get(limit)?;
        let window = binding.window();
        match &mut self.state {
            Some(p) if p.limit == limit => {
                if now.saturating_duration_since(p.last_change) < window {
                    return None;
                }
                p.factor = (p.factor * DECREASE).max(FLOOR);
                p.last_change = now;
            }
            // The first disagreement, or one on another limit: that limit's counter rate.
            _ => {
                self.state = Some(Paced {
                    factor: counter_share(binding.count()),
                    limit,
                    last_change: now,
                });
            }
        }
        self.spacing(quota)
    }

    /// A call succeeded. Returns the new spacing if a quiet window has passed.
    pub(crate) fn on_success(&mut self, now: Instant, quota: &Quota) -> Option<Duration> {
        let p = self.state.as_mut()?;
        let binding = quota.limits().get(p.limit)?;
        let ceiling = counter_share(binding.count());
        if p.factor >= ceiling || now.saturating_duration_since(p.last_change) < binding.window() {
            return None;
        }
        p.factor = (p.factor + INCREASE).min(ceiling);
        p.last_change = now;
        self.spacing(quota)
    }

    /// The spacing in force for `quota`, if paced.
    pub(crate) fn spacing(&self, quota: &Quota) -> Option<Duration> {
        let p = self.state?;
        let l = quota.limits().get(p.limit)?;
        Some(l.window().div_f64(f64::from(l.count()) * p.factor))
    }

    /// The fraction of the binding limit's rate in use, if paced.
    pub(crate) fn factor(&self) -> Option<f64> {
        self.state.map(|p| p.factor)
    }
}

/// The share of a limit's rate (N per W) that a sliding-window counter accepts evenly spaced at
/// any alignment: (N − 1)/N; for N = 1, one call every other window (0.5).
fn counter_share(count: u32) -> f64 {
    if count <= 1 {
        0.5
    } else {
        f64::from(count - 1) / f64::from(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decreases_once_per_window_and_recovers() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let mut p = Pacer::default();
        let s = p.on_rate_limited(t0, &quota, &[0.5, 0.03]).unwrap();
        // The counter's own rate: 59 a minute.
        assert!((s.as_secs_f64() - 60.0 / 59.0).abs() < 1e-9, "{s:?}");
        assert!(p
            .on_rate_limited(t0 + Duration::from_secs(5), &quota, &[0.5, 0.03])
            .is_none());
        let s2 = p
            .on_rate_limited(t0 + Duration::from_secs(61), &quota, &[0.5, 0.03])
            .unwrap();
        assert!(s2 > s);
        assert!(p.on_success(t0 + Duration::from_secs(62), &quota).is_none());
        let s3 = p.on_success(t0 + Duration::from_secs(122), &quota).unwrap();
        assert!(s3 < s2);
        let share = 59.0 / 60.0;
        assert!((p.factor().unwrap() - (share * 0.8 + 0.05)).abs() < 1e-9);
        // Quiet windows bring it back to the counter's rate, never above.
        for k in 3..10 {
            p.on_success(t0 + Duration::from_secs(61 * k), &quota);
        }
        assert!((p.factor().unwrap() - share).abs() < 1e-9);
    }

    #[test]
    fn a_refusal_on_another_limit_paces_at_that_limits_counter_rate() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let mut p = Pacer::default();
        p.on_rate_limited(t0, &quota, &[0.5, 0.03]).unwrap();
        // An hour later the hour's counter refuses: 999 an hour, not a decrease of the minute's.
        let s = p
            .on_rate_limited(t0 + Duration::from_secs(3_600), &quota, &[0.1, 0.5])
            .unwrap();
        assert!((s.as_secs_f64() - 3_600.0 / 999.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_lightly_used_key_does_not_start_pacing() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        let mut p = Pacer::default();
        assert!(p
            .on_rate_limited(tokio::time::Instant::now(), &quota, &[0.01, 0.0005])
            .is_none());
        assert!(p.factor().is_none());
    }
}
