//! Learning that the server is a sliding-window counter (see `src/scheduler/counter_learning.rs`),
//! against the real mock server over loopback HTTP, on tokio's paused clock: from its
//! `X-RateLimit-*` headers before any refusal, from its first refusal where it sends none, never
//! on a server of another model (nor where another client shares the key), and back to the
//! window log once a sliding log refuses what the counter sent.

mod common;

use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ScriptedResponse, ServerModel, TEST_DEV_KEY};
use fabraix_scheduler::{
    ApiKey, Instant, KeyConfig, KeyId, KeyStats, LearnedFrom, Quota, RetryPolicy, Scheduler,
    ShutdownMode, WindowSemantics,
};

/// The counter's minimum for 1,000 Development calls: 60 at once, then 59 a minute (the previous
/// window's 60 or 59 weigh in): 1,014.9 s (`cargo run --release --example makespan`).
const COUNTER_MINIMUM_1000_DEV: Duration = Duration::from_millis(1_014_900);

/// `n` calls on a Development key against a mock of `model` (counting refused calls if
/// `count_refused`, sending `X-RateLimit-*` headers if `headers`): the makespan, the 429s and
/// the key's stats. Every call succeeds and the server never counts more than its quota.
async fn batch(
    model: ServerModel,
    count_refused: bool,
    headers: bool,
    n: usize,
) -> (Duration, u64, KeyStats) {
    let quota = Quota::development();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .model(model)
        .count_refused(count_refused)
        .ratelimit_headers(headers);
    let rig = common::rig_with(builder, TEST_DEV_KEY, quota, RetryPolicy::default(), |c| c).await;
    let start = Instant::now();
    common::send_events(&rig, n).await;
    let elapsed = Instant::now() - start;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(stats.succeeded, n as u64, "{model}");
    let refused = rig.server.refused();
    rig.scheduler.shutdown(ShutdownMode::Drain).await;
    rig.server.shutdown().await;
    (elapsed, refused, stats)
}

/// The hour-late case, where the server tells its state: a counter that counts refused calls and
/// a batch of the hour's whole count. Its headers show the counter on the first answers (a reset
/// beyond the minute), so the key plans against the counter's estimate before any refusal: never
/// refused, within 2 % of the minimum, where one refusal would have cost the hour.
#[tokio::test(start_paused = true)]
async fn a_counter_that_sends_headers_is_learned_before_any_refusal() {
    let (elapsed, refused, stats) =
        batch(ServerModel::SlidingWindowCounter, true, true, 1_000).await;
    assert_eq!(refused, 0);
    let learned = stats.learned_semantics.expect("learned");
    assert_eq!(
        (learned.semantics, learned.from),
        (WindowSemantics::SlidingWindowCounter, LearnedFrom::Headers)
    );
    assert_eq!(stats.semantics, WindowSemantics::SlidingWindowCounter);
    assert_eq!(stats.paced, None);
    assert!(
        elapsed >= COUNTER_MINIMUM_1000_DEV && elapsed <= COUNTER_MINIMUM_1000_DEV.mul_f64(1.02),
        "{elapsed:?}"
    );
}

/// Without headers, on a counter that does not count refused calls: the first burst after a full
/// window draws one 429 (where the window log had room and a counter of the same calls had none).
/// One refusal may have another cause, so the key does not switch on it: it paces at the
/// counter's own rate, which the counter accepts — one 429 in all, within 2 % of the minimum.
#[tokio::test(start_paused = true)]
async fn a_counter_without_headers_is_paced_at_its_rate_after_its_first_refusal() {
    let (elapsed, refused, stats) =
        batch(ServerModel::SlidingWindowCounter, false, false, 1_000).await;
    assert_eq!(refused, 1);
    assert_eq!(stats.learned_semantics, None, "one refusal is not proof");
    assert!(stats.paced.is_some(), "paced after the refusal");
    assert!(
        elapsed <= COUNTER_MINIMUM_1000_DEV.mul_f64(1.02),
        "{elapsed:?}"
    );
}

/// No false positive: on a sliding-log, fixed-window or token-bucket server sending headers, a
/// Development batch past the hour's count (so that both limits' headers come) never switches
/// the key, which is never refused.
#[tokio::test(start_paused = true)]
async fn servers_of_other_models_are_never_taken_for_counters() {
    for model in [
        ServerModel::SlidingLog,
        ServerModel::FixedWindow,
        ServerModel::TokenBucket,
    ] {
        for headers in [true, false] {
            let (elapsed, refused, stats) = batch(model, true, headers, 1_100).await;
            assert_eq!(stats.learned_semantics, None, "{model}, headers {headers}");
            assert_eq!(refused, 0, "{model}, headers {headers}");
            // The hour's 1,000 first, then the rest an hour after the first call.
            assert!(
                elapsed >= Duration::from_secs(3_600),
                "{model}, headers {headers}: {elapsed:?}"
            );
        }
    }
}

/// Another scheduler on the same key and server (another process of the user's, say).
async fn other_client(server: &MockServer, quota: Quota) -> Scheduler {
    let scheduler = Scheduler::builder()
        .transport_config(common::patient_transport())
        .seed(7)
        .build()
        .unwrap();
    let config = KeyConfig::new(
        KeyId::new("other"),
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &server.base_url(),
        quota,
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    scheduler
}

/// Other clients' calls lower the remaining of any server: on a sliding log sending headers, a
/// key sharing its quota with another scheduler sees a remaining below its own log's after a
/// window boundary, where its counter's figure is as low. That is no counter: it never
/// switches, and nothing is refused.
#[tokio::test(start_paused = true)]
async fn a_sliding_log_shared_with_another_client_is_never_taken_for_a_counter() {
    let quota = Quota::development();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .ratelimit_headers(true);
    let rig = common::rig_with(
        builder,
        TEST_DEV_KEY,
        quota.clone(),
        RetryPolicy::default(),
        |c| c,
    )
    .await;
    let other = other_client(&rig.server, quota).await;
    let start = Instant::now();
    // 55 of the minute's 60 at once; the other client takes 5 half a minute on; the key's next
    // 55 a minute after its first, when its own log is empty and the server holds the other 5.
    common::send_events(&rig, 55).await;
    tokio::time::sleep_until(start + Duration::from_secs(30)).await;
    for i in 0..5 {
        other
            .submit(&KeyId::new("other"), common::event(i))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    tokio::time::sleep_until(start + Duration::from_secs(61)).await;
    common::send_events(&rig, 55).await;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(stats.learned_semantics, None);
    assert_eq!(stats.semantics, WindowSemantics::Sliding);
    let theirs = other.stats(&KeyId::new("other")).unwrap();
    assert_eq!(theirs.learned_semantics, None, "the other client");
    assert_eq!(rig.server.refused(), 0);
    other.shutdown(ShutdownMode::Drain).await;
    rig.scheduler.shutdown(ShutdownMode::Drain).await;
    rig.server.shutdown().await;
}

/// A sliding log first taken for a counter (its first answer, scripted, shows a counter's reset),
/// then recognised: one call at 0 s and nine at 9 s, and the counter's reading sends one at
/// 11.1 s and one at 12.1 s, where the log holds ten. The server refuses that one; the key goes
/// back to its window log, which recorded every call meanwhile, and is refused nothing more.
#[tokio::test(start_paused = true)]
async fn a_sliding_log_taken_for_a_counter_is_recognised_on_its_first_refusal() {
    let quota: Quota = "10/10s".parse().unwrap();
    let counter_like = ScriptedResponse::json(
        200,
        serde_json::json!({"event_id": "00000000-0000-4000-8000-000000000001", "timestamp": 1.0}),
    )
    .header("x-ratelimit-limit", "10")
    .header("x-ratelimit-remaining", "9")
    .header("x-ratelimit-reset", "20");
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(false)
        .script("/event", [counter_like]);
    let rig = common::rig_with(
        builder,
        TEST_DEV_KEY,
        quota.clone(),
        RetryPolicy::default(),
        |c| c,
    )
    .await;
    let start = Instant::now();
    common::send_events(&rig, 1).await;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(
        stats.semantics,
        WindowSemantics::SlidingWindowCounter,
        "mistaken"
    );
    tokio::time::sleep_until(start + Duration::from_secs(9)).await;
    common::send_events(&rig, 30).await;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(stats.succeeded, 31);
    let learned = stats.learned_semantics.expect("learned");
    assert_eq!(
        (learned.semantics, learned.from),
        (WindowSemantics::Sliding, LearnedFrom::Refusals)
    );
    assert_eq!(stats.semantics, WindowSemantics::Sliding);
    assert_eq!(rig.server.refused(), 1, "one refusal, none after it");
    rig.server.verify().unwrap();
    // Every call the key sent after the refusal kept N per W with those before it (the scripted
    // answer's call counted too, as the key did).
    let mut sent: Vec<Instant> = rig
        .server
        .arrivals(&fabraix_scheduler::mock::key_fingerprint(TEST_DEV_KEY));
    assert_eq!(sent.len(), 30);
    sent.push(start);
    sent.sort();
    for (i, &t) in sent.iter().enumerate() {
        let within = sent[i..]
            .iter()
            .take_while(|&&u| u < t + Duration::from_secs(10))
            .count();
        assert!(within <= 10, "{within} calls from {:?}", t - start);
    }
    rig.scheduler.shutdown(ShutdownMode::Drain).await;
    rig.server.shutdown().await;
}
