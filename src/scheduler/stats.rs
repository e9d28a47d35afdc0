//! Counters of one key, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::counter_learning::LearnedSemantics;
use super::refusals::RefusedCalls;
use crate::ledger::WindowSemantics;
use crate::quota::Quota;

/// A snapshot of one key's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyStats {
    /// Jobs accepted by `submit`.
    pub submitted: u64,
    /// Calls put on the wire (every attempt).
    pub sent: u64,
    /// Jobs that ended in success.
    pub succeeded: u64,
    /// Jobs that ended in failure (cancelled and handed-back jobs included).
    pub failed: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Jobs cancelled through their ticket.
    pub cancelled: u64,
    /// Jobs handed back at shutdown.
    pub handed_back: u64,
    /// Jobs waiting now.
    pub queued: u64,
    /// Calls on the wire now.
    pub in_flight: u64,
    /// Whether the key counts refused calls now: as configured, or what it learned
    /// ([`RefusedCalls::Learn`] while it has not learned yet).
    pub refused_calls: RefusedCalls,
    /// The latency guard in force: the configured one, or what it follows now
    /// ([`KeyConfig::guard_from_latency`](crate::KeyConfig::guard_from_latency)).
    pub guard: Duration,
    /// The spread of the key's send-to-answer times last measured (99th less 1st percentile of
    /// the last 512), for a key whose guard follows it; `None` otherwise or before the first
    /// 128 answers.
    pub latency_spread: Option<Duration>,
    /// The even spacing the key keeps between calls since the server refused calls that the
    /// quota allowed (a server counting more strictly than a sliding log, as a sliding-window
    /// counter does): W / (N − 1) for its binding limit's N per W, the counter's own rate
    /// whatever its alignment, wider after further refusals. `None` while the key has not been
    /// paced, and for a key that learned to read its limits as the counter's
    /// ([`learned_semantics`](Self::learned_semantics)).
    pub paced: Option<Duration>,
    /// What the server's limits look like when it refused calls (429) while every window of the
    /// configured quota held under 90 % of its count of accepted calls: for a Development key
    /// configured as Production, `60/1m`. `None` while the server's refusals fit the quota. An
    /// estimate: accepted calls are counted in sixteenths of each window. Serialized as the
    /// quota's text (`"60/1m"`).
    #[serde(serialize_with = "quota_as_text")]
    pub server_limits: Option<Quota>,
    /// How the key learned to read its limits, if it did: as sliding-window counters
    /// ([`WindowSemantics::SlidingWindowCounter`]), from the server's `RateLimit-*` headers before
    /// any refusal or from the timing of two refusals that a sliding log would not have made;
    /// from then on its calls are planned against the counter's own estimate and it is not
    /// paced. Or as sliding windows again ([`WindowSemantics::Sliding`]), for good, once the
    /// server refused a call that the counter's reading sent and its window log would not have,
    /// or its headers counted more than the counter did. `None` for a key configured with another
    /// semantics, one whose ledger lives in a shared store, and one that learned nothing.
    pub learned_semantics: Option<LearnedSemantics>,
    /// How the key reads its limits now: as configured, or as learned
    /// ([`learned_semantics`](Self::learned_semantics)).
    pub semantics: WindowSemantics,
}

/// `Some(quota)` as its text (`"60/1m,1000/1h"`), `None` as null.
fn quota_as_text<S: serde::Serializer>(quota: &Option<Quota>, out: S) -> Result<S::Ok, S::Error> {
    match quota {
        Some(q) => out.serialize_some(&q.to_string()),
        None => out.serialize_none(),
    }
}

/// The counts every call changes, kept under the key's lock (taken for the call anyway) rather
/// than as atomics: the submitting thread and the shard would otherwise share one cache line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallCounts {
    pub(crate) submitted: u64,
    pub(crate) sent: u64,
    pub(crate) succeeded: u64,
}

/// The counts of the rarer events.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) failed: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) handed_back: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        calls: CallCounts,
        queued: usize,
        in_flight: usize,
        refused_calls: RefusedCalls,
    ) -> KeyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KeyStats {
            submitted: calls.submitted,
            sent: calls.sent,
            succeeded: calls.succeeded,
            failed: get(&self.failed),
            rate_limited: get(&self.rate_limited),
            retries: get(&self.retries),
            cancelled: get(&self.cancelled),
            handed_back: get(&self.handed_back),
            queued: queued as u64,
            in_flight: in_flight as u64,
            refused_calls,
            guard: Duration::ZERO,
            latency_spread: None,
            paced: None,
            server_limits: None,
            learned_semantics: None,
            semantics: WindowSemantics::default(),
        }
    }
}
