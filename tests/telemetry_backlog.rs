//! The telemetry sender under a backlog it cannot send for hours: 50 events/s for 10 simulated
//! minutes on a Development key (60/min, 1,000/hour), over real HTTP on loopback to the mock
//! server, on tokio's paused clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
use fabraix_scheduler::telemetry::{Recorded, TelemetryConfig, TelemetrySender};
use fabraix_scheduler::{
    ActionCheck, ApiKey, Event, EventType, FabraixClient, KeyConfig, KeyId, OutgoingRequest, Quota,
    ReqwestTransport, Scheduler, Transport, TransportConfig, TransportFuture,
};

/// One call the transport made, with the request body (the server's record has no bodies):
/// (path, request body, status, when it went out on the tokio clock).
type Sent = (String, bytes::Bytes, Option<u16>, tokio::time::Instant);

#[derive(Clone)]
struct Recording {
    inner: ReqwestTransport,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl Transport for Recording {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let path = request.uri().path().to_string();
        let body = request.body().clone();
        let log = Arc::clone(&self.log);
        let fut = self.inner.send(request);
        Box::pin(async move {
            let sent_at = tokio::time::Instant::now();
            let result = fut.await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            log.lock().unwrap().push((path, body, status, sent_at));
            result
        })
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fabraix-telemetry-{name}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    h.finish()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(i: u64) -> Event {
    Event::new(
        EventType::Tool,
        "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        &serde_json::json!({ "id": i }),
        &serde_json::json!({"type": "object"}),
        UNIX_EPOCH + Duration::from_secs(1_704_067_200 + i),
    )
    .unwrap()
}

fn event_id(body: &[u8]) -> u64 {
    let outer: serde_json::Value = serde_json::from_slice(body).unwrap();
    let content: serde_json::Value =
        serde_json::from_str(outer["content"].as_str().unwrap()).unwrap();
    content["id"].as_u64().unwrap()
}

async fn setup(
    name: &str,
    config: impl FnOnce(TelemetryConfig) -> TelemetryConfig,
) -> (MockServer, Recording, TelemetrySender, TempDir) {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    // Transport timeouts are real-time guards that mean nothing on tokio's paused clock: the
    // runtime auto-advances to the next timer whenever every task waits, and a request whose
    // bytes are still in the loopback socket then "times out" after 0 s of real time and is
    // retried (at-least-once: a duplicate at the server). Make them longer than the scenario.
    let week = Duration::from_secs(7 * 24 * 3600);
    let patient = TransportConfig::default()
        .connect_timeout(week)
        .request_timeout(week)
        .read_timeout(week);
    let recording = Recording {
        inner: ReqwestTransport::new(patient).unwrap(),
        log: Arc::default(),
    };
    let scheduler = Scheduler::builder()
        .transport(Arc::new(recording.clone()))
        .seed(5)
        .build()
        .unwrap();
    let key = KeyConfig::new(
        "dev",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &server.base_url(),
        Quota::development(),
    )
    .unwrap();
    scheduler.add_key(key).await.unwrap();
    let client = FabraixClient::from_scheduler(scheduler, KeyId::new("dev"));
    let dir = TempDir::new(name);
    let (sender, recovered) = TelemetrySender::open(
        client,
        Quota::development(),
        config(TelemetryConfig::new(&dir.0)),
    )
    .unwrap();
    assert_eq!(recovered.replay, 0);
    (server, recording, sender, dir)
}

/// Sends check number `n` now and asserts that it went out once, at the key's next free slot as
/// planned when it was asked, and was accepted by the server.
///
/// The check is identified by its own body (`n`), never by counting the server's `/check` records:
/// on a Development key the next free slot can be up to a minute away (the key's 60/min window is
/// spent in a burst whenever it reopens), so two checks asked 50 s apart may wait for the same
/// slot and arrive 1 ms apart; a count taken before one of them would include the other.
async fn check_at_next_slot(
    sender: &TelemetrySender,
    server: &MockServer,
    log: &Recording,
    n: u64,
) {
    let key = KeyId::new("dev");
    let scheduler = sender.client().scheduler();
    let planned = scheduler.plan(&key, 1).await.unwrap()[0];
    let check = ActionCheck::new(
        "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        &serde_json::json!({ "cmd": "rm -rf /tmp/x", "n": n }),
        &serde_json::json!({}),
        SystemTime::UNIX_EPOCH,
    )
    .unwrap();
    let verdict = sender.check(&check).await.unwrap();
    assert!(!verdict.action_check_id.is_empty());
    let attempts: Vec<(Option<u16>, tokio::time::Instant)> = log
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, body, _, _)| path == "/v1/check" && check_number(body) == n)
        .map(|&(_, _, status, at)| (status, at))
        .collect();
    assert_eq!(attempts.len(), 1, "check {n} sent once: {attempts:?}");
    let (status, sent_at) = attempts[0];
    assert_eq!(status, Some(200), "check {n}");
    let late = sent_at.saturating_duration_since(planned);
    let early = planned.saturating_duration_since(sent_at);
    assert!(
        late <= Duration::from_millis(50) && early <= Duration::from_millis(50),
        "check {n}: planned slot {planned:?}, sent {sent_at:?} (late {late:?}, early {early:?})"
    );
    // And the server decided it then (same paused clock).
    assert!(
        server.record().iter().any(|c| c.path == "/v1/check"
            && c.status == Some(200)
            && c.arrival.saturating_duration_since(sent_at) <= Duration::from_millis(50)
            && sent_at.saturating_duration_since(c.arrival) <= Duration::from_millis(50)),
        "check {n}: no matching arrival at the server"
    );
}

/// The `n` of a check body built by [`check_at_next_slot`].
fn check_number(body: &[u8]) -> u64 {
    let outer: serde_json::Value = serde_json::from_slice(body).unwrap();
    let content: serde_json::Value =
        serde_json::from_str(outer["content"].as_str().unwrap()).unwrap();
    content["n"].as_u64().unwrap()
}

/// The full scenario of the issue: 50 events/s for 10 simulated minutes (30,000 events against
/// 1,000/hour, ~30 simulated hours to drain), over real HTTP on loopback; a few seconds of wall
/// time.
#[tokio::test(start_paused = true)]
async fn fifty_events_per_second_for_ten_minutes_drain_exactly_once_with_checks_first() {
    backlog_scenario(600).await;
}

async fn backlog_scenario(seconds: u64) {
    let wall = std::time::Instant::now();
    const RATE: u64 = 50;
    let total = RATE * seconds;
    let hours = total as f64 / 1000.0;
    let (server, recording, sender, dir) = setup("backlog", |c| c.memory_capacity(1_000)).await;
    let sender = Arc::new(sender);
    let start = tokio::time::Instant::now();
    let mut checks = Vec::new();
    let mut checks_made = 0u64;

    let mut warned = None;
    for second in 0..seconds {
        for j in 0..RATE {
            let r = sender.record(event(second * RATE + j));
            assert!(r.is_taken(), "{r:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second == 60 {
            let b = sender.backlog().await;
            assert!(b.on_disk > 0, "the backlog spools: {b}");
            warned = b.warning.clone();
            assert!(b.drain_in.unwrap() > Duration::from_secs(2 * 3600), "{b}");
        }
        if second % 50 == 25 {
            // Concurrently: the producer does not wait for the check.
            let (sender, server, log) = (Arc::clone(&sender), server.clone(), recording.clone());
            checks.push(tokio::spawn(async move {
                check_at_next_slot(&sender, &server, &log, second).await
            }));
        }
    }
    for c in checks {
        c.await.unwrap();
        checks_made += 1;
    }
    let warning = warned.expect("arrival-rate warning");
    let text = warning.to_string();
    assert!(
        text.contains("events arrive at 50/s; this key carries at most 0.28/s"),
        "{text}"
    );
    let b = sender.backlog().await;
    assert!(b.waiting() > total * 9 / 10, "{b}");
    println!("after the producer: {b}");
    println!("warning: {text}");

    // Drain, with a check now and then.
    let mut rounds = 0;
    let mut backlog_wall = Duration::ZERO;
    println!("producer phase wall {:?}", wall.elapsed());
    loop {
        tokio::time::sleep(Duration::from_secs(600)).await;
        rounds += 1;
        if rounds % 12 == 0 {
            check_at_next_slot(&sender, &server, &recording, 10_000 + rounds).await;
            checks_made += 1;
        }
        let t = std::time::Instant::now();
        let b = sender.backlog().await;
        backlog_wall += t.elapsed();
        if b.waiting() == 0 {
            break;
        }
        assert!(rounds < 6 * 40, "not drained after 40 simulated hours: {b}");
    }
    let elapsed = start.elapsed();
    println!("backlog() calls wall {backlog_wall:?}");
    let report = sender.shutdown(tokio::time::Instant::now()).await;
    assert_eq!(report.sent, total);
    assert_eq!(report.persisted, 0);
    assert_eq!(report.failed, 0);
    assert_eq!(report.dropped.total(), 0);

    // The server: zero 429, the quota kept in every window, every event exactly once.
    let stats = server.key_stats("test-dev").unwrap();
    assert_eq!(stats.refused, 0, "{stats:?}");
    server.verify().unwrap();
    let accepted_events = server
        .record()
        .iter()
        .filter(|c| c.path == "/v1/event" && c.status == Some(200))
        .count() as u64;
    assert_eq!(accepted_events, total);
    let accepted_checks = server
        .record()
        .iter()
        .filter(|c| c.path == "/v1/check" && c.status == Some(200))
        .count() as u64;
    assert_eq!(accepted_checks, checks_made, "each check exactly once");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for (path, body, status, _) in recording.log.lock().unwrap().iter() {
        if path == "/v1/event" && *status == Some(200) {
            *seen.entry(event_id(body)).or_default() += 1;
        }
    }
    assert_eq!(seen.len() as u64, total);
    assert!(seen.values().all(|&n| n == 1));
    assert!((0..total).all(|i| seen.contains_key(&i)));
    // At 1,000/hour (the first hour also spends its 1,000 in ~17 minutes).
    let simulated_hours = elapsed.as_secs_f64() / 3600.0;
    assert!(
        simulated_hours > hours - 1.0 && simulated_hours < hours + 1.5,
        "{simulated_hours} simulated hours for {total} events"
    );
    let segments = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert!(segments <= 1, "acknowledged segments are removed");
    println!(
        "drained {total} events in {:.1} simulated hours; wall {:?}",
        elapsed.as_secs_f64() / 3600.0,
        wall.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_by_deadline_persists_the_rest_and_a_restart_sends_it() {
    let (server, recording, sender, dir) = setup("shutdown", |c| c.memory_capacity(100)).await;
    for i in 0..500 {
        assert!(sender.record(event(i)).is_taken());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = sender.shutdown(deadline).await;
    assert!(tokio::time::Instant::now() <= deadline + Duration::from_secs(2));
    assert!(report.sent >= 30 && report.sent <= 61, "{report:?}");
    assert_eq!(report.sent + report.persisted, 500, "{report:?}");
    assert!(matches!(sender.record(event(9999)), Recorded::Closed(_)));
    // The same scheduler (its ledger remembers the calls already made in this hour).
    let client = sender.client().clone();
    drop(sender);

    // A new sender on the same spool sends the rest, and nothing twice.
    let (sender, recovered) =
        TelemetrySender::open(client, Quota::development(), TelemetryConfig::new(&dir.0)).unwrap();
    assert_eq!(recovered.replay, report.persisted);
    assert!(!recovered.torn_tail());
    let report2 = sender
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(3600))
        .await;
    assert_eq!(report2.sent, report.persisted);
    assert_eq!(report2.persisted, 0);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for (path, body, status, _) in recording.log.lock().unwrap().iter() {
        if path == "/v1/event" && *status == Some(200) {
            *seen.entry(event_id(body)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 500);
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(server.key_stats("test-dev").unwrap().refused, 0);
    server.shutdown().await;
}

/// Group commit: a spooled event is durable (`durable_through() >= seq`) within `commit_delay`,
/// at once after `commit_records` events or when someone waits for it, and never before it is
/// written.
#[tokio::test(start_paused = true)]
async fn spooled_events_become_durable_by_age_by_count_or_on_demand() {
    let (server, _recording, sender, _dir) = setup("durable", |c| {
        c.memory_capacity(0)
            .commit_records(8)
            .commit_delay(Duration::from_millis(5))
    })
    .await;
    let spool = |i| match sender.record(event(i)) {
        Recorded::Spooled(seq) => seq,
        other => panic!("{other:?}"),
    };
    // By age.
    let first = spool(0);
    assert!(
        sender.durable_through() < first,
        "buffered, not yet written"
    );
    // (The feeder may make it durable sooner: reading it commits the buffer.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(sender.durable_through() >= first, "within commit_delay");
    // By count: the 8th buffered record makes the writer commit without waiting.
    let t0 = tokio::time::Instant::now();
    let batch: Vec<u64> = (1..=8).map(spool).collect();
    assert!(sender.durable_through() < batch[0]);
    for _ in 0..10 {
        tokio::task::yield_now().await; // the writer task runs; no time passes
    }
    assert!(sender.durable_through() >= batch[7]);
    assert_eq!(tokio::time::Instant::now(), t0, "no commit_delay wait");
    // On demand.
    let last = spool(9);
    assert!(sender.wait_durable(last).await);
    assert_eq!(tokio::time::Instant::now(), t0, "no commit_delay wait");
    assert!(sender.durable_through() >= last);
    assert!(!sender.wait_durable(last + 1_000).await, "never issued");
    let report = sender.shutdown(tokio::time::Instant::now()).await;
    assert_eq!(report.sent + report.persisted, 10, "{report:?}");
    server.shutdown().await;
}
