//! Pacing when the server counts more strictly than the quota says.
//!
//! The Fabraix docs do not say how the server counts. Against a sliding-window *counter* (two fixed
//! windows weighted by elapsed time, as HAProxy and many Redis recipes do), a burst that a sliding
//! log accepts can still be refused: the counter assumes the previous window's calls were spread
//! evenly. On such a 429 the key switches to even spacing at a fraction of the binding limit's rate
//! (multiplicative decrease, at most once per window of that limit), and creeps back up by 5 % of
//! the rate after each quiet window (additive increase), up to the full rate. Once a key has been
//! paced it stays evenly spaced: bursts are what such a server refuses.

use std::time::Duration;

use crate::clock::Instant;
use crate::quota::Quota;

/// The first fraction of the rate used after a disagreement.
const FIRST_FACTOR: f64 = 0.9;
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
        let window = quota.limits().get(limit)?.window();
        match &mut self.state {
            None => {
                self.state = Some(Paced {
                    factor: FIRST_FACTOR,
                    limit,
                    last_change: now,
                });
            }
            Some(p) => {
                let same_window = now.saturating_duration_since(p.last_change) < window;
                if same_window && p.limit == limit {
                    return None;
                }
                p.factor = (p.factor * DECREASE).max(FLOOR);
                p.limit = limit;
                p.last_change = now;
            }
        }
        self.spacing(quota)
    }

    /// A call succeeded. Returns the new spacing if a quiet window has passed.
    pub(crate) fn on_success(&mut self, now: Instant, quota: &Quota) -> Option<Duration> {
        let p = self.state.as_mut()?;
        let window = quota.limits().get(p.limit)?.window();
        if p.factor >= 1.0 || now.saturating_duration_since(p.last_change) < window {
            return None;
        }
        p.factor = (p.factor + INCREASE).min(1.0);
        p.last_change = now;
        self.spacing(quota)
    }

    fn spacing(&self, quota: &Quota) -> Option<Duration> {
        let p = self.state?;
        let l = quota.limits().get(p.limit)?;
        Some(l.window().div_f64(f64::from(l.count()) * p.factor))
    }

    /// The fraction of the binding limit's rate in use, if paced.
    pub(crate) fn factor(&self) -> Option<f64> {
        self.state.map(|p| p.factor)
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
        assert_eq!(s, Duration::from_secs(60).div_f64(54.0));
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
        assert!((p.factor().unwrap() - (0.72 + 0.05)).abs() < 1e-9);
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
