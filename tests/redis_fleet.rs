//! Several schedulers, each with its own connection to one real redis-server (as separate
//! processes would), share one API key against the mock server in its strict sliding-log
//! model: together they get no 429 and send at the quota's rate.

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ServerModel};
use fabraix_scheduler::{
    ApiKey, KeyConfig, KeyId, Ledger, LedgerConfig, Quota, RedisLedgerStore, RedisStoreConfig,
    Scheduler, TokioClock,
};
use redis_support::RedisServer;

const SECRET: &str = "fleet-secret-1";
const GUARD: Duration = Duration::from_millis(100);

async fn member(
    redis_url: &str,
    base_url: &str,
    quota: &Quota,
    id: &str,
    config: RedisStoreConfig,
) -> Scheduler<RedisLedgerStore> {
    let clock = Arc::new(TokioClock::new());
    let store = RedisLedgerStore::connect_with(redis_url, config)
        .await
        .expect("connects")
        .with_clock(clock.clone());
    let scheduler = Scheduler::builder()
        .clock(clock)
        .transport_config(common::patient_transport())
        .store(store)
        .build()
        .unwrap();
    // Each member names the key its own way: the shared state follows the API key. The guard
    // covers a loaded machine's delays between a slot and its arrival (2 cores, many builds).
    let config = KeyConfig::new(
        KeyId::new(id),
        ApiKey::new(SECRET).unwrap(),
        base_url,
        quota.clone(),
    )
    .unwrap()
    .guard(GUARD);
    scheduler.add_key(config).await.unwrap();
    scheduler
}

/// Every member sends `per_member` events; returns when all succeeded.
async fn run_fleet(members: &[Scheduler<RedisLedgerStore>], ids: &[String], per_member: usize) {
    let mut tickets = Vec::new();
    for (s, id) in members.iter().zip(ids) {
        for i in 0..per_member {
            tickets.push(s.submit(&KeyId::new(id), common::event(i)).await.unwrap());
        }
    }
    for t in tickets {
        t.await.expect("every job succeeds");
    }
}

/// The span a lone in-process ledger plans for `n` calls of `quota`: the fleet's target.
fn ideal_span(quota: &Quota, n: usize) -> Duration {
    let now = tokio::time::Instant::now();
    let config = LedgerConfig {
        guard: Some(GUARD),
        ..LedgerConfig::default()
    };
    let plan = Ledger::new(quota, config, now).plan(now, n);
    plan[n - 1] - plan[0]
}

fn arrival_span(server: &MockServer) -> Duration {
    let record = server.record();
    let first = record.iter().map(|c| c.arrival).min().unwrap();
    let last = record.iter().map(|c| c.arrival).max().unwrap();
    last - first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_schedulers_on_one_key_get_no_429_and_the_quotas_rate() {
    let redis = RedisServer::start();
    let quota: Quota = "20/400ms,60/2s".parse().unwrap();
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("worker-{i}")).collect();
    let mut members = Vec::new();
    for id in &ids {
        members.push(
            member(
                &redis.url(),
                &server.base_url(),
                &quota,
                id,
                RedisStoreConfig::default(),
            )
            .await,
        );
    }
    let per_member = 30;
    run_fleet(&members, &ids, per_member).await;
    let n = per_member * members.len();
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    assert_eq!(server.record().len(), n);
    let ideal = ideal_span(&quota, n);
    let actual = arrival_span(&server);
    let ratio = ideal.as_secs_f64() / actual.as_secs_f64();
    eprintln!("fleet of 4: {n} calls in {actual:?}, a lone ledger plans {ideal:?}: {ratio:.4}x the quota's rate");
    assert!(ratio >= 0.98, "{ratio:.4}: {actual:?} against {ideal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_outlives_a_redis_killed_mid_run_and_restarted_empty() {
    if std::env::var("FLEET_DEBUG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .try_init();
    }
    let mut redis = RedisServer::start();
    // The long window is full when Redis dies: restarted empty and not told, it would let the
    // fleet send again long before the window ends.
    let quota: Quota = "10/500ms,30/4s".parse().unwrap();
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("worker-{i}")).collect();
    let mut members = Vec::new();
    for id in &ids {
        members.push(
            member(
                &redis.url(),
                &server.base_url(),
                &quota,
                id,
                RedisStoreConfig::default(),
            )
            .await,
        );
    }
    let fleet = {
        let members = members.clone();
        let ids = ids.clone();
        tokio::spawn(async move { run_fleet(&members, &ids, 20).await })
    };
    // Mid-run (20 calls sent, 10 more due at 1 s), Redis dies and comes back empty while the
    // fleet reserves.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sent_before = server.record().len();
    let port = redis.port;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _redis = RedisServer::start_on(port);
    fleet.await.expect("every job succeeds");
    if std::env::var("FLEET_DEBUG").is_ok() {
        let record = server.record();
        let t0 = record.iter().map(|c| c.arrival).min().unwrap();
        for c in &record {
            eprintln!("{:>8.3} {:?}", (c.arrival - t0).as_secs_f64(), c.status);
        }
    }
    assert_eq!(sent_before, 20, "killed mid-run");
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    assert_eq!(server.record().len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_loses_no_job() {
    let redis = RedisServer::start();
    let quota: Quota = "10/500ms,30/2s".parse().unwrap();
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = (0..2).map(|i| format!("worker-{i}")).collect();
    let mut members = Vec::new();
    for id in &ids {
        members.push(
            member(
                &redis.url(),
                &server.base_url(),
                &quota,
                id,
                RedisStoreConfig::default(),
            )
            .await,
        );
    }
    let fleet = {
        let members = members.clone();
        let ids = ids.clone();
        tokio::spawn(async move { run_fleet(&members, &ids, 25).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    fleet.await.expect("every job succeeds");
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    assert_eq!(server.record().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_tells_a_redis_restarted_empty_its_calls_before_the_others_send() {
    let mut redis = RedisServer::start();
    // The long window is what the idle member filled: its calls count for 4 s after it sent.
    let quota: Quota = "10/300ms,20/4s".parse().unwrap();
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("worker-{i}")).collect();
    let mut members = Vec::new();
    for id in &ids {
        members.push(
            member(
                &redis.url(),
                &server.base_url(),
                &quota,
                id,
                RedisStoreConfig::default(),
            )
            .await,
        );
    }
    run_fleet(&members[..1], &ids[..1], 20).await;
    // Redis loses the state while the member that sent is idle; the others then send. The new
    // state must hear of the idle member's calls before it hands out a slot.
    let port = redis.port;
    redis.kill();
    let _redis = RedisServer::start_on(port);
    run_fleet(&members[1..], &ids[1..], 10).await;
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    assert_eq!(server.record().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_member_pauses_the_others_for_its_retry_after_once() {
    let redis = RedisServer::start();
    let quota: Quota = "50/1s".parse().unwrap();
    let retry_after = Duration::from_secs(2);
    // The first call is refused with Retry-After: 2.
    let refusal = fabraix_scheduler::mock::ScriptedResponse::json(
        429,
        serde_json::json!({"error": {"code": "rate_limited", "retry_after": 2}}),
    )
    .header("retry-after", "2");
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .script("/event", vec![refusal])
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("worker-{i}")).collect();
    let mut members = Vec::new();
    for id in &ids {
        members.push(
            member(
                &redis.url(),
                &server.base_url(),
                &quota,
                id,
                RedisStoreConfig::default(),
            )
            .await,
        );
    }
    let started = tokio::time::Instant::now();
    let refused = members[0]
        .submit(&KeyId::new(&ids[0]), common::event(0))
        .await
        .unwrap();
    // The 429 reaches the first member and its pause the shared state a moment after the server
    // sent it; a call another member sends in that moment is in flight before anyone could know
    // (no client can help that). So the others start once the pause is in the shared state: a
    // member's plan of its next slot shows it.
    let other = KeyId::new(&ids[1]);
    let deadline = started + Duration::from_secs(10);
    loop {
        let next = members[1].plan(&other, 1).await.unwrap();
        if next
            .first()
            .is_some_and(|&slot| slot >= started + retry_after)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pause never reached the shared state"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        server.scripted_served() >= 1,
        "the pause came from the refusal"
    );
    // The others, which saw no 429, send only once the first member's pause is over; and the
    // pause is waited for once (the first member's retry does not wait again after it).
    let seen = tokio::time::Instant::now();
    run_fleet(&members[1..], &ids[1..], 3).await;
    refused.await.expect("the refused call is sent again");
    let record = server.record();
    assert_eq!(record.len(), 7);
    let first = record.iter().map(|c| c.arrival).min().unwrap();
    let last = record.iter().map(|c| c.arrival).max().unwrap();
    assert!(first >= started + retry_after, "{:?}", first - started);
    assert!(last < seen + 2 * retry_after, "{:?}", last - seen);
}
