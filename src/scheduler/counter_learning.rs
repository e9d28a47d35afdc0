//! Learning that the server counts as a sliding-window counter, before it refuses where it tells,
//! and from its refusals where it does not; and going back to the window log when the counter's
//! reading proves wrong.
//!
//! A key read as sliding windows (the default) keeps, beside each limit's window log, the same
//! calls as a sliding-window counter would count them (windows laid from the key's first call, as
//! HAProxy's stick tables and the mock lay them). Such a server can be told apart from the others:
//!
//! - **By its `RateLimit-*` headers**, before any refusal, for the limit they name
//!   (`RateLimit-Limit`'s count, and the window of the `RateLimit-Policy` of that count when one
//!   is given):
//!   - *Its reset.* A fixed window, a sliding log or a token bucket of N per W frees a slot
//!     within W, so their reset is at most W (rounded up to whole seconds), whatever other
//!     clients of the key do; a counter's first calls leave the previous window's weight to come,
//!     and its reset reaches beyond W (2W − elapsed after its first call). A reset counts only
//!     between W plus a quarter of W and 2W: one in other units, or read against a clock that is
//!     off by seconds, lies outside it.
//!   - *Its remaining.* Other clients of the key lower the remaining of a server of any model,
//!     so a remaining below the log's says nothing alone. It counts only where it is the
//!     counter's figure for the key's own calls within one, at least 2 below the log's and above
//!     0 (where every model meets), on an answer to the key's latest call (no later call of the
//!     key lowers the figures), past the counter's first window: on [`ANSWERS_TO_LEARN`] such
//!     answers, with at least two different gaps between the log's figure and the counter's.
//!     Another client's calls would have to follow that gap, which moves with the calls' timing
//!     across the windows, within one on every such answer. Any answer whose remaining is 2 or
//!     more below both figures shows calls that are not the key's: the key never learns from
//!     its remaining or its refusals from then on.
//! - **By the timing of refusals**, where no headers come: a 429 past the counter's first
//!   window, on a call that the window log had room for and that a counter of the same calls
//!   would have refused — twice ([`REFUSALS_TO_LEARN`]), since one may have another cause.
//!
//! Headers count only on answers that are not refusals (a 429's reset may be a lockout).
//!
//! On that evidence the key's ledger plans every limit by its counter from then on
//! ([`WindowSemantics::SlidingWindowCounter`], kept beside the log from the first call), and its
//! pacer stops: the counter's own estimate plans the calls. The logs keep recording, and the key
//! goes back to them for good (the safe default) when the server refuses a call sent since that
//! the log held to be over its limit and the counter did not, or when the remaining on two
//! answers to the key's latest call is 2 or more below the counter's figure
//! ([`ANSWERS_TO_UNLEARN`]): the server counts more than the counter does. A key configured with
//! another semantics never switches, nor does one whose ledger lives in a shared store, nor one
//! told not to learn
//! ([`KeyConfig::learn_semantics`](super::KeyConfig::learn_semantics)). What is learned shows in
//! [`KeyStats::learned_semantics`](super::KeyStats::learned_semantics), the reading in force in
//! [`KeyStats::semantics`](super::KeyStats::semantics).

use std::time::Duration;

use crate::clock::Instant;
use crate::ledger::{Ledger, OwnReading, WindowSemantics};
use crate::quota::Quota;
use crate::retry::ServerWindow;

/// How far a whole-second reset may lie past the exact one: its rounding up.
const RESET_ROUNDING: Duration = Duration::from_secs(1);

/// How many calls a remaining must lie below a figure to tell it apart from it: more than a call
/// counted differently at the edge of a window, or a figure's rounding.
const REMAINING_MARGIN: u64 = 2;

/// Answers whose remaining fits the counter's figure and not the log's that switch a key to the
/// counter's reading (see the module's docs).
pub(crate) const ANSWERS_TO_LEARN: u32 = 3;

/// Answers whose remaining lies below the learned counter's figure that switch a key back to its
/// window log.
pub(crate) const ANSWERS_TO_UNLEARN: u32 = 2;

/// How a key came to read its limits otherwise than it was configured to, or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LearnedSemantics {
    /// The reading it switched to:
    /// [`SlidingWindowCounter`](WindowSemantics::SlidingWindowCounter), or
    /// [`Sliding`](WindowSemantics::Sliding) again once the counter's reading proved wrong (for
    /// good: it does not switch again).
    pub semantics: WindowSemantics,
    /// What showed it.
    pub from: LearnedFrom,
}

/// What showed a key how its server counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LearnedFrom {
    /// The server's `RateLimit-*` / `X-RateLimit-*` headers.
    Headers,
    /// The timing of refusals (429): ones a sliding log would not have made (for a counter),
    /// or one the counter's reading sent and a sliding log would have made (back to the log).
    Refusals,
}

/// A change of the key's reading that the server's answers call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Switch {
    /// To the counter kept beside the log.
    ToCounter(LearnedFrom),
    /// Back to the log.
    ToLog(LearnedFrom),
}

/// What one answer's rate-limit headers say, against the key's own account of its calls (see
/// [`read_headers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderReading {
    /// The reset lies beyond the limit's window, as only a counter's does.
    pub(crate) reset_beyond_window: bool,
    /// The server's remaining for the limit.
    pub(crate) said: u64,
    /// The key's own account of that limit, if it keeps both a log and a counter of it.
    pub(crate) own: Option<OwnReading>,
}

/// One key's reading of its limits: as configured, or what it learned.
#[derive(Debug)]
pub(crate) struct SemanticsLearning {
    configured: WindowSemantics,
    /// Whether the key may learn at all ([`KeyConfig::learn_semantics`](super::KeyConfig)).
    may: bool,
    learned: Option<LearnedSemantics>,
    /// When the key last switched: calls sent until then went under the old reading.
    learned_at: Option<Instant>,
    /// Refusals seen so far that a counter of the key's calls predicts where the log had room.
    refusals_fitting: u32,
    /// Answers seen so far whose remaining fits the counter's figure and not the log's.
    answers_fitting: u32,
    /// The gap (log's figure less the counter's) on the first of them.
    first_gap: Option<u64>,
    /// Whether a later one had another gap.
    gaps_differ: bool,
    /// An answer showed calls on the key that are not its own: its remaining and its refusals
    /// prove nothing.
    foreign_calls: bool,
    /// Answers since the switch to the counter whose remaining lies below the counter's figure.
    answers_below_counter: u32,
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
            answers_fitting: 0,
            first_gap: None,
            gaps_differ: false,
            foreign_calls: false,
            answers_below_counter: 0,
        }
    }

    /// Whether the key may still learn (configured as sliding windows, nothing learned yet).
    pub(crate) fn may_learn(&self) -> bool {
        self.may && self.configured == WindowSemantics::Sliding && self.learned.is_none()
    }

    /// Whether the key's reading may still switch: it may learn, or reads as a learned counter.
    pub(crate) fn may_switch(&self) -> bool {
        self.may_learn() || self.learned_counter()
    }

    /// Whether the key reads its limits as sliding-window counters, learned and not given up.
    fn learned_counter(&self) -> bool {
        self.learned
            .is_some_and(|l| l.semantics == WindowSemantics::SlidingWindowCounter)
    }

    /// Whether the key reads its limits as sliding-window counters, configured or learned.
    pub(crate) fn reads_as_counter(&self) -> bool {
        self.configured == WindowSemantics::SlidingWindowCounter || self.learned_counter()
    }

    /// The reading in force: as configured, or as learned.
    pub(crate) fn current(&self) -> WindowSemantics {
        self.learned.map_or(self.configured, |l| l.semantics)
    }

    /// A refusal of the call in `slot` (sent at `sent_at`), with what the key's `ledger` says of
    /// it: the switch it calls for, if any (see the module's docs).
    pub(crate) fn on_refusal(
        &mut self,
        ledger: &Ledger,
        slot: Instant,
        sent_at: Instant,
    ) -> Option<Switch> {
        if self.may_learn() {
            if self.foreign_calls || !ledger.counter_would_refuse(slot) {
                return None;
            }
            self.refusals_fitting = self.refusals_fitting.saturating_add(1);
            return (self.refusals_fitting >= REFUSALS_TO_LEARN)
                .then_some(Switch::ToCounter(LearnedFrom::Refusals));
        }
        (self.learned_counter()
            && !self.sent_before_learning(sent_at)
            && ledger.log_would_refuse_counter_allowed(slot))
        .then_some(Switch::ToLog(LearnedFrom::Refusals))
    }

    /// An answer (not a refusal) whose headers read as `reading`: the switch it calls for, if
    /// any (see the module's docs).
    pub(crate) fn on_headers(&mut self, reading: &HeaderReading) -> Option<Switch> {
        let said = reading.said;
        if self.learned_counter() {
            // (On an answer to the key's latest call only: a later slot in the next window may
            // read the counter's previous window as whole.)
            let below = reading
                .own
                .is_some_and(|own| own.clean && said + REMAINING_MARGIN <= own.counter);
            if below {
                self.answers_below_counter = self.answers_below_counter.saturating_add(1);
            }
            return (self.answers_below_counter >= ANSWERS_TO_UNLEARN)
                .then_some(Switch::ToLog(LearnedFrom::Headers));
        }
        if !self.may_learn() {
            return None;
        }
        if reading.reset_beyond_window {
            return Some(Switch::ToCounter(LearnedFrom::Headers));
        }
        let own = reading.own?;
        if said + REMAINING_MARGIN <= own.log.min(own.counter) {
            self.foreign_calls = true;
        }
        let fits = own.clean
            && own.past_first_window
            && said > 0
            && said + REMAINING_MARGIN <= own.log
            && said.abs_diff(own.counter) <= 1;
        if self.foreign_calls || !fits {
            return None;
        }
        let gap = own.log - own.counter.min(own.log);
        match self.first_gap {
            None => self.first_gap = Some(gap),
            Some(first) => self.gaps_differ |= first != gap,
        }
        self.answers_fitting = self.answers_fitting.saturating_add(1);
        (self.answers_fitting >= ANSWERS_TO_LEARN && self.gaps_differ)
            .then_some(Switch::ToCounter(LearnedFrom::Headers))
    }

    /// The key switched as `switch` says, at `now`.
    pub(crate) fn switched(&mut self, switch: Switch, now: Instant) {
        self.learned = Some(match switch {
            Switch::ToCounter(from) => LearnedSemantics {
                semantics: WindowSemantics::SlidingWindowCounter,
                from,
            },
            Switch::ToLog(from) => LearnedSemantics {
                semantics: WindowSemantics::Sliding,
                from,
            },
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

/// What the server's `window` (on the answer to the call in `slot`, sent at `sent_at`) says
/// against the key's `ledger` for `quota`, for the limit it names (by count, and by window when
/// the server gives one; of several, the longest window); `guard` is the latency the key allows
/// (the ledger is read that much before the call, so that calls the server saw leave no sooner
/// than the ledger's). `None` if the headers name no limit of the quota.
pub(crate) fn read_headers(
    quota: &Quota,
    window: &ServerWindow,
    ledger: &Ledger,
    slot: Instant,
    sent_at: Instant,
    guard: Duration,
) -> Option<HeaderReading> {
    let count = window.limit?;
    let (index, limit) = quota
        .limits()
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l.count() == count && window.window.is_none_or(|w| w == l.window()))?;
    // A counter's reset is two windows from its first call at most (2W − elapsed, in whole
    // seconds rounded up). Beyond a quarter window past W (never a clock's skew) and within 2W
    // rounded up: a reset in other units (milliseconds, a timestamp read wrong) or a lockout lies
    // outside it. (For a window of a second or less the two meet: no reset shows a counter.)
    let w = limit.window();
    let past = w + (w / 4).max(RESET_ROUNDING);
    let twice = w.saturating_mul(2);
    let most = Duration::from_secs(twice.as_secs() + u64::from(twice.subsec_nanos() > 0));
    let reset_beyond_window = window.remaining < count
        && window.clamped_from.is_none()
        && window.reset_in > past
        && window.reset_in <= most;
    let at = sent_at.checked_sub(guard).unwrap_or(sent_at);
    Some(HeaderReading {
        reset_beyond_window,
        said: u64::from(window.remaining),
        own: ledger.own_reading(index, slot, at),
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

    fn headers(limit: u32, remaining: u32, reset_s: u64, policy: Option<&str>) -> ServerWindow {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", reset_s as u32),
        ] {
            h.insert(k, HeaderValue::from(v));
        }
        if let Some(p) = policy {
            h.insert("ratelimit-policy", HeaderValue::from_str(p).unwrap());
        }
        parse_rate_limit_headers(&h, || std::time::UNIX_EPOCH, Duration::from_secs(3_660)).unwrap()
    }

    fn window(limit: u32, remaining: u32, reset_s: u64) -> ServerWindow {
        headers(limit, remaining, reset_s, None)
    }

    /// A reading of the key's own account: `log` and `counter` remaining, past the first window,
    /// on an answer to its latest call.
    fn own(log: u64, counter: u64) -> Option<OwnReading> {
        Some(OwnReading {
            log,
            counter,
            past_first_window: true,
            clean: true,
        })
    }

    fn reading(said: u64, own: Option<OwnReading>) -> HeaderReading {
        HeaderReading {
            reset_beyond_window: false,
            said,
            own,
        }
    }

    fn learning() -> SemanticsLearning {
        SemanticsLearning::new(WindowSemantics::Sliding, true)
    }

    #[tokio::test(start_paused = true)]
    async fn one_refusal_fitting_a_counter_is_not_enough_to_switch_two_are() {
        let quota: Quota = "4/4s".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let config = LedgerConfig::default().guard(Duration::from_millis(100));
        let mut ledger = Ledger::new(&quota, config, t0);
        for _ in 0..4 {
            ledger.reserve(t0);
        }
        let next = ledger.reserve(t0);
        let mut learning = learning();
        assert_eq!(learning.on_refusal(&ledger, next, next), None);
        assert_eq!(
            learning.on_refusal(&ledger, next, next),
            Some(Switch::ToCounter(LearnedFrom::Refusals))
        );
    }

    fn reset_shows_counter(quota: &Quota, window: &ServerWindow) -> bool {
        let now = tokio::time::Instant::now();
        let mut ledger = Ledger::new(quota, LedgerConfig::default(), now);
        let slot = ledger.reserve(now);
        read_headers(
            quota,
            window,
            &ledger,
            slot,
            now,
            Duration::from_millis(100),
        )
        .is_some_and(|r| r.reset_beyond_window)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_beyond_the_window_shows_a_counter_and_one_within_it_does_not() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        // A counter after its first call: 60 at once only two windows on.
        assert!(reset_shows_counter(&quota, &window(60, 59, 120)));
        // A sliding log or a fixed window: within the window, rounded up.
        assert!(!reset_shows_counter(&quota, &window(60, 59, 60)));
        assert!(!reset_shows_counter(&quota, &window(60, 59, 61)));
        // A reset in milliseconds (60,000 "s"), or a lockout of ten minutes: not a counter's.
        assert!(!reset_shows_counter(&quota, &window(60, 59, 60_000)));
        assert!(!reset_shows_counter(&quota, &window(60, 59, 600)));
        // A fixed window's reset read against a clock a few seconds off: not yet evidence.
        assert!(!reset_shows_counter(&quota, &window(60, 59, 65)));
        // The hour's limit may reset an hour on; a count the quota lacks names no window.
        assert!(!reset_shows_counter(&quota, &window(1000, 999, 3_600)));
        assert!(!reset_shows_counter(&quota, &window(7, 6, 120)));
        // Past two windows, rounded up: not a counter's (nor, for a 1 s window, anything).
        assert!(!reset_shows_counter(&quota, &window(60, 59, 121)));
        let short: Quota = "5/1s".parse().unwrap();
        for reset in [2, 3] {
            assert!(
                !reset_shows_counter(&short, &window(5, 4, reset)),
                "{reset}"
            );
        }
        let two: Quota = "5/2s".parse().unwrap();
        assert!(reset_shows_counter(&two, &window(5, 4, 4)));
        assert!(!reset_shows_counter(&two, &window(5, 4, 5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_window_names_the_limit_by_count_and_window() {
        let quota: Quota = "60/1m,1000/1h".parse().unwrap();
        let policy = |p| headers(60, 59, 120, Some(p));
        assert!(reset_shows_counter(&quota, &policy("60;w=60, 1000;w=3600")));
        // 60 an hour is no limit of the quota: the reset says nothing of the minute's.
        assert!(!reset_shows_counter(&quota, &policy("60;w=3600")));
        // The window given must be the limit's: 60 per 30 s is not 60 per minute either.
        assert!(!reset_shows_counter(&quota, &policy("60;w=30")));
        // Two limits of one count: the window tells which. By count alone the longest is read,
        // whose reset 120 s is well within its hour.
        let twice: Quota = "60/1m,60/1h".parse().unwrap();
        assert!(!reset_shows_counter(&twice, &window(60, 59, 120)));
        assert!(reset_shows_counter(&twice, &policy("60;w=60")));
    }

    #[test]
    fn the_remaining_shows_a_counter_on_three_clean_answers_with_different_gaps() {
        let mut l = learning();
        // The counter's figure within one, the log's 2 or more above it: but one gap only.
        for said in [3, 4, 3] {
            assert_eq!(l.on_headers(&reading(said, own(6, 3))), None, "{said}");
        }
        // A gap of 4 now: learned.
        assert_eq!(
            l.on_headers(&reading(2, own(6, 2))),
            Some(Switch::ToCounter(LearnedFrom::Headers))
        );
        // Each condition alone keeps an answer from counting: three answers with gaps of 4, 5
        // and 6 (log 8, counter 4, 3, 2) that fit but for it.
        let fits = |gap: u64| reading(8 - gap, own(8, 8 - gap));
        let unclean = |o: OwnReading| OwnReading { clean: false, ..o };
        let early = |o: OwnReading| OwnReading {
            past_first_window: false,
            ..o
        };
        let cases: [(&str, &dyn Fn(u64) -> HeaderReading); 6] = [
            ("none", &|gap| fits(gap)),
            ("the log's", &|gap| reading(8, own(8, 8 - gap))),
            ("zero", &|gap| reading(0, own(gap, 0))),
            ("not the counter's", &|gap| {
                reading(10 - gap, own(8, 8 - gap))
            }),
            ("a later call", &|gap| {
                reading(8 - gap, own(8, 8 - gap).map(unclean))
            }),
            ("first window", &|gap| {
                reading(8 - gap, own(8, 8 - gap).map(early))
            }),
        ];
        for (name, answer) in cases {
            let mut l = learning();
            let switched = [4, 5, 6].map(|gap| l.on_headers(&answer(gap)));
            let expected = if name == "none" {
                [None, None, Some(Switch::ToCounter(LearnedFrom::Headers))]
            } else {
                [None; 3]
            };
            assert_eq!(switched, expected, "{name}");
        }
    }

    #[test]
    fn calls_that_are_not_the_keys_stop_the_remaining_and_the_refusals_from_teaching() {
        let mut l = learning();
        // 2 below both figures: another client.
        assert_eq!(l.on_headers(&reading(4, own(6, 7))), None);
        for (said, counter) in [(3, 3), (2, 2), (1, 1), (3, 3)] {
            assert_eq!(l.on_headers(&reading(said, own(6, counter))), None);
        }
        let quota: Quota = "4/4s".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let mut ledger = Ledger::new(&quota, LedgerConfig::default(), t0);
        for _ in 0..4 {
            ledger.reserve(t0);
        }
        let next = ledger.reserve(t0);
        assert!(ledger.counter_would_refuse(next));
        for _ in 0..3 {
            assert_eq!(l.on_refusal(&ledger, next, next), None);
        }
        // The reset still shows a counter: other clients never stretch a log's.
        let beyond = HeaderReading {
            reset_beyond_window: true,
            ..reading(3, own(6, 3))
        };
        assert_eq!(
            l.on_headers(&beyond),
            Some(Switch::ToCounter(LearnedFrom::Headers))
        );
    }

    #[test]
    fn a_learned_counter_goes_back_to_the_log_on_two_answers_below_its_figure() {
        let mut l = learning();
        let now = tokio::time::Instant::now();
        l.switched(Switch::ToCounter(LearnedFrom::Headers), now);
        assert!(l.reads_as_counter() && l.may_switch());
        assert_eq!(l.current(), WindowSemantics::SlidingWindowCounter);
        // At or above the counter's figure, or below it on an answer to an earlier call: fine.
        assert_eq!(l.on_headers(&reading(5, own(0, 5))), None);
        assert_eq!(l.on_headers(&reading(4, own(0, 5))), None);
        let later = own(0, 5).map(|o| OwnReading { clean: false, ..o });
        assert_eq!(l.on_headers(&reading(0, later)), None);
        assert_eq!(l.on_headers(&reading(3, own(0, 5))), None, "one");
        assert_eq!(
            l.on_headers(&reading(2, own(0, 5))),
            Some(Switch::ToLog(LearnedFrom::Headers))
        );
        l.switched(Switch::ToLog(LearnedFrom::Headers), now);
        assert!(!l.reads_as_counter() && !l.may_switch() && !l.may_learn());
        assert_eq!(l.current(), WindowSemantics::Sliding);
        let beyond = HeaderReading {
            reset_beyond_window: true,
            ..reading(3, own(6, 3))
        };
        assert_eq!(l.on_headers(&beyond), None, "for good");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_the_log_predicts_and_the_counter_does_not_goes_back_to_the_log() {
        // 10 per 10 s, no guard: one call at 0, nine at 9 s; the counter then allows one at
        // 11 s and one at 12 s, where a log holds ten.
        let quota: Quota = "10/10s".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        let config = LedgerConfig::default().guard(Duration::ZERO);
        let mut ledger = Ledger::new(&quota, config, t0);
        let s = Duration::from_secs;
        ledger.reserve(t0);
        let mut l = learning();
        assert!(ledger.learn_counter_semantics());
        l.switched(Switch::ToCounter(LearnedFrom::Headers), t0);
        for _ in 0..9 {
            assert_eq!(ledger.reserve(t0 + s(9)), t0 + s(9));
        }
        let first = ledger.reserve(t0 + s(9));
        let second = ledger.reserve(t0 + s(9));
        assert_eq!((first, second), (t0 + s(11), t0 + s(12)));
        assert!(!ledger.log_would_refuse_counter_allowed(first));
        assert!(ledger.log_would_refuse_counter_allowed(second));
        // Sent before the switch: it says nothing of the counter's reading.
        assert_eq!(l.on_refusal(&ledger, second, t0), None);
        assert_eq!(
            l.on_refusal(&ledger, second, second),
            Some(Switch::ToLog(LearnedFrom::Refusals))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_ledger_reads_the_log_and_the_counter_past_the_first_window() {
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
        let slot = ledger.reserve(t);
        let r = read_headers(&quota, &window(10, 0, 1), &ledger, slot, t, Duration::ZERO).unwrap();
        assert_eq!(r.said, 0);
        assert_eq!(r.own, own(9, 0));
        assert!(!r.reset_beyond_window);
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
