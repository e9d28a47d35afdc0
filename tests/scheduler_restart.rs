//! A program that stops and starts again: the second run is told of the first run's calls
//! (`KeyConfig::sent_earlier`) and keeps the windows the server still holds — over real HTTP to
//! the mock server (a sliding log), on tokio's paused clock.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{event, patient_transport};
use fabraix_scheduler::mock::{KeyProfile, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{
    ApiKey, Clock, Instant, KeyConfig, KeyId, Quota, Scheduler, ShutdownMode, TokioClock,
};

const LABEL: &str = "restart";

/// The mock server (a 5/10s sliding log), its URL, and the clock every run shares.
async fn start() -> (MockServer, String, Arc<dyn Clock>) {
    let server = MockServer::builder()
        .key(
            TEST_DEV_KEY,
            KeyProfile::new("5/10s".parse::<Quota>().unwrap()).label(LABEL),
        )
        .start()
        .await
        .unwrap();
    let base = server.base_url();
    // A wall clock of its own that follows tokio's paused clock only (not the system's), so that
    // the ages read from wall-clock times are exact.
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    (server, base, Arc::new(TokioClock::with_wall_time(wall)))
}

/// One run of the program: a scheduler on the shared clock with the key, told of `earlier`.
async fn run(clock: &Arc<dyn Clock>, base: &str, earlier: &[SystemTime]) -> (Scheduler, KeyId) {
    run_with(clock, base, |c| c.sent_earlier(earlier.iter().copied())).await
}

/// One run of the program keeping its key's calls in the journal at `journal`.
async fn run_with_journal(
    clock: &Arc<dyn Clock>,
    base: &str,
    journal: &std::path::Path,
) -> (Scheduler, KeyId) {
    run_with(clock, base, |c| c.call_journal(journal)).await
}

/// A scheduler on the shared clock with the key (5/10s), configured by `configure`.
async fn run_with(
    clock: &Arc<dyn Clock>,
    base: &str,
    configure: impl FnOnce(KeyConfig) -> KeyConfig,
) -> (Scheduler, KeyId) {
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .clock(Arc::clone(clock))
        .seed(7)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        base,
        "5/10s".parse::<Quota>().unwrap(),
    )
    .unwrap();
    scheduler.add_key(configure(config)).await.unwrap();
    (scheduler, key)
}

/// Sends `n` events and returns when each went (the scheduler's clock).
async fn send(scheduler: &Scheduler, key: &KeyId, n: usize) -> Vec<Instant> {
    let mut tickets = Vec::new();
    for i in 0..n {
        tickets.push(scheduler.submit(key, event(i)).await.unwrap());
    }
    let mut sent = Vec::new();
    for t in tickets {
        sent.push(t.await.unwrap().sent_at);
    }
    sent
}

/// Each of `sent` went once the calls made at `t0` had left the 10 s window (plus the 100 ms
/// guard), and no later than that (within 5 ms: ages are read from wall-clock times).
fn after_the_window(sent: &[Instant], t0: Instant) {
    let due = t0 + Duration::from_secs(10) + Duration::from_millis(100);
    for &s in sent {
        assert!(
            s >= due && s < due + Duration::from_millis(5),
            "{:?}",
            s - t0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_run_keeps_the_windows_of_the_run_before_and_is_never_refused() {
    let (server, base, clock) = start().await;

    // Run 1 fills the 10 s window, then stops.
    let (first, key) = run(&clock, &base, &[]).await;
    let t0 = clock.now();
    let sent = send(&first, &key, 5).await;
    assert!(sent.iter().all(|&s| s == t0), "an idle key sends at once");
    first.shutdown(ShutdownMode::Drain).await;
    let wall_of = |at: Instant| clock.wall_now() - clock.now().saturating_duration_since(at);
    let earlier: Vec<SystemTime> = sent.iter().map(|&s| wall_of(s)).collect();

    // Run 2 starts 3 s later, told of run 1's calls: it waits for them to leave the window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (second, key) = run(&clock, &base, &earlier).await;
    let resent = send(&second, &key, 5).await;
    after_the_window(&resent, t0);
    second.shutdown(ShutdownMode::Drain).await;
    let stats = server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (10, 0));
    assert!(server.verify().is_ok());

    // The same restart without the earlier calls is refused: run 3 starts at once after run 2.
    let (third, key) = run(&clock, &base, &[]).await;
    send(&third, &key, 5).await;
    third.shutdown(ShutdownMode::Drain).await;
    assert!(server.key_stats(LABEL).unwrap().refused > 0);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn earlier_calls_older_than_the_window_or_from_the_future_are_read_safely() {
    let (server, base, clock) = start().await;
    let now = clock.wall_now();
    // Four calls an hour ago count no more; one "in a minute" (a clock set differently) counts as
    // sent now.
    let mut earlier = vec![now - Duration::from_secs(3600); 4];
    earlier.push(now + Duration::from_secs(60));
    let (scheduler, key) = run(&clock, &base, &earlier).await;
    let t0 = clock.now();
    let sent = send(&scheduler, &key, 5).await;
    // Four go at once (the window has room for 4 beside the call counted as now); the fifth
    // waits for that call to leave the window.
    assert_eq!(sent.iter().filter(|&&s| s == t0).count(), 4);
    assert!(
        sent[4] >= t0 + Duration::from_secs(10),
        "{:?}",
        sent[4] - t0
    );
    scheduler.shutdown(ShutdownMode::Drain).await;
    assert_eq!(server.key_stats(LABEL).unwrap().refused, 0);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_key_with_a_call_journal_restarts_without_being_told_anything() {
    let (server, base, clock) = start().await;
    let dir = std::env::temp_dir().join(format!("fbx-restart-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("calls");

    // Run 1 fills the window and is dropped without a shutdown (as a killed process would be).
    let (first, key) = run_with_journal(&clock, &base, &journal).await;
    let t0 = clock.now();
    let sent = send(&first, &key, 5).await;
    assert!(sent.iter().all(|&s| s == t0));
    drop(first);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 5 * 8);

    // Run 2, 3 s later, with the same journal and nothing else.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (second, key) = run_with_journal(&clock, &base, &journal).await;
    let resent = send(&second, &key, 5).await;
    after_the_window(&resent, t0);
    second.shutdown(ShutdownMode::Drain).await;
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 10 * 8);
    let stats = server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (10, 0));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two threads add the same key with the same journal at the same moment, 50 times over: both
/// adds succeed (one adds, the other rotates) and the key is there. Without adds of one id taken
/// one at a time, the second found the first's journal locked (an error) in the first round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_added_twice_at_once_is_one_key() {
    let dir = std::env::temp_dir().join(format!("fbx-add-twice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..50 {
        let scheduler = Scheduler::builder().seed(round).build().unwrap();
        let config = KeyConfig::new(
            "twice",
            ApiKey::new(TEST_DEV_KEY).unwrap(),
            "http://127.0.0.1:9/v1",
            "5/10s".parse::<Quota>().unwrap(),
        )
        .unwrap()
        .call_journal(dir.join(format!("calls-{round}")));
        // Two threads of their own, released together (tasks on the runtime's workers would run
        // one after the other: the woken one waits in its waker's worker).
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let runtime = tokio::runtime::Handle::current();
        let adds: Vec<_> = (0..2)
            .map(|_| {
                let (scheduler, config, barrier, runtime) = (
                    scheduler.clone(),
                    config.clone(),
                    Arc::clone(&barrier),
                    runtime.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    barrier.wait();
                    runtime.block_on(scheduler.add_key(config))
                })
            })
            .collect();
        for add in adds {
            let added = add.await.unwrap();
            assert!(added.is_ok(), "round {round}: {added:?}");
        }
        assert!(scheduler.key(&KeyId::new("twice")).is_some());
        scheduler.shutdown(ShutdownMode::ReturnUnsent).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
