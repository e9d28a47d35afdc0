//! A retry budget: retries may be at most a fraction of first attempts, so that a failing server
//! is not hammered by a retry storm (as tower's budget argues, a budget bounds the extra load where
//! a per-request retry count does not).

use std::sync::Mutex;

/// A bucket of retry tokens: each first attempt deposits `ratio`, each retry withdraws 1.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    max_tokens: f64,
    tokens: Mutex<f64>,
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
        let max_tokens = f64::from(max_tokens.max(initial));
        Self {
            ratio,
            max_tokens,
            tokens: Mutex::new(f64::from(initial)),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + self.ratio).min(self.max_tokens);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    /// 10 retries up front, 20 % of first attempts after that, at most 100 saved.
    fn default() -> Self {
        Self::new(10, 0.2, 100)
    }
}
