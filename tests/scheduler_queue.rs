//! Queues: an idle key sends at once, priority lanes, ETAs, cancellation, overflow, the in-flight
//! cap, many keys, and shutdown — over real HTTP to the mock server on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{check, event, rig, rig_with, Rig};
use fabraix_scheduler::mock::{key_fingerprint, Faults, KeyProfile, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{
    ApiKey, Instant, JobError, KeyConfig, KeyId, Overflow, Quota, RetryPolicy, ShutdownMode,
    SubmitError,
};

async fn slow_rig(quota: &str) -> Rig {
    let quota: Quota = quota.parse().unwrap();
    rig(
        MockServer::builder().key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_sends_at_once() {
    let rig = slow_rig("60/1m,1000/1h").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let submitted = Instant::now();
    let ticket = rig.scheduler.submit(&rig.key, check()).await.unwrap();
    assert_eq!(ticket.eta(), submitted);
    ticket.await.unwrap();
    let arrival = rig.server.record()[0].arrival;
    assert!(
        arrival - submitted < Duration::from_millis(1),
        "{:?}",
        arrival - submitted
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_overtakes_queued_telemetry() {
    let rig = slow_rig("1/1s").await;
    let mut events = Vec::new();
    for i in 0..50 {
        events.push(rig.scheduler.submit(&rig.key, event(i)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let submitted = Instant::now();
    let ticket = rig.scheduler.submit(&rig.key, check()).await.unwrap();
    // Its ETA is the key's next free slot, not the end of the backlog.
    assert!(
        ticket.eta() - submitted <= Duration::from_millis(1_100),
        "{:?}",
        ticket.eta() - submitted
    );
    let verdict = ticket.await.unwrap();
    let answered = Instant::now() - submitted;
    assert!(
        answered <= Duration::from_millis(1_100),
        "the check waited {answered:?}"
    );
    assert_eq!(
        verdict.json::<serde_json::Value>().unwrap()["is_safe"],
        true
    );
    let record = rig.server.record();
    let check_at = record
        .iter()
        .position(|c| c.path.ends_with("/check"))
        .unwrap();
    assert!(check_at <= 5, "the check was call #{check_at}");
    for t in events {
        t.cancel();
    }
    rig.server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn fifo_within_a_lane_and_etas_in_order() {
    let rig = slow_rig("2/1s").await;
    let tickets = common::submit_events(&rig, 10).await;
    let etas: Vec<Instant> = tickets.iter().map(|t| t.eta()).collect();
    assert!(etas.windows(2).all(|w| w[0] <= w[1]));
    assert!(etas[9] - etas[0] >= Duration::from_secs(4));
    for t in tickets {
        t.await.unwrap();
    }
    let arrivals: Vec<Instant> = rig.server.record().iter().map(|c| c.arrival).collect();
    for (eta, arrival) in etas.iter().zip(&arrivals) {
        assert!(arrival.saturating_duration_since(*eta) < Duration::from_millis(5));
    }
}

#[tokio::test(start_paused = true)]
async fn cancelling_before_the_slot_never_sends_and_refunds() {
    let rig = slow_rig("1/10s").await;
    let first = rig.scheduler.submit(&rig.key, event(0)).await.unwrap();
    first.await.unwrap();
    let second = rig.scheduler.submit(&rig.key, event(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rig.scheduler.plan(&rig.key, 1).await.unwrap()[0];
    assert!(second.cancel());
    tokio::task::yield_now().await;
    let after = rig.scheduler.plan(&rig.key, 1).await.unwrap()[0];
    assert!(
        after < before,
        "the held slot was refunded: {after:?} vs {before:?}"
    );
    assert!(matches!(second.await, Err(JobError::Cancelled)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        rig.server.record().len(),
        1,
        "the cancelled job was never sent"
    );
    let third = rig.scheduler.submit(&rig.key, event(2)).await.unwrap();
    third.await.unwrap();
    assert_eq!(rig.server.record().len(), 2);
    assert_eq!(rig.scheduler.stats(&rig.key).unwrap().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_sent_job_is_refused() {
    let rig = slow_rig("10/1s").await;
    let t = rig.scheduler.submit(&rig.key, event(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!t.cancel());
    t.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn overflow_reject_hands_the_job_back() {
    let quota: Quota = "1/1h".parse().unwrap();
    let rig = rig_with(
        MockServer::builder().key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota,
        RetryPolicy::default(),
        |c| c.queue_capacity(3).overflow(Overflow::Reject),
    )
    .await;
    let mut kept = Vec::new();
    let mut refused = None;
    for i in 0..10 {
        match rig.scheduler.submit(&rig.key, event(i)).await {
            Ok(t) => kept.push(t),
            Err(SubmitError::QueueFull { capacity, job, .. }) => {
                assert_eq!(capacity, 3);
                refused = Some((i, job));
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let (index, job) = refused.expect("a full queue refuses");
    // The idle key starts the first job at once (it never takes room in the queue); the next
    // three fill the queue and the fifth is refused.
    assert_eq!(
        index, 4,
        "one on the wire and three queued fit, the fifth is refused"
    );
    assert!(String::from_utf8_lossy(job.body()).contains(r#"\"n\":4"#));
    assert_eq!(rig.scheduler.stats(&rig.key).unwrap().queued, 3);
    // Once the shard takes the next one onto the wire (the quota's next slot, an hour later), there
    // is room for one again.
    tokio::time::sleep(Duration::from_secs(3_601)).await;
    assert_eq!(rig.server.record().len(), 2);
    assert!(rig.scheduler.submit(&rig.key, event(4)).await.is_ok());
    assert!(rig.scheduler.submit(&rig.key, event(5)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn overflow_wait_applies_backpressure() {
    let quota: Quota = "1/1s".parse().unwrap();
    let rig = rig_with(
        MockServer::builder().key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota,
        RetryPolicy::default(),
        |c| c.queue_capacity(2),
    )
    .await;
    let start = Instant::now();
    let tickets = common::submit_events(&rig, 8).await;
    // Submitting 8 into a queue of 2 at 1/s had to wait for room.
    assert!(
        Instant::now() - start >= Duration::from_secs(4),
        "{:?}",
        Instant::now() - start
    );
    for t in tickets {
        t.await.unwrap();
    }
    assert_eq!(rig.server.record().len(), 8);
}

#[tokio::test(start_paused = true)]
async fn in_flight_cap_holds() {
    let quota = Quota::unlimited();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, "100000/1s".parse::<Quota>().unwrap())
        .faults(Faults {
            latency: Duration::from_secs(1),
            ..Faults::none()
        });
    let rig = rig_with(builder, TEST_DEV_KEY, quota, RetryPolicy::default(), |c| {
        c.max_in_flight(2)
    })
    .await;
    let start = Instant::now();
    common::send_events(&rig, 10).await;
    let elapsed = Instant::now() - start;
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn many_keys_at_once_each_within_its_quota() {
    let quota: Quota = "3/1s,5/10s".parse().unwrap();
    let mut builder = MockServer::builder();
    let secrets: Vec<String> = (0..40).map(|i| format!("tenant-key-{i:03}")).collect();
    for s in &secrets {
        builder = builder.key(s, KeyProfile::new(quota.clone()));
    }
    let rig = rig(
        builder.key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota.clone(),
    )
    .await;
    for s in &secrets {
        let config = KeyConfig::new(
            s.as_str(),
            ApiKey::new(s).unwrap(),
            &rig.server.base_url(),
            quota.clone(),
        )
        .unwrap();
        rig.scheduler.add_key(config).await.unwrap();
    }
    let mut tickets = Vec::new();
    for round in 0..6 {
        for s in &secrets {
            tickets.push(
                rig.scheduler
                    .submit(&KeyId::new(s), event(round))
                    .await
                    .unwrap(),
            );
        }
    }
    for t in tickets {
        t.await.unwrap();
    }
    rig.server.verify().unwrap();
    assert_eq!(rig.server.refused(), 0);
    for s in &secrets {
        assert_eq!(rig.server.arrivals(&key_fingerprint(s)).len(), 6);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_returning_unsent_hands_every_job_back() {
    let rig = slow_rig("1/10s").await;
    let tickets = common::submit_events(&rig, 10).await;
    tokio::time::sleep(Duration::from_secs(15)).await; // two sent
    let report = rig.scheduler.shutdown(ShutdownMode::ReturnUnsent).await;
    let mut ok = 0;
    let mut back = 0;
    for t in tickets {
        match t.await {
            Ok(_) => ok += 1,
            Err(JobError::ShutDown) => back += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(back, 8);
    assert_eq!(report.returned.len(), 8);
    assert_eq!(rig.server.record().len(), 2);
    match rig.scheduler.submit(&rig.key, event(99)).await {
        Err(SubmitError::ShuttingDown { job }) => assert_eq!(job.path(), "/event"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_draining_sends_everything() {
    let rig = slow_rig("2/1s").await;
    let tickets = common::submit_events(&rig, 10).await;
    let report = rig.scheduler.shutdown(ShutdownMode::Drain).await;
    assert!(report.returned.is_empty());
    for t in tickets {
        t.await.unwrap();
    }
    assert_eq!(rig.server.record().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_deadline_sends_what_the_quota_allows_then_hands_back() {
    let rig = slow_rig("1/1s").await;
    let tickets = common::submit_events(&rig, 20).await;
    let deadline = Instant::now() + Duration::from_millis(4_500);
    let report = rig
        .scheduler
        .shutdown(ShutdownMode::DrainUntil(deadline))
        .await;
    let sent = rig.server.record().len();
    assert_eq!(sent, 5, "slots at 0, 1, 2, 3 and 4 s (plus guards)");
    assert_eq!(report.returned.len(), 15);
    let mut outcomes = 0;
    for t in tickets {
        let _ = t.await;
        outcomes += 1;
    }
    assert_eq!(outcomes, 20);
}

#[tokio::test(start_paused = true)]
async fn a_loop_of_submits_yields_and_a_submit_dropped_at_its_yield_queues_nothing() {
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let rig = slow_rig("1/1h").await;
    // On this current-thread runtime the spawned task runs only when the test's task yields.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut ran_after = None;
    let mut tickets = Vec::new();
    for i in 0..1_000 {
        tickets.push(rig.scheduler.submit(&rig.key, event(i)).await.unwrap());
        if ran_after.is_none() && ran.load(Ordering::SeqCst) {
            ran_after = Some(i + 1);
        }
    }
    let ran_after = ran_after.expect("1,000 submits in a row never yielded");
    assert!(ran_after < 1_000, "yielded only after {ran_after} submits");

    // Polled once and dropped: a submit either queued its job (and gave its ticket) or did
    // nothing. The coop budget runs out within a few hundred polls, so some are dropped.
    let before = rig.scheduler.stats(&rig.key).unwrap().submitted;
    let (mut queued, mut dropped) = (0u64, 0u64);
    for i in 0..1_000 {
        match rig.scheduler.submit(&rig.key, event(i)).now_or_never() {
            Some(result) => {
                tickets.push(result.unwrap());
                queued += 1;
            }
            None => {
                dropped += 1;
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(dropped > 0, "no submit ever waited for the budget");
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(
        stats.submitted - before,
        queued,
        "{dropped} dropped submits"
    );
    assert_eq!(
        stats.queued + stats.in_flight + stats.succeeded,
        tickets.len() as u64
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_tickets_still_send_and_every_other_ticket_gets_its_own_outcome() {
    // Outcomes wait in slots that later jobs reuse: a ticket dropped before, or after, its outcome
    // came must neither lose its job nor hand its slot's outcome to another ticket.
    let rig = slow_rig("600/1m,10000/1h").await;
    for round in 0..3 {
        let mut kept = Vec::new();
        for i in 0..40 {
            let is_check = i % 2 == 1;
            let job = if is_check { check() } else { event(i) };
            let ticket = rig.scheduler.submit(&rig.key, job).await.unwrap();
            if i % 3 == 0 {
                drop(ticket);
            } else {
                kept.push((is_check, ticket));
            }
        }
        // Some outcomes come in before their ticket is awaited, some after.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (is_check, ticket) in kept {
            let body = String::from_utf8(ticket.await.unwrap().body.to_vec()).unwrap();
            let (own, other) = if is_check {
                ("is_safe", "event_id")
            } else {
                ("event_id", "is_safe")
            };
            assert!(
                body.contains(own) && !body.contains(other),
                "round {round}: {body}"
            );
        }
        while rig.scheduler.stats(&rig.key).unwrap().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rig.server.record().len(), 40 * (round + 1), "round {round}");
    }
    rig.server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_whose_slot_is_not_due_gives_the_slot_as_eta_and_sends_then() {
    let rig = slow_rig("1/1s").await;
    let first = rig.scheduler.submit(&rig.key, check()).await.unwrap();
    first.await.unwrap();
    // Nothing queued, nothing on the wire, but the window is full: no start from `submit`.
    let second = rig.scheduler.submit(&rig.key, check()).await.unwrap();
    let eta = second.eta();
    let first_arrival = rig.server.record()[0].arrival;
    assert!(
        eta - first_arrival >= Duration::from_secs(1),
        "{:?}",
        eta - first_arrival
    );
    second.await.unwrap();
    let arrival = rig.server.record()[1].arrival;
    assert!(
        arrival >= eta,
        "sent at {arrival:?}, before its ETA {eta:?}"
    );
    assert!(
        arrival - eta < Duration::from_millis(5),
        "{:?}",
        arrival - eta
    );
    rig.server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_handle_shares_its_keys_queue_quota_and_outcomes() {
    let rig = slow_rig("1/1s").await;
    let handle = rig.scheduler.key(&rig.key).expect("the key was added");
    assert_eq!(handle.id(), &rig.key);
    // Alternating the two ways: one queue, one ledger, so the jobs take the quota's next slots in
    // order, as the ledger plans them (the paused clock stands still while they are submitted).
    let plan = rig.scheduler.plan(&rig.key, 6).await.unwrap();
    assert!(plan[5] - plan[0] >= Duration::from_secs(5), "{plan:?}");
    let mut tickets = Vec::new();
    for (i, slot) in plan.iter().enumerate() {
        let ticket = if i % 2 == 0 {
            handle.submit(event(i)).await.unwrap()
        } else {
            rig.scheduler.submit(&rig.key, event(i)).await.unwrap()
        };
        assert_eq!(ticket.key(), &rig.key);
        assert_eq!(ticket.eta(), *slot, "job {i}");
        tickets.push(ticket);
    }
    for t in tickets {
        t.await.unwrap();
    }
    let record = rig.server.record();
    assert_eq!(record.len(), 6);
    for (i, (call, slot)) in record.iter().zip(&plan).enumerate() {
        let late = call.arrival.saturating_duration_since(*slot);
        assert!(late < Duration::from_millis(5), "call {i} {late:?} late");
        assert!(call.arrival >= *slot, "call {i} early");
    }
    rig.server.verify().unwrap();
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!((stats.submitted, stats.succeeded), (6, 6));
    assert!(rig.scheduler.key(&KeyId::new("not-added")).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_key_handle_keeps_the_scheduler_open_when_its_other_handles_are_dropped() {
    let Rig {
        server,
        scheduler,
        key,
    } = slow_rig("60/1m").await;
    let handle = scheduler.key(&key).unwrap().clone();
    let other = scheduler.clone();
    // Every `Scheduler` handle dropped (which closes every key when nothing else holds the
    // scheduler): the key handle still holds it open.
    drop(scheduler);
    drop(other);
    let response = handle.submit(check()).await.unwrap().await.unwrap();
    assert_eq!(response.attempts, 1);
    assert_eq!(server.record().len(), 1);
    let debug = format!("{handle:?}");
    assert!(debug.contains("KeyHandle"), "{debug}");
    assert!(!debug.contains(TEST_DEV_KEY), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn a_key_handle_is_refused_after_shutdown_with_its_job_handed_back() {
    let rig = slow_rig("60/1m").await;
    let handle = rig.scheduler.key(&rig.key).unwrap();
    handle.submit(event(0)).await.unwrap().await.unwrap();
    let report = rig.scheduler.shutdown(ShutdownMode::Drain).await;
    assert!(report.returned.is_empty());
    match handle.submit(event(1)).await {
        Err(SubmitError::ShuttingDown { job }) => assert_eq!(job.path(), "/event"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.server.record().len(), 1);
}

/// A scheduler on a mock server of its own, with `id` as its one key (Development quota).
async fn scheduler_for(id: &KeyId) -> (MockServer, fabraix_scheduler::Scheduler) {
    let quota = Quota::development();
    let rig = common::rig_with_id(
        MockServer::builder().key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota,
        RetryPolicy::default(),
        |c| c,
        id.clone(),
    )
    .await;
    (rig.server, rig.scheduler)
}

#[tokio::test(start_paused = true)]
async fn one_key_id_names_its_own_key_in_each_scheduler_it_is_added_to() {
    // One id (and its clones) in two schedulers, and an id made again from the same label: each
    // scheduler reaches its own key, whichever of them names it.
    let id = KeyId::new("tenant");
    let (server_a, a) = scheduler_for(&id).await;
    let (server_b, b) = scheduler_for(&id.clone()).await;
    let same_label = KeyId::new("tenant");
    for (i, scheduler) in [&a, &b, &b, &a, &b].into_iter().enumerate() {
        let key = if i % 2 == 0 { &id } else { &same_label };
        scheduler
            .submit(key, event(i))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(server_a.record().len(), 2);
    assert_eq!(server_b.record().len(), 3);
    // The first scheduler gone, the id still names its key in the second.
    a.shutdown(ShutdownMode::Drain).await;
    drop(a);
    b.submit(&id, event(9)).await.unwrap().await.unwrap();
    assert_eq!(server_b.record().len(), 4);
    assert_eq!(server_a.record().len(), 2);
    assert_eq!(b.stats(&id).unwrap().succeeded, 4);
}

/// Jobs submitted in rounds while the key's calls go out (its ledger changes under every ETA
/// asked after the first round): each job is sent at the ETA its ticket gave, the ETAs of the
/// later rounds continuing the plan where the calls sent meanwhile left it.
#[tokio::test(start_paused = true)]
async fn etas_given_while_calls_go_out_are_when_the_jobs_are_sent() {
    let rig = slow_rig("3/1s,10/10s").await;
    let mut tickets = Vec::new();
    let mut next = 0;
    for (round, (jobs, then_wait_ms)) in [(8, 2_500), (12, 700), (6, 9_000), (9, 0)]
        .into_iter()
        .enumerate()
    {
        for _ in 0..jobs {
            tickets.push(rig.scheduler.submit(&rig.key, event(next)).await.unwrap());
            next += 1;
        }
        if round > 0 {
            assert!(
                !rig.server.record().is_empty(),
                "calls went out before round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(then_wait_ms)).await;
    }
    let etas: Vec<Instant> = tickets.iter().map(|t| t.eta()).collect();
    for t in tickets {
        t.await.unwrap();
    }
    let arrivals: Vec<Instant> = rig.server.record().iter().map(|c| c.arrival).collect();
    assert_eq!(arrivals.len(), etas.len());
    for (i, (eta, arrival)) in etas.iter().zip(&arrivals).enumerate() {
        assert!(
            *arrival >= *eta && *arrival - *eta < Duration::from_millis(5),
            "job {i}: sent {:?} after its ETA",
            arrival.checked_duration_since(*eta)
        );
    }
    rig.server.verify().unwrap();
}

/// A ticket's ETA as a person reads it: a duration from now, and a wall-clock time, both on the
/// scheduler's clock.
#[tokio::test(start_paused = true)]
async fn a_tickets_eta_reads_as_a_duration_from_now_and_as_a_wall_clock_time() {
    let rig = slow_rig("1/1s").await;
    let tickets = common::submit_events(&rig, 3).await;
    let third = &tickets[2];
    // Slots at 0, 1.1 s and 2.2 s (the window and its 100 ms guard), up to the windows' tick.
    let in_ = third.eta_in();
    assert!(
        in_ >= Duration::from_millis(2_200) && in_ < Duration::from_millis(2_201),
        "{in_:?}"
    );
    assert_eq!(in_, third.eta() - Instant::now());
    // (The wall clock is the system's, which moves on while the test runs: compared to 50 ms.)
    let close = |a: std::time::SystemTime, b: std::time::SystemTime| {
        let apart = a.duration_since(b).or_else(|e| Ok::<_, ()>(e.duration()));
        assert!(apart.unwrap() < Duration::from_millis(50), "{a:?} vs {b:?}");
    };
    close(third.eta_wall(), rig.scheduler.clock().wall_now() + in_);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(third.eta_in(), in_ - Duration::from_secs(1));
    // Once passed, zero from now, and the wall-clock time of now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(third.eta_in(), Duration::ZERO);
    close(third.eta_wall(), rig.scheduler.clock().wall_now());
    for t in tickets {
        t.await.unwrap();
    }
}

/// ETAs shown to a person: a ticket's and a forecast's `Debug` give the wait, never the tokio
/// instant's `tv_sec`; the scheduler's clock turns a drain ETA into a wait and a wall-clock time.
#[tokio::test(start_paused = true)]
async fn etas_debug_as_waits_and_the_clock_reads_any_instant_as_a_wait_or_a_wall_time() {
    use fabraix_scheduler::{Ledger, LedgerConfig};
    let rig = slow_rig("1/1s").await;
    let tickets = common::submit_events(&rig, 3).await;
    let shown = format!("{:?}", tickets[2]);
    assert!(!shown.contains("tv_sec"), "{shown}");
    assert!(
        shown.contains(&format!("eta_in: {:?}", tickets[2].eta_in())),
        "{shown}"
    );

    // (The wall clock is the system's, which moves on while the test runs: compared to 50 ms.)
    let close = |a: std::time::SystemTime, b: std::time::SystemTime| {
        let apart = a.duration_since(b).or_else(|e| Ok::<_, ()>(e.duration()));
        assert!(apart.unwrap() < Duration::from_millis(50), "{a:?} vs {b:?}");
    };
    let clock = rig.scheduler.clock();
    let eta = rig
        .scheduler
        .drain_eta(&rig.key)
        .await
        .unwrap()
        .expect("jobs queued");
    assert_eq!(clock.until(eta), eta - Instant::now());
    close(clock.wall_at(eta), clock.wall_now() + clock.until(eta));
    // An instant already past reads as a wall-clock time before now.
    let past = Instant::now() - Duration::from_secs(1);
    assert_eq!(clock.until(past), Duration::ZERO);
    close(
        clock.wall_at(past),
        clock.wall_now() - Duration::from_secs(1),
    );

    let now = Instant::now();
    let mut ledger = Ledger::new(&"1/1s".parse().unwrap(), LedgerConfig::default(), now);
    let third = ledger.forecast(now, 3);
    assert_eq!(third.wait, third.at - now);
    let shown = format!("{third:?}");
    assert!(!shown.contains("tv_sec"), "{shown}");
    assert!(
        shown.contains(&format!("wait: {:?}", third.wait)),
        "{shown}"
    );
    for t in tickets {
        t.await.unwrap();
    }
}
