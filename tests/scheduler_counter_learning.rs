//! Learning that the server is a sliding-window counter (see `src/scheduler/counter_learning.rs`),
//! against the real mock server over loopback HTTP, on tokio's paused clock: from its
//! `X-RateLimit-*` headers before any refusal, from its first refusal where it sends none, and
//! never on a server of another model.

mod common;

use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ServerModel, TEST_DEV_KEY};
use fabraix_scheduler::{
    Instant, KeyStats, LearnedFrom, Quota, RetryPolicy, ShutdownMode, WindowSemantics,
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
