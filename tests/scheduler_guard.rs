//! A latency guard that follows the spread of the key's send-to-answer times
//! (`KeyConfig::guard_from_latency`), over real HTTP to the strict mock on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{rig_with, Rig};
use fabraix_scheduler::mock::{Faults, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{Instant, Quota, RetryPolicy};

async fn guard_rig(quota: &str, faults: Faults, follow: bool) -> Rig {
    let quota: Quota = quota.parse().unwrap();
    rig_with(
        MockServer::builder()
            .key(TEST_DEV_KEY, quota.clone())
            .faults(faults),
        TEST_DEV_KEY,
        quota,
        RetryPolicy::default(),
        |c| if follow { c.guard_from_latency() } else { c },
    )
    .await
}

/// Sends `n` events and returns how long from the first arrival to the last.
async fn send_all(rig: &Rig, n: usize) -> Duration {
    for t in common::submit_events(rig, n).await {
        t.await.unwrap();
    }
    let arrivals: Vec<Instant> = rig.server.record().iter().map(|c| c.arrival).collect();
    assert_eq!(arrivals.len(), n);
    arrivals[n - 1] - arrivals[0]
}

#[tokio::test(start_paused = true)]
async fn a_fast_quiet_key_waits_a_millisecond_at_each_window_not_the_default_guard() {
    let followed = guard_rig("20/1s", Faults::none(), true).await;
    let elapsed = send_all(&followed, 400).await;
    let stats = followed.scheduler.stats(&followed.key).unwrap();
    // Answers in no time (virtual): no spread, the guard at its floor of 1 ms.
    assert_eq!(stats.guard, Duration::from_millis(1));
    assert_eq!(stats.latency_spread, Some(Duration::ZERO));
    assert_eq!(stats.rate_limited, 0);
    followed.server.verify().unwrap();
    // The same calls with the fixed default guard (100 ms at each of 19 window edges).
    let fixed = guard_rig("20/1s", Faults::none(), false).await;
    let fixed_elapsed = send_all(&fixed, 400).await;
    let fixed_stats = fixed.scheduler.stats(&fixed.key).unwrap();
    assert_eq!(fixed_stats.guard, Duration::from_millis(100));
    assert_eq!(fixed_stats.latency_spread, None);
    assert!(
        elapsed + Duration::from_millis(1_000) < fixed_elapsed,
        "following {elapsed:?}, fixed {fixed_elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_answers_vary_keeps_a_guard_that_covers_the_spread_and_draws_no_429() {
    let faults = Faults {
        latency: Duration::from_millis(40),
        latency_jitter: Duration::from_millis(30),
        ..Faults::none()
    };
    let rig = guard_rig("20/1s", faults, true).await;
    send_all(&rig, 400).await;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    let spread = stats.latency_spread.expect("measured");
    assert!(
        spread >= Duration::from_millis(25),
        "answers 40–70 ms after they went: spread {spread:?}"
    );
    // Twice the spread, at most a tenth of the 1 s window.
    assert!(
        stats.guard >= Duration::from_millis(50) && stats.guard <= Duration::from_millis(100),
        "{:?}",
        stats.guard
    );
    assert_eq!(stats.rate_limited, 0);
    rig.server.verify().unwrap();
}
