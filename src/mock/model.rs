//! The four ways a server may count calls against a limit, and a key's set of limits decided
//! atomically.
//!
//! All times are nanoseconds since the server started (`t`), from the injected clock. Every model
//! answers three questions about one limit at `t`: how many calls it would accept right now
//! ([`LimitState::remaining`]), the earliest time it will accept `r` calls at once
//! ([`LimitState::earliest_with`]), and what a counted call changes ([`LimitState::commit`]).
//!
//! The token bucket is hand-written GCRA rather than `governor`: a call must be accepted by every
//! limit of the key or counted in none of them, and `governor`'s `check` commits on success with no
//! way to peek or roll back, so two `governor` limiters cannot be decided together. The GCRA here
//! is the same algorithm (rate N/W, burst N) in exact integer arithmetic; a unit test checks that it
//! agrees with `governor` call for call.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::quota::{Limit, Quota};

/// How the mock server counts calls against each limit of a key's quota.
///
/// A client that never sends more than N calls in any window of length W is accepted by every
/// model; the models differ in what else they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ServerModel {
    /// Fixed windows aligned to the server's start: a call at `t` is accepted if fewer than N calls
    /// were counted in `[kW, (k+1)W)`, the window holding `t`. Admits up to 2N calls in a sliding
    /// window that straddles a boundary. Parsed from `"fixed"`.
    FixedWindow,
    /// An exact sliding log: a call at `t` is accepted if fewer than N calls were counted in
    /// `(t−W, t]`. The strictest model; the default. Parsed from `"sliding-log"`.
    #[default]
    SlidingLog,
    /// A token bucket (GCRA) of rate N/W and burst N: a full bucket admits N at once and then one
    /// every W/N, so up to 2N−1 calls can fall in one sliding window. Parsed from `"token-bucket"`.
    TokenBucket,
    /// A sliding-window counter, as HAProxy's stick tables count `http_req_rate(W)`: per key and
    /// limit, fixed windows of length W laid from the first call counted, and laid again from a
    /// call that comes two windows or more after the current window began (HAProxy's
    /// `update_freq_ctr_period`); at `t`, `elapsed` into window k, the estimate is
    /// `count(k−1) × (W − elapsed)/W + count(k)`, and a call is accepted iff `estimate + 1 ≤ N`
    /// (HAProxy counts the request when it tracks it, then denies if the rate exceeds N). With
    /// [`count_refused`](crate::mock::MockServerBuilder::count_refused) refused calls are counted
    /// too, as HAProxy's tracking does. It can refuse calls that a sliding log accepts. Parsed from
    /// `"counter"`.
    ///
    /// Where it differs from HAProxy: exact arithmetic on nanoseconds, where HAProxy works in
    /// whole milliseconds and rounds the weighted previous count down (`curr + ⌊prev × remain /
    /// period⌋`), so HAProxy accepts a call the mock refuses when the weighted count is within one
    /// of the limit, never the reverse; no low-rate "anti-flapping" reading (HAProxy reports a
    /// previous count of at most 1 unweighted when the current one is empty); no entry expiry
    /// (HAProxy forgets an idle entry after the table's `expire`, which lays the windows again just
    /// as two idle windows do here when `expire` ≥ 2W); one process (HAProxy's tables may be
    /// shared between peers, each with its own windows).
    SlidingWindowCounter,
}

impl ServerModel {
    /// Every model, in declaration order.
    pub const ALL: [ServerModel; 4] = [
        ServerModel::FixedWindow,
        ServerModel::SlidingLog,
        ServerModel::TokenBucket,
        ServerModel::SlidingWindowCounter,
    ];

    /// The canonical name: `fixed`, `sliding-log`, `token-bucket` or `counter`.
    pub fn name(self) -> &'static str {
        match self {
            ServerModel::FixedWindow => "fixed",
            ServerModel::SlidingLog => "sliding-log",
            ServerModel::TokenBucket => "token-bucket",
            ServerModel::SlidingWindowCounter => "counter",
        }
    }
}

impl fmt::Display for ServerModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A server model name that is none of `fixed`, `sliding-log`, `token-bucket`, `counter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown server model {0:?} (use fixed, sliding-log, token-bucket or counter)")]
pub struct ParseServerModelError(pub String);

/// Parses `fixed`, `sliding-log`, `token-bucket`, `counter` (case-insensitive; also the aliases
/// `fixed-window`, `sliding`, `log`, `bucket`, `gcra`, `sliding-window-counter`).
impl FromStr for ServerModel {
    type Err = ParseServerModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "fixed" | "fixed-window" => Ok(ServerModel::FixedWindow),
            "sliding-log" | "sliding" | "log" => Ok(ServerModel::SlidingLog),
            "token-bucket" | "bucket" | "gcra" => Ok(ServerModel::TokenBucket),
            "counter" | "sliding-window-counter" => Ok(ServerModel::SlidingWindowCounter),
            _ => Err(ParseServerModelError(s.to_string())),
        }
    }
}

/// One limit's counting state under one model.
#[derive(Debug)]
pub(crate) struct LimitState {
    /// N.
    n: u64,
    /// W in nanoseconds (at least 1).
    w: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Fixed {
        index: u64,
        count: u64,
    },
    Log {
        arrivals: VecDeque<u64>,
    },
    /// Theoretical arrival time, in units of 1/N nanosecond (so the emission interval W/N is the
    /// exact integer W).
    Bucket {
        tat: u128,
    },
    /// Windows laid from `anchor` (`None` before the first call counted); `index` is the window,
    /// from the anchor, of the latest call counted.
    Counter {
        anchor: Option<u64>,
        index: u64,
        prev: u64,
        curr: u64,
    },
}

impl LimitState {
    pub(crate) fn new(model: ServerModel, limit: &Limit) -> Self {
        let w = u64::try_from(limit.window().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let kind = match model {
            ServerModel::FixedWindow => Kind::Fixed { index: 0, count: 0 },
            ServerModel::SlidingLog => Kind::Log {
                arrivals: VecDeque::new(),
            },
            ServerModel::TokenBucket => Kind::Bucket { tat: 0 },
            ServerModel::SlidingWindowCounter => Kind::Counter {
                anchor: None,
                index: 0,
                prev: 0,
                curr: 0,
            },
        };
        Self {
            n: u64::from(limit.count()),
            w,
            kind,
        }
    }

    /// N, the limit's count.
    pub(crate) fn count(&self) -> u64 {
        self.n
    }

    /// Brings the state forward to `t` (rolls windows, forgets expired arrivals). Times passed to
    /// the other methods must be the last `t` given here.
    pub(crate) fn advance(&mut self, t: u64) {
        let w = self.w;
        match &mut self.kind {
            Kind::Fixed { index, count } => {
                let k = t / w;
                if k != *index {
                    *index = k;
                    *count = 0;
                }
            }
            Kind::Log { arrivals } => {
                while arrivals.front().is_some_and(|&e| e.saturating_add(w) <= t) {
                    arrivals.pop_front();
                }
            }
            Kind::Bucket { .. } => {}
            Kind::Counter {
                anchor,
                index,
                prev,
                curr,
            } => {
                let Some(a) = *anchor else {
                    return;
                };
                let k = t.saturating_sub(a) / w;
                if k == *index + 1 {
                    *prev = *curr;
                    *curr = 0;
                    *index = k;
                } else if k > *index + 1 {
                    // Two windows or more since the current one began: nothing counts any
                    // more, and the next call counted lays the windows again (`commit`).
                    *anchor = None;
                    *index = 0;
                    *prev = 0;
                    *curr = 0;
                }
            }
        }
    }

    /// How many calls this limit would accept at `t`, one after another with no time between.
    pub(crate) fn remaining(&self, t: u64) -> u64 {
        let (n, w) = (self.n, self.w);
        match &self.kind {
            Kind::Fixed { count, .. } => n.saturating_sub(*count),
            Kind::Log { arrivals } => n.saturating_sub(arrivals.len() as u64),
            Kind::Bucket { tat } => {
                let backlog = tat.saturating_sub(u128::from(t) * u128::from(n));
                let full = u128::from(n) * u128::from(w);
                u64::try_from(full.saturating_sub(backlog) / u128::from(w)).unwrap_or(n)
            }
            Kind::Counter { anchor: None, .. } => n,
            Kind::Counter {
                anchor: Some(a),
                index,
                prev,
                curr,
            } => {
                let (n, w) = (i128::from(n), i128::from(w));
                let elapsed = i128::from(t) - i128::from(*a) - i128::from(*index) * w;
                let free = n * w - i128::from(*curr) * w - i128::from(*prev) * (w - elapsed);
                u64::try_from(free.max(0) / w).unwrap_or(0)
            }
        }
    }

    /// The earliest time `>= t` at which this limit would accept `r` calls at once (`1 <= r <= N`),
    /// if nothing else is counted meanwhile.
    pub(crate) fn earliest_with(&self, t: u64, r: u64) -> u64 {
        let (n, w) = (self.n, self.w);
        let r = r.clamp(1, n);
        match &self.kind {
            Kind::Fixed { index, count } => {
                if n.saturating_sub(*count) >= r {
                    t
                } else {
                    (index + 1).saturating_mul(w)
                }
            }
            Kind::Log { arrivals } => {
                // Arrival e stops counting at e + W; the oldest `len + r − N` must have expired.
                let need = (arrivals.len() as u64 + r).saturating_sub(n);
                if need == 0 {
                    t
                } else {
                    let e = arrivals[(need - 1) as usize];
                    e.saturating_add(w).max(t)
                }
            }
            Kind::Bucket { tat } => {
                // Need tat − t'·N <= (N − r)·W.
                let bound = tat.saturating_sub(u128::from(n - r) * u128::from(w));
                let at = bound.div_ceil(u128::from(n));
                u64::try_from(at).unwrap_or(u64::MAX).max(t)
            }
            Kind::Counter { anchor: None, .. } => t,
            Kind::Counter {
                anchor: Some(a),
                index,
                prev,
                curr,
            } => {
                let (ni, wi) = (i128::from(n), i128::from(w));
                let start = i128::from(*a) + i128::from(*index) * wi;
                // The earliest elapsed time e in a window with previous count p at which
                // p·(W − e) <= x·W; None if no e < W works.
                let earliest_elapsed = |p: u64, x: i128| -> Option<i128> {
                    if x < 0 {
                        return None;
                    }
                    if p == 0 {
                        return Some(0);
                    }
                    let e = (wi - x * wi / i128::from(p)).max(0);
                    (e < wi).then_some(e)
                };
                let r = i128::from(r);
                let at = if let Some(e) = earliest_elapsed(*prev, ni - i128::from(*curr) - r) {
                    (start + e).max(i128::from(t))
                } else if let Some(e) = earliest_elapsed(*curr, ni - r) {
                    start + wi + e
                } else {
                    start + 2 * wi
                };
                u64::try_from(at).unwrap_or(u64::MAX)
            }
        }
    }

    /// Counts one call at `t`.
    pub(crate) fn commit(&mut self, t: u64) {
        let (n, w) = (self.n, self.w);
        match &mut self.kind {
            Kind::Fixed { count, .. } => *count += 1,
            Kind::Log { arrivals } => arrivals.push_back(t),
            Kind::Bucket { tat } => {
                *tat = (*tat).max(u128::from(t) * u128::from(n)) + u128::from(w);
            }
            Kind::Counter {
                anchor,
                index,
                prev,
                curr,
            } => {
                // The first call counted (or the first after two idle windows) lays the windows.
                if anchor.is_none() {
                    *anchor = Some(t);
                    *index = 0;
                    *prev = 0;
                    *curr = 0;
                }
                *curr += 1;
            }
        }
    }
}

/// What a key's limits say about one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// Every limit accepted the call.
    pub(crate) accepted: bool,
    /// When refused: how long until every refusing limit would accept one more call.
    pub(crate) retry_after: Option<Duration>,
    /// The tightest limit after the call, if the key has any limit.
    pub(crate) rate: Option<RateInfo>,
}

/// The state of a key's tightest limit (the one with the fewest calls left), for
/// `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateInfo {
    /// N of the tightest limit.
    pub(crate) limit: u64,
    /// Calls it would accept right now.
    pub(crate) remaining: u64,
    /// How long until it accepts one more call than `remaining` (zero when it is full).
    pub(crate) reset: Duration,
}

/// Every limit of one key, decided together.
#[derive(Debug)]
pub(crate) struct KeyLimiter {
    limits: Vec<LimitState>,
}

impl KeyLimiter {
    pub(crate) fn new(model: ServerModel, quota: &Quota) -> Self {
        Self {
            limits: quota
                .limits()
                .iter()
                .map(|l| LimitState::new(model, l))
                .collect(),
        }
    }

    /// Decides a call at `t`: accepted iff every limit accepts; an accepted call is counted in all
    /// limits, a refused one in all of them if `count_refused`, else in none.
    pub(crate) fn decide(&mut self, t: u64, count_refused: bool) -> Decision {
        for l in &mut self.limits {
            l.advance(t);
        }
        let refusing: Vec<usize> = (0..self.limits.len())
            .filter(|&i| self.limits[i].remaining(t) == 0)
            .collect();
        let accepted = refusing.is_empty();
        if accepted || count_refused {
            for l in &mut self.limits {
                l.commit(t);
            }
        }
        let retry_after = (!accepted).then(|| {
            let at = refusing
                .iter()
                .map(|&i| self.limits[i].earliest_with(t, 1))
                .max()
                .unwrap_or(t);
            Duration::from_nanos(at.saturating_sub(t))
        });
        Decision {
            accepted,
            retry_after,
            rate: self.rate_info_at(t),
        }
    }

    /// The tightest limit at `t`, without counting anything.
    pub(crate) fn peek(&mut self, t: u64) -> Option<RateInfo> {
        for l in &mut self.limits {
            l.advance(t);
        }
        self.rate_info_at(t)
    }

    fn rate_info_at(&self, t: u64) -> Option<RateInfo> {
        self.limits
            .iter()
            .map(|l| {
                let remaining = l.remaining(t);
                let reset = if remaining >= l.count() {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(l.earliest_with(t, remaining + 1).saturating_sub(t))
                };
                RateInfo {
                    limit: l.count(),
                    remaining,
                    reset,
                }
            })
            // Fewest left; among equals, the one that takes longest to free a slot.
            .min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limiter(model: ServerModel, spec: &str) -> KeyLimiter {
        KeyLimiter::new(model, &spec.parse().unwrap())
    }

    /// Accepted flags for calls at the given millisecond times.
    fn run(model: ServerModel, spec: &str, times_ms: &[u64]) -> Vec<bool> {
        let mut k = limiter(model, spec);
        times_ms
            .iter()
            .map(|&t| k.decide(t * MS, false).accepted)
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for m in ServerModel::ALL {
            assert_eq!(m.name().parse::<ServerModel>().unwrap(), m);
        }
        assert!("leaky".parse::<ServerModel>().is_err());
    }

    #[test]
    fn fixed_window_resets_at_boundaries() {
        let r = run(
            ServerModel::FixedWindow,
            "2/1s",
            &[900, 950, 990, 1000, 1001, 1002],
        );
        assert_eq!(r, [true, true, false, true, true, false]);
    }

    #[test]
    fn sliding_log_is_exact() {
        let r = run(
            ServerModel::SlidingLog,
            "2/1s",
            &[0, 500, 999, 1000, 1499, 1500],
        );
        assert_eq!(r, [true, true, false, true, false, true]);
    }

    #[test]
    fn counter_weights_the_previous_window() {
        // 2/1s: two calls in window 0 (laid from the first, at 0); at 1.5 s the estimate is
        // 2·0.5 + 0 = 1, so one fits.
        let r = run(
            ServerModel::SlidingWindowCounter,
            "2/1s",
            &[0, 950, 1400, 1500, 1600],
        );
        assert_eq!(r, [true, true, false, true, false]);
    }

    #[test]
    fn counter_windows_are_laid_from_the_first_call_and_again_after_two_idle_windows() {
        // The first call at 0.9 s lays the windows: [0.9 s, 1.9 s) holds both calls...
        let r = run(
            ServerModel::SlidingWindowCounter,
            "2/1s",
            &[900, 1800, 1850, 2400, 2500],
        );
        // ...so 1.85 s is refused; at 2.4 s (0.5 s into the next) 2·0.5 = 1 leaves room for one.
        assert_eq!(r, [true, true, false, true, false]);
        // Two windows or more after the current one began, the next call lays them again: a
        // burst at 10 s fills a window [10 s, 11 s) of its own.
        let r = run(
            ServerModel::SlidingWindowCounter,
            "2/1s",
            &[0, 10_000, 10_999, 11_000],
        );
        assert_eq!(r, [true, true, true, false]);
    }

    #[test]
    fn retry_after_covers_every_refusing_limit() {
        let mut k = limiter(ServerModel::SlidingLog, "1/1s,2/10s");
        assert!(k.decide(0, false).accepted);
        let d = k.decide(100 * MS, false);
        assert_eq!(d.retry_after, Some(Duration::from_millis(900)));
        assert!(k.decide(1000 * MS, false).accepted);
        let d = k.decide(2000 * MS, false);
        assert_eq!(d.retry_after, Some(Duration::from_secs(8)));
        // The retry time is exactly when it accepts again, for every model.
        for m in ServerModel::ALL {
            let mut k = limiter(m, "3/1s,5/10s");
            let mut t = 0;
            for _ in 0..40 {
                let d = k.decide(t, false);
                if let Some(ra) = d.retry_after {
                    let at = t + ra.as_nanos() as u64;
                    assert!(ra > Duration::ZERO, "{m}");
                    assert!(!k.decide(at - 1, false).accepted, "{m} just before {at}");
                    t = at;
                    assert!(k.decide(t, false).accepted, "{m} at {t}");
                }
                t += 37 * MS;
            }
        }
    }

    #[test]
    fn gcra_matches_governor() {
        use governor::clock::FakeRelativeClock;
        use std::num::NonZeroU32;
        // 4 per 2 s: one cell every 500 ms, burst 4.
        let clock = FakeRelativeClock::default();
        let q = governor::Quota::with_period(Duration::from_millis(500))
            .unwrap()
            .allow_burst(NonZeroU32::new(4).unwrap());
        let gov = governor::RateLimiter::direct_with_clock(q, clock.clone());
        let mut ours = limiter(ServerModel::TokenBucket, "4/2s");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut t = 0u64;
        for _ in 0..500 {
            let step = rng.u64(0..400) * MS;
            t += step;
            clock.advance(Duration::from_nanos(step));
            assert_eq!(ours.decide(t, false).accepted, gov.check().is_ok(), "t={t}");
        }
    }
}
