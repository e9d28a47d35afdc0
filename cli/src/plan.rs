//! `plan` and `send --dry-run`: when a batch would finish, from the ledger's own plan, and how the
//! quota's windows shape it ("1,000 calls: 60 per minute for 16 min 40 s, then the hour window").

use std::time::Duration;

use fabraix_scheduler::{Instant, Ledger, LedgerConfig, Quota};

use crate::human;

/// Batches up to this many calls are planned call by call on a fresh [`Ledger`]; the rest of a
/// larger batch is extrapolated at the quota's long-run rate (O(1) memory either way).
pub const EXACT_PLAN_MAX: u64 = 10_000_000;

/// How long after the first call the `n`-th call of a batch may go, for a key that has sent
/// nothing yet: the ledger's plan, with its latency guard. Zero for `n <= 1` or an unlimited quota.
pub fn planned_duration(quota: &Quota, now: Instant, n: u64) -> Duration {
    planned_duration_after(quota, now, n, &[])
}

/// How long after `now` the `n`-th call of a batch may go, for a key whose windows hold calls
/// made before, of these `earlier` ages at `now` (a resumed run; see
/// [`KeyConfig::calls_that_count`](fabraix_scheduler::KeyConfig::calls_that_count)). With none,
/// [`planned_duration`]. Zero for `n = 0` or an unlimited quota.
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
    if n == 0 || (n == 1 && earlier.is_empty()) || quota.limits().is_empty() {
        return Duration::ZERO;
    }
    let mut ledger = Ledger::with_earlier_calls(quota, LedgerConfig::default(), now, earlier);
    let exact = n.min(EXACT_PLAN_MAX);
    let mut last = now;
    for _ in 0..exact {
        // Reserving at the previous slot is what the scheduler's shard does; it lets the logs prune.
        last = ledger.reserve(last);
    }
    let rest = n - exact;
    let extra = Duration::from_secs_f64(rest as f64 / quota.rate_per_second());
    (last - now) + extra
}

/// One phase of a batch: the limit that sets the pace, for how many calls.
#[derive(Clone, Debug, PartialEq)]
struct Phase {
    count: u32,
    window: Duration,
    calls: u64,
}

/// The phases of `n` calls: the shortest window paces the calls until the next longer window
/// (with a slower long-run rate) is full, then that one, and so on.
fn phases(quota: &Quota, n: u64) -> (Vec<Phase>, bool) {
    let mut binding: Vec<_> = Vec::new();
    for l in quota.limits() {
        // A longer window binds only if its long-run rate is slower than every shorter one's.
        if binding
            .last()
            .is_none_or(|b: &fabraix_scheduler::Limit| l.rate_per_second() < b.rate_per_second())
        {
            binding.push(*l);
        }
    }
    let mut out = Vec::new();
    let mut before = 0u64;
    let mut hits_next = false;
    for (i, l) in binding.iter().enumerate() {
        let cap = binding
            .get(i + 1)
            .map_or(u64::MAX, |next| u64::from(next.count()));
        let upto = n.min(cap);
        if upto > before {
            out.push(Phase {
                count: l.count(),
                window: l.window(),
                calls: upto - before,
            });
        }
        before = upto;
        if n <= cap {
            hits_next = n == cap && i + 1 < binding.len();
            break;
        }
    }
    (out, hits_next)
}

/// The plan of `n` calls under `quota`, as text: the phases, then the ledger's finish time.
///
/// ```
/// use fabraix_sched::plan::describe;
/// use fabraix_scheduler::{Quota, TokioClock, Clock};
/// let text = describe(&Quota::development(), TokioClock::new().now(), 1_000);
/// assert!(text.starts_with("1,000 calls: 60 per minute for 16 min 40 s, then the hour window"));
/// ```
pub fn describe(quota: &Quota, now: Instant, n: u64) -> String {
    describe_after(quota, now, n, &[])
}

/// [`describe`], for a key whose windows hold calls made before, of these `earlier` ages at `now`
/// (a resumed run): the phases are those of a fresh key (and say so), the ledger's plan counts the
/// earlier calls and says when the first call can go.
///
/// ```
/// use fabraix_sched::plan::describe_after;
/// use fabraix_scheduler::{Quota, TokioClock, Clock};
/// use std::time::Duration;
/// let ages = [Duration::from_secs(30); 60];
/// let text = describe_after(&Quota::development(), TokioClock::new().now(), 60, &ages);
/// assert!(text.starts_with("60 calls (on a fresh key): all at once"), "{text}");
/// assert!(text.contains("the key's windows holding 60 calls of the earlier run: the first call at +30 s"), "{text}");
/// ```
pub fn describe_after(quota: &Quota, now: Instant, n: u64, earlier: &[Duration]) -> String {
    // The earlier calls the ledger counts (see `Ledger::with_earlier_calls`); none matter for
    // no calls.
    let horizon = LedgerConfig::default().counted_for(quota);
    let counted = match n {
        0 => 0,
        _ => earlier.iter().filter(|&&age| age < horizon).count() as u64,
    };
    let mut text = format!("{} calls", human::count(n));
    if counted > 0 && !quota.limits().is_empty() {
        text.push_str(" (on a fresh key)");
    }
    if quota.limits().is_empty() {
        text.push_str(": no quota (unlimited): all at once.\n");
        return text;
    }
    let (phases, hits_next) = phases(quota, n);
    let first_burst = u64::from(quota.limits()[0].count());
    if n <= first_burst {
        text.push_str(&format!(
            ": all at once (the {} window allows {}).\n",
            human::window(quota.limits()[0].window()),
            human::count(first_burst)
        ));
    } else {
        let mut before = 0u64;
        for (i, p) in phases.iter().enumerate() {
            let rate = f64::from(p.count) / p.window.as_secs_f64();
            let span = Duration::from_secs_f64(p.calls as f64 / rate);
            if i == 0 {
                text.push_str(&format!(
                    ": {} per {} for {}",
                    human::count(u64::from(p.count)),
                    human::window(p.window),
                    human::duration(span)
                ));
            } else {
                // When this window lets the first call of the phase go: the ledger's answer.
                let from = planned_duration(quota, now, before + 1);
                text.push_str(&format!(
                    ", then the {w} window: {} per {w} for the other {}, from +{}",
                    human::count(u64::from(p.count)),
                    human::count(p.calls),
                    human::duration(from),
                    w = human::window(p.window),
                ));
            }
            before += p.calls;
        }
        if hits_next {
            let next = quota
                .limits()
                .iter()
                .find(|l| u64::from(l.count()) == n)
                .map_or_else(String::new, |l| human::window(l.window()));
            text.push_str(&format!(", then the {next} window"));
        }
        text.push_str(".\n");
    }
    let d = planned_duration_after(quota, now, n, earlier);
    if counted == 0 {
        text.push_str(&format!(
            "Ledger plan under {quota}: the first call at once, the last at +{} ({:.1} s); no window of any limit ever holds more than its count.\n",
            human::duration(d),
            d.as_secs_f64()
        ));
    } else {
        let first = planned_duration_after(quota, now, 1, earlier);
        text.push_str(&format!(
            "Ledger plan under {quota}, the key's windows holding {} calls of the earlier run: the first call at +{}, the last at +{} ({:.1} s); no window of any limit ever holds more than its count.\n",
            human::count(counted),
            human::duration(first),
            human::duration(d),
            d.as_secs_f64()
        ));
    }
    if n > EXACT_PLAN_MAX {
        text.push_str(&format!(
            "(Calls beyond {} are extrapolated at the long-run rate.)\n",
            human::count(EXACT_PLAN_MAX)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        use fabraix_scheduler::Clock;
        fabraix_scheduler::TokioClock::new().now()
    }

    #[test]
    fn development_phases() {
        let q = Quota::development();
        let t = describe(&q, now(), 1_000);
        assert!(
            t.starts_with("1,000 calls: 60 per minute for 16 min 40 s, then the hour window."),
            "{t}"
        );
        let t = describe(&q, now(), 5_000);
        assert!(
            t.starts_with(
                "5,000 calls: 60 per minute for 16 min 40 s, then the hour window: 1,000 per hour for the other 4,000, from +1 h 0 min."
            ),
            "{t}"
        );
        let t = describe(&q, now(), 500);
        assert!(
            t.starts_with("500 calls: 60 per minute for 8 min 20 s."),
            "{t}"
        );
        let t = describe(&q, now(), 30);
        assert!(t.contains("all at once"), "{t}");
    }

    #[test]
    fn ledger_durations() {
        let q = Quota::development();
        let t0 = now();
        // 60 go at once, then each further 60 a minute later (plus the 100 ms guard).
        assert_eq!(planned_duration(&q, t0, 60), Duration::ZERO);
        let d = planned_duration(&q, t0, 1_000);
        assert!(
            d >= Duration::from_secs(16 * 60) && d < Duration::from_secs(16 * 60 + 5),
            "{d:?}"
        );
        let d = planned_duration(&q, t0, 1_001);
        assert!(d >= Duration::from_secs(3_600), "{d:?}");
        assert_eq!(
            planned_duration(&Quota::unlimited(), t0, 1_000_000),
            Duration::ZERO
        );
    }

    #[test]
    fn fast_longer_window_does_not_bind() {
        let q: Quota = "10/1s,1000/1m".parse().unwrap();
        let (p, _) = phases(&q, 5_000);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].calls, 5_000);
    }
}
