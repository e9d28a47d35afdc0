//! The scheduler's metrics, recorded by metrics-util's debugging recorder while it sends to the
//! mock server on tokio's paused clock.

mod common;

use common::{event, rig_with};
use fabraix_scheduler::mock::{KeyProfile, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::scheduler_metrics::{
    CALLS_TOTAL, IN_FLIGHT, QUEUE_DEPTH, RATE_LIMITED_TOTAL, SLOT_WAIT_SECONDS,
};
use fabraix_scheduler::{ApiKey, Quota, RetryPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// What a debugging recorder has recorded, accumulated over its snapshots (each snapshot drains
/// the recorder: counters and gauges start again from 0, histograms empty). The scheduler only
/// adds to its gauges, so their sums are their values.
struct Recorded {
    snapshotter: Snapshotter,
    /// By metric: its labels and value.
    seen: Vec<(metrics::Key, DebugValue)>,
}

impl Recorded {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            seen: Vec::new(),
        }
    }

    /// Takes a snapshot and adds it to what was seen.
    fn refresh(&mut self) -> &Self {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key().clone();
            match self.seen.iter_mut().find(|(k, _)| *k == key) {
                None => self.seen.push((key, value)),
                Some((_, old)) => match (old, value) {
                    (DebugValue::Counter(a), DebugValue::Counter(b)) => *a += b,
                    (DebugValue::Gauge(a), DebugValue::Gauge(b)) => *a += b,
                    (DebugValue::Histogram(a), DebugValue::Histogram(b)) => a.extend(b),
                    (old, new) => panic!("{key:?} changed kind: {old:?} then {new:?}"),
                },
            }
        }
        self
    }

    /// The value of metric `name` whose labels include every one of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.seen
            .iter()
            .find(|(key, _)| {
                key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {:?}", self.seen))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(name, labels) {
            DebugValue::Histogram(h) => h.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn calls_queue_depth_slot_waits_and_in_flight_are_recorded_per_key() {
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    // In force on this (the runtime's only) thread while the key is added.
    let _in_force = metrics::set_default_local_recorder(&recorder);
    let quota: Quota = "2/1s".parse().unwrap();
    let builder = MockServer::builder().key(TEST_DEV_KEY, quota.clone());
    let rig = rig_with(builder, TEST_DEV_KEY, quota, RetryPolicy::default(), |c| c).await;
    let fingerprint = ApiKey::new(TEST_DEV_KEY).unwrap().fingerprint().to_string();
    let key = [("key", fingerprint.as_str())];
    let mut tickets = Vec::new();
    for i in 0..6 {
        tickets.push(rig.scheduler.submit(&rig.key, event(i)).await.unwrap());
    }
    let normal = [("key", fingerprint.as_str()), ("lane", "normal")];
    let queued = recorded.refresh().gauge(QUEUE_DEPTH, &normal);
    assert!((4.0..=6.0).contains(&queued), "queued {queued}");
    for ticket in tickets {
        ticket.await.expect("success");
    }
    let ok = [("key", fingerprint.as_str()), ("status_class", "2xx")];
    recorded.refresh();
    assert_eq!(recorded.counter(CALLS_TOTAL, &ok), 6);
    assert_eq!(recorded.counter(RATE_LIMITED_TOTAL, &key), 0);
    assert_eq!(recorded.gauge(QUEUE_DEPTH, &normal), 0.0);
    assert_eq!(recorded.gauge(IN_FLIGHT, &key), 0.0);
    let waits = recorded.histogram(SLOT_WAIT_SECONDS, &key);
    assert_eq!(waits.len(), 6, "one per slot: {waits:?}");
    // Two a second: the later slots were reserved ahead of when they were due.
    let longest = waits.iter().copied().fold(0.0, f64::max);
    assert!(longest >= 0.4, "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn refused_calls_are_counted_under_the_users_label() {
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let _in_force = metrics::set_default_local_recorder(&recorder);
    // The server allows one call a second; the key is told five.
    let builder = MockServer::builder().key(TEST_DEV_KEY, KeyProfile::new("1/1s".parse().unwrap()));
    let rig = rig_with(
        builder,
        TEST_DEV_KEY,
        "5/1s".parse().unwrap(),
        RetryPolicy::default(),
        |c| c.metrics_label("tenant-7"),
    )
    .await;
    let mut tickets = Vec::new();
    for i in 0..4 {
        tickets.push(rig.scheduler.submit(&rig.key, event(i)).await.unwrap());
    }
    for ticket in tickets {
        ticket.await.expect("success after the 429s");
    }
    let refused = rig.server.refused();
    recorded.refresh();
    assert!(refused > 0, "the server refused nothing");
    let label = [("key", "tenant-7")];
    assert_eq!(recorded.counter(RATE_LIMITED_TOTAL, &label), refused);
    let four = [("key", "tenant-7"), ("status_class", "4xx")];
    assert_eq!(recorded.counter(CALLS_TOTAL, &four), refused);
    let ok = [("key", "tenant-7"), ("status_class", "2xx")];
    assert_eq!(recorded.counter(CALLS_TOTAL, &ok), 4);
}
