//! The per-key ledger: every limit of a key's quota, checked and committed together.

use std::time::Duration;

use super::followed_plan::FollowedPlan;
use super::limit_account::{LimitAccount, WindowSemantics};
use crate::clock::{at_nanos, nanos_since, Instant};
use crate::quota::Quota;

/// The default safety guard: 100 ms, but never more than 10 % of the key's shortest window.
///
/// Chosen from measurement (`cargo run --release --example guard_jitter`): on a loaded host,
/// calls over loopback arrived up to 15–25 ms after they were sent (the tail of arrival − send),
/// and a sliding-log server refused up to dozens of 1,000 calls with guards up to 5 ms and none
/// from 10 ms. Internet paths add more jitter than loopback, so the default is 4× that worst
/// spread; it costs 0.17 % of throughput on a one-minute window. Set it per key with
/// `KeyConfig::guard`, or let it follow the key's measured latency with
/// `KeyConfig::guard_from_latency`.
pub const DEFAULT_GUARD: Duration = Duration::from_millis(100);

/// How a [`Ledger`] spaces calls beyond the quota itself: read from its fields, built from
/// [`default`](Self::default) and chained setters named after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LedgerConfig {
    /// Extra time added after a window frees a slot, so that two calls sent exactly W apart still
    /// arrive at least W apart despite latency jitter. `None`: [`DEFAULT_GUARD`], capped at 10 % of
    /// the shortest window (a 100 ms window gets 10 ms).
    pub guard: Option<Duration>,
    /// How each limit is read: [`WindowSemantics::Sliding`] (the default, safe whatever the
    /// server), [`WindowSemantics::TokenBucket`] for a server known to use token buckets, or
    /// [`WindowSemantics::SlidingWindowCounter`] for one known to count as a sliding-window
    /// counter.
    pub semantics: WindowSemantics,
}

impl LedgerConfig {
    /// Sets the field `guard` to `Some(guard)`.
    ///
    /// ```
    /// use fabraix_scheduler::{LedgerConfig, WindowSemantics};
    /// use std::time::Duration;
    /// let config = LedgerConfig::default()
    ///     .guard(Duration::from_millis(5))
    ///     .semantics(WindowSemantics::TokenBucket);
    /// assert_eq!(config.guard, Some(Duration::from_millis(5)));
    /// ```
    pub fn guard(mut self, guard: Duration) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Sets the field `semantics`.
    pub fn semantics(mut self, semantics: WindowSemantics) -> Self {
        self.semantics = semantics;
        self
    }

    /// The guard this config gives for `quota`.
    pub fn guard_for(&self, quota: &Quota) -> Duration {
        match self.guard {
            Some(g) => g,
            None => quota
                .limits()
                .first()
                .map_or(Duration::ZERO, |l| DEFAULT_GUARD.min(l.window() / 10)),
        }
    }

    /// How long a call counts against `quota` under this config: the quota's longest window plus
    /// the guard (zero for an unlimited quota). Older calls change no window; this is what a
    /// restarted key keeps of its earlier calls ([`Ledger::with_earlier_calls`]).
    ///
    /// ```
    /// use fabraix_scheduler::{LedgerConfig, Quota};
    /// use std::time::Duration;
    /// let counted = LedgerConfig::default().counted_for(&Quota::development());
    /// assert_eq!(counted, Duration::from_secs(3_600) + Duration::from_millis(100));
    /// ```
    pub fn counted_for(&self, quota: &Quota) -> Duration {
        quota.longest_window() + self.guard_for(quota)
    }
}

/// A ledger's state as a shared store keeps it (see [`Ledger::from_shared`]); times in ns on the
/// state's scale.
#[cfg(feature = "redis")]
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedLedger {
    pub(crate) last_slot_ns: Option<u64>,
    pub(crate) blocked_until_ns: u64,
    pub(crate) pace_ns: Option<u64>,
    /// `(remaining, reset_ns)`.
    pub(crate) server_cap: Option<(u32, u64)>,
    pub(crate) limits: Vec<super::limit_account::SharedLimit>,
}

/// A temporary cap the server announced through `RateLimit-*` headers: at most `remaining` more
/// calls before `reset_ns`.
#[derive(Clone, Copy, Debug)]
struct ServerCap {
    remaining: u32,
    reset_ns: u64,
}

/// When the next calls of one key may go, for every limit of its quota at once.
///
/// Invariant (under [`WindowSemantics::Sliding`], the default): the slots it hands out never put
/// more than N calls in any window of length W, for every limit (N, W) of the quota, whatever
/// sequence of [`reserve`](Ledger::reserve), [`refund`](Ledger::refund),
/// [`block_until`](Ledger::block_until) and the other operations. (A token bucket or a
/// sliding-window counter reading, configured or learned by the scheduler, keeps that model's own
/// rule instead.)
/// A reservation either commits to every window or to none.
///
/// Decisions are synchronous and return *when*; waiting is the caller's business. Slots are handed
/// out in time order. Memory: at most `min(N, 1,026)` entries of 8 bytes per limit — about 13 KiB
/// for a Production key (600/1m + 10,000/1h), 8.5 KiB for a Development key; while jobs are
/// queued and their ETAs asked ([`forecast`](Self::forecast)), a copy of that and 8 bytes a job
/// for the plan.
#[derive(Debug)]
pub struct Ledger {
    origin: Instant,
    /// What `origin` reads as, in ns: 0, or (for a ledger made with calls from before `origin`,
    /// [`with_earlier_calls`](Self::with_earlier_calls)) how far back those calls may lie, so that
    /// they have a place on the same scale.
    offset_ns: u64,
    logs: Vec<LimitAccount>,
    last_slot_ns: Option<u64>,
    blocked_until_ns: u64,
    pace_ns: Option<u64>,
    server_cap: Option<ServerCap>,
    /// Bumped by every change, so that a [`PlanCursor`] knows when it no longer holds.
    version: u64,
    /// The plan of the next slots that [`forecast`](Self::forecast) answers from, followed by
    /// the reservations and dropped by any other change (see [`FollowedPlan`]).
    plan: Option<Box<FollowedPlan>>,
}

/// One limit's own account of the key's calls at an answer (see [`Ledger::own_reading`]): what
/// a sliding log and a sliding-window counter of those calls would each still accept. Both count
/// every call recorded, those sent after the one answered included, so on a server of either
/// model, with no other client on the key, its remaining is at least the model's figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OwnReading {
    /// The calls a sliding log would accept (0 to N).
    pub(crate) log: u64,
    /// The calls a sliding-window counter would accept (0 to N).
    pub(crate) counter: u64,
    /// Whether the counter's first window has ended (until then both read alike).
    pub(crate) past_first_window: bool,
    /// Whether the call answered is the latest recorded: no later call of the key lowers either
    /// figure below the server's.
    pub(crate) clean: bool,
}

/// A copy starts without the plan (a cache of [`Ledger::forecast`], rebuilt when asked).
impl Clone for Ledger {
    fn clone(&self) -> Self {
        Self {
            origin: self.origin,
            offset_ns: self.offset_ns,
            logs: self.logs.clone(),
            last_slot_ns: self.last_slot_ns,
            blocked_until_ns: self.blocked_until_ns,
            pace_ns: self.pace_ns,
            server_cap: self.server_cap,
            version: self.version,
            plan: None,
        }
    }
}

/// When the `k`-th next call of a key could go, as [`Ledger::forecast`] tells it. Its `Debug`
/// shows the wait, not the instant.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forecast {
    /// The slot, not before the `now` it was asked at.
    pub at: Instant,
    /// The same as a duration after the `now` it was asked at (for a person: "in about 3 s").
    pub wait: Duration,
    /// Whether `at` is what [`Ledger::nth_slot`] would answer (true), or an estimate from a plan
    /// that calls have gone out of step with (false; early by about how late they went).
    pub exact: bool,
}

impl std::fmt::Debug for Forecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecast")
            .field("wait", &self.wait)
            .field("exact", &self.exact)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger for `quota`, with nothing sent yet. `origin` is any instant not later than the
    /// first call (usually the clock's now).
    ///
    /// ```
    /// use fabraix_scheduler::{Ledger, LedgerConfig, Quota, Instant};
    /// use std::time::Duration;
    /// let now = tokio::time::Instant::now(); // fabraix_scheduler::Instant is tokio's
    /// let mut ledger = Ledger::new(&"2/1s".parse::<Quota>().unwrap(), LedgerConfig::default(), now);
    /// assert_eq!(ledger.reserve(now), now); // an idle key sends at once
    /// assert_eq!(ledger.reserve(now), now);
    /// // The third call waits for the window, plus the 100 ms latency guard.
    /// assert_eq!(ledger.reserve(now), now + Duration::from_millis(1100));
    /// ```
    pub fn new(quota: &Quota, config: LedgerConfig, origin: Instant) -> Self {
        let guard_ns = duration_ns(config.guard_for(quota));
        let logs = quota
            .limits()
            .iter()
            .map(|l| {
                LimitAccount::new(
                    config.semantics,
                    l.count(),
                    duration_ns(l.window()),
                    guard_ns,
                )
            })
            .collect();
        Self {
            origin,
            offset_ns: 0,
            logs,
            last_slot_ns: None,
            blocked_until_ns: 0,
            pace_ns: None,
            server_cap: None,
            version: 0,
            plan: None,
        }
    }

    /// A ledger for `quota` at `now` that already counts calls made before `now` (by an earlier
    /// run of the program, say), each given by its age: how long before `now` it was sent. Each
    /// holds every window until its age reaches the window, as the server still counts it; calls
    /// older than the longest window (plus the guard) no longer count and are left out. Ages may
    /// come in any order; a call of age zero was sent at `now`. Under
    /// [`WindowSemantics::TokenBucket`](super::WindowSemantics::TokenBucket) the buckets are also
    /// taken as empty just after the newest call (their state depends on calls older than any
    /// window, which are not given).
    ///
    /// ```
    /// use fabraix_scheduler::{Ledger, LedgerConfig, Quota};
    /// use std::time::Duration;
    /// let now = tokio::time::Instant::now();
    /// let quota: Quota = "2/1s".parse().unwrap();
    /// let ages = [Duration::from_millis(300), Duration::from_millis(800), Duration::from_secs(5)];
    /// let mut ledger = Ledger::with_earlier_calls(&quota, LedgerConfig::default(), now, &ages);
    /// // The calls of 0.8 s and 0.3 s ago fill the window: the next goes when the older one
    /// // leaves it (0.2 s from now), plus the 100 ms guard. The call of 5 s ago counts no more.
    /// let slot = ledger.reserve(now);
    /// // (Exact up to the windows' tick: a call is recorded at most a tick late.)
    /// assert!(slot >= now + Duration::from_millis(300) && slot < now + Duration::from_millis(301));
    /// ```
    pub fn with_earlier_calls(
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
        ages: &[Duration],
    ) -> Self {
        let mut ledger = Self::new(quota, config, now);
        let horizon = duration_ns(config.counted_for(quota));
        let mut ages: Vec<u64> = ages
            .iter()
            .map(|&age| duration_ns(age))
            .filter(|&age| age < horizon)
            .collect();
        if ages.is_empty() {
            return ledger;
        }
        // Oldest first: the windows record calls in time order.
        ages.sort_unstable_by(|a, b| b.cmp(a));
        ledger.offset_ns = horizon;
        let mut newest = 0;
        for age in ages {
            newest = horizon - age;
            ledger.commit(newest, horizon);
        }
        for log in &mut ledger.logs {
            log.after_earlier_calls(newest);
        }
        ledger
    }

    /// A ledger rebuilt from a shared store's state (see `ledger/redis`): `origin` is the local
    /// instant that reads as `offset_ns` on the state's scale, so that plans made from it and the
    /// store's own reservations share one semantics.
    #[cfg(feature = "redis")]
    pub(crate) fn from_shared(
        quota: &Quota,
        config: LedgerConfig,
        origin: Instant,
        offset_ns: u64,
        state: &SharedLedger,
    ) -> Self {
        let guard_ns = duration_ns(config.guard_for(quota));
        let logs = quota
            .limits()
            .iter()
            .zip(&state.limits)
            .map(|(l, s)| {
                LimitAccount::from_shared(
                    config.semantics,
                    l.count(),
                    duration_ns(l.window()),
                    guard_ns,
                    s,
                )
            })
            .collect();
        Self {
            origin,
            offset_ns,
            logs,
            last_slot_ns: state.last_slot_ns,
            blocked_until_ns: state.blocked_until_ns,
            pace_ns: state.pace_ns,
            server_cap: state.server_cap.map(|(remaining, reset_ns)| ServerCap {
                remaining,
                reset_ns,
            }),
            version: 0,
            plan: None,
        }
    }

    /// Takes the place of `old` (a ledger replaced in place, as a store does when a key is
    /// registered again): its versions continue after `old`'s, so that no plan made from `old`
    /// ([`PlanCursor`]) is taken for one of this ledger.
    pub(crate) fn replaces(&mut self, old: &Ledger) {
        self.plan = None;
        self.version = self.version.saturating_add(old.version).saturating_add(1);
    }

    fn ns(&self, t: Instant) -> u64 {
        self.offset_ns.saturating_add(nanos_since(self.origin, t))
    }

    fn instant(&self, ns: u64) -> Instant {
        at_nanos(self.origin, ns.saturating_sub(self.offset_ns))
    }

    pub(super) fn earliest_ns(&self, now_ns: u64) -> u64 {
        let mut t = now_ns.max(self.blocked_until_ns);
        if let Some(last) = self.last_slot_ns {
            t = t.max(last);
            if let Some(pace) = self.pace_ns {
                t = t.max(last.saturating_add(pace));
            }
        }
        t = self.earliest_in_every_limit(t);
        if let Some(cap) = self.server_cap {
            if cap.remaining == 0 && t < cap.reset_ns {
                t = self.earliest_in_every_limit(cap.reset_ns);
            }
        }
        t
    }

    /// The earliest time not before `t` that every limit keeps. One pass, unless a limit can skip
    /// times that a later one keeps (a counter's boundaries): then until they agree (each pass
    /// only moves later, and a counter's guards are a quarter of its window at most, so two or
    /// three passes do).
    fn earliest_in_every_limit(&self, mut t: u64) -> u64 {
        loop {
            let mut gaps = false;
            let start = t;
            for log in &self.logs {
                t = log.earliest_from(t);
                gaps |= log.has_gaps();
            }
            if !gaps || t == start {
                return t;
            }
        }
    }

    /// The earliest instant (not before `now`) at which one more call keeps every limit, without
    /// committing anything.
    pub fn earliest(&self, now: Instant) -> Instant {
        self.instant(self.earliest_ns(self.ns(now)))
    }

    /// Commits the earliest slot not before `now` to every window at once and returns it.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let now_ns = self.ns(now);
        let t = self.earliest_ns(now_ns);
        self.commit_reserved(t, now_ns);
        self.instant(t)
    }

    /// Commits a slot at `now` if one is free at `now` and returns it (`Ok`); otherwise commits
    /// nothing and returns the earliest slot, later than `now` (`Err`). One look at the windows
    /// either way (an idle key's job is sent at once or given its ETA).
    pub fn reserve_if_due(&mut self, now: Instant) -> Result<Instant, Instant> {
        let now_ns = self.ns(now);
        let t = self.earliest_ns(now_ns);
        if t > now_ns {
            return Err(self.instant(t));
        }
        self.commit_reserved(t, now_ns);
        Ok(self.instant(t))
    }

    /// Commits a reservation of the earliest slot, `t`, which the plan follows.
    fn commit_reserved(&mut self, t: u64, now_ns: u64) {
        self.commit(t, now_ns);
        if let Some(plan) = self.plan.as_mut() {
            if !plan.follow(t, now_ns) {
                self.plan = None;
            }
        }
    }

    /// Commits a call at `t` to every window (the plan is the caller's business).
    pub(super) fn commit(&mut self, t: u64, now_ns: u64) {
        self.version += 1;
        for log in &mut self.logs {
            log.record(t, now_ns);
        }
        self.last_slot_ns = Some(t);
        if let Some(cap) = &mut self.server_cap {
            if t >= cap.reset_ns {
                self.server_cap = None;
            } else {
                cap.remaining = cap.remaining.saturating_sub(1);
            }
        }
    }

    /// Gives back a slot whose call was never sent. Refunding a slot that was not reserved, or
    /// twice, at worst leaves the ledger more cautious; it never lets more calls through.
    pub fn refund(&mut self, slot: Instant) {
        self.version += 1;
        self.plan = None;
        let t = self.ns(slot);
        for log in &mut self.logs {
            log.forget(t);
        }
        if let Some(cap) = &mut self.server_cap {
            if t < cap.reset_ns {
                cap.remaining = cap.remaining.saturating_add(1);
            }
        }
    }

    /// Adds calls made elsewhere since this ledger's newest call, each given by its age at `now`
    /// (a key registered again and told of calls made meanwhile: another program on its journal,
    /// [`KeyConfig::sent_earlier`](crate::KeyConfig::sent_earlier)). Those newer than the newest
    /// call it holds are committed at their times; older ones are taken as its own, recorded
    /// when they were made. A call older than this ledger's origin counts from the origin (later
    /// than it was: on the safe side).
    pub fn add_later_calls(&mut self, now: Instant, ages: &[Duration]) {
        let now_ns = self.ns(now);
        let after = self.last_slot_ns;
        let mut times: Vec<u64> = ages
            .iter()
            .map(|&age| now_ns.saturating_sub(duration_ns(age)))
            .filter(|&t| after.is_none_or(|last| t > last))
            .collect();
        times.sort_unstable();
        self.plan = None;
        for t in times {
            self.commit(t, now_ns);
        }
    }

    /// Records `n` calls that the server counted but this ledger no longer holds (they were
    /// refunded), as if they were made at `now`, or at the latest slot if that is later: later
    /// than they were, so the ledger stays on the safe side. They hold every window regardless
    /// of room, as the server's count does.
    pub fn record_late(&mut self, now: Instant, n: u32) {
        let now_ns = self.ns(now);
        let t = self.last_slot_ns.map_or(now_ns, |last| last.max(now_ns));
        self.plan = None;
        for _ in 0..n {
            self.commit(t, now_ns);
        }
    }

    /// When the next `k` calls could go, if reserved now one after another; commits nothing.
    /// O(k × limits). `plan(now, 0)` is empty.
    pub fn plan(&self, now: Instant, k: usize) -> Vec<Instant> {
        let mut shadow = self.clone();
        let now_ns = self.ns(now);
        (0..k)
            .map(|_| {
                let t = shadow.earliest_ns(now_ns);
                shadow.commit(t, now_ns);
                shadow.instant(t)
            })
            .collect()
    }

    /// [`nth_slot`](Self::nth_slot), continuing the plan in `cursor` when it still holds, so that
    /// asking for k, k + 1, k + 2, … (a queue growing one job at a time) costs O(1) per question
    /// instead of O(k). The cursor holds while the ledger is unchanged and `now` has not passed the
    /// first call it planned; it is replaced otherwise. A question for an earlier place than the
    /// plan reached is answered apart (O(k)), keeping the plan. It holds a copy of the ledger.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use fabraix_scheduler::{Ledger, LedgerConfig, Quota};
    /// let now = tokio::time::Instant::now();
    /// let ledger = Ledger::new(&"2/1s".parse::<Quota>().unwrap(), LedgerConfig::default(), now);
    /// let mut cursor = None;
    /// for k in 1..=6 {
    ///     assert_eq!(ledger.nth_slot_with(&mut cursor, now, k), ledger.nth_slot(now, k));
    /// }
    /// # }
    /// ```
    pub fn nth_slot_with(
        &self,
        cursor: &mut Option<PlanCursor>,
        now: Instant,
        k: usize,
    ) -> Instant {
        if k <= 1 || (self.logs.is_empty() && self.server_cap.is_none()) {
            return self.nth_slot(now, k);
        }
        let now_ns = self.ns(now);
        let holds = cursor.as_ref().is_some_and(|c| {
            c.version == self.version
                && c.now_ns <= now_ns
                && c.first_ns.is_none_or(|first| now_ns <= first)
        });
        if holds && cursor.as_ref().is_some_and(|c| c.planned > k) {
            // An earlier place (a job of a higher lane): answered apart, the plan kept for the
            // queue's tail.
            return self.nth_slot(now, k);
        }
        if !holds {
            *cursor = Some(PlanCursor {
                shadow: self.clone(),
                now_ns,
                first_ns: None,
                last_ns: now_ns,
                planned: 0,
                version: self.version,
            });
        }
        let Some(c) = cursor.as_mut() else {
            return self.nth_slot(now, k);
        };
        while c.planned < k {
            let t = c.shadow.earliest_ns(c.now_ns);
            c.shadow.commit(t, c.now_ns);
            c.first_ns.get_or_insert(t);
            c.last_ns = t;
            c.planned += 1;
        }
        self.instant(c.last_ns)
    }

    /// When the `k`-th next call (1-based) could go, as [`nth_slot`](Self::nth_slot) answers, from
    /// a plan the ledger keeps and follows as its slots are reserved: O(1) amortised per question
    /// and per reservation, whatever `k` — the ETA of a job queued behind 100,000 others while
    /// calls go out. Commits nothing.
    ///
    /// Exact ([`Forecast::exact`]) while the reservations made since the plan land on their
    /// planned slots (a key held back by its quota). When calls go later than their slots (a
    /// sender or a wire slower than the quota), the plan is an estimate, early by about that
    /// lateness and never before `now`, and is made again once the reservations since it was made
    /// reach half of the slots it planned then. Any other change (a refund, a block, a pace, a
    /// server's window) drops the plan: the next question plans again, O(k).
    ///
    /// ```
    /// use fabraix_scheduler::{Ledger, LedgerConfig, Quota};
    /// let now = tokio::time::Instant::now();
    /// let mut ledger = Ledger::new(&"2/1s".parse::<Quota>().unwrap(), LedgerConfig::default(), now);
    /// let tenth = ledger.forecast(now, 10);
    /// assert_eq!((tenth.at, tenth.exact), (ledger.nth_slot(now, 10), true));
    /// assert_eq!(tenth.wait, tenth.at - now);
    /// // A call goes in its slot: the plan follows it, and the job behind stays exact.
    /// ledger.reserve(now);
    /// let ninth = ledger.forecast(now, 9);
    /// assert_eq!((ninth.at, ninth.exact), (tenth.at, true));
    /// ```
    pub fn forecast(&mut self, now: Instant, k: usize) -> Forecast {
        if k <= 1 || (self.logs.is_empty() && self.server_cap.is_none()) {
            let at = self.nth_slot(now, k);
            return Forecast {
                at,
                wait: at.saturating_duration_since(now),
                exact: true,
            };
        }
        let now_ns = self.ns(now);
        let mut plan = match self.plan.take() {
            Some(plan) if !plan.due_for_replanning() => plan,
            _ => Box::new(FollowedPlan::new(self.clone())),
        };
        let (t, exact) = plan.nth(k, now_ns);
        self.plan = Some(plan);
        let at = self.instant(t);
        Forecast {
            at,
            wait: at.saturating_duration_since(now),
            exact,
        }
    }

    /// When the `k`-th next call (1-based) could go; `now` for `k == 0`. Commits nothing.
    pub fn nth_slot(&self, now: Instant, k: usize) -> Instant {
        if k <= 1 {
            return self.earliest(now);
        }
        if self.logs.is_empty() && self.server_cap.is_none() {
            // No window to simulate (an unlimited quota): O(1), not O(k).
            let first = self.earliest_ns(self.ns(now));
            let spacing = self.pace_ns.unwrap_or(0);
            let k = u64::try_from(k - 1).unwrap_or(u64::MAX);
            return self.instant(first.saturating_add(spacing.saturating_mul(k)));
        }
        let mut shadow = self.clone();
        let now_ns = self.ns(now);
        let mut t = now_ns;
        for _ in 0..k {
            t = shadow.earliest_ns(now_ns);
            shadow.commit(t, now_ns);
        }
        self.instant(t)
    }

    /// No slot before `until` (after a 429, or a server that announced it is out of quota).
    /// A block never shortens an earlier, longer one.
    pub fn block_until(&mut self, until: Instant) {
        self.version += 1;
        self.plan = None;
        self.blocked_until_ns = self.blocked_until_ns.max(self.ns(until));
    }

    /// The instant before which no slot is handed out because of a block.
    pub fn blocked_until(&self) -> Instant {
        self.instant(self.blocked_until_ns)
    }

    /// What a server's `RateLimit-Remaining` / `RateLimit-Reset` said: at most `remaining` more
    /// calls before `reset_at`. Only ever tightens: a larger figure than the ledger's own is ignored.
    pub fn apply_server_window(&mut self, remaining: u32, reset_at: Instant) {
        self.version += 1;
        self.plan = None;
        let reset_ns = self.ns(reset_at);
        if remaining == 0 {
            self.block_until(reset_at);
            return;
        }
        match &mut self.server_cap {
            Some(cap) if cap.reset_ns >= reset_ns => cap.remaining = cap.remaining.min(remaining),
            _ => {
                self.server_cap = Some(ServerCap {
                    remaining,
                    reset_ns,
                })
            }
        }
    }

    /// From now on plans every limit configured as a sliding window by the sliding-window counter
    /// ([`WindowSemantics::SlidingWindowCounter`]) kept beside its log of the same calls: windows
    /// laid from the key's first call (and again after two idle windows), as such a server lays
    /// them. The logs keep recording ([`learn_log_semantics`](Self::learn_log_semantics) goes
    /// back to them). The pace and any server's cap go (the counter's reading is finer than
    /// both). True if anything changed; a token bucket or a configured counter stays as it is.
    pub(crate) fn learn_counter_semantics(&mut self) -> bool {
        let mut changed = false;
        for log in &mut self.logs {
            changed |= log.learn_counter();
        }
        if changed {
            self.version += 1;
            self.plan = None;
            self.pace_ns = None;
            self.server_cap = None;
        }
        changed
    }

    /// Plans every limit whose counter was learned ([`learn_counter_semantics`]) by its window
    /// log again, which recorded every call meanwhile. True if anything changed.
    ///
    /// [`learn_counter_semantics`]: Self::learn_counter_semantics
    pub(crate) fn learn_log_semantics(&mut self) -> bool {
        let mut changed = false;
        for log in &mut self.logs {
            changed |= log.learn_log();
        }
        if changed {
            self.version += 1;
            self.plan = None;
        }
        changed
    }

    /// Whether some limit is planned by a sliding-window counter (configured or learned).
    #[cfg(test)]
    pub(crate) fn reads_as_counter(&self) -> bool {
        self.logs.iter().any(LimitAccount::counter_plans)
    }

    /// Whether a sliding-window counter that counted the calls recorded would have refused the
    /// one in `slot` on some limit configured as a window log, past that counter's first window:
    /// the mark of a refusal by such a server where a sliding log had room.
    pub(crate) fn counter_would_refuse(&self, slot: Instant) -> bool {
        let t = self.ns(slot);
        self.logs.iter().any(|l| {
            l.log_remaining_at(t).is_some()
                && l.as_counter()
                    .is_some_and(|c| c.past_first_window(t) && c.over_at(t))
        })
    }

    /// Whether, on some limit whose learned counter plans, the window log of the calls recorded
    /// holds more than N in the window ending at `slot` while the counter had room for the call
    /// there: the mark of a refusal by a sliding log that the counter's reading sent.
    pub(crate) fn log_would_refuse_counter_allowed(&self, slot: Instant) -> bool {
        let t = self.ns(slot);
        self.logs.iter().any(|l| {
            l.counter_plans()
                && l.log_over_at(t) == Some(true)
                && l.as_counter().is_some_and(|c| !c.over_at(t))
        })
    }

    /// The account of the limit at `limit` (its index in the quota) for the answer to the call
    /// in `slot`, read at `at` (the call's send, less the guard); `None` unless that limit is
    /// configured as a window log (which keeps a counter beside it).
    pub(crate) fn own_reading(
        &self,
        limit: usize,
        slot: Instant,
        at: Instant,
    ) -> Option<OwnReading> {
        let account = self.logs.get(limit)?;
        let t = self.ns(at);
        let counter = account.as_counter()?;
        Some(OwnReading {
            log: account.log_remaining_at(t)?,
            counter: counter.remaining_at(t),
            past_first_window: counter.past_first_window(t),
            clean: self.last_slot_ns == Some(self.ns(slot)),
        })
    }

    /// A minimum spacing between consecutive slots (`None`: none). The scheduler sets it when a
    /// server counts more strictly than the quota says (see the scheduler's pacing).
    pub fn set_pace(&mut self, spacing: Option<Duration>) {
        self.version += 1;
        self.plan = None;
        self.pace_ns = spacing.map(duration_ns).filter(|&p| p > 0);
    }

    /// Makes the latency guard `guard` from now on (see [`LedgerConfig::guard`]): the scheduler
    /// does so for a key whose guard follows the spread of its answers' latency. Slots already
    /// handed out stay as they are.
    pub fn set_guard(&mut self, guard: Duration) {
        self.version += 1;
        self.plan = None;
        for log in &mut self.logs {
            log.set_guard(duration_ns(guard));
        }
    }

    /// The minimum spacing in force, if any.
    pub fn pace(&self) -> Option<Duration> {
        self.pace_ns.map(Duration::from_nanos)
    }

    /// For each limit, the calls in the fixed window holding `now` and the one before, as a
    /// fraction of 2N (0.0 ..= 1.0 in normal use): which limit a server most likely enforced when
    /// it refused.
    pub fn recent_utilisation(&self, now: Instant) -> Vec<f64> {
        let now_ns = self.ns(now);
        self.logs
            .iter()
            .map(|log| log.recent_calls(now_ns) as f64 / (2.0 * f64::from(log.count())))
            .collect()
    }

    /// Heap bytes this ledger holds (its window logs).
    pub fn heap_bytes(&self) -> usize {
        self.logs
            .iter()
            .map(LimitAccount::heap_bytes)
            .sum::<usize>()
            + self.logs.capacity() * std::mem::size_of::<LimitAccount>()
            + self.plan.as_ref().map_or(0, |p| p.heap_bytes())
    }

    /// Lets go of the plan [`forecast`](Self::forecast) keeps (its memory: a copy of the ledger
    /// and 8 bytes a planned slot), as when the queue it planned for is empty.
    pub fn forget_plan(&mut self) {
        self.plan = None;
    }
}

/// A plan of a ledger's next calls that [`Ledger::nth_slot_with`] extends one call at a time.
#[derive(Clone, Debug)]
pub struct PlanCursor {
    /// The ledger as it would be after the planned calls.
    shadow: Ledger,
    /// The instant the plan was made at (ns since the ledger's origin).
    now_ns: u64,
    /// The first planned call.
    first_ns: Option<u64>,
    /// The last planned call.
    last_ns: u64,
    /// How many calls are planned.
    planned: usize,
    /// The ledger's version the plan was made from.
    version: u64,
}

impl PlanCursor {
    /// Heap bytes it holds (its copy of the ledger).
    pub fn heap_bytes(&self) -> usize {
        self.shadow.heap_bytes()
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(spec: &str, guard_ms: u64) -> (Ledger, Instant) {
        let now = tokio::time::Instant::now();
        let config = LedgerConfig {
            guard: Some(Duration::from_millis(guard_ms)),
            ..LedgerConfig::default()
        };
        (Ledger::new(&spec.parse().unwrap(), config, now), now)
    }

    #[test]
    fn a_call_holds_its_window_until_it_left_it_by_the_guard() {
        let (mut l, t0) = ledger("3/1s", 2);
        let ms = Duration::from_millis;
        assert_eq!(l.reserve(t0), t0);
        assert_eq!(l.reserve(t0 + ms(1)), t0 + ms(1));
        assert_eq!(l.reserve(t0 + ms(1)), t0 + ms(1));
        // The window is full until the first call left it, plus the guard; the fourth call,
        // reserved when that is due, lets the first go from the window's log.
        assert_eq!(l.reserve(t0 + ms(1_002)), t0 + ms(1_002));
        // The two calls at 1 ms left the window itself before now, but not by the guard: they
        // hold it until 1 ms + 1 s + 2 ms.
        let fifth = l.reserve(t0 + ms(1_002));
        assert!(fifth >= t0 + ms(1_003), "{:?}", fifth - t0);
    }

    #[test]
    fn earlier_calls_hold_each_window_until_they_age_out_of_it() {
        let now = tokio::time::Instant::now();
        let quota: Quota = "2/1s,3/10s".parse().unwrap();
        let config = LedgerConfig {
            guard: Some(Duration::ZERO),
            ..LedgerConfig::default()
        };
        let ms = Duration::from_millis;
        // Two calls 9.5 s and 0.4 s ago; one 11 s ago is past every window.
        let mut l =
            Ledger::with_earlier_calls(&quota, config, now, &[ms(400), ms(11_000), ms(9_500)]);
        // Slots are exact up to the windows' tick (a call is recorded at most a tick late).
        let at = |slot: Instant, expected: Instant| {
            assert!(
                slot >= expected && slot < expected + Duration::from_micros(10),
                "{:?} after now, expected {:?}",
                slot - now,
                expected - now
            );
        };
        // One more fits the 10 s window now (2 of 3 used) and the 1 s window (1 of 2).
        assert_eq!(l.reserve(now), now);
        // The 1 s window is full until the call of 0.4 s ago leaves it (0.6 s from now); the
        // 10 s window until the call of 9.5 s ago does (0.5 s from now).
        at(l.reserve(now), now + ms(600));
        // Then the 10 s window holds the calls of -0.4 s, 0 and 0.6 s: the next waits for the
        // first of them to leave it.
        at(l.reserve(now), now + ms(9_600));
        // Without the earlier calls, the same ledger would have sent the first two at once.
        let mut fresh = Ledger::with_earlier_calls(&quota, config, now, &[ms(11_000)]);
        assert_eq!((fresh.reserve(now), fresh.reserve(now)), (now, now));
    }

    #[test]
    fn earlier_calls_leave_a_token_bucket_empty_after_the_newest() {
        let now = tokio::time::Instant::now();
        let quota: Quota = "2/1s".parse().unwrap();
        let config = LedgerConfig {
            guard: Some(Duration::ZERO),
            semantics: crate::ledger::WindowSemantics::TokenBucket,
        };
        // One call just now: replayed alone, it would leave a token for a call at once; but calls
        // older than any window (not given) may have emptied the bucket, so the next waits one
        // interval (W / N).
        let mut l = Ledger::with_earlier_calls(&quota, config, now, &[Duration::ZERO]);
        assert_eq!(l.reserve(now), now + Duration::from_millis(500));
        // A call older than the horizon changes nothing.
        let mut old = Ledger::with_earlier_calls(&quota, config, now, &[Duration::from_secs(5)]);
        assert_eq!((old.reserve(now), old.reserve(now)), (now, now));
    }

    #[test]
    fn a_replacing_ledger_continues_the_versions_of_the_one_it_replaces() {
        let now = tokio::time::Instant::now();
        let quota: Quota = "2/1s".parse().unwrap();
        let mut old = Ledger::new(&quota, LedgerConfig::default(), now);
        for _ in 0..3 {
            old.reserve(now);
        }
        let mut cursor = None;
        old.nth_slot_with(&mut cursor, now, 4);
        let mut new = Ledger::with_earlier_calls(
            &quota,
            LedgerConfig::default(),
            now,
            &[Duration::from_millis(10); 3],
        );
        new.replaces(&old);
        assert!(new.version > old.version);
        // The old ledger's plan is not taken for the new one's.
        assert_eq!(new.nth_slot_with(&mut cursor, now, 4), new.nth_slot(now, 4));
    }

    /// The plan's identity: the same while it is followed, another once it is made again.
    fn plan_id(l: &Ledger) -> Option<*const FollowedPlan> {
        l.plan.as_deref().map(|p| p as *const FollowedPlan)
    }

    #[test]
    fn a_forecast_follows_calls_that_go_in_their_slots_and_stays_exact() {
        let (mut l, t0) = ledger("3/1s,5/10s", 10);
        let first = l.forecast(t0, 20);
        assert_eq!((first.at, first.exact), (l.nth_slot(t0, 20), true));
        let plan = plan_id(&l);
        let mut now = t0;
        for left in (2..20).rev() {
            // The next call goes in its slot; the job at the tail asks again.
            now = l.reserve(now);
            let fresh = l.nth_slot(now, left);
            let forecast = l.forecast(now, left);
            assert_eq!((forecast.at, forecast.exact), (fresh, true), "{left} left");
            // The tail's slot does not move, and the plan was followed, not made again.
            assert_eq!(forecast.at, first.at);
            assert_eq!(plan_id(&l), plan);
        }
    }

    #[test]
    fn a_forecast_of_calls_gone_late_is_an_estimate_until_it_is_planned_again() {
        let (mut l, t0) = ledger("2/1s", 0);
        let ms = Duration::from_millis;
        let sixth = l.forecast(t0, 6).at;
        assert!(sixth >= t0 + ms(2_000) && sixth < t0 + ms(2_000) + Duration::from_micros(10));
        let plan = plan_id(&l);
        // The first call goes 300 ms after its slot: every later slot moves by as much.
        let now = t0 + ms(300);
        assert_eq!(l.reserve(now), now);
        let late = l.forecast(now, 5);
        assert!(!late.exact);
        assert!(late.at <= l.nth_slot(now, 5) && late.at >= now);
        assert_eq!(plan_id(&l), plan);
        // Half of the six slots planned have been followed: the next question plans again.
        l.reserve(now);
        l.reserve(now);
        let again = l.forecast(now, 3);
        assert_eq!((again.at, again.exact), (l.nth_slot(now, 3), true));
        // (Exact up to the windows' tick: a call is recorded at most a tick late.)
        assert!(
            again.at >= now + ms(2_000) && again.at < now + ms(2_000) + Duration::from_micros(10)
        );
        assert_ne!(plan_id(&l), plan);
    }

    #[test]
    fn any_other_change_drops_the_plan() {
        let (mut l, t0) = ledger("2/1s", 0);
        let changes: [fn(&mut Ledger, Instant); 4] = [
            |l, t| l.block_until(t + Duration::from_secs(5)),
            |l, _| l.set_pace(Some(Duration::from_millis(700))),
            |l, t| l.apply_server_window(1, t + Duration::from_secs(30)),
            |l, t| l.refund(t),
        ];
        for change in changes {
            l.forecast(t0, 4);
            assert!(l.plan.is_some());
            change(&mut l, t0);
            assert!(l.plan.is_none());
            let forecast = l.forecast(t0, 4);
            assert_eq!((forecast.at, forecast.exact), (l.nth_slot(t0, 4), true));
        }
    }

    #[test]
    fn both_windows_hold() {
        let (mut l, t0) = ledger("2/1s,3/10s", 0);
        let slots: Vec<_> = (0..4).map(|_| l.reserve(t0)).collect();
        assert_eq!(slots[0], t0);
        assert_eq!(slots[1], t0);
        assert!(slots[2] >= t0 + Duration::from_secs(1));
        assert!(slots[3] >= t0 + Duration::from_secs(10));
    }

    #[test]
    fn plan_commits_nothing_and_matches_reserve() {
        let (mut l, t0) = ledger("3/1s,5/4s", 5);
        let plan = l.plan(t0, 7);
        assert_eq!(l.earliest(t0), t0);
        let real: Vec<_> = (0..7).map(|_| l.reserve(t0)).collect();
        assert_eq!(plan, real);
        assert_eq!(l.nth_slot(t0, 1), l.earliest(t0));
    }

    #[test]
    fn reserve_if_due_commits_only_a_slot_free_now() {
        let (mut l, t0) = ledger("2/1s", 0);
        assert_eq!(l.reserve_if_due(t0), Ok(t0));
        assert_eq!(l.reserve_if_due(t0), Ok(t0));
        // Full: the earliest slot is given and nothing is committed.
        let next = l.earliest(t0);
        assert!(next >= t0 + Duration::from_secs(1));
        assert_eq!(l.reserve_if_due(t0), Err(next));
        assert_eq!(l.reserve_if_due(t0), Err(next));
        assert_eq!(l.reserve(t0), next);
        assert_eq!(l.reserve_if_due(next), Ok(next));
    }

    #[test]
    fn block_and_server_window() {
        let (mut l, t0) = ledger("100/1s", 0);
        l.block_until(t0 + Duration::from_secs(3));
        assert_eq!(l.reserve(t0), t0 + Duration::from_secs(3));
        let reset = t0 + Duration::from_secs(10);
        l.apply_server_window(1, reset);
        assert!(l.reserve(t0) < reset);
        assert_eq!(l.reserve(t0), reset);
    }

    #[test]
    fn pace_spaces_slots() {
        let (mut l, t0) = ledger("100/1s", 0);
        l.set_pace(Some(Duration::from_millis(50)));
        let a = l.reserve(t0);
        let b = l.reserve(t0);
        assert_eq!(b - a, Duration::from_millis(50));
    }

    #[test]
    fn token_bucket_semantics_burst_then_rate() {
        let now = tokio::time::Instant::now();
        let config = LedgerConfig {
            guard: Some(Duration::ZERO),
            semantics: WindowSemantics::TokenBucket,
        };
        let mut l = Ledger::new(&"3/3s".parse().unwrap(), config, now);
        let slots: Vec<_> = (0..5).map(|_| l.reserve(now)).collect();
        assert_eq!(&slots[..3], &[now, now, now]);
        assert_eq!(slots[3], now + Duration::from_secs(1));
        assert_eq!(slots[4], now + Duration::from_secs(2));
        // A sliding reading would hold the 4th call until 3 s.
    }

    #[test]
    fn counter_semantics_hold_a_few_words_per_limit_whatever_the_count() {
        let now = tokio::time::Instant::now();
        let config = LedgerConfig {
            guard: Some(Duration::from_millis(100)),
            semantics: WindowSemantics::SlidingWindowCounter,
        };
        let mut l = Ledger::new(&crate::Quota::production(), config, now);
        let mut t = now;
        for _ in 0..40_000 {
            t = t.max(l.reserve(t));
        }
        // The two limits' accounts and nothing else: no log of calls.
        assert_eq!(
            l.heap_bytes(),
            2 * std::mem::size_of::<LimitAccount>(),
            "{} bytes",
            l.heap_bytes()
        );
        // 600 at once, then 599 a minute, one guard clear of each boundary; the hour's counter
        // (10,000) binds from the 10,001st call.
        assert!(t > now + Duration::from_secs(3_600), "{:?}", t - now);
    }

    #[test]
    fn a_counter_of_the_calls_tells_a_refusal_a_sliding_log_would_not_make() {
        let (mut l, t0) = ledger("4/4s", 100);
        for _ in 0..4 {
            assert_eq!(l.reserve(t0), t0);
        }
        // In the first window a counter reads as a log: no refusal of its calls fits it.
        assert!(!l.counter_would_refuse(t0));
        // 4.1 s on the log has room for 4; a counter weighs the 4 before in, nearly whole.
        let next = l.reserve(t0);
        assert_eq!(next, t0 + Duration::from_millis(4_100));
        assert!(l.counter_would_refuse(next));
        let reading = l.own_reading(0, next, next).unwrap();
        assert_eq!((reading.log, reading.counter), (3, 0));
        assert!(reading.past_first_window && reading.clean);
        // Learned: the next slot is the counter's (4 × (4 s − (e − g)) <= 2 × 4 s: e >= 2.1 s).
        assert!(l.learn_counter_semantics());
        assert!(l.reads_as_counter());
        let counted = l.reserve(t0);
        assert_eq!(counted, t0 + Duration::from_millis(6_100));
        assert!(!l.own_reading(0, next, next).unwrap().clean, "a later call");
        // The log kept every call: 4.1 s and 6.1 s are in its window, with none over.
        assert!(!l.log_would_refuse_counter_allowed(counted));
        // Back to the log, which kept every call: 2 more fit at 6.1 s (the log's ticks round
        // them up by under a microsecond), then 4.1 s leaves the window, plus the guard.
        assert!(l.learn_log_semantics());
        assert!(!l.reads_as_counter() && !l.learn_log_semantics());
        let near = |a: Instant, b: Instant| a >= b && a - b < Duration::from_micros(1);
        for _ in 0..2 {
            let slot = l.reserve(t0);
            assert!(near(slot, counted), "{:?}", slot - t0);
        }
        let slot = l.reserve(t0);
        assert!(
            near(slot, t0 + Duration::from_millis(8_200)),
            "{:?}",
            slot - t0
        );
    }

    #[test]
    fn production_key_fits_in_16_kib() {
        let now = tokio::time::Instant::now();
        let mut l = Ledger::new(&crate::Quota::production(), LedgerConfig::default(), now);
        let mut t = now;
        for _ in 0..40_000 {
            let slot = l.reserve(t);
            t = t.max(slot);
        }
        assert!(l.heap_bytes() <= 16 * 1024, "{} bytes", l.heap_bytes());
    }
}
