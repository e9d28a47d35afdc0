//! Whether a call the server refused (429) counts against the key's windows, and how the
//! scheduler learns it when nobody says.
//!
//! The Fabraix docs do not say whether refused calls count. Counting them is the safe reading, but
//! on a server that does not count them it costs dearly once the longest window is nearly used: a
//! few counted refusals leave the last calls of a batch with no slot until the hour rolls over
//! (1,000 Development calls on a sliding-window-counter server: 3,604 s instead of 1,015 s).
//!
//! Learning ([`RefusedCalls::Learn`], the default) counts refusals until counting them is all that
//! holds the key back, by more than its shortest window. Then one call (the *probe*) goes in the
//! slot it would have without them, and no other call starts until it is answered. Accepted: the server does not count
//! refusals; they are refunded, and so is every later refused call's slot. Refused: the refunded
//! refusals are counted again (as if made at that moment: later than they were, the safe side),
//! and after [`MAX_REFUSED_PROBES`] refused probes the key counts refusals for good. A probe
//! that ends otherwise (a network error, a 5xx, its slot given back) decides nothing.
//!
//! The cost on a server that does count refusals: one more refused call (two at most), and little
//! time, since the probe's 429 holds the key for about as long as the counted refusals would have
//! (`tests/scheduler_models.rs` measures both).
//! Probes need the key's ledger in this process ([`LedgerStore::local_ledger`](crate::LedgerStore));
//! with a store elsewhere, learning counts refusals.

use std::time::Duration;

use crate::clock::Instant;
use crate::ledger::Ledger;
use crate::quota::Quota;

/// Refused probes after which a key counts refusals for good.
pub(crate) const MAX_REFUSED_PROBES: u32 = 2;

/// Refused calls remembered while learning, at most; older ones stay counted (the safe side).
const MAX_KEPT: usize = 256;

/// Whether a call answered 429 counts against the key's windows (see
/// [`KeyConfig::refused_calls`](crate::KeyConfig::refused_calls)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusedCalls {
    /// Count them until counting is all that holds the key back (by more than its shortest
    /// window), then send one call as if they did not count, and keep what its answer shows. The
    /// default: safe on a server that counts refusals (at the cost of one or two more 429s per
    /// key), and about as fast as [`DoNotCount`](Self::DoNotCount) on one that does not.
    #[default]
    Learn,
    /// Always count them: right for a server known to count refused calls.
    Count,
    /// Never count them (each refused call's slot is refunded): right for a server known not to
    /// count them; draws more 429s from one that does.
    DoNotCount,
}

/// Parses `learn`, `count` or `do-not-count` (case-insensitive), as the CLI's `--refused-calls`.
impl std::str::FromStr for RefusedCalls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "learn" => Ok(Self::Learn),
            "count" => Ok(Self::Count),
            "do-not-count" => Ok(Self::DoNotCount),
            _ => Err(format!(
                "unknown rule for refused calls {s:?} (use learn, count or do-not-count)"
            )),
        }
    }
}

/// What answered a probe said about refused calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    /// Accepted: refusals do not count.
    Accepted,
    /// Refused (429): they may count.
    Refused,
    /// Ended otherwise (error, 5xx, slot given back): nothing learned.
    Undecided,
}

/// A probe on the wire (or waiting for its slot).
#[derive(Clone, Copy, Debug)]
struct Probe {
    slot: Instant,
    /// Counted refusals refunded to make room for it.
    refunded: u32,
}

/// One key's accounting of refused calls.
#[derive(Debug)]
pub(crate) struct RefusalAccounting {
    /// What the key does with a refused call now: the configured rule, or what learning found.
    rule: RefusedCalls,
    /// What learning needs, from the key's first refused call until it has learned: boxed, so
    /// that a key that is never refused carries a pointer, and reserving checks only that.
    learning: Option<Box<Learning>>,
}

#[derive(Debug, Default)]
struct Learning {
    /// The slots of refused calls still counted in the ledger, oldest first.
    kept: Vec<Instant>,
    probe: Option<Probe>,
    refused_probes: u32,
}

impl RefusalAccounting {
    pub(crate) fn new(rule: RefusedCalls) -> Self {
        Self {
            rule,
            learning: None,
        }
    }

    /// The rule in force: the configured one, or what learning found.
    pub(crate) fn rule(&self) -> RefusedCalls {
        self.rule
    }

    /// Whether a reservation is the ledger's own (nothing being learned): then
    /// [`reserve`](Self::reserve) is `ledger.reserve(now)`.
    pub(crate) fn is_plain(&self) -> bool {
        self.learning.is_none()
    }

    /// Whether a probe is out (its slot reserved, its answer not in).
    pub(crate) fn probing(&self) -> bool {
        self.learning.as_ref().is_some_and(|l| l.probe.is_some())
    }

    /// Learning found `rule`: it is the key's from now on.
    fn learned(&mut self, rule: RefusedCalls) {
        self.rule = rule;
        self.learning = None;
    }

    /// A call in `slot` was refused: true if its slot is to be refunded.
    pub(crate) fn on_refused(&mut self, slot: Instant) -> bool {
        match self.rule {
            RefusedCalls::DoNotCount => true,
            RefusedCalls::Count => false,
            RefusedCalls::Learn => {
                let kept = &mut self.learning.get_or_insert_with(Box::default).kept;
                if kept.len() == MAX_KEPT {
                    kept.remove(0);
                }
                kept.push(slot);
                false
            }
        }
    }

    /// Reserves the key's next slot in `ledger` at `now`: a probe's (true) if the key is learning
    /// and counted refusals alone hold it back by more than its shortest window; otherwise the
    /// usual one (false). The caller keeps every other call off the wire until the probe is
    /// answered (the key's in-flight limit drops to one).
    pub(crate) fn reserve(
        &mut self,
        ledger: &mut Ledger,
        now: Instant,
        quota: &Quota,
    ) -> (Instant, bool) {
        let Some(learning) = self.learning.as_deref_mut() else {
            return (ledger.reserve(now), false);
        };
        if learning.probe.is_some() {
            return (ledger.reserve(now), false);
        }
        // A refusal older than the longest window is in no window any more.
        let longest = quota.longest_window();
        learning.kept.retain(|&t| t + longest > now);
        if learning.kept.is_empty() {
            if learning.refused_probes == 0 {
                // Nothing left to learn from: back to the plain path until the next refusal.
                self.learning = None;
            }
            return (ledger.reserve(now), false);
        }
        let shortest = quota
            .limits()
            .first()
            .map_or(Duration::ZERO, |l| l.window());
        let counted = ledger.earliest(now);
        if counted.saturating_duration_since(now) <= shortest {
            return (ledger.reserve(now), false);
        }
        let mut uncounted = ledger.clone();
        for &t in &learning.kept {
            uncounted.refund(t);
        }
        if counted.saturating_duration_since(uncounted.earliest(now)) <= shortest {
            return (ledger.reserve(now), false);
        }
        let refunded = u32::try_from(learning.kept.len()).unwrap_or(u32::MAX);
        for t in learning.kept.drain(..) {
            ledger.refund(t);
        }
        let slot = ledger.reserve(now);
        learning.probe = Some(Probe { slot, refunded });
        (slot, true)
    }

    /// The call in `slot` ended with `verdict`; if it was the probe, learns from it (re-counting
    /// the refunded refusals in `ledger` at `now` unless it was accepted). Returns the rule
    /// learned, if learning ended.
    pub(crate) fn settle(
        &mut self,
        slot: Instant,
        verdict: ProbeVerdict,
        ledger: Option<&mut Ledger>,
        now: Instant,
    ) -> Option<RefusedCalls> {
        let learning = self.learning.as_deref_mut()?;
        let probe = learning.probe.filter(|p| p.slot == slot)?;
        learning.probe = None;
        if verdict == ProbeVerdict::Accepted {
            self.learned(RefusedCalls::DoNotCount);
            return Some(RefusedCalls::DoNotCount);
        }
        if let Some(ledger) = ledger {
            ledger.record_late(now, probe.refunded);
            learning
                .kept
                .extend(std::iter::repeat_n(now, probe.refunded as usize));
        }
        if verdict == ProbeVerdict::Refused {
            learning.refused_probes += 1;
            if learning.refused_probes >= MAX_REFUSED_PROBES {
                self.learned(RefusedCalls::Count);
                return Some(RefusedCalls::Count);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerConfig;

    fn setup() -> (Ledger, Quota, Instant) {
        let quota: Quota = "2/1s,4/10s".parse().unwrap();
        let now = tokio::time::Instant::now();
        let ledger = Ledger::new(
            &quota,
            LedgerConfig {
                guard: Some(Duration::ZERO),
                ..LedgerConfig::default()
            },
            now,
        );
        (ledger, quota, now)
    }

    #[tokio::test(start_paused = true)]
    async fn probes_only_when_counted_refusals_alone_hold_the_key_back() {
        let (mut ledger, quota, t0) = setup();
        let mut acc = RefusalAccounting::new(RefusedCalls::Learn);
        // Two calls accepted, one refused (kept, counted), one accepted a second later.
        let a = acc.reserve(&mut ledger, t0, &quota);
        assert_eq!(a, (t0, false));
        acc.reserve(&mut ledger, t0, &quota);
        let refused = acc.reserve(&mut ledger, t0, &quota).0;
        assert!(!acc.on_refused(refused));
        let t1 = t0 + Duration::from_secs(2);
        let (s, probe) = acc.reserve(&mut ledger, t1, &quota);
        assert_eq!((s, probe), (t1, false), "the minute-like window has room");
        // The 10 s window now holds 4 (one refused): counted, the next call waits until 10 s;
        // uncounted, it could go now.
        let t2 = t0 + Duration::from_secs(3);
        let (s, probe) = acc.reserve(&mut ledger, t2, &quota);
        assert!(probe);
        assert_eq!(s, t2);
        assert!(acc.probing());
        // Accepted: refusals are refunded from now on.
        acc.settle(s, ProbeVerdict::Accepted, Some(&mut ledger), t2);
        assert!(!acc.probing());
        assert_eq!(acc.rule(), RefusedCalls::DoNotCount);
        assert!(acc.on_refused(t2));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_probes_count_the_refusals_again_then_settle_on_counting() {
        let (mut ledger, quota, t0) = setup();
        let mut acc = RefusalAccounting::new(RefusedCalls::Learn);
        // Two calls at 0 s, one refused at 1 s, one more at 2 s: the 10 s window holds 4.
        ledger.reserve(t0);
        ledger.reserve(t0);
        let r = ledger.reserve(t0 + Duration::from_secs(1));
        assert!(!acc.on_refused(r));
        ledger.reserve(t0 + Duration::from_secs(2));
        for round in 1..=MAX_REFUSED_PROBES {
            let now = t0 + Duration::from_secs(2 + u64::from(round));
            let before = ledger.earliest(now);
            let (slot, probe) = acc.reserve(&mut ledger, now, &quota);
            assert!(probe, "round {round}");
            assert!(slot < before);
            acc.settle(slot, ProbeVerdict::Refused, Some(&mut ledger), now);
            // The probe's slot stays counted, and so are the refusals again.
            assert!(ledger.earliest(now) >= before, "round {round}");
            assert!(!acc.on_refused(slot));
        }
        assert_eq!(acc.rule(), RefusedCalls::Count);
        let later = t0 + Duration::from_secs(6);
        assert!(!acc.reserve(&mut ledger, later, &quota).1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecided_probe_counts_the_refusals_again_and_may_be_retried() {
        let (mut ledger, quota, t0) = setup();
        let mut acc = RefusalAccounting::new(RefusedCalls::Learn);
        ledger.reserve(t0);
        ledger.reserve(t0);
        let r = ledger.reserve(t0 + Duration::from_secs(1));
        acc.on_refused(r);
        ledger.reserve(t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        let before = ledger.earliest(now);
        let (slot, probe) = acc.reserve(&mut ledger, now, &quota);
        assert!(probe);
        // Another call's answer does not settle the probe.
        acc.settle(t0, ProbeVerdict::Accepted, Some(&mut ledger), now);
        assert!(acc.probing());
        ledger.refund(slot);
        acc.settle(slot, ProbeVerdict::Undecided, Some(&mut ledger), now);
        assert!(!acc.probing());
        assert_eq!(acc.rule(), RefusedCalls::Learn);
        assert!(ledger.earliest(now) >= before);
        assert!(acc.reserve(&mut ledger, now, &quota).1, "tried again");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_older_than_the_longest_window_are_forgotten() {
        let (mut ledger, quota, t0) = setup();
        let mut acc = RefusalAccounting::new(RefusedCalls::Learn);
        let r = ledger.reserve(t0);
        acc.on_refused(r);
        assert!(acc.learning.is_some());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(acc.reserve(&mut ledger, later, &quota), (later, false));
        assert!(acc.learning.is_none(), "nothing left to learn from");
        assert_eq!(acc.rule(), RefusedCalls::Learn);
    }

    #[test]
    fn rules_parse_by_name() {
        assert_eq!("learn".parse(), Ok(RefusedCalls::Learn));
        assert_eq!("Count".parse(), Ok(RefusedCalls::Count));
        assert_eq!("do-not-count".parse(), Ok(RefusedCalls::DoNotCount));
        let e = "never".parse::<RefusedCalls>().unwrap_err();
        assert!(e.contains("\"never\"") && e.contains("do-not-count"), "{e}");
    }

    #[test]
    fn configured_rules_never_probe() {
        let quota: Quota = "2/1s,4/10s".parse().unwrap();
        for rule in [RefusedCalls::Count, RefusedCalls::DoNotCount] {
            let mut acc = RefusalAccounting::new(rule);
            assert_eq!(
                acc.on_refused(tokio::time::Instant::now()),
                rule == RefusedCalls::DoNotCount
            );
            let now = tokio::time::Instant::now();
            let mut ledger = Ledger::new(&quota, LedgerConfig::default(), now);
            assert!(!acc.reserve(&mut ledger, now, &quota).1);
        }
    }
}
