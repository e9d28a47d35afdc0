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

/// The scheduler's retry rules: read from its fields, built from [`default`](Self::default) and
/// chained setters named after the fields (each takes and returns the policy).
///
/// ```
/// use fabraix_scheduler::{Delivery, RetryPolicy};
/// use std::time::Duration;
/// let policy = RetryPolicy::default()
///     .max_transient_retries(2)
///     .backoff_min(Duration::from_millis(100))
///     .delivery(Delivery::AtMostOnce);
/// assert_eq!(policy.max_transient_retries, 2);
/// assert_eq!(policy.max_rate_limited, 32);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after transient failures per job (not counting 429s). Default 4.
    pub max_transient_retries: u32,
    /// 429s a *key* may receive in a row (no other answer in between) before its jobs fail with
    /// `RateLimited`: the refused one and every one queued, all at once. Default 32.
    ///
    /// A 429 is the key's, not the job's that happened to be in front: it does not count against
    /// that job (which goes back to the front of its lane), so a storm never fails one job while
    /// the others wait. The key pauses for the server's `retry_after` and, from its second 429 in a
    /// row, at least the backoff of that run ([`after_refusal`](Self::after_refusal)): with the
    /// defaults, 32 refusals in a row take about 12 minutes or more.
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

/// What a key does after a 429 ([`RetryPolicy::after_refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalStep {
    /// How long the key pauses (before the policy's `retry_after_jitter` is added).
    pub wait: Duration,
    /// Whether the storm has lasted too long: the key's jobs fail now.
    pub give_up: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_transient_retries: 4,
            max_rate_limited: 32,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            retry_after_cap: None,
            retry_after_jitter: Duration::from_millis(250),
            delivery: Delivery::AtLeastOnce,
        }
    }
}

impl RetryPolicy {
    /// Sets the field `max_transient_retries`.
    pub fn max_transient_retries(mut self, n: u32) -> Self {
        self.max_transient_retries = n;
        self
    }

    /// Sets the field `max_rate_limited`.
    pub fn max_rate_limited(mut self, n: u32) -> Self {
        self.max_rate_limited = n;
        self
    }

    /// Sets the field `backoff_min`.
    pub fn backoff_min(mut self, delay: Duration) -> Self {
        self.backoff_min = delay;
        self
    }

    /// Sets the field `backoff_max`.
    pub fn backoff_max(mut self, delay: Duration) -> Self {
        self.backoff_max = delay;
        self
    }

    /// Sets the field `retry_after_cap`.
    pub fn retry_after_cap(mut self, cap: Option<Duration>) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// Sets the field `retry_after_jitter`.
    pub fn retry_after_jitter(mut self, jitter: Duration) -> Self {
        self.retry_after_jitter = jitter;
        self
    }

    /// Sets the field `delivery`.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
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

    /// The key's step after its `in_a_row`-th 429 in a row (1 for the first), when the server asked
    /// for `server` (its `retry_after` after the cap; `None` if it gave no usable value). `unit` is
    /// a uniform sample in `[0, 1)`.
    ///
    /// The wait is the server's, and from the second 429 in a row (or without a usable value) at
    /// least the run's backoff with equal jitter, in `[b/2, b]` for
    /// `b = min(backoff_max, backoff_min × 2^(in_a_row − 1))`: a server that keeps refusing with
    /// `retry_after: 0` (or a past `Retry-After`) is not called again at once. The key gives up
    /// after more than [`max_rate_limited`](Self::max_rate_limited) in a row.
    ///
    /// ```
    /// use fabraix_scheduler::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy::default();
    /// let first = p.after_refusal(1, Some(Duration::ZERO), 0.5);
    /// assert_eq!(first.wait, Duration::ZERO);
    /// let eighth = p.after_refusal(8, Some(Duration::from_secs(1)), 0.0);
    /// assert!(eighth.wait >= Duration::from_secs(15));
    /// assert!(!eighth.give_up);
    /// assert!(p.after_refusal(33, None, 0.5).give_up);
    /// ```
    pub fn after_refusal(&self, in_a_row: u32, server: Option<Duration>, unit: f64) -> RefusalStep {
        // Past 64 doublings every backoff is `backoff_max` (and `backoff` steps through each one).
        let run = in_a_row.saturating_sub(1).min(64);
        let floor = self
            .backoff(run, 1.0)
            .mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
        let wait = match server {
            Some(wait) if in_a_row <= 1 => wait,
            Some(wait) => wait.max(floor),
            None => floor,
        };
        RefusalStep {
            wait,
            give_up: in_a_row > self.max_rate_limited,
        }
    }

    /// The cap on a `retry_after` for a key whose longest window is `longest_window`.
    pub fn retry_after_cap_for(&self, longest_window: Duration) -> Duration {
        self.retry_after_cap
            .unwrap_or(longest_window + Duration::from_secs(60))
    }
}
