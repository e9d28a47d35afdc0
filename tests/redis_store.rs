//! `RedisLedgerStore` against a real redis-server (started by the tests on a free loopback port):
//! the same slots as the in-process store, shared blocks and caps, quota conflicts, memory,
//! `SCRIPT FLUSH`, `CLIENT PAUSE`, rollback and a server that is gone.

mod redis_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fabraix_scheduler::{
    Clock, Instant, KeyId, LedgerConfig, LedgerStore, MemoryLedgerStore, Quota, RedisLedgerStore,
    RedisStoreConfig, Sleep, StoreError, Unreachable, WindowSemantics,
};
use proptest::prelude::*;
use redis_support::RedisServer;

/// A clock that moves only when told (shared by the stores of one test). Sleeping on it waits a
/// little real time (at most its second field) and moves it on to the deadline.
#[derive(Debug)]
struct ManualClock(Arc<Mutex<Instant>>, Duration);

impl ManualClock {
    fn new(at: Instant) -> Arc<Self> {
        Self::with_real_wait(at, Duration::from_millis(20))
    }
    /// A sleep on it waits up to `most` of real time.
    fn with_real_wait(at: Instant, most: Duration) -> Arc<Self> {
        Arc::new(Self(Arc::new(Mutex::new(at)), most))
    }
    fn set(&self, at: Instant) {
        *self.0.lock().unwrap() = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
    fn wall_now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
    }
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let wait = deadline.saturating_duration_since(self.now());
        let time = Arc::clone(&self.0);
        let most = self.1;
        Box::pin(async move {
            tokio::time::sleep(wait.min(most)).await;
            let mut now = time.lock().unwrap();
            *now = (*now).max(deadline);
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The default config without the watch task: on a [`ManualClock`] its sleeps would move the
/// test's time on.
fn unwatched() -> RedisStoreConfig {
    let mut config = RedisStoreConfig::default();
    config.reseed_watch = None;
    config
}

async fn store_on(server: &RedisServer, clock: &Arc<ManualClock>) -> RedisLedgerStore {
    RedisLedgerStore::connect_with(&server.url(), unwatched())
        .await
        .expect("connects")
        .with_clock(clock.clone())
        .with_local_time_for_tests()
}

#[derive(Clone, Debug)]
enum Op {
    /// Reserve after advancing this many µs.
    Reserve(u64),
    /// Refund the latest slot reserved.
    RefundLast,
    Block(u64),
    Cap(u32, u64),
    Pace(u64),
    Plan(usize),
    Utilisation,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..400_000).prop_map(Op::Reserve),
        1 => Just(Op::RefundLast),
        1 => (0u64..2_000_000).prop_map(Op::Block),
        1 => (0u32..4, 0u64..3_000_000).prop_map(|(r, d)| Op::Cap(r, d)),
        1 => (0u64..200_000).prop_map(Op::Pace),
        1 => (1usize..12).prop_map(Op::Plan),
        1 => Just(Op::Utilisation),
    ]
}

fn quota() -> impl Strategy<Value = Quota> {
    prop_oneof![
        Just("3/1s"),
        Just("2/1s,5/4s"),
        Just("4/500ms,6/3s,9/10s"),
        Just("1500/2s"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

/// Runs `ops` on both stores from the same instant and compares every answer.
fn same_answers(
    server: &RedisServer,
    quota: &Quota,
    config: LedgerConfig,
    ages_ms: &[u64],
    ops: &[Op],
    case: usize,
) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let redis = store_on(server, &clock).await;
        let memory = MemoryLedgerStore::new();
        let key = KeyId::new(format!("case-{case}"));
        let ages: Vec<Duration> = ages_ms.iter().map(|&m| Duration::from_millis(m)).collect();
        redis
            .register_with_earlier_calls(&key, quota, config, t0, &ages)
            .await
            .unwrap();
        memory
            .register_with_earlier_calls(&key, quota, config, t0, &ages)
            .await
            .unwrap();
        let mut now = t0;
        let mut last = None;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Reserve(us) => {
                    now += Duration::from_micros(us);
                    clock.set(now);
                    let a = redis.reserve(&key, now).await.unwrap();
                    let b = memory.reserve(&key, now).await.unwrap();
                    prop_assert_eq!(a - t0, b - t0, "reserve #{} of {:?}", i, ops);
                    last = Some(a);
                }
                Op::RefundLast => {
                    if let Some(slot) = last.take() {
                        redis.refund(&key, slot).await.unwrap();
                        memory.refund(&key, slot).await.unwrap();
                    }
                }
                Op::Block(us) => {
                    let until = now + Duration::from_micros(us);
                    redis.block_until(&key, until).await.unwrap();
                    memory.block_until(&key, until).await.unwrap();
                }
                Op::Cap(remaining, us) => {
                    let reset = now + Duration::from_micros(us);
                    redis
                        .apply_server_window(&key, remaining, reset)
                        .await
                        .unwrap();
                    memory
                        .apply_server_window(&key, remaining, reset)
                        .await
                        .unwrap();
                }
                Op::Pace(us) => {
                    let pace = (us > 0).then(|| Duration::from_micros(us));
                    redis.set_pace(&key, pace).await.unwrap();
                    memory.set_pace(&key, pace).await.unwrap();
                }
                Op::Plan(k) => {
                    let a = redis.plan(&key, now, k).await.unwrap();
                    let b = memory.plan(&key, now, k).await.unwrap();
                    prop_assert_eq!(&a, &b, "plan #{}", i);
                    let a = redis.nth_slot(&key, now, k).await.unwrap();
                    prop_assert_eq!(a, b[k - 1], "nth_slot #{}", i);
                }
                Op::Utilisation => {
                    let a = redis.recent_utilisation(&key, now).await.unwrap();
                    let b = memory.recent_utilisation(&key, now).await.unwrap();
                    prop_assert_eq!(a, b, "utilisation #{}", i);
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every answer of the Redis store equals the memory store's, for the same operations at
    /// the same instants (the Redis clock driven by the test).
    #[test]
    fn the_redis_store_answers_as_the_memory_store_does(
        quota in quota(),
        guard_ms in 0u64..60,
        bucket in any::<bool>(),
        ages_ms in proptest::collection::vec(0u64..12_000, 0..6),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let config = LedgerConfig {
            guard: Some(Duration::from_millis(guard_ms)),
            semantics: if bucket { WindowSemantics::TokenBucket } else { WindowSemantics::Sliding },
        };
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SHARED_SERVER.with(|server| same_answers(server, &quota, config, &ages_ms, &ops, case))?;
    }
}

static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// One server for the proptest's cases (each case uses its own key), killed when the test's
    /// thread ends (a static would outlive the test binary: statics are never dropped).
    static SHARED_SERVER: RedisServer = RedisServer::start();
}

#[test]
fn a_block_a_cap_and_a_pace_set_by_one_process_hold_for_all() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let a = store_on(&server, &clock).await;
        let b = store_on(&server, &clock).await;
        let key = KeyId::new("k");
        let quota: Quota = "100/1s".parse().unwrap();
        let config = LedgerConfig::default();
        a.register(&key, &quota, config, t0).await.unwrap();
        b.register(&key, &quota, config, t0).await.unwrap();
        // A 429 seen by `a`: `b` waits too, once.
        a.block_until(&key, t0 + Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(
            b.reserve(&key, t0).await.unwrap(),
            t0 + Duration::from_secs(3)
        );
        // A server cap of one more call before 10 s, told to `b`: `a`'s next call waits.
        let t1 = t0 + Duration::from_secs(3);
        clock.set(t1);
        b.apply_server_window(&key, 1, t1 + Duration::from_secs(7))
            .await
            .unwrap();
        assert!(a.reserve(&key, t1).await.unwrap() < t1 + Duration::from_secs(7));
        assert_eq!(
            b.reserve(&key, t1).await.unwrap(),
            t1 + Duration::from_secs(7)
        );
        // A pace set by `a` spaces `b`'s calls.
        a.set_pace(&key, Some(Duration::from_millis(40)))
            .await
            .unwrap();
        let t2 = t1 + Duration::from_secs(7);
        let x = b.reserve(&key, t2).await.unwrap();
        let y = a.reserve(&key, t2).await.unwrap();
        assert_eq!(y - x, Duration::from_millis(40));
        // `a`'s plan reads what `b` committed.
        assert_eq!(
            a.plan(&key, t2, 1).await.unwrap(),
            vec![y + Duration::from_millis(40)]
        );
    });
}

#[test]
fn processes_with_different_quotas_for_one_key_are_refused_with_a_clear_error() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let a = store_on(&server, &clock).await;
        let b = store_on(&server, &clock).await;
        let key = KeyId::new("k");
        let config = LedgerConfig::default();
        a.register(&key, &"60/1m".parse().unwrap(), config, t0)
            .await
            .unwrap();
        let err = b
            .register(&key, &"120/1m".parse().unwrap(), config, t0)
            .await
            .unwrap_err();
        let StoreError::QuotaConflict(message) = &err else {
            panic!("expected a quota conflict, got {err:?}");
        };
        assert!(
            message.contains("60/1m") && message.contains("120/1m"),
            "{message}"
        );
        // The same quota is welcome.
        b.register(&key, &"60/1m".parse().unwrap(), config, t0)
            .await
            .unwrap();
    });
}

/// The Redis keys a key uses (everything with its prefix) and their total `MEMORY USAGE`.
fn memory_usage(server: &RedisServer, prefix: &str) -> (Vec<String>, u64) {
    let mut conn = server.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    let bytes = keys
        .iter()
        .map(|k| {
            let bytes = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query::<u64>(&mut conn)
                .unwrap();
            eprintln!("MEMORY USAGE {k}: {bytes} bytes");
            bytes
        })
        .sum();
    (keys, bytes)
}

#[test]
fn a_production_key_takes_at_most_16_kib_in_redis() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let key = KeyId::new("production");
        store
            .register(&key, &Quota::production(), LedgerConfig::default(), t0)
            .await
            .unwrap();
        // The worst case for memory: calls spread over the hour (one entry of the coarse log per
        // tick of W / 1,024), then over the last minute (one entry of the exact log per call).
        let mut now = t0;
        for (pace_ms, calls) in [(360, 8_300), (100, 650)] {
            store
                .set_pace(&key, Some(Duration::from_millis(pace_ms)))
                .await
                .unwrap();
            for _ in 0..calls / 50 {
                clock.set(now);
                let slots = store.reserve_many(&key, now, 50).await.unwrap();
                now = now.max(*slots.last().unwrap());
            }
        }
        assert!(now >= t0 + Duration::from_secs(3_000), "{:?}", now - t0);
        let (keys, bytes) = memory_usage(&server, &store.redis_prefix(&key));
        assert_eq!(keys.len(), 3, "{keys:?}");
        eprintln!("MEMORY USAGE of a full Production key: {bytes} bytes in {keys:?}");
        assert!(bytes <= 16 * 1024, "{bytes} bytes");
    });
}

#[test]
fn the_redis_keys_hold_a_fingerprint_of_the_api_key_in_one_cluster_slot_and_expire() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let key = KeyId::new("tenant");
        let secret = fabraix_scheduler::ApiKey::new("sk-live-do-not-leak-42").unwrap();
        store.bind_fingerprint(&key, secret.fingerprint());
        store
            .register(
                &key,
                &"5/1s,20/1m".parse().unwrap(),
                LedgerConfig::default(),
                t0,
            )
            .await
            .unwrap();
        store.reserve(&key, t0).await.unwrap();
        let mut conn = server.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        let fp = secret.fingerprint().trim_start_matches("key#").to_string();
        assert_eq!(keys.len(), 3, "{keys:?}");
        for k in &keys {
            assert!(!k.contains("do-not-leak"), "{k}");
            assert!(k.starts_with(&format!("fx:v1:{{{fp}}}:")), "{k}");
            let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut conn).unwrap();
            // The longest window (1 min) plus the guard and a second after the latest slot, extended
            // two seconds at a time.
            assert!(ttl > 60_000 && ttl <= 63_200, "{k}: {ttl} ms");
        }
    });
}

#[test]
fn every_key_of_a_state_expires_whatever_wrote_it() {
    // A state only registered (a plan read, say), and one of token buckets (whose rings are never
    // written whole): each key the script created carries an expiry.
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let quota: fabraix_scheduler::Quota = "5/1s,20/1m".parse().unwrap();
        let only_registered = KeyId::new("registered");
        store
            .register(&only_registered, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        let buckets = KeyId::new("buckets");
        let config = LedgerConfig::default().semantics(WindowSemantics::TokenBucket);
        store.register(&buckets, &quota, config, t0).await.unwrap();
        for _ in 0..3 {
            store.reserve(&buckets, t0).await.unwrap();
        }
        let mut conn = server.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        assert!(keys.len() >= 4, "{keys:?}");
        for k in &keys {
            let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut conn).unwrap();
            assert!(ttl > 0, "{k} has no expiry ({ttl})");
        }
    });
}

#[test]
fn a_flushed_script_is_loaded_again() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let key = KeyId::new("k");
        store
            .register(&key, &"2/1s".parse().unwrap(), LedgerConfig::default(), t0)
            .await
            .unwrap();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut server.conn())
            .unwrap();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        assert_eq!(
            store.reserve(&key, t0).await.unwrap(),
            t0 + Duration::from_millis(1_100),
            "the window and its guard still hold after the flush"
        );
    });
}

#[test]
fn a_rolled_back_state_is_detected_and_seeded_again() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store =
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_millis(200)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests();
        let key = KeyId::new("k");
        let quota: Quota = "2/10s".parse().unwrap();
        store
            .register(&key, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        // A replica's copy, taken after the first call; the second is then lost by a failover.
        let prefix = store.redis_prefix(&key);
        let mut conn = server.conn();
        let dumps: Vec<(String, Vec<u8>)> = ["h", "w1"]
            .iter()
            .map(|s| {
                let k = format!("{prefix}:{s}");
                let d: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut conn).unwrap();
                (k, d)
            })
            .collect();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        for (k, d) in &dumps {
            let _: () = redis::cmd("RESTORE")
                .arg(k)
                .arg(0)
                .arg(d)
                .arg("REPLACE")
                .query(&mut conn)
                .unwrap();
        }
        // Read as it stands, the state holds one call: a third would go at once. Seeded again
        // with this process's two calls, it waits for the first to leave the window.
        let t1 = t0 + Duration::from_millis(500);
        clock.set(t1);
        let third = store.reserve(&key, t1).await.unwrap();
        assert!(third >= t0 + Duration::from_secs(10), "{:?}", third - t0);
    });
}

#[test]
fn a_rolled_back_write_is_detected_even_after_another_process_wrote_since() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let connect = || async {
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_secs(20)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests()
        };
        let a = connect().await;
        let b = connect().await;
        let key = KeyId::new("k");
        let quota: Quota = "3/10s".parse().unwrap();
        for s in [&a, &b] {
            s.register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
        }
        assert_eq!(a.reserve(&key, t0).await.unwrap(), t0);
        // A replica's copy after `a`'s first call; `a`'s second is then lost by a failover.
        let prefix = a.redis_prefix(&key);
        let mut conn = server.conn();
        let dumps: Vec<(String, Vec<u8>)> = ["h", "w1"]
            .iter()
            .map(|s| {
                let k = format!("{prefix}:{s}");
                let d: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut conn).unwrap();
                (k, d)
            })
            .collect();
        assert_eq!(a.reserve(&key, t0).await.unwrap(), t0);
        for (k, d) in &dumps {
            let _: () = redis::cmd("RESTORE")
                .arg(k)
                .arg(0)
                .arg(d)
                .arg("REPLACE")
                .query(&mut conn)
                .unwrap();
        }
        // `b` writes first after the failover (it cannot know of the lost call): the state's
        // sequence number is back where `a` last saw it.
        assert_eq!(b.reserve(&key, t0).await.unwrap(), t0);
        // Three calls went at t0 (two of `a`, one of `b`): `a`'s next must wait for the window,
        // which it can only do if it sees that its second call is gone and tells it again.
        let t1 = t0 + Duration::from_millis(500);
        clock.set(t1);
        let fourth = a.reserve(&key, t1).await.unwrap();
        assert!(fourth >= t0 + Duration::from_secs(10), "{:?}", fourth - t0);
    });
}

fn settle(d: Duration) -> RedisStoreConfig {
    let mut config = unwatched();
    config.reseed_settle = d;
    config
}

#[test]
fn a_restarted_empty_redis_is_told_the_calls_that_still_count() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let connect = || async {
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_millis(300)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests()
        };
        let a = connect().await;
        let b = connect().await;
        let key = KeyId::new("k");
        let quota: Quota = "4/10s".parse().unwrap();
        for s in [&a, &b] {
            s.register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
        }
        for s in [&a, &b, &a] {
            assert_eq!(s.reserve(&key, t0).await.unwrap(), t0);
        }
        let port = server.port;
        server.kill();
        server = RedisServer::start_on(port);
        let t1 = t0 + Duration::from_secs(1);
        clock.set(t1);
        // `b` reaches the empty server first and seeds its one call (the state holds new slots
        // back for the settle); `a` then adds its two: the fourth call fits, the fifth waits for
        // the window.
        let fourth = b.reserve(&key, t1).await.unwrap();
        assert!(
            fourth >= t1 + Duration::from_millis(300),
            "{:?}",
            fourth - t0
        );
        let fifth = a.reserve(&key, t1).await.unwrap();
        assert!(fifth >= t0 + Duration::from_secs(10), "{:?}", fifth - t0);
    });
    drop(server);
}

#[test]
fn a_state_older_than_52_days_is_replaced_and_its_calls_that_count_are_kept() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let connect = || async {
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_millis(300)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests()
        };
        let a = connect().await;
        let b = connect().await;
        let key = KeyId::new("k");
        let quota: Quota = "4/10s".parse().unwrap();
        for s in [&a, &b] {
            s.register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
        }
        assert_eq!(a.reserve(&key, t0).await.unwrap(), t0);
        let epoch = |store: &RedisLedgerStore| -> String {
            redis::cmd("HGET")
                .arg(format!("{}:h", store.redis_prefix(&key)))
                .arg("ep")
                .query(&mut server.conn())
                .unwrap()
        };
        let first = epoch(&a);
        // Just before the state's 2^52 ns: the key has been busy all along (its state never
        // expired), and three calls of its window go out.
        let late = t0 + Duration::from_nanos(1 << 52) - Duration::from_secs(1);
        clock.set(late);
        for s in [&a, &b, &a] {
            assert_eq!(s.reserve(&key, late).await.unwrap(), late);
        }
        assert_eq!(epoch(&a), first, "not yet replaced");
        // Past it: the state is replaced by a new one (a new epoch, on a new origin), which the
        // fleet tells its three calls; the window still holds four.
        let t1 = late + Duration::from_secs(2);
        clock.set(t1);
        let fourth = b.reserve(&key, t1).await.unwrap();
        assert!(fourth >= t1, "{:?}", fourth - t1);
        assert_ne!(epoch(&a), first, "a new state");
        let fifth = a.reserve(&key, t1).await.unwrap();
        assert!(
            fifth >= late + Duration::from_secs(10),
            "{:?}",
            fifth - late
        );
        // And the new state serves exactly: its times are on its own scale.
        let sixth = b.reserve(&key, t1).await.unwrap();
        assert!(
            sixth >= late + Duration::from_secs(10),
            "{:?}",
            sixth - late
        );
    });
}

#[test]
fn the_hash_keeps_the_latest_writers_only_and_a_dropped_writer_is_not_taken_for_a_rollback() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let key = KeyId::new("k");
        let quota: Quota = "1000/10s".parse().unwrap();
        let mut stores = Vec::new();
        for _ in 0..150 {
            let store = store_on(&server, &clock).await;
            store
                .register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
            assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
            stores.push(store);
        }
        let hash = format!("{}:h", stores[0].redis_prefix(&key));
        let fields: usize = redis::cmd("HLEN")
            .arg(&hash)
            .query(&mut server.conn())
            .unwrap();
        // sig, ep, os, ou, pw and at most 64 writers.
        assert!(fields <= 69, "{fields} fields");
        let epoch = || -> String {
            redis::cmd("HGET")
                .arg(&hash)
                .arg("ep")
                .query(&mut server.conn())
                .unwrap()
        };
        let before = epoch();
        // The first writer's field was dropped: its next call is no rollback (a rollback would
        // replace the state, a new epoch, and hand out its slots again).
        for store in &stores[..3] {
            assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        }
        assert_eq!(epoch(), before);
        // And every call still counts: 153 made, 847 left in the window, then none.
        let slots_left = stores[1].reserve_many(&key, t0, 1000 - 153).await.unwrap();
        assert!(slots_left.iter().all(|&t| t == t0));
        assert!(stores[2].reserve(&key, t0).await.unwrap() >= t0 + Duration::from_secs(10));
    });
}

#[test]
fn calls_older_than_a_state_seeded_by_an_idle_process_still_count() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let connect = || async {
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_millis(300)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests()
        };
        let a = connect().await;
        let b = connect().await;
        let key = KeyId::new("k");
        let quota: Quota = "2/10s".parse().unwrap();
        for s in [&a, &b] {
            s.register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
        }
        for _ in 0..2 {
            assert_eq!(a.reserve(&key, t0).await.unwrap(), t0);
        }
        let port = server.port;
        server.kill();
        server = RedisServer::start_on(port);
        let t1 = t0 + Duration::from_secs(1);
        clock.set(t1);
        // `b`, which made no call, reaches the empty server first: the new state begins now.
        b.reserve(&key, t1).await.unwrap();
        // `a`'s two calls were made before that state began; they still count for 9 s.
        let next = a.reserve(&key, t1).await.unwrap();
        assert!(next >= t0 + Duration::from_secs(10), "{:?}", next - t0);
    });
    drop(server);
}

/// Waits (real time, up to 10 s) until Redis holds `key`'s state.
async fn state_exists(server: &RedisServer, store: &RedisLedgerStore, key: &KeyId) {
    let hash = format!("{}:h", store.redis_prefix(key));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis::cmd("EXISTS")
        .arg(&hash)
        .query::<bool>(&mut server.conn())
        .unwrap()
    {
        assert!(std::time::Instant::now() < deadline, "no state in Redis");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn no_slot_of_a_new_state_is_computed_before_the_fleet_told_it_its_calls() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        // A settle waits up to 2 s of real time: the other process has that long to re-seed.
        let clock = ManualClock::with_real_wait(t0, Duration::from_secs(2));
        let connect = || async {
            RedisLedgerStore::connect_with(&server.url(), settle(Duration::from_secs(5)))
                .await
                .unwrap()
                .with_clock(clock.clone())
                .with_local_time_for_tests()
        };
        let a = connect().await;
        let b = connect().await;
        let key = KeyId::new("k");
        let quota: Quota = "2/10s".parse().unwrap();
        for s in [&a, &b] {
            s.register(&key, &quota, LedgerConfig::default(), t0)
                .await
                .unwrap();
        }
        for _ in 0..2 {
            assert_eq!(a.reserve(&key, t0).await.unwrap(), t0);
        }
        let port = server.port;
        server.kill();
        server = RedisServer::start_on(port);
        let t1 = t0 + Duration::from_secs(1);
        clock.set(t1);
        // `b` reaches the empty server first and creates the new state; its reservation waits
        // for the settle. `a` tells the state its two calls meanwhile.
        let first = tokio::spawn({
            let (b, key) = (b.clone(), key.clone());
            async move { b.reserve(&key, t1).await }
        });
        state_exists(&server, &b, &key).await;
        let second = a.reserve(&key, t1).await.unwrap();
        let first = first.await.unwrap().unwrap();
        // Computed before `a`'s calls arrived, `b`'s slot would be the settle's end (6 s): a
        // third call in `a`'s window.
        for slot in [first, second] {
            assert!(slot >= t0 + Duration::from_secs(10), "{:?}", slot - t0);
        }
    });
    drop(server);
}

#[test]
fn a_window_log_evicted_from_redis_is_seeded_again_not_an_error_on_every_call() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let key = KeyId::new("k");
        let quota: Quota = "1/10s".parse().unwrap();
        store
            .register(&key, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        // Evicted under memory pressure (an `allkeys-*` policy), or deleted by hand: the hash
        // stays, the ring of the limit's calls is gone.
        let ring = format!("{}:w1", store.redis_prefix(&key));
        let _: () = redis::cmd("DEL")
            .arg(&ring)
            .query(&mut server.conn())
            .unwrap();
        let t1 = t0 + Duration::from_millis(500);
        clock.set(t1);
        let next = store
            .reserve(&key, t1)
            .await
            .expect("a slot, not a script error");
        assert!(next >= t0 + Duration::from_secs(10), "{:?}", next - t0);
    });
}

#[test]
fn a_paused_redis_is_waited_for_and_a_gone_one_fails_after_the_deadline() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let mut config = RedisStoreConfig::default();
        config.unreachable = Unreachable::Wait {
            deadline: Duration::from_secs(3),
        };
        config.response_timeout = Duration::from_millis(200);
        let store = RedisLedgerStore::connect_with(&server.url(), config)
            .await
            .unwrap()
            .with_clock(Arc::new(fabraix_scheduler::TokioClock::new()));
        let key = KeyId::new("k");
        store
            .register(
                &key,
                &"100/1s".parse().unwrap(),
                LedgerConfig::default(),
                t0,
            )
            .await
            .unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(700)
            .arg("ALL")
            .query(&mut server.conn())
            .unwrap();
        let started = std::time::Instant::now();
        store
            .reserve(&key, Instant::now())
            .await
            .expect("waits out the pause");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(store.unreachable_since().is_none(), "reachable again");

        server.kill();
        let err = store.reserve(&key, Instant::now()).await.unwrap_err();
        let StoreError::Unavailable(message) = &err else {
            panic!("{err:?}");
        };
        assert!(message.contains("Redis unreachable for"), "{message}");
        assert!(store.unreachable_since().is_some());
    });
}

#[test]
fn a_fleet_size_gives_each_process_its_share_while_redis_is_gone() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = RedisLedgerStore::connect_with(&server.url(), unwatched())
            .await
            .unwrap()
            .with_clock(clock.clone())
            .fleet_size(std::num::NonZeroU32::new(4).unwrap());
        let key = KeyId::new("k");
        store
            .register(&key, &"8/10s".parse().unwrap(), LedgerConfig::default(), t0)
            .await
            .unwrap();
        assert_eq!(store.reserve(&key, t0).await.unwrap(), t0);
        server.kill();
        // The share of 8/10s for 4 processes is 2/10s; this process used one of them.
        let t1 = t0 + Duration::from_millis(100);
        clock.set(t1);
        let one = store.reserve(&key, t1).await.unwrap();
        let two = store.reserve(&key, t1).await.unwrap();
        assert_eq!(one, t1);
        assert!(two >= t0 + Duration::from_secs(10), "{:?}", two - t0);
    });
}

/// How many script calls the server has run.
fn script_calls(server: &RedisServer) -> u64 {
    command_calls(server, &["evalsha", "eval"])
}

/// How many times the server has run the commands `names` (lower case), together.
fn command_calls(server: &RedisServer, names: &[&str]) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .unwrap();
    stats
        .lines()
        .filter(|l| {
            names
                .iter()
                .any(|n| l.starts_with(&format!("cmdstat_{n}:")))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn the_keys_expiry_is_extended_seconds_at_a_time_not_at_every_reservation() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let key = KeyId::new("k");
        // 100 calls a second: 50 reservations move the latest slot half a second.
        let quota: Quota = "100/1s".parse().unwrap();
        store
            .register(&key, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        store.reserve(&key, t0).await.unwrap();
        let before = command_calls(&server, &["pexpire"]);
        for _ in 0..50 {
            store.reserve(&key, t0).await.unwrap();
        }
        let set = command_calls(&server, &["pexpire"]) - before;
        // At most one extension of the hash and the ring (two keys).
        assert!(set <= 2, "{set} PEXPIREs for 50 reservations");
    });
}

#[test]
fn forecasts_deep_in_a_queue_read_the_state_once_not_once_each() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let store = store_on(&server, &clock).await;
        let memory = MemoryLedgerStore::new();
        let key = KeyId::new("k");
        let quota: Quota = "3/1s,10/1m".parse().unwrap();
        store
            .register(&key, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        memory
            .register(&key, &quota, LedgerConfig::default(), t0)
            .await
            .unwrap();
        store.reserve(&key, t0).await.unwrap();
        memory.reserve(&key, t0).await.unwrap();
        let plan = memory.plan(&key, t0, 2_000).await.unwrap();
        let before = script_calls(&server);
        // A queue of 2,000 jobs, each asking for its ETA.
        for k in 1..=2_000 {
            let shared = store.nth_slot(&key, t0, k).await.unwrap();
            assert_eq!(shared, plan[k - 1], "k = {k}");
        }
        assert_eq!(script_calls(&server) - before, 1, "one read of the state");
    });
}

#[test]
fn a_state_an_earlier_version_wrote_is_taken_over_and_its_processes_refused() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let t0 = Instant::now();
        let clock = ManualClock::new(t0);
        let key = KeyId::new("k");
        let quota: Quota = "2/10s".parse().unwrap();
        let config = LedgerConfig::default();
        // The signature the store gives this quota: read from a state it made, then removed.
        let probe = store_on(&server, &clock).await;
        probe.register(&key, &quota, config, t0).await.unwrap();
        let prefix = probe.redis_prefix(&key);
        let mut conn = server.conn();
        let stored: String = redis::cmd("HGET")
            .arg(format!("{prefix}:h"))
            .arg("sig")
            .query(&mut conn)
            .unwrap();
        let sig = stored
            .strip_prefix("L2 ")
            .expect("a layout mark")
            .to_string();
        let (hash, ring) = (format!("{prefix}:h"), format!("{prefix}:w1"));
        let _: () = redis::cmd("DEL")
            .arg(&hash)
            .arg(&ring)
            .query(&mut conn)
            .unwrap();
        // A process of the earlier version makes the state and takes two slots at t0.
        let v1 = redis::Script::new(include_str!("redis_support/ledger_v1.lua"));
        let ns = |d: Duration| d.as_nanos().to_string();
        let old = |op: &str, known: &str, extra: &[&str]| {
            let mut call = v1.key(&hash);
            call.key(&ring)
                .arg(op)
                .arg("0")
                .arg("0")
                .arg(&sig)
                .arg(known);
            call.arg("s")
                .arg(ns(config.guard_for(&quota)))
                .arg(ns(config.counted_for(&quota)))
                .arg("1")
                .arg("2")
                .arg(ns(Duration::from_secs(10)));
            for a in extra {
                call.arg(*a);
            }
            call.invoke::<redis::Value>(&mut server.conn())
        };
        old("register", " 0 old 0", &["E1", "0"]).unwrap();
        old("reserve", "E1 1 old 1", &["2"]).unwrap();
        // A process of this version takes the state over: the two calls still hold the window.
        let store = store_on(&server, &clock).await;
        store.register(&key, &quota, config, t0).await.unwrap();
        let t1 = t0 + Duration::from_secs(1);
        clock.set(t1);
        let next = store.reserve(&key, t1).await.unwrap();
        assert!(next >= t0 + Duration::from_secs(10), "{:?}", next - t0);
        let text_field: bool = redis::cmd("HEXISTS")
            .arg(&hash)
            .arg("sq")
            .query(&mut conn)
            .unwrap();
        assert!(!text_field, "the earlier layout's fields are gone");
        // The earlier version's process is refused, not let loose on a layout it cannot read.
        let err = old("reserve", "E1 2 old 2", &["1"]).unwrap_err();
        assert_eq!(err.code(), Some("FABRAIX_QUOTA_MISMATCH"), "{err:?}");
    });
}
