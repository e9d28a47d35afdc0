//! `plan` and `send --dry-run`: when a batch would finish, and which windows hold it back, read
//! off the ledger's own plan: the calls are reserved one by one on a [`Ledger`] of the quota, as
//! the scheduler reserves them, and the text, the JSON and the SVG describe those slots (so the
//! summary cannot say one thing and the plan another).

use std::time::Duration;

use fabraix_scheduler::{Instant, Ledger, LedgerConfig, Limit, Quota};
use serde::{Serialize, Serializer};

use crate::exit::CliError;
use crate::human;

/// Batches up to this many calls are planned call by call; the rest of a larger batch is
/// extrapolated at the quota's long-run rate (O(1) memory either way).
pub const EXACT_PLAN_MAX: u64 = 200_000;

/// Two windows whose earliest slots for a call are this close both hold it back.
const TIE: Duration = Duration::from_millis(1);

/// The schema name of [`PlanSummary`]'s JSON.
pub const PLAN_SCHEMA: &str = "fabraix-sched.plan/1";

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A limit of the quota, in the JSON: `count` calls in any `window_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LimitJson {
    /// Calls allowed in one window.
    pub count: u32,
    /// The window, in seconds.
    pub window_secs: f64,
}

impl From<&Limit> for LimitJson {
    fn from(l: &Limit) -> Self {
        Self {
            count: l.count(),
            window_secs: l.window().as_secs_f64(),
        }
    }
}

/// Consecutive planned calls held back by the same window (or by none: sent at once).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanPhase {
    /// The limit whose window held these calls back; `None` (JSON `null`): they go at once.
    pub paced_by: Option<LimitJson>,
    /// How many calls.
    pub calls: u64,
    /// When the first of them goes, after now.
    #[serde(rename = "first_at_secs", serialize_with = "secs")]
    pub first_at: Duration,
    /// When the last of them goes, after now.
    #[serde(rename = "last_at_secs", serialize_with = "secs")]
    pub last_at: Duration,
}

/// The plan of a batch, read off the ledger's slots; `plan --json` prints it (schema
/// [`PLAN_SCHEMA`], documented in `cli/SCHEMA.md`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanSummary {
    /// Always [`PLAN_SCHEMA`].
    pub schema: &'static str,
    /// Calls in the batch.
    pub calls: u64,
    /// The quota, as `--quota` takes it.
    pub quota: String,
    /// Its limits, shortest window first.
    pub limits: Vec<LimitJson>,
    /// Calls of an earlier run that still count in the key's windows (a resumed run).
    pub earlier_calls: u64,
    /// When the first call goes, after now (zero for no calls).
    #[serde(rename = "first_at_secs", serialize_with = "secs")]
    pub first_at: Duration,
    /// When the last call goes, after now (zero for no calls).
    #[serde(rename = "last_at_secs", serialize_with = "secs")]
    pub last_at: Duration,
    /// Calls planned one by one; the rest (beyond [`EXACT_PLAN_MAX`]) extrapolated.
    pub exact_calls: u64,
    /// The phases in time order; at most one per limit, and one of calls sent at once.
    pub phases: Vec<PlanPhase>,
}

/// One planned slot: when, after now, and which limit held it back (its index in the quota's
/// limits; `None`: no window did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// When the call goes, after now.
    pub at: Duration,
    /// The limit (index into [`Quota::limits`]) whose window held it back, if any.
    pub held_by: Option<usize>,
}

/// The ledger's plan of `n` calls (at most [`EXACT_PLAN_MAX`] of them), slot by slot, for a key
/// whose windows hold calls of these `earlier` ages at `now`.
pub fn slots(
    quota: &Quota,
    now: Instant,
    n: u64,
    earlier: &[Duration],
) -> impl Iterator<Item = Slot> {
    let config = LedgerConfig::default();
    let mut ledger = Ledger::with_earlier_calls(quota, config, now, earlier);
    // One ledger per limit, with the whole quota's guard: each one's earliest slot says when
    // that window alone would let the call go; the latest of them is the one that held it back.
    let alone = LedgerConfig {
        guard: Some(config.guard_for(quota)),
        ..config
    };
    let mut singles: Vec<Ledger> = quota
        .limits()
        .iter()
        .filter_map(|l| Quota::new([*l]).ok())
        .map(|q| Ledger::with_earlier_calls(&q, alone, now, earlier))
        .collect();
    let attributable = singles.len() == quota.limits().len();
    let mut prev = now;
    let mut prev_held = None;
    (0..n.min(EXACT_PLAN_MAX)).map(move |_| {
        let earliest: Vec<Instant> = singles.iter().map(|s| s.earliest(prev)).collect();
        // Reserving at the previous slot is what the scheduler's shard does; it lets the logs prune.
        let slot = ledger.reserve(prev);
        for s in &mut singles {
            s.reserve(slot);
        }
        let held_by = if slot <= now || !attributable {
            None
        } else if slot == prev && prev_held.is_some() {
            // Another call of the same instant: held back by what held the one before.
            prev_held
        } else {
            // The longest window among those (about) as late as the slot: a tie goes to the
            // window that sets the long-run pace.
            let latest = earliest.iter().copied().max().unwrap_or(slot);
            earliest.iter().rposition(|&e| e + TIE >= latest)
        };
        prev = slot;
        prev_held = held_by;
        Slot {
            at: slot - now,
            held_by,
        }
    })
}

impl PlanSummary {
    /// The plan of `n` calls under `quota` from `now`, for a key whose windows hold calls of these
    /// `earlier` ages at `now` (a resumed run; none for a fresh key). Errors, never panics, for
    /// a batch whose plan does not fit in a [`Duration`].
    ///
    /// ```
    /// use fabraix_sched::plan::PlanSummary;
    /// use fabraix_scheduler::{Clock, Quota, TokioClock};
    /// let plan = PlanSummary::build(&Quota::development(), TokioClock::new().now(), 100, &[]).unwrap();
    /// assert_eq!(plan.phases.len(), 2); // 60 at once, then 40 paced by the minute window
    /// assert_eq!(plan.phases[0].calls, 60);
    /// assert!(plan.last_at.as_secs() == 60);
    /// ```
    pub fn build(
        quota: &Quota,
        now: Instant,
        n: u64,
        earlier: &[Duration],
    ) -> Result<Self, CliError> {
        // A batch whose calls at the long-run rate alone outlast any Duration: said at once,
        // before any planning.
        let too_long = || {
            CliError::new(format!(
                "{} under {quota} would take longer than can be planned (more than {} years)",
                human::count_of(n, "call", "calls"),
                human::count(Duration::MAX.as_secs() / 31_557_600)
            ))
        };
        if Duration::try_from_secs_f64(n as f64 / quota.rate_per_second()).is_err()
            && !quota.limits().is_empty()
        {
            return Err(too_long());
        }
        let horizon = LedgerConfig::default().counted_for(quota);
        let earlier_calls = match (n, quota.limits().is_empty()) {
            (0, _) | (_, true) => 0,
            _ => earlier.iter().filter(|&&age| age < horizon).count() as u64,
        };
        let mut phases: Vec<(Option<usize>, PlanPhase)> = Vec::new();
        let mut exact = 0u64;
        for slot in slots(quota, now, n, earlier) {
            exact += 1;
            // Phases only move to longer windows: a shorter window that holds a call back inside
            // a longer one's phase is part of that phase's pace.
            match phases.last_mut() {
                Some((held_by, phase)) if slot.held_by <= *held_by => {
                    phase.calls += 1;
                    phase.last_at = slot.at;
                }
                _ => phases.push((
                    slot.held_by,
                    PlanPhase {
                        paced_by: slot.held_by.map(|i| LimitJson::from(&quota.limits()[i])),
                        calls: 1,
                        first_at: slot.at,
                        last_at: slot.at,
                    },
                )),
            }
        }
        let mut phases: Vec<PlanPhase> = phases.into_iter().map(|(_, p)| p).collect();
        let rest = n - exact;
        if let (Some(last), true) = (phases.last_mut(), rest > 0) {
            let extra = Duration::try_from_secs_f64(rest as f64 / quota.rate_per_second())
                .ok()
                .and_then(|extra| last.last_at.checked_add(extra))
                .ok_or_else(too_long)?;
            last.calls += rest;
            last.last_at = extra;
        }
        Ok(Self {
            schema: PLAN_SCHEMA,
            calls: n,
            quota: quota.to_string(),
            limits: quota.limits().iter().map(LimitJson::from).collect(),
            earlier_calls,
            first_at: phases.first().map_or(Duration::ZERO, |p| p.first_at),
            last_at: phases.last().map_or(Duration::ZERO, |p| p.last_at),
            exact_calls: exact,
            phases,
        })
    }

    /// The plan as text: the phases, then the ledger's first and last slot.
    ///
    /// ```
    /// use fabraix_sched::plan::PlanSummary;
    /// use fabraix_scheduler::{Clock, Quota, TokioClock};
    /// let plan = PlanSummary::build(&Quota::development(), TokioClock::new().now(), 1_000, &[]).unwrap();
    /// assert!(plan.text().starts_with(
    ///     "1,000 calls: 60 at once, then 940 paced by the minute window (60 per minute) from +1 min 0 s to +16 min 1 s."
    /// ), "{}", plan.text());
    /// ```
    pub fn text(&self) -> String {
        let calls = human::count_of(self.calls, "call", "calls");
        if self.calls == 0 {
            return format!("{calls}: nothing to send.\n");
        }
        if self.limits.is_empty() {
            return format!("{calls}: no quota (unlimited): all at once.\n");
        }
        let mut text = format!("{calls}: ");
        if self.earlier_calls > 0 {
            text.push_str(&format!(
                "the key's windows holding {} of the earlier run, ",
                human::count_of(self.earlier_calls, "call", "calls")
            ));
        }
        if self.last_at.is_zero() {
            text.push_str("all at once, within every window's limit.\n");
        } else {
            let phases: Vec<String> = self.phases.iter().map(phase_text).collect();
            text.push_str(&phases.join(", then "));
            text.push_str(".\n");
        }
        let first = if self.first_at.is_zero() {
            "at once".to_string()
        } else {
            format!("at +{}", human::duration(self.first_at))
        };
        text.push_str(&format!(
            "Ledger plan under {}: the first call {first}, the last at +{} ({:.1} s); no window of any limit ever holds more than its count.\n",
            self.quota,
            human::duration(self.last_at),
            self.last_at.as_secs_f64()
        ));
        if self.exact_calls < self.calls {
            text.push_str(&format!(
                "(Calls beyond {} are extrapolated at the long-run rate.)\n",
                human::count(self.exact_calls)
            ));
        }
        text
    }
}

fn phase_text(p: &PlanPhase) -> String {
    let when = if p.first_at == p.last_at {
        format!("at +{}", human::duration(p.first_at))
    } else {
        format!(
            "from +{} to +{}",
            human::duration(p.first_at),
            human::duration(p.last_at)
        )
    };
    match p.paced_by {
        None if p.last_at.is_zero() => format!("{} at once", human::count(p.calls)),
        None => format!("{} {when}", human::count(p.calls)),
        Some(l) => {
            let window = Duration::try_from_secs_f64(l.window_secs).unwrap_or(Duration::MAX);
            let window = human::window(window);
            format!(
                "{} paced by the {window} window ({} per {window}) {when}",
                human::count(p.calls),
                human::count(u64::from(l.count)),
            )
        }
    }
}

/// How long after `now` the last of `n` calls may go, for a key whose windows hold calls of
/// these `earlier` ages at `now`: the ledger's plan ([`PlanSummary`]). Zero for `n = 0`, for one
/// call on a fresh key, or an unlimited quota; [`Duration::MAX`] for a plan that does not fit.
///
/// ```
/// use fabraix_sched::plan::planned_duration_after;
/// use fabraix_scheduler::{Clock, Quota, TokioClock};
/// use std::time::Duration;
/// let quota: Quota = "2/1s".parse().unwrap();
/// let now = TokioClock::new().now();
/// // Two calls 0.6 s ago fill the window: the first call waits 0.4 s (and the 100 ms guard).
/// let ages = [Duration::from_millis(600); 2];
/// let wait = planned_duration_after(&quota, now, 1, &ages);
/// assert!(wait >= Duration::from_millis(500) && wait < Duration::from_millis(501));
/// ```
pub fn planned_duration_after(
    quota: &Quota,
    now: Instant,
    n: u64,
    earlier: &[Duration],
) -> Duration {
    PlanSummary::build(quota, now, n, earlier).map_or(Duration::MAX, |p| p.last_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Instant {
        use fabraix_scheduler::Clock;
        fabraix_scheduler::TokioClock::new().now()
    }

    fn plan(q: &str, n: u64) -> PlanSummary {
        PlanSummary::build(&q.parse().unwrap(), now(), n, &[]).unwrap()
    }

    #[test]
    fn the_quoted_cases_agree_with_their_ledger_line() {
        let t = plan("600/1m,10000/1h", 5_000).text();
        assert!(
            t.starts_with(
                "5,000 calls: 600 at once, then 4,400 paced by the minute window (600 per minute) from +1 min 0 s to +8 min 0 s.\n"
            ),
            "{t}"
        );
        assert!(t.contains("the last at +8 min 0 s"), "{t}");
        let t = plan("60/1m,30/1h", 40).text();
        assert!(!t.contains(" all at once"), "{t}");
        assert!(
            t.starts_with("40 calls: 30 at once, then 10 paced by the hour window (30 per hour) at +1 h 0 min.\n"),
            "{t}"
        );
        let t = plan("60/1m,1000/1h", 5_000).text();
        assert!(
            t.starts_with("5,000 calls: 60 at once, then 940 paced by the minute window (60 per minute) from +1 min 0 s to +16 min 1 s, then 4,000 paced by the hour window (1,000 per hour) from +1 h 0 min to +4 h 16 min.\n"),
            "{t}"
        );
        assert!(plan("60/1m", 30)
            .text()
            .starts_with("30 calls: all at once"));
        assert!(plan("60/1m", 1).text().starts_with("1 call: all at once"));
    }

    #[test]
    fn resumed_plans_wait_for_the_earlier_calls() {
        let q = Quota::development();
        let ages = [Duration::from_secs(30); 60];
        let p = PlanSummary::build(&q, now(), 2, &ages).unwrap();
        let t = p.text();
        assert!(!t.contains(" all at once"), "{t}");
        assert!(
            t.starts_with("2 calls: the key's windows holding 60 calls of the earlier run, 2 paced by the minute window (60 per minute) at +30 s.\n"),
            "{t}"
        );
        assert!(
            t.contains("the first call at +30 s, the last at +30 s"),
            "{t}"
        );
    }

    #[test]
    fn no_count_panics_or_plans_for_long() {
        let q = Quota::development();
        let e = PlanSummary::build(&q, now(), u64::MAX, &[]).unwrap_err();
        assert!(e.0.contains("longer than can be planned"), "{e}");
        let p = PlanSummary::build(&q, now(), 10_000_000_000, &[]).unwrap();
        assert_eq!(p.exact_calls, EXACT_PLAN_MAX);
        assert!(p.text().contains("extrapolated"));
        assert_eq!(
            planned_duration_after(&q, now(), u64::MAX, &[]),
            Duration::MAX
        );
        let unlimited = PlanSummary::build(&Quota::unlimited(), now(), u64::MAX, &[]).unwrap();
        assert!(unlimited.text().contains("unlimited"));
    }

    fn quota_strategy() -> impl Strategy<Value = Quota> {
        // One to three limits of 1..=50 calls in windows of 100 ms to 2 h.
        prop::collection::vec((1u32..=50, 100u64..=7_200_000), 1..=3).prop_filter_map(
            "windows must differ",
            |limits| {
                let limits: Option<Vec<Limit>> = limits
                    .into_iter()
                    .map(|(c, ms)| Limit::new(c, Duration::from_millis(ms)).ok())
                    .collect();
                Quota::new(limits?).ok()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The summary (phases, first and last slot, the text's figures) is the ledger's plan:
        /// compared with the slots a plain `Ledger` hands out for the same calls.
        #[test]
        fn the_summary_is_the_ledger_plan(quota in quota_strategy(), n in 0u64..400, earlier in prop::collection::vec(0u64..600_000, 0..40)) {
            let t0 = now();
            let ages: Vec<Duration> = earlier.iter().map(|&ms| Duration::from_millis(ms)).collect();
            let p = PlanSummary::build(&quota, t0, n, &ages).unwrap();
            let mut ledger = Ledger::with_earlier_calls(&quota, LedgerConfig::default(), t0, &ages);
            let mut prev = t0;
            let planned: Vec<Duration> = (0..n).map(|_| { prev = ledger.reserve(prev); prev - t0 }).collect();
            prop_assert_eq!(p.calls, n);
            prop_assert_eq!(p.phases.iter().map(|ph| ph.calls).sum::<u64>(), n);
            prop_assert_eq!(p.first_at, planned.first().copied().unwrap_or_default());
            prop_assert_eq!(p.last_at, planned.last().copied().unwrap_or_default());
            // Each phase covers its calls' slots, in order.
            let mut i = 0usize;
            for ph in &p.phases {
                let calls = usize::try_from(ph.calls).unwrap();
                prop_assert_eq!(ph.first_at, planned[i]);
                prop_assert_eq!(ph.last_at, planned[i + calls - 1]);
                if ph.paced_by.is_none() {
                    prop_assert!(ph.last_at.is_zero());
                }
                i += calls;
            }
            prop_assert!(p.phases.len() <= quota.limits().len() + 1);
            let text = p.text();
            let at_once = text.contains(" all at once");
            prop_assert_eq!(at_once, n > 0 && p.last_at.is_zero(), "{}", text);
            if n > 0 {
                let last = format!("the last at +{} ", human::duration(p.last_at));
                prop_assert!(text.contains(&last), "{}", text);
                // The text's last phase ends where the ledger line says the last call goes.
                if !p.last_at.is_zero() {
                    let end = human::duration(p.last_at);
                    let ends = text.lines().next().unwrap_or("").trim_end_matches('.').ends_with(&end);
                    prop_assert!(ends, "{}", text);
                }
            }
        }
    }
}
