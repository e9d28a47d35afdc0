//! Dispatch shards: one task serves many keys, so a held key must not hold up the others, a store
//! that keeps its ledgers elsewhere must still be asked for every slot, a failing store must fail
//! jobs rather than the shard, a slow write to such a store after a 429 must hold up only its
//! key, and a shard that stopped at shutdown must start again for a new key.
//! Real HTTP to the mock server over loopback, on tokio's paused clock.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{check, event, patient_transport};
use fabraix_scheduler::mock::{
    key_fingerprint, MockServer, ScriptedResponse, TEST_DEV_KEY, TEST_PROD_KEY,
};
use fabraix_scheduler::{
    ApiKey, Instant, JobError, KeyConfig, KeyId, LedgerConfig, LedgerStore, MemoryLedgerStore,
    Quota, RefusedCalls, ReqwestTransport, Scheduler, ShutdownMode, StoreError, SubmitError,
};

/// A store that keeps its ledgers out of the scheduler's reach, as a shared store (Redis) would:
/// it hands out no in-process ledger, and every operation is a future that yields once before it
/// answers. It counts reservations and can be told to fail them, or to answer those of one key
/// only after a delay (on tokio's clock), as a slow or paused Redis would; so too one kind of
/// write of one key (`slow_writes`: `"refund"`, `"block_until"`, `"apply_server_window"`). It
/// logs when each reservation is asked and each write is done (`log`).
#[derive(Clone, Default)]
struct DistantStore {
    inner: MemoryLedgerStore,
    reserves: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    slow: Arc<Mutex<Vec<(KeyId, Duration)>>>,
    slow_writes: Arc<Mutex<Vec<SlowWrite>>>,
    log: Arc<Mutex<Vec<Logged>>>,
}

/// A key, one kind of its writes, and how long each takes.
type SlowWrite = (KeyId, &'static str, Duration);

/// A key, what was done for it, and when.
type Logged = (KeyId, &'static str, tokio::time::Instant);

impl DistantStore {
    /// Waits out the delay set for `op` of `key`, if any.
    async fn slow_write(&self, key: &KeyId, op: &'static str) {
        let delay = (self.slow_writes.lock().unwrap().iter())
            .find(|(slow, slow_op, _)| slow == key && *slow_op == op)
            .map(|(_, _, delay)| *delay);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn note(&self, key: &KeyId, op: &'static str) {
        let now = tokio::time::Instant::now();
        self.log.lock().unwrap().push((key.clone(), op, now));
    }

    /// When `op` of `key` was logged, in order.
    fn logged(&self, key: &KeyId, op: &str) -> Vec<tokio::time::Instant> {
        (self.log.lock().unwrap().iter())
            .filter(|(k, o, _)| k == key && *o == op)
            .map(|(_, _, at)| *at)
            .collect()
    }
}

impl LedgerStore for DistantStore {
    async fn register(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
    ) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.inner.register(key, quota, config, now).await
    }

    async fn reserve(&self, key: &KeyId, now: Instant) -> Result<Instant, StoreError> {
        self.note(key, "reserve");
        tokio::task::yield_now().await;
        let delay = (self.slow.lock().unwrap().iter())
            .find(|(slow, _)| slow == key)
            .map(|(_, delay)| *delay);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        self.reserves.fetch_add(1, Ordering::SeqCst);
        self.inner.reserve(key, now).await
    }

    async fn refund(&self, key: &KeyId, slot: Instant) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.slow_write(key, "refund").await;
        let refunded = self.inner.refund(key, slot).await;
        self.note(key, "refund");
        refunded
    }

    async fn nth_slot(&self, key: &KeyId, now: Instant, k: usize) -> Result<Instant, StoreError> {
        tokio::task::yield_now().await;
        self.inner.nth_slot(key, now, k).await
    }

    async fn plan(&self, key: &KeyId, now: Instant, k: usize) -> Result<Vec<Instant>, StoreError> {
        tokio::task::yield_now().await;
        self.inner.plan(key, now, k).await
    }

    async fn block_until(&self, key: &KeyId, until: Instant) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.slow_write(key, "block_until").await;
        let blocked = self.inner.block_until(key, until).await;
        self.note(key, "block_until");
        blocked
    }

    async fn apply_server_window(
        &self,
        key: &KeyId,
        remaining: u32,
        reset_at: Instant,
    ) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.slow_write(key, "apply_server_window").await;
        let applied = self
            .inner
            .apply_server_window(key, remaining, reset_at)
            .await;
        self.note(key, "apply_server_window");
        applied
    }

    async fn set_pace(&self, key: &KeyId, spacing: Option<Duration>) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.inner.set_pace(key, spacing).await
    }

    async fn recent_utilisation(&self, key: &KeyId, now: Instant) -> Result<Vec<f64>, StoreError> {
        tokio::task::yield_now().await;
        self.inner.recent_utilisation(key, now).await
    }
}

/// A mock server with these `(secret, quota)` keys, on loopback.
async fn server(keys: &[(&str, &str)]) -> MockServer {
    let mut builder = MockServer::builder();
    for (secret, quota) in keys {
        builder = builder.key(secret, quota.parse::<Quota>().unwrap());
    }
    builder.start().await.unwrap()
}

/// A scheduler on the in-memory store with `shards` dispatch tasks.
fn scheduler(shards: usize) -> Scheduler {
    Scheduler::builder()
        .transport_config(patient_transport())
        .dispatch_tasks(shards)
        .build()
        .unwrap()
}

fn key_config(id: &KeyId, secret: &str, server: &MockServer, quota: &str) -> KeyConfig {
    KeyConfig::new(
        id.clone(),
        ApiKey::new(secret).unwrap(),
        &server.base_url(),
        quota.parse::<Quota>().unwrap(),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_store_elsewhere_is_asked_for_every_slot_and_paces_the_same() {
    let server = server(&[(TEST_DEV_KEY, "3/1s")]).await;
    let store = DistantStore::default();
    let scheduler = fabraix_scheduler::SchedulerBuilder::with_store(store.clone())
        .transport_config(patient_transport())
        .seed(1)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    scheduler
        .add_key(key_config(&key, TEST_DEV_KEY, &server, "3/1s"))
        .await
        .unwrap();
    assert!(store.local_ledger(&key).is_none());

    let start = tokio::time::Instant::now();
    let mut tickets = Vec::new();
    for i in 0..9 {
        tickets.push(scheduler.submit(&key, event(i)).await.unwrap());
    }
    // The ETAs come from the store's plan: three windows' worth, in order.
    let etas: Vec<Instant> = tickets.iter().map(|t| t.eta()).collect();
    assert!(etas.windows(2).all(|w| w[0] <= w[1]), "{etas:?}");
    assert!(
        etas[8] - start >= Duration::from_secs(2),
        "{:?}",
        etas[8] - start
    );
    let mut last = start;
    for t in tickets {
        last = last.max(t.await.unwrap().sent_at);
    }
    assert!(store.reserves.load(Ordering::SeqCst) >= 9);
    let span = last - start;
    assert!(
        span >= Duration::from_secs(2) && span < Duration::from_millis(2_500),
        "nine calls at 3/1s should take two windows and a guard, took {span:?}"
    );
    assert_eq!(server.refused(), 0);
    server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_the_jobs_not_the_shard() {
    let server = server(&[(TEST_DEV_KEY, "100/1s")]).await;
    let store = DistantStore::default();
    let scheduler = fabraix_scheduler::SchedulerBuilder::with_store(store.clone())
        .transport_config(patient_transport())
        .dispatch_tasks(1)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    scheduler
        .add_key(key_config(&key, TEST_DEV_KEY, &server, "100/1s"))
        .await
        .unwrap();

    store.failing.store(true, Ordering::SeqCst);
    let mut tickets = Vec::new();
    for i in 0..3 {
        tickets.push(scheduler.submit(&key, event(i)).await.unwrap());
    }
    for t in tickets {
        match t.await {
            Err(JobError::Store(StoreError::Unavailable(why))) => {
                assert_eq!(why, "connection refused")
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }
    assert_eq!(scheduler.stats(&key).unwrap().failed, 3);
    assert!(
        server.record().is_empty(),
        "nothing may go out without a slot"
    );

    // The store is back: the same shard serves the key again.
    store.failing.store(false, Ordering::SeqCst);
    let ticket = scheduler.submit(&key, event(3)).await.unwrap();
    assert_eq!(ticket.await.unwrap().status, 200);
    assert_eq!(server.record().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_held_key_does_not_hold_up_the_other_keys_of_its_shard() {
    let server = server(&[(TEST_DEV_KEY, "1/1h"), (TEST_PROD_KEY, "1000/1s")]).await;
    let scheduler = scheduler(1);
    let (slow, fast) = (KeyId::new("slow"), KeyId::new("fast"));
    scheduler
        .add_key(key_config(&slow, TEST_DEV_KEY, &server, "1/1h"))
        .await
        .unwrap();
    scheduler
        .add_key(key_config(&fast, TEST_PROD_KEY, &server, "1000/1s"))
        .await
        .unwrap();

    let start = tokio::time::Instant::now();
    let first = scheduler.submit(&slow, event(0)).await.unwrap();
    let held = scheduler.submit(&slow, event(1)).await.unwrap();
    let mut quick = Vec::new();
    for i in 0..20 {
        quick.push(scheduler.submit(&fast, event(i)).await.unwrap());
    }
    for t in quick {
        let sent = t.await.unwrap().sent_at;
        assert!(
            sent - start < Duration::from_secs(1),
            "a key with room waited {:?} behind a held key",
            sent - start
        );
    }
    first.await.unwrap();
    let late = held.await.unwrap().sent_at;
    assert!(
        late - start >= Duration::from_secs(3600),
        "{:?}",
        late - start
    );
    assert_eq!(server.refused(), 0);
    assert_eq!(
        server.arrivals(&key_fingerprint(TEST_PROD_KEY)).len(),
        20,
        "every call of the key with room arrived"
    );
    server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_answer_for_one_key_does_not_hold_up_the_other_keys_of_its_shard() {
    let server = server(&[(TEST_DEV_KEY, "1000/1s"), (TEST_PROD_KEY, "10/1s")]).await;
    let store = DistantStore::default();
    let scheduler = fabraix_scheduler::SchedulerBuilder::with_store(store.clone())
        .transport_config(patient_transport())
        .dispatch_tasks(1)
        .build()
        .unwrap();
    let (slow, fast) = (KeyId::new("slow"), KeyId::new("fast"));
    scheduler
        .add_key(key_config(&slow, TEST_DEV_KEY, &server, "1000/1s"))
        .await
        .unwrap();
    scheduler
        .add_key(key_config(&fast, TEST_PROD_KEY, &server, "10/1s"))
        .await
        .unwrap();
    // Every reservation of the slow key takes ten seconds to be answered.
    let delay = Duration::from_secs(10);
    store.slow.lock().unwrap().push((slow.clone(), delay));

    let start = tokio::time::Instant::now();
    let waiting = vec![
        scheduler.submit(&slow, event(0)).await.unwrap(),
        scheduler.submit(&slow, event(1)).await.unwrap(),
    ];
    let mut quick = Vec::new();
    for i in 0..30 {
        quick.push(scheduler.submit(&fast, event(i)).await.unwrap());
    }
    // The other key goes on at its quota (30 calls at 10/1s: three windows) while the slow
    // key's first reservation is still unanswered.
    let mut last = start;
    for t in quick {
        last = last.max(t.await.unwrap().sent_at);
    }
    let span = last - start;
    assert!(
        span >= Duration::from_secs(2) && span < delay,
        "30 calls at 10/1s should take two windows and a guard beside a slow key, took {span:?}"
    );
    // The slow key's calls go one answer after another, in order.
    let mut sent = Vec::new();
    for t in waiting {
        sent.push(t.await.unwrap().sent_at - start);
    }
    assert!(sent[0] >= delay, "{sent:?}");
    assert!(sent[1] >= sent[0] + delay, "{sent:?}");
    let arrived: Vec<Duration> = server
        .arrivals(&key_fingerprint(TEST_DEV_KEY))
        .iter()
        .map(|&at| at - start)
        .collect();
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    assert!(arrived[0] >= delay, "{arrived:?}");
    assert_eq!(server.refused(), 0);
    assert_eq!(
        server.arrivals(&key_fingerprint(TEST_PROD_KEY)).len(),
        30,
        "every call of the other key arrived"
    );
    server.verify().unwrap();
}

/// One 429 (`Retry-After: 30`, with `RateLimit-*` headers saying nothing is left) for key
/// "paused", whose store's `op` (a write the 429 leads to) takes ten seconds, beside a key
/// "steady" sending at 10/1s on the same shard: the steady key keeps its rate meanwhile, and the
/// paused key asks for its next slot only once the write is done, and sends its retry no sooner
/// than the server said.
async fn a_slow_write_after_a_429_holds_up_only_its_key(op: &'static str) {
    let refusal = ScriptedResponse::new(429)
        .header("Retry-After", "30")
        .header("RateLimit-Remaining", "0")
        .header("RateLimit-Reset", "30");
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, "1000/1s".parse::<Quota>().unwrap())
        .key(TEST_PROD_KEY, "10/1s".parse::<Quota>().unwrap())
        .script("/check", [refusal])
        .start()
        .await
        .unwrap();
    let store = DistantStore::default();
    let scheduler = fabraix_scheduler::SchedulerBuilder::with_store(store.clone())
        .transport_config(patient_transport())
        .dispatch_tasks(1)
        .seed(3)
        .build()
        .unwrap();
    let (paused, steady) = (KeyId::new("paused"), KeyId::new("steady"));
    // (Refused calls do not count: the refused call's slot is refunded.)
    let config = key_config(&paused, TEST_DEV_KEY, &server, "1000/1s")
        .refused_calls(RefusedCalls::DoNotCount);
    scheduler.add_key(config).await.unwrap();
    scheduler
        .add_key(key_config(&steady, TEST_PROD_KEY, &server, "10/1s"))
        .await
        .unwrap();
    let delay = Duration::from_secs(10);
    (store.slow_writes.lock().unwrap()).push((paused.clone(), op, delay));

    let start = tokio::time::Instant::now();
    let refused = scheduler.submit(&paused, check()).await.unwrap();
    let mut quick = Vec::new();
    for i in 0..30 {
        quick.push(scheduler.submit(&steady, event(i)).await.unwrap());
    }
    // 30 calls at 10/1s: two windows and a guard, while the paused key's write is still out.
    let mut last = start;
    for t in quick {
        last = last.max(t.await.unwrap().sent_at);
    }
    let span = last - start;
    assert!(
        span >= Duration::from_secs(2) && span < delay,
        "30 calls at 10/1s took {span:?} beside a key whose {op} took {delay:?}"
    );
    assert!(store.logged(&paused, op).is_empty(), "{op} done already");

    let response = refused.await.unwrap();
    assert_eq!((response.status.as_u16(), response.attempts), (200, 2));
    let written = store.logged(&paused, op);
    assert_eq!(written.len(), 1, "{op}: {written:?}");
    assert!(written[0] - start >= delay, "{:?}", written[0] - start);
    // Its first slot, then one more, asked for only after the write was in.
    let reserves = store.logged(&paused, "reserve");
    assert_eq!(reserves.len(), 2, "{reserves:?}");
    assert!(
        reserves[1] >= written[0],
        "the next slot was asked for {:?} before the {op} was done",
        written[0] - reserves[1]
    );
    assert!(
        response.sent_at - start >= Duration::from_secs(30),
        "the retry went {:?} after the start, inside the server's Retry-After",
        response.sent_at - start
    );
    // Every job ended once: one success each, nothing failed, nothing refused by the quota.
    let (p, s) = (
        scheduler.stats(&paused).unwrap(),
        scheduler.stats(&steady).unwrap(),
    );
    assert_eq!((p.succeeded, p.failed, p.rate_limited), (1, 0, 1));
    assert_eq!((s.succeeded, s.failed, s.rate_limited), (30, 0, 0));
    assert_eq!(server.arrivals(&key_fingerprint(TEST_PROD_KEY)).len(), 30);
    assert_eq!(server.arrivals(&key_fingerprint(TEST_DEV_KEY)).len(), 1);
    assert_eq!(server.refused(), 0);
    server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_block_after_a_429_holds_up_only_its_key() {
    a_slow_write_after_a_429_holds_up_only_its_key("block_until").await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_server_window_after_a_429_holds_up_only_its_key() {
    a_slow_write_after_a_429_holds_up_only_its_key("apply_server_window").await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_refund_after_a_429_holds_up_only_its_key() {
    a_slow_write_after_a_429_holds_up_only_its_key("refund").await;
}

#[tokio::test(start_paused = true)]
async fn the_keys_of_a_shard_wait_for_a_store_elsewhere_side_by_side() {
    let server = server(&[(TEST_DEV_KEY, "1000/1s")]).await;
    let store = DistantStore::default();
    let scheduler = fabraix_scheduler::SchedulerBuilder::with_store(store.clone())
        .transport_config(patient_transport())
        .dispatch_tasks(1)
        .build()
        .unwrap();
    // Eight keys of one API key, each reservation a 20 ms round trip.
    let round_trip = Duration::from_millis(20);
    let keys: Vec<KeyId> = (0..8).map(|i| KeyId::new(format!("k{i}"))).collect();
    for key in &keys {
        scheduler
            .add_key(key_config(key, TEST_DEV_KEY, &server, "1000/1s"))
            .await
            .unwrap();
        store.slow.lock().unwrap().push((key.clone(), round_trip));
    }
    let start = tokio::time::Instant::now();
    let mut tickets = Vec::new();
    for i in 0..5 {
        for key in &keys {
            tickets.push(scheduler.submit(key, event(i)).await.unwrap());
        }
    }
    let mut last = start;
    for t in tickets {
        last = last.max(t.await.unwrap().sent_at);
    }
    // Five reservations per key, one after another for each key but side by side across keys:
    // about five round trips, where one at a time for the shard would be forty.
    let span = last - start;
    assert!(
        span >= round_trip * 5 && span < round_trip * 12,
        "40 reservations of 8 keys on one shard took {span:?}"
    );
    assert_eq!(store.reserves.load(Ordering::SeqCst), 40);
    assert_eq!(server.refused(), 0);
    server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_added_after_shutdown_is_served() {
    let server = server(&[(TEST_DEV_KEY, "100/1s"), (TEST_PROD_KEY, "100/1s")]).await;
    let scheduler = scheduler(1);
    let old = KeyId::new("old");
    scheduler
        .add_key(key_config(&old, TEST_DEV_KEY, &server, "100/1s"))
        .await
        .unwrap();
    let ticket = scheduler.submit(&old, event(0)).await.unwrap();
    assert_eq!(ticket.await.unwrap().status, 200);
    let report = scheduler.shutdown(ShutdownMode::Drain).await;
    assert!(report.returned.is_empty());
    assert!(matches!(
        scheduler.submit(&old, event(1)).await,
        Err(SubmitError::ShuttingDown { .. })
    ));

    // The shard stopped with its last key; a new key starts it again.
    let new = KeyId::new("new");
    scheduler
        .add_key(key_config(&new, TEST_PROD_KEY, &server, "100/1s"))
        .await
        .unwrap();
    let ticket = scheduler.submit(&new, event(2)).await.unwrap();
    assert_eq!(ticket.await.unwrap().status, 200);
    assert_eq!(server.record().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_sends_what_is_queued_then_stops() {
    let server = server(&[(TEST_DEV_KEY, "2/1s")]).await;
    // The test keeps its own handle on the transport: once the scheduler's state is gone (which
    // needs every dispatch task to have ended, as they hold it), this is the only one left.
    let transport = Arc::new(ReqwestTransport::new(patient_transport()).unwrap());
    let scheduler = Scheduler::builder()
        .transport(transport.clone())
        .dispatch_tasks(2)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    scheduler
        .add_key(key_config(&key, TEST_DEV_KEY, &server, "2/1s"))
        .await
        .unwrap();
    let mut tickets = Vec::new();
    for i in 0..6 {
        tickets.push(scheduler.submit(&key, event(i)).await.unwrap());
    }
    // Another handle keeps the scheduler open.
    let other = scheduler.clone();
    drop(scheduler);
    tickets.push(other.submit(&key, event(6)).await.unwrap());
    drop(other);

    // Every queued job is still sent, at the quota.
    for t in tickets {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(server.record().len(), 7);
    server.verify().unwrap();
    // Then the dispatch tasks end and the scheduler's state is freed.
    for _ in 0..100 {
        if Arc::strong_count(&transport) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        Arc::strong_count(&transport),
        1,
        "the dispatch tasks outlived the last handle"
    );
}

/// Answers every request at once (its future is ready on its first poll) and records the paths
/// in the order they were sent, with when. Not over HTTP: a loopback server never answers within
/// the first poll, and these tests check how the shard treats a transport that does (one
/// answering from memory): turns between keys, and a 429 that pauses the key before it sends
/// more. Call number `refuse` (0-based), if set, is answered 429 with `Retry-After: 10`.
#[derive(Default)]
struct InstantTransport {
    sent: std::sync::Mutex<Vec<(String, tokio::time::Instant)>>,
    refuse: Option<usize>,
}

impl InstantTransport {
    fn paths(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl fabraix_scheduler::Transport for InstantTransport {
    fn send(
        &self,
        request: fabraix_scheduler::OutgoingRequest<'_>,
    ) -> fabraix_scheduler::TransportFuture {
        let mut sent = self.sent.lock().unwrap();
        let n = sent.len();
        sent.push((
            request.uri().path().to_string(),
            tokio::time::Instant::now(),
        ));
        let refused = self.refuse == Some(n);
        Box::pin(async move {
            let mut response =
                fabraix_scheduler::HttpResponse::new(bytes::Bytes::from_static(b"{}"));
            if refused {
                *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("10"),
                );
            }
            Ok(response)
        })
    }
}

/// A scheduler on `transport` with one dispatch task and the given keys (unlimited quota,
/// `max_in_flight(4)`).
async fn instant_scheduler(transport: &Arc<InstantTransport>, keys: &[&KeyId]) -> Scheduler {
    let scheduler = Scheduler::builder()
        .transport(transport.clone())
        .dispatch_tasks(1)
        .seed(5)
        .build()
        .unwrap();
    for (i, id) in keys.iter().enumerate() {
        let config = KeyConfig::new(
            (*id).clone(),
            ApiKey::new(format!("secret-{i}")).unwrap(),
            "http://127.0.0.1:9/v1",
            Quota::unlimited(),
        )
        .unwrap()
        .max_in_flight(4)
        .queue_capacity(1_000);
        scheduler.add_key(config).await.unwrap();
    }
    scheduler
}

#[tokio::test(start_paused = true)]
async fn a_429_answered_as_its_call_starts_pauses_the_key_before_it_sends_more() {
    let transport = Arc::new(InstantTransport {
        refuse: Some(4),
        ..InstantTransport::default()
    });
    let key = KeyId::new("k");
    let scheduler = instant_scheduler(&transport, &[&key]).await;
    let tickets = tokio::task::unconstrained(async {
        let mut tickets = Vec::new();
        for _ in 0..200 {
            let job = fabraix_scheduler::Job::new(http::Method::POST, "/event");
            tickets.push(scheduler.submit(&key, job).await.unwrap());
        }
        tickets
    })
    .await;
    for t in tickets {
        let response = t.await.unwrap();
        assert_eq!(response.status, 200);
    }
    let sent = transport.sent.lock().unwrap().clone();
    // Every job succeeded, the refused one on its second attempt.
    assert_eq!(sent.len(), 201);
    let refused_at = sent[4].1;
    let before_pause = sent[5..]
        .iter()
        .filter(|(_, at)| *at < refused_at + Duration::from_secs(10))
        .count();
    // At most the calls already out when the 429 came (fewer than `max_in_flight`); not the rest
    // of the queue.
    assert!(
        before_pause < 4,
        "{before_pause} calls went out during the pause"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_whose_calls_are_answered_at_once_take_turns_on_their_shard() {
    let transport = Arc::new(InstantTransport::default());
    let (a, b) = (KeyId::new("a"), KeyId::new("b"));
    let scheduler = instant_scheduler(&transport, &[&a, &b]).await;
    // Queued without yielding, so the shard finds them all at once: 200 on each key.
    let tickets = tokio::task::unconstrained(async {
        let mut tickets = Vec::new();
        for (id, path) in [(&a, "/a"), (&b, "/b")] {
            for _ in 0..200 {
                let job = fabraix_scheduler::Job::new(http::Method::POST, path);
                tickets.push(scheduler.submit(id, job).await.unwrap());
            }
        }
        tickets
    })
    .await;
    for t in tickets {
        t.await.unwrap();
    }
    let sent = transport.paths();
    assert_eq!(sent.len(), 400);
    // Every call is answered as soon as it is polled; still, a key sends at most `max_in_flight`
    // calls per turn, and the two alternate rather than one sending its 200 before the other's
    // backlog starts.
    let last_a = sent.iter().rposition(|p| p == "/v1/a").unwrap();
    let tenth_b = sent
        .iter()
        .enumerate()
        .filter(|(_, p)| *p == "/v1/b")
        .nth(9)
        .map(|(i, _)| i)
        .unwrap();
    assert!(
        tenth_b < last_a,
        "b's 10th call went out {tenth_b}th, after a's last ({last_a}th)"
    );
    let longest_run = sent
        .chunk_by(|x, y| x == y)
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(
        longest_run <= 2 * 4,
        "{longest_run} calls of one key in a row"
    );
}
