//! Removing a key (`Scheduler::remove_key`): its jobs end as the mode says, other keys go on, its
//! journal is let go, and the key added again counts the calls it made — over real HTTP to the
//! mock server (a sliding log) on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{event, patient_transport, rig, submit_events, Rig};
use fabraix_scheduler::mock::{KeyProfile, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{
    ApiKey, Instant, JobError, KeyConfig, KeyId, LedgerStore, Quota, Scheduler, ShutdownMode,
    SubmitError,
};

const LABEL: &str = "removed";

/// A scheduler with one key ("k") on a mock server enforcing `quota`.
async fn quota_rig(quota: &str) -> Rig {
    let quota: Quota = quota.parse().unwrap();
    rig(
        MockServer::builder().key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label(LABEL)),
        TEST_DEV_KEY,
        quota,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn removing_a_key_sends_what_is_queued_then_lets_it_go() {
    let rig = quota_rig("5/1s").await;
    let tickets = submit_events(&rig, 12).await;
    let handle = rig.scheduler.key(&rig.key).unwrap();
    let start = Instant::now();
    let report = rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::Drain)
        .await
        .expect("the key was added");
    // It returned once the last call was answered: the third window of 5/1s (plus guards).
    assert!(report.returned.is_empty());
    assert!(
        Instant::now() - start >= Duration::from_secs(2),
        "{:?}",
        Instant::now() - start
    );
    for t in tickets {
        t.await.expect("every queued job was sent");
    }
    let stats = rig.server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (12, 0));
    rig.server.verify().unwrap();
    // Gone: by id, through a handle, from the stats; and removing it again finds nothing.
    match rig.scheduler.submit(&rig.key, event(99)).await {
        Err(SubmitError::UnknownKey { .. }) => {}
        other => panic!("{other:?}"),
    }
    match handle.submit(event(100)).await {
        Err(SubmitError::ShuttingDown { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(rig.scheduler.key(&rig.key).is_none());
    assert!(rig.scheduler.stats(&rig.key).is_none());
    assert!(rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::Drain)
        .await
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn removing_with_return_unsent_hands_back_what_is_queued() {
    let rig = quota_rig("2/1s").await;
    let tickets = submit_events(&rig, 10).await;
    // The first two go at once; the rest wait for the window.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::ReturnUnsent)
        .await
        .unwrap();
    assert_eq!(report.returned.len(), 8);
    assert!(report
        .returned
        .iter()
        .all(|r| r.key == rig.key && r.attempts == 0));
    let mut outcomes = Vec::new();
    for t in tickets {
        outcomes.push(t.await);
    }
    assert!(outcomes[..2].iter().all(Result::is_ok));
    assert!(outcomes[2..]
        .iter()
        .all(|o| matches!(o, Err(JobError::ShutDown))));
    assert_eq!(rig.server.key_stats(LABEL).unwrap().accepted, 2);
}

#[tokio::test(start_paused = true)]
async fn removing_with_a_deadline_hands_back_what_is_left_at_it() {
    let rig = quota_rig("1/1s").await;
    let tickets = submit_events(&rig, 5).await;
    let deadline = Instant::now() + Duration::from_millis(1_500);
    let report = rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::DrainUntil(deadline))
        .await
        .unwrap();
    // Calls at 0 and 1.1 s went before the deadline; the next slot (2.2 s) is after it.
    assert_eq!(report.returned.len(), 3);
    let mut ok = 0;
    for t in tickets {
        ok += usize::from(t.await.is_ok());
    }
    assert_eq!(ok, 2);
    assert_eq!(rig.server.key_stats(LABEL).unwrap().accepted, 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_added_again_counts_the_calls_it_made_and_other_keys_go_on() {
    let quota: Quota = "3/10s".parse().unwrap();
    let other_secret = "fbx_test_other_key_for_removal";
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label(LABEL))
        .key(other_secret, KeyProfile::new(quota.clone()).label("other"))
        .start()
        .await
        .unwrap();
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .seed(3)
        .build()
        .unwrap();
    let config = |id: &str, secret: &str| {
        KeyConfig::new(
            id,
            ApiKey::new(secret).unwrap(),
            &server.base_url(),
            quota.clone(),
        )
        .unwrap()
    };
    let (key, other) = (KeyId::new("k"), KeyId::new("other"));
    scheduler.add_key(config("k", TEST_DEV_KEY)).await.unwrap();
    scheduler
        .add_key(config("other", other_secret))
        .await
        .unwrap();
    let start = Instant::now();
    for t in [
        scheduler.submit(&key, event(0)).await.unwrap(),
        scheduler.submit(&key, event(1)).await.unwrap(),
        scheduler.submit(&key, event(2)).await.unwrap(),
    ] {
        t.await.unwrap();
    }
    let others: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..6 {
            v.push(scheduler.submit(&other, event(i)).await.unwrap());
        }
        v
    };
    scheduler
        .remove_key(&key, ShutdownMode::Drain)
        .await
        .unwrap();
    // The store still holds the key's ledger; added again, the key waits for its three calls to
    // leave the window instead of being refused.
    assert!(scheduler.store().local_ledger(&key).is_some());
    scheduler.add_key(config("k", TEST_DEV_KEY)).await.unwrap();
    scheduler
        .submit(&key, event(3))
        .await
        .unwrap()
        .await
        .unwrap();
    let waited = Instant::now() - start;
    assert!(
        waited >= Duration::from_secs(10),
        "the fourth call went after {waited:?}"
    );
    let stats = server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (4, 0));
    // The other key was not touched.
    for t in others {
        t.await.unwrap();
    }
    assert_eq!(server.key_stats("other").unwrap().refused, 0);
    server.verify().unwrap();
    scheduler.shutdown(ShutdownMode::Drain).await;
    // Forgotten, the ledger is gone from the store.
    assert!(scheduler.store().forget(&key));
    assert!(scheduler.store().snapshot(&key).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_removed_key_lets_go_of_its_journal() {
    let dir = std::env::temp_dir().join(format!("fbx-remove-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("calls");
    let rig = common::rig_with(
        MockServer::builder().key(
            TEST_DEV_KEY,
            KeyProfile::new("5/1s".parse().unwrap()).label(LABEL),
        ),
        TEST_DEV_KEY,
        "5/1s".parse().unwrap(),
        Default::default(),
        |c| c.call_journal(&journal),
    )
    .await;
    for t in submit_events(&rig, 3).await {
        t.await.unwrap();
    }
    // A handle the program still holds keeps the key's queue alive, but not its journal.
    let handle = rig.scheduler.key(&rig.key).unwrap();
    rig.scheduler
        .remove_key(&rig.key, ShutdownMode::Drain)
        .await
        .unwrap();
    // Another scheduler (another run) may now open the journal, and starts with its calls.
    let next = Scheduler::builder().build().unwrap();
    let config = KeyConfig::new(
        "k",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &rig.server.base_url(),
        "5/1s".parse().unwrap(),
    )
    .unwrap()
    .call_journal(&journal);
    next.add_key(config).await.expect("the journal was let go");
    // The three calls are in its windows: two more may go now, the third must wait.
    let ledger = next.store().snapshot(&KeyId::new("k")).unwrap();
    let now = Instant::now();
    assert_eq!(ledger.nth_slot(now, 2), now);
    assert!(ledger.nth_slot(now, 3) > now);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 24);
    drop(handle);
    next.shutdown(ShutdownMode::Drain).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_add_or_a_removal_of_the_id_during_a_removal_waits_for_it() {
    let dir = std::env::temp_dir().join(format!("fbx-remove-readd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("calls");
    let quota: Quota = "1/1s".parse().unwrap();
    let rig = common::rig_with(
        MockServer::builder().key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label(LABEL)),
        TEST_DEV_KEY,
        quota.clone(),
        Default::default(),
        |c| c.call_journal(&journal),
    )
    .await;
    let tickets = submit_events(&rig, 3).await;
    let start = Instant::now();
    let removal = {
        let (scheduler, key) = (rig.scheduler.clone(), rig.key.clone());
        tokio::spawn(async move {
            let report = scheduler.remove_key(&key, ShutdownMode::Drain).await;
            (report, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A second removal waits for the first, then finds no key.
    assert!(rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::Drain)
        .await
        .is_none());
    let (first, removed_at) = removal.await.unwrap();
    assert!(first.unwrap().returned.is_empty());
    assert!(
        removed_at - start >= Duration::from_secs(2),
        "{:?}",
        removed_at - start
    );
    assert!(Instant::now() >= removed_at);
    for t in tickets {
        t.await.unwrap();
    }
    // Added again, and removed again while draining: an add meanwhile waits for the removal
    // (the key's journal is in use until then) and succeeds.
    let config = KeyConfig::new(
        "k",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &rig.server.base_url(),
        quota,
    )
    .unwrap()
    .call_journal(&journal);
    rig.scheduler.add_key(config.clone()).await.unwrap();
    let tickets = submit_events(&rig, 2).await;
    let removal = {
        let (scheduler, key) = (rig.scheduler.clone(), rig.key.clone());
        tokio::spawn(async move {
            scheduler.remove_key(&key, ShutdownMode::Drain).await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    rig.scheduler
        .add_key(config)
        .await
        .expect("added once the removal is done");
    let added_at = Instant::now();
    let removed_at = removal.await.unwrap();
    assert!(
        added_at >= removed_at,
        "added at {added_at:?}, removed at {removed_at:?}"
    );
    for t in tickets {
        t.await.unwrap();
    }
    rig.scheduler
        .submit(&rig.key, event(9))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(rig.server.key_stats(LABEL).unwrap().refused, 0);
    rig.server.verify().unwrap();
    rig.scheduler.shutdown(ShutdownMode::Drain).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scheduler on a mock server enforcing 100/1s, whose retries back off a whole minute.
async fn backoff_rig(builder: fabraix_scheduler::mock::MockServerBuilder) -> Rig {
    let quota: Quota = "100/1s".parse().unwrap();
    let policy = fabraix_scheduler::RetryPolicy::default()
        .backoff_min(Duration::from_secs(60))
        .backoff_max(Duration::from_secs(60));
    common::rig_with(
        builder.key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label(LABEL)),
        TEST_DEV_KEY,
        quota,
        policy,
        |c| c,
    )
    .await
}

/// Removes the rig's key handing its jobs back; returns how long that took, and the report.
async fn hand_back_now(rig: &Rig) -> (Duration, fabraix_scheduler::ShutdownReport) {
    let start = Instant::now();
    let report = rig
        .scheduler
        .remove_key(&rig.key, ShutdownMode::ReturnUnsent)
        .await
        .unwrap();
    (Instant::now() - start, report)
}

#[tokio::test(start_paused = true)]
async fn a_job_waiting_out_a_backoff_is_handed_back_at_once() {
    // Answered 503 at once, the job waits out its backoff (most of a minute) when the key is
    // removed: it is handed back then, not when the backoff ends.
    let rig = backoff_rig(MockServer::builder().script(
        "/event",
        [fabraix_scheduler::mock::ScriptedResponse::new(503)],
    ))
    .await;
    let ticket = rig.scheduler.submit(&rig.key, event(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (took, report) = hand_back_now(&rig).await;
    assert!(took < Duration::from_secs(1), "the removal took {took:?}");
    assert_eq!(report.returned.len(), 1);
    assert_eq!(report.returned[0].attempts, 1);
    assert!(matches!(ticket.await, Err(JobError::ShutDown)));
}

#[tokio::test(start_paused = true)]
async fn a_job_failing_while_its_key_hands_back_is_handed_back_without_a_backoff() {
    // On the wire for a second when the key is removed, then answered 500: handed back at once.
    let rig = backoff_rig(
        MockServer::builder().faults(fabraix_scheduler::mock::Faults {
            server_error_rate: 1.0,
            latency: Duration::from_secs(1),
            ..Default::default()
        }),
    )
    .await;
    let ticket = rig.scheduler.submit(&rig.key, event(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (took, report) = hand_back_now(&rig).await;
    assert!(took < Duration::from_secs(2), "the removal took {took:?}");
    assert_eq!(report.returned.len(), 1);
    assert_eq!(report.returned[0].attempts, 1);
    assert!(matches!(ticket.await, Err(JobError::ShutDown)));
}

#[tokio::test(start_paused = true)]
async fn a_revoked_key_is_removed_without_waiting_for_its_next_slot() {
    // 1/1h: after the first call the key holds its next slot an hour ahead. The first call is
    // answered 401: the queued jobs fail at once, and nothing is left to wait for.
    let quota: Quota = "1/1h".parse().unwrap();
    let rig = rig(
        MockServer::builder()
            .key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label(LABEL))
            .script(
                "/event",
                [fabraix_scheduler::mock::ScriptedResponse::json(
                    401,
                    serde_json::json!({"error": {"message": "Invalid API key", "type": "authentication_error", "code": "invalid_api_key"}}),
                )],
            ),
        TEST_DEV_KEY,
        quota,
    )
    .await;
    let tickets = submit_events(&rig, 3).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    let removal = rig.scheduler.remove_key(&rig.key, ShutdownMode::Drain);
    let report = tokio::time::timeout(Duration::from_secs(60), removal)
        .await
        .expect("removed without waiting for the slot an hour ahead")
        .unwrap();
    assert!(report.returned.is_empty());
    assert!(Instant::now() - start < Duration::from_secs(60));
    for t in tickets {
        assert!(matches!(
            t.await,
            Err(JobError::Unauthorized { .. } | JobError::KeyRevoked { .. })
        ));
    }
}
