//! One limit's accounting, under the semantics the key was configured with.

#[cfg(feature = "redis")]
use super::recent_calls::RecentCalls;
use super::token_bucket::TokenBucket;
use super::window_counter::WindowCounter;
use super::window_log::WindowLog;

/// How a [`Ledger`](super::Ledger) reads each limit of a quota. Serialized in kebab-case
/// (`"sliding"`, `"token-bucket"`, `"sliding-window-counter"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowSemantics {
    /// Never more than N calls in any window of length W. Accepted by fixed-window, sliding-log
    /// and token-bucket servers alike: the safe default when the server's counting is unknown
    /// (the Fabraix docs do not say). A scheduler's key read this way may learn from the
    /// server's answers that it is a sliding-window counter, and read its limits as one from then
    /// on ([`KeyConfig::learn_semantics`](crate::KeyConfig::learn_semantics)).
    #[default]
    Sliding,
    /// A token bucket per limit: rate N / W with a burst of N. Finishes earlier against a server
    /// known to count this way (up to 2N − 1 calls can fall in one sliding window), and is
    /// refused by a sliding-log server.
    TokenBucket,
    /// A sliding-window counter per limit (HAProxy stick tables' `http_req_rate(W)`, Cloudflare,
    /// many Redis recipes): fixed windows of length W laid from the key's first call (and laid
    /// again after two idle windows), a call accepted iff `prev × (W − elapsed)/W + curr + 1 <= N`.
    /// Planned exactly against that estimate (one guard clear of each boundary): a full window,
    /// then about N − 1 calls per window, where a sliding reading bursts N and draws 429s from
    /// such a server. Refused by a sliding-log server, and by a counter whose windows are laid
    /// otherwise (from the server's start, say). 112 bytes per limit, whatever N. Through a
    /// shared store (Redis) a key is planned as [`Sliding`](Self::Sliding).
    SlidingWindowCounter,
}

/// One limit's state as a shared store keeps it (both semantics' fields; each uses its own).
#[cfg(feature = "redis")]
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedLimit {
    pub(crate) base_tick: u64,
    pub(crate) entries: Vec<(u32, u32)>,
    pub(crate) evicted_floor_ns: Option<u64>,
    pub(crate) tat_ns: u64,
    pub(crate) last_ns: Option<u64>,
    pub(crate) recent: [(u64, u64); 2],
}

#[derive(Clone, Debug)]
pub(crate) enum LimitAccount {
    /// A window log, and beside it the same calls as a sliding-window counter would count them
    /// (`shadow`, 112 bytes), so that a key found to be talking to such a server can be planned
    /// as one from its own first call ([`learn_counter`](Self::learn_counter)). Both accounts
    /// record every call whichever plans, so that a key found wrong goes back to its log
    /// ([`learn_log`](Self::learn_log)).
    Sliding {
        log: WindowLog,
        guard_ns: u64,
        shadow: WindowCounter,
        /// Whether the counter plans (learned) rather than the log (configured).
        counter_plans: bool,
    },
    Bucket(TokenBucket),
    Counter(WindowCounter),
}

impl LimitAccount {
    pub(crate) fn new(
        semantics: WindowSemantics,
        count: u32,
        window_ns: u64,
        guard_ns: u64,
    ) -> Self {
        match semantics {
            WindowSemantics::Sliding => LimitAccount::Sliding {
                log: WindowLog::new(count, window_ns),
                guard_ns,
                shadow: WindowCounter::new(count, window_ns, guard_ns),
                counter_plans: false,
            },
            WindowSemantics::TokenBucket => {
                LimitAccount::Bucket(TokenBucket::new(count, window_ns, guard_ns))
            }
            WindowSemantics::SlidingWindowCounter => {
                LimitAccount::Counter(WindowCounter::new(count, window_ns, guard_ns))
            }
        }
    }

    /// Rebuilt from a shared store's state of it.
    #[cfg(feature = "redis")]
    pub(crate) fn from_shared(
        semantics: WindowSemantics,
        count: u32,
        window_ns: u64,
        guard_ns: u64,
        state: &SharedLimit,
    ) -> Self {
        let recent = RecentCalls::from_slots(window_ns, state.recent);
        match semantics {
            // (The shared store keeps window logs: a counter key is planned as a sliding one.)
            WindowSemantics::Sliding | WindowSemantics::SlidingWindowCounter => {
                LimitAccount::Sliding {
                    log: WindowLog::from_shared(
                        count,
                        window_ns,
                        state.base_tick,
                        &state.entries,
                        state.evicted_floor_ns,
                        recent,
                    ),
                    guard_ns,
                    // (The store keeps no counter: a shared key is never planned as one.)
                    shadow: WindowCounter::new(count, window_ns, guard_ns),
                    counter_plans: false,
                }
            }
            WindowSemantics::TokenBucket => LimitAccount::Bucket(TokenBucket::from_shared(
                count,
                window_ns,
                guard_ns,
                state.tat_ns,
                state.last_ns,
                recent,
            )),
        }
    }

    /// The earliest time (ns) at which one more call keeps this limit (0: no constraint).
    pub(crate) fn earliest_ns(&self) -> u64 {
        match self {
            LimitAccount::Sliding {
                shadow,
                counter_plans: true,
                ..
            }
            | LimitAccount::Counter(shadow) => shadow.earliest_from(0),
            LimitAccount::Sliding { log, guard_ns, .. } => match log.earliest_ns() {
                0 => 0,
                e => e.saturating_add(*guard_ns),
            },
            LimitAccount::Bucket(bucket) => bucket.earliest_ns(),
        }
    }

    /// The earliest time (ns) not before `t_ns` at which one more call keeps this limit. For a
    /// window log or a bucket, every later time keeps it too; a counter also keeps its slots off
    /// the windows' boundaries.
    pub(crate) fn earliest_from(&self, t_ns: u64) -> u64 {
        match self.planning_counter() {
            Some(counter) => counter.earliest_from(t_ns),
            None => self.earliest_ns().max(t_ns),
        }
    }

    /// The counter that plans this limit, if a counter does (configured or learned).
    fn planning_counter(&self) -> Option<&WindowCounter> {
        match self {
            LimitAccount::Sliding {
                shadow,
                counter_plans: true,
                ..
            }
            | LimitAccount::Counter(shadow) => Some(shadow),
            _ => None,
        }
    }

    /// Whether [`earliest_from`](Self::earliest_from) can skip times that a later one keeps (so
    /// that several limits are decided by iterating to a common time).
    pub(crate) fn has_gaps(&self) -> bool {
        self.planning_counter().is_some()
    }

    /// Makes the guard `guard_ns` from now on.
    pub(crate) fn set_guard(&mut self, guard_ns: u64) {
        match self {
            LimitAccount::Sliding {
                guard_ns: g,
                shadow,
                ..
            } => {
                *g = guard_ns;
                shadow.set_guard(guard_ns);
            }
            LimitAccount::Bucket(bucket) => bucket.set_guard(guard_ns),
            LimitAccount::Counter(counter) => counter.set_guard(guard_ns),
        }
    }

    pub(crate) fn record(&mut self, t_ns: u64, now_ns: u64) {
        match self {
            // A call holds the limit until it left the window by the guard: only then may the
            // log let it go (the guard keeps later slots a window plus a guard after it).
            LimitAccount::Sliding {
                log,
                guard_ns,
                shadow,
                ..
            } => {
                log.record(t_ns, now_ns.saturating_sub(*guard_ns));
                shadow.record(t_ns);
            }
            LimitAccount::Bucket(bucket) => bucket.record(t_ns),
            LimitAccount::Counter(counter) => counter.record(t_ns),
        }
    }

    /// Calls from an earlier run were recorded, the newest at `newest_ns`. A window log holds
    /// every call that still counts; a bucket is taken as empty after the newest
    /// ([`TokenBucket::drained_after`]).
    pub(crate) fn after_earlier_calls(&mut self, newest_ns: u64) {
        if let LimitAccount::Bucket(bucket) = self {
            bucket.drained_after(newest_ns);
        }
    }

    pub(crate) fn forget(&mut self, t_ns: u64) -> bool {
        match self {
            LimitAccount::Sliding { log, shadow, .. } => {
                shadow.forget(t_ns);
                log.forget(t_ns)
            }
            LimitAccount::Bucket(bucket) => bucket.forget(t_ns),
            LimitAccount::Counter(counter) => counter.forget(t_ns),
        }
    }

    /// A window log is planned from now on by the sliding-window counter that its shadow kept of
    /// the same calls (windows laid from the key's first call, as such a server lays them); the
    /// log keeps recording. True if it changed.
    pub(crate) fn learn_counter(&mut self) -> bool {
        match self {
            LimitAccount::Sliding { counter_plans, .. } if !*counter_plans => {
                *counter_plans = true;
                true
            }
            _ => false,
        }
    }

    /// A window log whose counter planned ([`learn_counter`](Self::learn_counter)) is planned by
    /// the log again, which held every call meanwhile. True if it changed.
    pub(crate) fn learn_log(&mut self) -> bool {
        match self {
            LimitAccount::Sliding { counter_plans, .. } if *counter_plans => {
                *counter_plans = false;
                true
            }
            _ => false,
        }
    }

    /// Whether a counter plans this limit.
    pub(crate) fn counter_plans(&self) -> bool {
        self.planning_counter().is_some()
    }

    /// This limit's calls as a sliding-window counter counts them (the shadow of a window log, or
    /// the counter itself); `None` for a bucket.
    pub(crate) fn as_counter(&self) -> Option<&WindowCounter> {
        match self {
            LimitAccount::Sliding { shadow, .. } => Some(shadow),
            LimitAccount::Counter(counter) => Some(counter),
            LimitAccount::Bucket(_) => None,
        }
    }

    /// The calls a sliding log would accept at `t_ns`: N less the calls recorded in the window
    /// before it (and up to the latest slot); `None` unless configured as a window log.
    pub(crate) fn log_remaining_at(&self, t_ns: u64) -> Option<u64> {
        match self {
            LimitAccount::Sliding { log, .. } => Some(log.remaining_at(t_ns)),
            _ => None,
        }
    }

    /// Whether a sliding log of the calls recorded holds more than N in the window ending at
    /// `t_ns` (`(t_ns − W, t_ns]`, calls after it not counted): a call there was over the log's
    /// limit. `None` unless configured as a window log.
    pub(crate) fn log_over_at(&self, t_ns: u64) -> Option<bool> {
        match self {
            LimitAccount::Sliding { log, .. } => {
                Some(log.held_through(t_ns) > u64::from(log.count()))
            }
            _ => None,
        }
    }

    pub(crate) fn recent_calls(&self, now_ns: u64) -> u64 {
        match self {
            LimitAccount::Sliding { log, .. } => log.recent_calls(now_ns),
            LimitAccount::Bucket(bucket) => bucket.recent_calls(now_ns),
            LimitAccount::Counter(counter) => counter.recent_calls(now_ns),
        }
    }

    pub(crate) fn count(&self) -> u32 {
        match self {
            LimitAccount::Sliding { log, .. } => log.count(),
            LimitAccount::Bucket(bucket) => bucket.count(),
            LimitAccount::Counter(counter) => counter.count(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            LimitAccount::Sliding { log, .. } => log.heap_bytes(),
            LimitAccount::Bucket(_) | LimitAccount::Counter(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// The counter a window log switches to is the one that counted the same calls from the
    /// start: same slots from then on, whatever the calls, gaps and refunds before.
    #[test]
    fn a_learned_counter_plans_as_one_that_counted_from_the_start() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200 {
            let (count, window, guard) = (rng.u32(1..20), rng.u64(1..10) * S, rng.u64(0..S / 4));
            let mut sliding = LimitAccount::new(WindowSemantics::Sliding, count, window, guard);
            let mut counter =
                LimitAccount::new(WindowSemantics::SlidingWindowCounter, count, window, guard);
            let mut t = 0;
            let mut sent = Vec::new();
            for _ in 0..rng.usize(0..60) {
                // Calls in time order, now and then a gap of a few windows, now and then a refund.
                t += rng.u64(0..window / 2) + if rng.u8(..) < 8 { 3 * window } else { 0 };
                sliding.record(t, t);
                counter.record(t, t);
                sent.push(t);
                if rng.u8(..) < 20 {
                    let back = sent.swap_remove(rng.usize(0..sent.len()));
                    sliding.forget(back);
                    counter.forget(back);
                }
            }
            assert!(sliding.learn_counter(), "round {round}");
            assert!(!sliding.learn_counter(), "round {round}: once");
            for probe in 0..50 {
                let at = t.saturating_sub(window) + probe * window / 10;
                assert_eq!(
                    sliding.earliest_from(at),
                    counter.earliest_from(at),
                    "round {round}, probe {probe}"
                );
            }
        }
    }

    #[test]
    fn buckets_and_counters_do_not_switch() {
        let mut bucket = LimitAccount::new(WindowSemantics::TokenBucket, 5, S, 0);
        let mut counter = LimitAccount::new(WindowSemantics::SlidingWindowCounter, 5, S, 0);
        assert!(!bucket.learn_counter() && !counter.learn_counter());
        assert!(bucket.as_counter().is_none() && bucket.log_remaining_at(0).is_none());
    }
}
