//! The retry decisions, beside the policy they follow: whether a transient failure is retried,
//! and how long a key pauses after a 429. Pure: the caller draws the random samples (from its own
//! generator, not a shared one) and carries the decision out.

use std::time::Duration;

use super::budget::RetryBudget;
use super::policy::{Delivery, RetryPolicy};
use super::retry_after::RetryAfter;

/// After a 429: how long the key pauses, and whether its storm has lasted too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pause {
    /// The pause, the policy's `retry_after_jitter` included.
    pub(crate) wait: Duration,
    /// The key's jobs fail now (more 429s in a row than the policy allows).
    pub(crate) give_up: bool,
    /// The server's wait, if it was clamped to the cap: what it asked.
    pub(crate) clamped_from: Option<Duration>,
}

impl RetryPolicy {
    /// Whether a job that failed transiently is retried: `Ok` if so (one retry taken from
    /// `budget`), else why not. `delivery` is the job's (or the policy's) semantics,
    /// `may_have_reached_server` whether the call may have been processed, `retries` the job's
    /// transient retries so far.
    pub(crate) fn after_transient(
        &self,
        delivery: Option<Delivery>,
        may_have_reached_server: bool,
        retries: u32,
        budget: &RetryBudget,
    ) -> Result<(), &'static str> {
        let delivery = delivery.unwrap_or(self.delivery);
        if delivery == Delivery::AtMostOnce && may_have_reached_server {
            Err("at-most-once delivery: the server may have processed it")
        } else if retries >= self.max_transient_retries {
            Err("retries exhausted")
        } else if !budget.withdraw() {
            Err("retry budget spent")
        } else {
            Ok(())
        }
    }

    /// The key's pause after its `in_a_row`-th 429 in a row, the server asking for
    /// `retry_after` (after the cap). `units` are two uniform samples in `[0, 1)`: the first for
    /// the run's backoff ([`after_refusal`](Self::after_refusal)), the second for the jitter.
    pub(crate) fn pause_after_refusal(
        &self,
        in_a_row: u32,
        retry_after: RetryAfter,
        units: (f64, f64),
    ) -> Pause {
        let (server, clamped_from) = match retry_after {
            RetryAfter::Wait { wait, clamped_from } => (Some(wait), clamped_from),
            RetryAfter::Unusable => (None, None),
        };
        let step = self.after_refusal(in_a_row, server, units.0);
        Pause {
            wait: step
                .wait
                .saturating_add(self.retry_after_jitter.mul_f64(units.1)),
            give_up: step.give_up,
            clamped_from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_within_the_policy_and_the_budget() {
        let p = RetryPolicy::default();
        let budget = RetryBudget::new(1, 0.0, 1);
        assert_eq!(
            p.after_transient(Some(Delivery::AtMostOnce), true, 0, &budget),
            Err("at-most-once delivery: the server may have processed it")
        );
        assert_eq!(
            p.after_transient(None, true, p.max_transient_retries, &budget),
            Err("retries exhausted")
        );
        // At most once, but it never reached the server: retried.
        assert_eq!(
            p.after_transient(Some(Delivery::AtMostOnce), false, 0, &budget),
            Ok(())
        );
        assert_eq!(
            p.after_transient(None, true, 0, &budget),
            Err("retry budget spent")
        );
    }

    #[test]
    fn a_pause_is_the_servers_wait_plus_jitter_and_gives_up_past_the_limit() {
        let p = RetryPolicy::default();
        let asked = RetryAfter::Wait {
            wait: Duration::from_secs(2),
            clamped_from: Some(Duration::from_secs(9_999)),
        };
        let pause = p.pause_after_refusal(1, asked, (0.3, 1.0));
        assert_eq!(pause.wait, Duration::from_secs(2) + p.retry_after_jitter);
        assert_eq!(pause.clamped_from, Some(Duration::from_secs(9_999)));
        assert!(!pause.give_up);
        let storm = p.pause_after_refusal(p.max_rate_limited + 1, RetryAfter::Unusable, (0.0, 0.0));
        assert!(storm.give_up);
        assert!(storm.wait >= p.backoff_max / 2);
    }
}
