//! The scheduler's metrics, through the [`metrics`] facade, named as Prometheus users expect, and
//! its tracing span per call. The library installs no recorder (exporter): with none installed
//! every recording here is a no-op. Install one (`metrics-exporter-prometheus`, say) before the
//! keys are added: each key takes its metric handles when it is added.
//!
//! | metric | kind | labels | what |
//! | --- | --- | --- | --- |
//! | [`QUEUE_DEPTH`] | gauge | `key`, `lane` | jobs waiting in the key's lane (`interactive`, `normal`, `bulk`) |
//! | [`CALLS_TOTAL`] | counter | `key`, `status_class` | calls answered, by status class (`2xx` … `5xx`), or `transport_error` |
//! | [`RATE_LIMITED_TOTAL`] | counter | `key` | calls answered 429 |
//! | [`SLOT_WAIT_SECONDS`] | histogram | `key` | seconds from the reservation of each slot to the slot (0 when it was due at once): how long the quota held a call back |
//! | [`IN_FLIGHT`] | gauge | `key` | calls on the wire |
//!
//! The `key` label is the key's fingerprint, or the label given to
//! [`KeyConfig::metrics_label`](crate::KeyConfig::metrics_label); never the key itself. At most
//! [`max_key_labels`] distinct labels are in use at once (1,000 unless
//! [`set_max_key_labels`] says otherwise): the keys added beyond that share the label
//! [`OTHER_KEYS`], so that ten thousand keys make one more series, not ten thousand.
//!
//! Each attempt of a job runs in a `debug` span `fabraix_call` with the fields `key` (the id),
//! `label`, `lane`, `slot` (the scheduler clock's instant it was planned for) and `attempt`.
//!
//! ```
//! use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
//! use fabraix_scheduler::scheduler_metrics::CALLS_TOTAL;
//! use fabraix_scheduler::{ApiKey, Job, KeyConfig, KeyId, Quota, Scheduler};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! // A test recorder, in force on this thread while the key is added (which takes the key's
//! // handles); a program installs its exporter with `metrics::set_global_recorder` instead.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let _in_force = metrics::set_default_local_recorder(&recorder);
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! runtime.block_on(async {
//!     let quota: Quota = "5/1s".parse().unwrap();
//!     let mock = MockServer::builder().key(TEST_DEV_KEY, quota.clone()).start().await.unwrap();
//!     let scheduler = Scheduler::builder().build().unwrap();
//!     let config = KeyConfig::new("k", ApiKey::new(TEST_DEV_KEY).unwrap(), &mock.base_url(), quota)
//!         .unwrap()
//!         .metrics_label("tenant-1");
//!     scheduler.add_key(config).await.unwrap();
//!     let body = serde_json::json!({"event_type": "action_check", "trace_id": "t",
//!         "timestamp": 0, "content": "ls", "schema": "{}"});
//!     let job = Job::post_json("/check", &body).unwrap();
//!     scheduler.submit(&KeyId::new("k"), job).await.unwrap().await.unwrap();
//! });
//! let calls: u64 = snapshotter.snapshot().into_vec().into_iter()
//!     .filter(|(key, ..)| key.key().name() == CALLS_TOTAL)
//!     .filter(|(key, ..)| key.key().labels().any(|l| l.key() == "key" && l.value() == "tenant-1"))
//!     .map(|(.., value)| match value { DebugValue::Counter(n) => n, _ => 0 })
//!     .sum();
//! assert_eq!(calls, 1);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::clock::Instant;
use crate::job::Priority;
use crate::transport::{HttpResponse, TransportError};

/// Gauge: jobs waiting in a key's lane. Labels `key`, `lane`.
pub const QUEUE_DEPTH: &str = "fabraix_scheduler_queue_depth";
/// Counter: calls answered, by `status_class` (`1xx` … `5xx`, `transport_error`). Labels `key`,
/// `status_class`.
pub const CALLS_TOTAL: &str = "fabraix_scheduler_calls_total";
/// Counter: calls answered 429. Label `key`.
pub const RATE_LIMITED_TOTAL: &str = "fabraix_scheduler_rate_limited_total";
/// Histogram: seconds from a slot's reservation to the slot. Label `key`.
pub const SLOT_WAIT_SECONDS: &str = "fabraix_scheduler_slot_wait_seconds";
/// Gauge: calls on the wire. Label `key`.
pub const IN_FLIGHT: &str = "fabraix_scheduler_in_flight";
/// The `key` label of the keys past the bound on distinct labels ([`max_key_labels`]).
pub const OTHER_KEYS: &str = "other";

/// The default bound on distinct `key` labels.
const DEFAULT_MAX_KEY_LABELS: usize = 1_000;

static MAX_KEY_LABELS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_KEY_LABELS);

/// Sets the bound on distinct `key` labels in use at once (process-wide; keys added later obey
/// it). 0 puts every key under [`OTHER_KEYS`].
pub fn set_max_key_labels(n: usize) {
    MAX_KEY_LABELS.store(n, Ordering::Relaxed);
}

/// The bound on distinct `key` labels in use at once.
pub fn max_key_labels() -> usize {
    MAX_KEY_LABELS.load(Ordering::Relaxed)
}

/// The `key` labels in use, with how many keys use each.
#[derive(Debug, Default)]
struct LabelSet {
    in_use: Mutex<HashMap<Arc<str>, usize>>,
}

/// The process's labels.
fn labels_in_use() -> &'static LabelSet {
    static IN_USE: OnceLock<LabelSet> = OnceLock::new();
    IN_USE.get_or_init(LabelSet::default)
}

/// A key's label, taken from a bounded set (and given back when dropped).
#[derive(Debug)]
struct KeyLabel {
    label: Arc<str>,
    /// The set `label` is counted in (`None` for [`OTHER_KEYS`]).
    set: Option<&'static LabelSet>,
}

impl KeyLabel {
    /// `wanted` if it is in use already or fewer than `max` labels are; else [`OTHER_KEYS`].
    fn take(set: &'static LabelSet, wanted: &str, max: usize) -> Self {
        let mut in_use = set.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((label, users)) = in_use.get_key_value(wanted).map(|(l, u)| (l.clone(), *u)) {
            in_use.insert(Arc::clone(&label), users + 1);
            return Self {
                label,
                set: Some(set),
            };
        }
        if in_use.len() >= max {
            return Self {
                label: Arc::from(OTHER_KEYS),
                set: None,
            };
        }
        let label: Arc<str> = Arc::from(wanted);
        in_use.insert(Arc::clone(&label), 1);
        Self {
            label,
            set: Some(set),
        }
    }
}

impl Drop for KeyLabel {
    fn drop(&mut self) {
        let Some(set) = self.set else { return };
        let mut in_use = set.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(users) = in_use.get_mut(&self.label) {
            *users -= 1;
            if *users == 0 {
                in_use.remove(&self.label);
            }
        }
    }
}

/// A lane's name as a label value.
fn lane_name(lane: usize) -> &'static str {
    match lane {
        0 => "bulk",
        1 => "normal",
        _ => "interactive",
    }
}

/// The depth gauges of a key's lanes, indexed by [`Priority::lane`].
#[derive(Clone, Debug)]
pub(crate) struct LaneDepth([Gauge; 3]);

impl LaneDepth {
    /// A job joined `lane`.
    #[inline]
    pub(crate) fn joined(&self, lane: usize) {
        self.0[lane].increment(1.0);
    }

    /// `n` jobs left `lane`.
    #[inline]
    pub(crate) fn left(&self, lane: usize, n: usize) {
        self.0[lane].decrement(n as f64);
    }
}

/// One key's metric handles, taken when the key is added (from the recorder in force then).
#[derive(Debug)]
pub(crate) struct KeyMetrics {
    label: KeyLabel,
    /// The lanes' depth (a copy of the handles sits in the key's queue state).
    pub(crate) depth: LaneDepth,
    /// By status class: `1xx` … `5xx` at 0 … 4, `transport_error` at 5.
    calls: [Counter; 6],
    rate_limited: Counter,
    slot_wait: Histogram,
    in_flight: Gauge,
}

impl KeyMetrics {
    /// The handles of a key labelled `label` (its fingerprint, or the user's label).
    pub(crate) fn new(label: &str) -> Self {
        let label = KeyLabel::take(labels_in_use(), label, max_key_labels());
        let key = Arc::clone(&label.label);
        let depth = std::array::from_fn(
            |lane| metrics::gauge!(QUEUE_DEPTH, "key" => key.to_string(), "lane" => lane_name(lane)),
        );
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "transport_error"];
        let calls = classes.map(|class| {
            metrics::counter!(CALLS_TOTAL, "key" => key.to_string(), "status_class" => class)
        });
        Self {
            depth: LaneDepth(depth),
            calls,
            rate_limited: metrics::counter!(RATE_LIMITED_TOTAL, "key" => key.to_string()),
            slot_wait: metrics::histogram!(SLOT_WAIT_SECONDS, "key" => key.to_string()),
            in_flight: metrics::gauge!(IN_FLIGHT, "key" => key.to_string()),
            label,
        }
    }

    /// A slot was reserved `wait` ahead of when it is due.
    #[inline]
    pub(crate) fn slot_reserved(&self, wait: Duration) {
        self.slot_wait.record(wait.as_secs_f64());
    }

    /// A call went on the wire.
    #[inline]
    pub(crate) fn sent(&self) {
        self.in_flight.increment(1.0);
    }

    /// A call on the wire was answered (or failed on the way).
    #[inline]
    pub(crate) fn answered(&self, result: &Result<HttpResponse, TransportError>) {
        self.in_flight.decrement(1.0);
        let class = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 429 {
                    self.rate_limited.increment(1);
                }
                usize::from(status / 100).clamp(1, 5) - 1
            }
            Err(_) => 5,
        };
        self.calls[class].increment(1);
    }

    /// The span of one attempt of a job of key `key` in `lane`, planned for `slot`.
    #[inline]
    pub(crate) fn call_span(
        &self,
        key: &crate::key_id::KeyId,
        priority: Priority,
        slot: Instant,
        attempt: u32,
    ) -> tracing::Span {
        tracing::debug_span!(
            "fabraix_call",
            key = %key,
            label = %self.label.label,
            lane = lane_name(priority.lane()),
            slot = ?slot,
            attempt,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_past_the_bound_are_shared_and_released() {
        let set: &'static LabelSet = Box::leak(Box::default());
        let a = KeyLabel::take(set, "a", 2);
        let a_again = KeyLabel::take(set, "a", 2);
        let b = KeyLabel::take(set, "b", 2);
        let c = KeyLabel::take(set, "c", 2);
        assert_eq!(&*a_again.label, "a");
        assert_eq!(&*b.label, "b");
        assert_eq!(&*c.label, OTHER_KEYS);
        drop((a, c));
        // "a" is still used by one key.
        assert_eq!(&*KeyLabel::take(set, "d", 2).label, OTHER_KEYS);
        drop(a_again);
        assert_eq!(&*KeyLabel::take(set, "d", 2).label, "d");
        drop(b);
        assert!(set.in_use.lock().unwrap().is_empty());
    }

    #[test]
    fn answers_are_counted_by_status_class() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let m = KeyMetrics::new("fp-classes");
            let answer = |status: u16| {
                let mut r = HttpResponse::new(bytes::Bytes::new());
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Ok(r)
            };
            for status in [200, 201, 429, 503] {
                m.sent();
                m.answered(&answer(status));
            }
            m.answered(&Err(TransportError::new(
                crate::transport::TransportErrorKind::Connect,
                String::new(),
            )));
        });
        let counts: HashMap<String, u64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => {
                    let key = key.key();
                    let class = key.labels().find(|l| l.key() == "status_class");
                    let name = match class {
                        Some(l) => format!("{}:{}", key.name(), l.value()),
                        None => key.name().to_string(),
                    };
                    Some((name, n))
                }
                _ => None,
            })
            .collect();
        assert_eq!(counts[&format!("{CALLS_TOTAL}:2xx")], 2);
        assert_eq!(counts[&format!("{CALLS_TOTAL}:4xx")], 1);
        assert_eq!(counts[&format!("{CALLS_TOTAL}:5xx")], 1);
        assert_eq!(counts[&format!("{CALLS_TOTAL}:transport_error")], 1);
        assert_eq!(counts[RATE_LIMITED_TOTAL], 1);
    }
}
