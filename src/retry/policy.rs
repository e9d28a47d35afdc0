//! How the scheduler retries: backoff for transient failures, limits for 429s, delivery semantics.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// What may happen to a call whose outcome is unknown (a timeout, a 5xx, a dropped connection
/// after the request was written): the server may have processed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Retry it: the server may see the call twice (an `/event` stored twice), but none is lost.
    /// The default.
    #[default]
    AtLeastOnce,
    /// Never resend a call that may have reached the server: it fails with its transient error
    /// instead. Calls that certainly did not reach it (connect errors, 429s) are still retried.
    AtMostOnce,
}

/// The scheduler's retry rules.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after transient failures per job (not counting 429s). Default 4.
    pub max_transient_retries: u32,
    /// 429s a single job may receive before it fails with `RateLimited`. Default 16.
    pub max_rate_limited: u32,
    /// First backoff delay before full jitter. Default 250 ms.
    pub backoff_min: Duration,
    /// Largest backoff delay before full jitter. Default 30 s.
    pub backoff_max: Duration,
    /// The most a `retry_after` may pause a key; a larger value is clamped and logged.
    /// `None`: the key's longest window plus one minute.
    pub retry_after_cap: Option<Duration>,
    /// Extra wait added to a 429's `retry_after`: uniform in `[0, retry_after_jitter]`, so that
    /// many clients released at once do not collide. Default 250 ms.
    pub retry_after_jitter: Duration,
    /// Default delivery semantics for jobs that do not choose.
    pub delivery: Delivery,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_transient_retries: 4,
            max_rate_limited: 16,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            retry_after_cap: None,
            retry_after_jitter: Duration::from_millis(250),
            delivery: Delivery::AtLeastOnce,
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0-based), with full jitter: uniform in
    /// `[0, min(backoff_max, backoff_min × 2^retry)]`. `unit` is a uniform sample in `[0, 1)`.
    ///
    /// ```
    /// use fabraix_scheduler::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy::default();
    /// assert!(p.backoff(0, 0.999).as_millis() <= 250);
    /// assert_eq!(p.backoff(0, 0.0), Duration::ZERO);
    /// assert!(p.backoff(20, 0.5) <= Duration::from_secs(15));
    /// ```
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(retry as usize)
            .unwrap_or(self.backoff_max);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The cap on a `retry_after` for a key whose longest window is `longest_window`.
    pub fn retry_after_cap_for(&self, longest_window: Duration) -> Duration {
        self.retry_after_cap
            .unwrap_or(longest_window + Duration::from_secs(60))
    }
}
