//! A wrong tier or quota, seen from the server's answers: when the server refuses calls (429)
//! while every window of the configured quota holds far fewer accepted calls than it allows, the
//! server's limits are not the configured ones. [`KeyStats::server_limits`] then says what they
//! look like, e.g. `60/1m` for a Development key configured as Production.
//!
//! Accepted calls are counted per limit in 16 buckets of a sixteenth of its window: the accepted
//! calls in the trailing window, less at most one bucket's, in 64 bytes per limit and a few
//! additions per success.
//!
//! [`KeyStats::server_limits`]: super::KeyStats::server_limits

use crate::clock::Instant;
use crate::quota::{Limit, Quota};

/// A window held less than this share of its count when the server refused: "far below".
const FAR_BELOW: f64 = 0.9;

/// What the key's refusals say of the server's limits (see the module's docs).
#[derive(Clone, Debug)]
pub(crate) struct ServerLimitsSeen {
    windows: Vec<AcceptedWindow>,
    /// The first instant seen: buckets are counted from it.
    origin: Option<Instant>,
    /// Calls accepted since the key was added.
    accepted: u64,
    /// 429s received while every window was far below its count.
    sightings: u64,
}

/// Buckets per window (see the module's docs).
const BUCKETS: usize = 16;

/// Accepted calls of one limit, in [`BUCKETS`] buckets covering its trailing window.
#[derive(Clone, Debug)]
struct AcceptedWindow {
    limit: Limit,
    /// A sixteenth of the window, in nanoseconds (at least 1).
    bucket_ns: u64,
    /// Accepted calls per bucket; bucket `k` (counted from the origin) is at `k % BUCKETS`.
    buckets: [u64; BUCKETS],
    /// The newest bucket written or cleared, counted from the origin.
    newest: u64,
    /// Where the newest bucket ends (ns after the origin): an instant before it is in it, and
    /// finding its bucket costs no division.
    newest_end_ns: u64,
    /// The calls of the bucket cleared last, the one just before the oldest kept: the far-below
    /// test counts them too, so that a burst at the window's far edge is not missed.
    dropped: u64,
    /// The most accepted calls in a trailing window at a sighting.
    most_at_sighting: u64,
}

impl AcceptedWindow {
    fn new(limit: Limit) -> Self {
        let window_ns = u64::try_from(limit.window().as_nanos()).unwrap_or(u64::MAX);
        let bucket_ns = (window_ns / BUCKETS as u64).max(1);
        Self {
            limit,
            bucket_ns,
            buckets: [0; BUCKETS],
            newest: 0,
            newest_end_ns: bucket_ns,
            dropped: 0,
            most_at_sighting: 0,
        }
    }

    /// Clears the buckets that fell out of the trailing window at `since_ns` after the origin,
    /// and returns the bucket holding that instant (an earlier instant counts in the newest).
    fn roll(&mut self, since_ns: u64) -> usize {
        if since_ns >= self.newest_end_ns {
            let k = since_ns / self.bucket_ns;
            let steps = k - self.newest;
            let stale = steps.min(BUCKETS as u64);
            let mut last_cleared = 0;
            for step in 1..=stale {
                let slot = &mut self.buckets[((self.newest + step) % BUCKETS as u64) as usize];
                last_cleared = std::mem::take(slot);
            }
            // The slot cleared last held the bucket just before the oldest kept, unless the jump
            // went past it too.
            self.dropped = if steps <= BUCKETS as u64 {
                last_cleared
            } else {
                0
            };
            self.newest = k;
            self.newest_end_ns = k.saturating_add(1).saturating_mul(self.bucket_ns);
        }
        (self.newest % BUCKETS as u64) as usize
    }

    /// Accepted calls in the trailing window (after [`roll`](Self::roll)).
    fn trailing(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl ServerLimitsSeen {
    /// Nothing seen yet, for the limits of `quota`.
    pub(crate) fn new(quota: &Quota) -> Self {
        let windows = quota
            .limits()
            .iter()
            .map(|&limit| AcceptedWindow::new(limit))
            .collect();
        Self {
            windows,
            origin: None,
            accepted: 0,
            sightings: 0,
        }
    }

    /// A call was accepted (any 2xx) at `now`.
    pub(crate) fn accepted(&mut self, now: Instant) {
        self.accepted += 1;
        let since = self.since_origin(now);
        for w in &mut self.windows {
            let bucket = w.roll(since);
            w.buckets[bucket] += 1;
        }
    }

    /// A call was refused (429) at `now`, with `on_wire` calls of the key sent before it and not
    /// answered yet: a sighting if every window held far fewer calls than its count allows,
    /// counted generously (the accepted calls, those on the wire, and the bucket at the window's
    /// far edge), so that only a server far below the quota is named.
    pub(crate) fn refused(&mut self, now: Instant, on_wire: u64) {
        let since = self.since_origin(now);
        for w in &mut self.windows {
            w.roll(since);
            let held = w.trailing() + w.dropped + on_wire;
            if held as f64 >= FAR_BELOW * f64::from(w.limit.count()) {
                return;
            }
        }
        self.sightings += 1;
        for w in &mut self.windows {
            w.most_at_sighting = w.most_at_sighting.max(w.trailing());
        }
    }

    /// `now` after the first instant seen (which it becomes if it is the first), in ns.
    fn since_origin(&mut self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(*self.origin.get_or_insert(now));
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    /// What the server's limits look like, if it refused far earlier than the configured quota
    /// allows: for each limit whose window held at most 90 % of what the key offered it (its
    /// count, or every accepted call if fewer) when the server refused, the most it held then.
    /// A longer window is named only if it held more than the shorter ones named. `None` before
    /// the first such refusal.
    pub(crate) fn looks_like(&self) -> Option<Quota> {
        if self.sightings == 0 {
            return None;
        }
        let mut named: Vec<Limit> = Vec::new();
        for w in &self.windows {
            let offered = u64::from(w.limit.count()).min(self.accepted);
            let far_below =
                w.most_at_sighting > 0 && (w.most_at_sighting as f64) < FAR_BELOW * offered as f64;
            let new = named
                .last()
                .is_none_or(|l| u64::from(l.count()) < w.most_at_sighting);
            if let (true, true, Ok(most)) = (far_below, new, u32::try_from(w.most_at_sighting)) {
                named.extend(Limit::new(most, w.limit.window()).ok());
            }
        }
        if named.is_empty() {
            return None;
        }
        Quota::new(named).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl ServerLimitsSeen {
        /// A refusal with nothing else on the wire.
        fn refused_now(&mut self, now: Instant) {
            self.refused(now, 0);
        }
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_development_key_configured_as_production_looks_like_sixty_a_minute() {
        let base = tokio::time::Instant::now();
        let mut seen = ServerLimitsSeen::new(&Quota::production());
        // 60 accepted in the first 6 s of each minute, then every call refused.
        for minute in 0..3u64 {
            for i in 0..60 {
                seen.accepted(at(base, minute * 60_000 + i * 100));
            }
            for i in 0..10 {
                seen.refused_now(at(base, minute * 60_000 + 6_000 + i * 100));
            }
        }
        assert_eq!(
            seen.looks_like().map(|q| q.to_string()),
            Some("60/1m".into())
        );
    }

    #[test]
    fn refusals_with_the_windows_nearly_full_say_nothing() {
        let base = tokio::time::Instant::now();
        let quota: Quota = "10/1s".parse().unwrap();
        let mut seen = ServerLimitsSeen::new(&quota);
        for i in 0..10 {
            seen.accepted(at(base, i * 50));
        }
        seen.refused_now(at(base, 600));
        assert_eq!(seen.looks_like(), None, "the window held its count");
    }

    #[test]
    fn a_long_window_that_held_every_accepted_call_is_not_named() {
        let base = tokio::time::Instant::now();
        let mut seen = ServerLimitsSeen::new(&Quota::production());
        // Refused at 60 a minute for three minutes: the hour held every call accepted.
        for minute in 0..3u64 {
            for i in 0..60 {
                seen.accepted(at(base, minute * 60_000 + i * 100));
            }
            seen.refused_now(at(base, minute * 60_000 + 59_000));
        }
        let looks = seen.looks_like().map(|q| q.to_string());
        assert_eq!(looks, Some("60/1m".into()));
    }

    #[test]
    fn calls_still_on_the_wire_count_against_a_sighting() {
        let base = tokio::time::Instant::now();
        let quota: Quota = "10/1s".parse().unwrap();
        let mut seen = ServerLimitsSeen::new(&quota);
        for i in 0..6 {
            seen.accepted(at(base, i * 10));
        }
        // Six answered and three more on the wire when the tenth was refused: the window was
        // full, not far below.
        seen.refused(at(base, 100), 3);
        assert_eq!(seen.looks_like(), None);
        assert_eq!(seen.sightings, 0);
    }

    #[test]
    fn old_windows_roll_out_of_the_estimate() {
        let base = tokio::time::Instant::now();
        let quota: Quota = "100/1s".parse().unwrap();
        let mut seen = ServerLimitsSeen::new(&quota);
        for i in 0..50 {
            seen.accepted(at(base, i));
        }
        // Three windows later nothing accepted counts any more: a refusal then names 0, which is
        // no limit at all.
        seen.refused_now(at(base, 3_500));
        assert_eq!(seen.sightings, 1);
        assert_eq!(seen.looks_like(), None);
    }
}
