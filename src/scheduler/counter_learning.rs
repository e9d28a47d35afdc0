//! Learning that the server counts as a sliding-window counter, before it refuses where it tells,
//! and from its refusals where it does not.
//!
//! A key read as sliding windows (the default) keeps, beside each limit's window log, the same
//! calls as a sliding-window counter would count them (windows laid from the key's first call, as
//! HAProxy's stick tables and the mock lay them). Such a server can be told apart from the others:
//!
//! - **By its `RateLimit-*` headers**, before any refusal. A fixed window, a sliding log or a
//!   token bucket of N per W frees a slot within W, so their reset is at most W (rounded up to
//!   whole seconds); a counter's first calls leave the previous window's weight to come, and its
//!   reset reaches beyond W (2W − elapsed after its first call). Past its first window, a counter's
//!   remaining weighs the previous window in and drops below what a sliding log of the same calls
//!   says; a log's, a fixed window's or a bucket's does not. Either is evidence, for the limit
//!   whose count the headers name (`RateLimit-Limit`).
//! - **By the timing of refusals**, where no headers come: a 429 past the counter's first
//!   window, on a call that the window log had room for and that a counter of the same calls
//!   would have refused — twice ([`REFUSALS_TO_LEARN`]), since one may have another cause.
//!
//! Headers count only on answers that are not refusals (a 429's reset may be a lockout), and a
//! reset counts only between W plus a quarter of W and 2W: a reset in other units, or read
//! against a clock that is off by seconds, lies outside it.
//!
//! On that evidence the key's ledger reads every limit as a counter from then on
//! ([`WindowSemantics::SlidingWindowCounter`], rebuilt from the calls recorded), and its pacer
//! stops: the counter's own estimate plans the calls. A key configured with another semantics
//! never switches, nor does one whose ledger lives in a shared store, nor one told not to learn
//! ([`KeyConfig::learn_semantics`](super::KeyConfig::learn_semantics)). What is learned shows in
//! [`KeyStats::learned_semantics`](super::KeyStats::learned_semantics).

use std::time::Duration;

use crate::clock::Instant;
use crate::ledger::{Ledger, WindowSemantics};
use crate::quota::Quota;
use crate::retry::ServerWindow;

/// How far a whole-second reset may lie past the exact one: its rounding up.
const RESET_ROUNDING: Duration = Duration::from_secs(1);

/// How many calls below a sliding log's reading the server's remaining must be to tell a
/// counter: more than a call counted differently at the edge of a window.
const REMAINING_MARGIN: u64 = 2;

/// How a key came to read its limits otherwise than it was configured to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LearnedSemantics {
    /// The reading it switched to (today always
    /// [`SlidingWindowCounter`](WindowSemantics::SlidingWindowCounter)).
    pub semantics: WindowSemantics,
    /// What showed it.
    pub from: LearnedFrom,
}

/// What showed a key how its server counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LearnedFrom {
    /// The server's `RateLimit-*` / `X-RateLimit-*` headers, before any refusal.
    Headers,
    /// The timing of a refusal (429) that a sliding log would not have made.
    Refusals,
}

/// One key's reading of its limits: as configured, or what it learned.
#[derive(Debug)]
pub(crate) struct SemanticsLearning {
    configured: WindowSemantics,
    /// Whether the key may learn at all ([`KeyConfig::learn_semantics`](super::KeyConfig)).
    may: bool,
    learned: Option<LearnedSemantics>,
    /// When the key learned it: calls sent until then went under the old reading.
    learned_at: Option<Instant>,
    /// Refusals seen so far that a counter of the key's calls predicts where the log had room.
    refusals_fitting: u32,
}

/// Refusals fitting a counter that switch a key to the counter's reading: one alone may have
/// another cause (a proxy's own limit, a call late beyond the guard), and a key switched wrongly
/// would put more than N calls in a sliding window. After the first, the key paces at the
/// counter's own rate, which a counter accepts; a second says the pacing did not do.
pub(crate) const REFUSALS_TO_LEARN: u32 = 2;

impl SemanticsLearning {
    pub(crate) fn new(configured: WindowSemantics, may: bool) -> Self {
        Self {
            configured,
            may,
            learned: None,
            learned_at: None,
            refusals_fitting: 0,
        }
    }

    /// One more refusal fitting a counter; true once there are [`REFUSALS_TO_LEARN`].
    pub(crate) fn refusal_fits_counter(&mut self) -> bool {
        self.refusals_fitting = self.refusals_fitting.saturating_add(1);
        self.refusals_fitting >= REFUSALS_TO_LEARN
    }

    /// Whether the key may still learn (configured as sliding windows, nothing learned yet).
    pub(crate) fn may_learn(&self) -> bool {
        self.may && self.configured == WindowSemantics::Sliding && self.learned.is_none()
    }

    /// Whether the key reads its limits as sliding-window counters, configured or learned.
    pub(crate) fn reads_as_counter(&self) -> bool {
        self.configured == WindowSemantics::SlidingWindowCounter || self.learned.is_some()
    }

    /// The key learned from `from`, at `now`, that its server is a sliding-window counter.
    pub(crate) fn learn_counter(&mut self, from: LearnedFrom, now: Instant) {
        self.learned = Some(LearnedSemantics {
            semantics: WindowSemantics::SlidingWindowCounter,
            from,
        });
        self.learned_at = Some(now);
    }

    /// Whether a call sent at `sent_at` went under the reading the key has since left behind
    /// (its refusal says nothing new: no reason to pace).
    pub(crate) fn sent_before_learning(&self, sent_at: Instant) -> bool {
        self.learned_at.is_some_and(|at| sent_at <= at)
    }

    pub(crate) fn learned(&self) -> Option<LearnedSemantics> {
        self.learned
    }
}

/// Whether the server's `window` (on the answer to a call sent at `sent_at`) shows a sliding-window
/// counter, against the key's `ledger` for `quota`; `guard` is the latency the key allows (the
/// log is read that much before the call, so that calls the server saw leave no sooner than
/// the log's).
pub(crate) fn headers_show_counter(
    quota: &Quota,
    window: &ServerWindow,
    ledger: &Ledger,
    sent_at: Instant,
    guard: Duration,
) -> bool {
    let Some(count) = window.limit else {
        return false;
    };
    // Of the limits with that count, the longest window (the one that allows the latest reset).
    let Some(limit) = quota.limits().iter().rev().find(|l| l.count() == count) else {
        return false;
    };
    if window.remaining < count && window.clamped_from.is_none() {
        // A counter's reset is two windows from its first call at most (2W − elapsed). Beyond
        // a quarter window past W (never a clock's skew) and within 2W: a reset in other units
        // (milliseconds, a timestamp read wrong) or a lockout lies outside it.
        let w = limit.window();
        let past = w + (w / 4).max(RESET_ROUNDING);
        if window.reset_in > past && window.reset_in <= 2 * w + RESET_ROUNDING {
            return true;
        }
    }
    let at = sent_at.checked_sub(guard).unwrap_or(sent_at);
    ledger
        .remaining_as_log_and_counter(count, at)
        .is_some_and(|(log, counter)| {
            let said = u64::from(window.remaining);
            said + REMAINING_MARGIN <= log && counter < log
        })
}

/// What a key reading its limits as counters takes of the server's `window`: none of a positive
/// remaining (its counter reads the server's state finer), and a remaining of zero until the
/// reset less its whole-second rounding (the counter's own slots hold it the rest of the way).
pub(crate) fn window_for_counter(window: &ServerWindow, reset_in: Duration) -> Option<Duration> {
    (window.remaining == 0).then(|| reset_in.saturating_sub(RESET_ROUNDING))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerConfig;
    use crate::retry::parse_rate_limit_headers;
    use http::{HeaderMap, HeaderValue};

    fn window(limit: u32, remaining: u32, reset_s: u64) -> ServerWindow {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", reset_s as u32),
        ] {
            h.insert(k, HeaderValue::from(v));
        }
        parse_rate_limit_headers(&h, || std::time::UNIX_EPOCH, Duration::from_secs(3_660)).unwrap()
    }

    #[test]
    fn one_refusal_fitting_a_counter_is_not_enough_to_switch_two_are() {
        let mut learning = SemanticsLearning::new(WindowSemantics::Sliding, true);
        assert!(!learning.refusal_fits_counter());
        assert!(learning.refusal_fits_counter());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_beyond_the_window_shows_a_counter_and_one_within_it_does_not() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        let now = tokio::time::Instant::now();
        let mut ledger = Ledger::new(&quota, LedgerConfig::default(), now);
        ledger.reserve(now);
        let g = Duration::from_millis(100);
        // A counter after its first call: 60 at once only two windows on.
        assert!(headers_show_counter(
            &quota,
            &window(60, 59, 120),
            &ledger,
            now,
            g
        ));
        // A sliding log or a fixed window: within the window, rounded up.
        assert!(!headers_show_counter(
            &quota,
            &window(60, 59, 60),
            &ledger,
            now,
            g
        ));
        assert!(!headers_show_counter(
            &quota,
            &window(60, 59, 61),
            &ledger,
            now,
            g
        ));
        // A reset in milliseconds (60,000 "s"), or a lockout of ten minutes: not a counter's.
        assert!(!headers_show_counter(
            &quota,
            &window(60, 59, 60_000),
            &ledger,
            now,
            g
        ));
        assert!(!headers_show_counter(
            &quota,
            &window(60, 59, 600),
            &ledger,
            now,
            g
        ));
        // A fixed window's reset read against a clock a few seconds off: not yet evidence.
        assert!(!headers_show_counter(
            &quota,
            &window(60, 59, 65),
            &ledger,
            now,
            g
        ));
        // The hour's limit may reset an hour on; a count the quota lacks names no window.
        assert!(!headers_show_counter(
            &quota,
            &window(1000, 999, 3_600),
            &ledger,
            now,
            g
        ));
        assert!(!headers_show_counter(
            &quota,
            &window(7, 6, 120),
            &ledger,
            now,
            g
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_first_window_a_remaining_below_the_logs_shows_a_counter() {
        let quota: Quota = "10/10s".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let config = LedgerConfig {
            guard: Some(Duration::ZERO),
            ..LedgerConfig::default()
        };
        let mut ledger = Ledger::new(&quota, config, t0);
        for _ in 0..10 {
            ledger.reserve(t0);
        }
        // 11 s on: a log holds none of them; a counter still weighs 9 of the 10 in.
        let t = t0 + Duration::from_secs(11);
        ledger.reserve(t);
        assert_eq!(
            ledger.remaining_as_log_and_counter(10, t),
            Some((9, 0)),
            "log and counter"
        );
        assert!(headers_show_counter(
            &quota,
            &window(10, 0, 1),
            &ledger,
            t,
            Duration::ZERO
        ));
        assert!(!headers_show_counter(
            &quota,
            &window(10, 9, 10),
            &ledger,
            t,
            Duration::ZERO
        ));
        assert!(ledger.learn_counter_semantics());
        assert!(ledger.reads_as_counter());
        assert!(!ledger.learn_counter_semantics(), "once");
    }

    #[test]
    fn a_counter_key_takes_only_an_empty_window_less_its_rounding() {
        assert_eq!(
            window_for_counter(&window(60, 3, 5), Duration::from_secs(5)),
            None
        );
        assert_eq!(
            window_for_counter(&window(60, 0, 5), Duration::from_secs(5)),
            Some(Duration::from_secs(4))
        );
    }
}
