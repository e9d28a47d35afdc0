//! Injected faults: server errors, latency and dropped connections, chosen by a seeded RNG so a
//! run can be repeated exactly.

use std::sync::Mutex;
use std::time::Duration;

/// Faults the mock server injects.
///
/// Latency (with jitter) delays every response of the three endpoints, refusals included. A call
/// that passed authentication, quota and body validation then fails with probability
/// `drop_rate` by having its connection closed without any response, or else with probability
/// `server_error_rate` answers `500 {"error":{"message":"Internal server error","type":"api_error","code":"internal_error"}}`.
/// Both still count against the quota and appear in the record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability (0 to 1) that an otherwise successful call answers 500.
    pub server_error_rate: f64,
    /// Added to every response.
    pub latency: Duration,
    /// A uniformly random extra delay in `[0, latency_jitter]`, added to `latency`.
    pub latency_jitter: Duration,
    /// Probability (0 to 1) that an otherwise successful call has its connection dropped.
    pub drop_rate: f64,
}

impl Faults {
    /// No faults at all (the default).
    pub fn none() -> Self {
        Self::default()
    }
}

/// What happens to a call that would succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultOutcome {
    /// Answer normally.
    Pass,
    /// Answer 500.
    ServerError,
    /// Close the connection without a response.
    Drop,
}

/// The seeded source of fault choices.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    faults: Faults,
    rng: Mutex<fastrand::Rng>,
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

impl FaultInjector {
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rng)
    }

    /// The delay to add to one response.
    pub(crate) fn delay(&self) -> Duration {
        let jitter = u64::try_from(self.faults.latency_jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            self.with_rng(|r| r.u64(0..=jitter))
        };
        self.faults.latency + Duration::from_nanos(extra)
    }

    /// The fate of one call that would succeed (one draw per call).
    pub(crate) fn outcome(&self) -> FaultOutcome {
        let drop = probability(self.faults.drop_rate);
        let error = probability(self.faults.server_error_rate);
        if drop == 0.0 && error == 0.0 {
            return FaultOutcome::Pass;
        }
        let x = self.with_rng(|r| r.f64());
        if x < drop {
            FaultOutcome::Drop
        } else if x < drop + error {
            FaultOutcome::ServerError
        } else {
            FaultOutcome::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_choices_repeat_and_respect_rates() {
        let faults = Faults {
            server_error_rate: 0.3,
            drop_rate: 0.2,
            latency: Duration::from_millis(10),
            latency_jitter: Duration::from_millis(5),
        };
        let a = FaultInjector::new(faults.clone(), 42);
        let b = FaultInjector::new(faults, 42);
        let xs: Vec<_> = (0..1000).map(|_| a.outcome()).collect();
        let ys: Vec<_> = (0..1000).map(|_| b.outcome()).collect();
        assert_eq!(xs, ys);
        let drops = xs.iter().filter(|o| **o == FaultOutcome::Drop).count();
        let errors = xs
            .iter()
            .filter(|o| **o == FaultOutcome::ServerError)
            .count();
        assert!((150..250).contains(&drops), "{drops}");
        assert!((250..350).contains(&errors), "{errors}");
        let d = a.delay();
        assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        assert_eq!(
            FaultInjector::new(Faults::none(), 1).outcome(),
            FaultOutcome::Pass
        );
    }
}
