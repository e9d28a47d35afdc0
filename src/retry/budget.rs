//! A retry budget: retries may be at most a fraction of first attempts, so that a failing server
//! is not hammered by a retry storm (as tower's budget argues, a budget bounds the extra load where
//! a per-request retry count does not).

use std::sync::atomic::{AtomicU64, Ordering};

/// Millionths of a token: the budget is kept in whole units so that it fits one atomic.
const UNIT: f64 = 1_000_000.0;
const ONE: u64 = 1_000_000;

/// A bucket of retry tokens: each first attempt deposits `ratio`, each retry withdraws 1.
/// Lock-free: every first attempt of every key deposits, so it must not be a point of contention.
#[derive(Debug)]
pub struct RetryBudget {
    /// Deposit per first attempt, in millionths of a token.
    ratio: u64,
    /// Most millionths of a token kept.
    max_tokens: u64,
    tokens: AtomicU64,
}

impl RetryBudget {
    /// `initial` retries allowed before any deposit; each first attempt adds `ratio` (0.0 ..= 1.0)
    /// of a retry; never more than `max_tokens` saved. Out-of-range values are clamped.
    ///
    /// ```
    /// use fabraix_scheduler::RetryBudget;
    /// let budget = RetryBudget::new(1, 0.5, 10);
    /// assert!(budget.withdraw());
    /// assert!(!budget.withdraw());
    /// budget.deposit();
    /// budget.deposit();
    /// assert!(budget.withdraw());
    /// ```
    pub fn new(initial: u32, ratio: f64, max_tokens: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let max_tokens = u64::from(max_tokens.max(initial)) * ONE;
        Self {
            // In 0 ..= 1,000,000 after the clamp: the cast cannot truncate.
            ratio: (ratio * UNIT).round() as u64,
            max_tokens,
            tokens: AtomicU64::new(u64::from(initial) * ONE),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        // A full budget (the usual state) costs a read, not a write to a shared cache line.
        if self.ratio == 0 || self.tokens.load(Ordering::Relaxed) >= self.max_tokens {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                (t < self.max_tokens).then(|| (t + self.ratio).min(self.max_tokens))
            });
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| t.checked_sub(ONE))
            .is_ok()
    }
}

impl Default for RetryBudget {
    /// 10 retries up front, 20 % of first attempts after that, at most 100 saved.
    fn default() -> Self {
        Self::new(10, 0.2, 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_add_up_and_the_cap_holds() {
        let budget = RetryBudget::new(0, 0.2, 2);
        assert!(!budget.withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(!budget.withdraw(), "0.8 of a token is not a retry");
        budget.deposit();
        assert!(budget.withdraw(), "five deposits of 0.2 make one retry");
        assert!(!budget.withdraw());
        for _ in 0..100 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw(), "never more than max_tokens saved");
    }

    #[test]
    fn out_of_range_ratios_are_clamped() {
        let none = RetryBudget::new(0, f64::NAN, 5);
        none.deposit();
        assert!(!none.withdraw());
        let whole = RetryBudget::new(0, 7.0, 5);
        whole.deposit();
        assert!(whole.withdraw());
        assert!(!whole.withdraw());
    }
}
