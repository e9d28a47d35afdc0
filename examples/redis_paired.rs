//! Reservations per second on one key through `RedisLedgerStore` against `MemoryLedgerStore`, in
//! the same run: 1 client, then 16 (each its own connection, as 16 processes would have),
//! Production quota (its windows fill within the first thousands of reservations and then roll),
//! latency p50 / p99 of one reservation, and the ratio of the two stores; then Redis's own time
//! per script call and the Redis commands the script ran per call (`INFO commandstats`); then
//! jobs per second through one scheduler with one dispatch task, its keys' ledgers in Redis
//! against in memory, on 1 key and on 16 keys (unlimited quota, a transport that answers at
//! once: what is left is the scheduler and its store). Starts its own redis-server on a free
//! loopback port (`FABRAIX_REDIS_SERVER` or `redis-server` on PATH).
//!
//! `cargo run --example redis_paired -- [RESERVATIONS_PER_CLIENT]` (default 20,000)

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use bytes::Bytes;
use fabraix_scheduler::{
    ApiKey, HttpResponse, Instant, Job, KeyConfig, KeyId, LedgerConfig, LedgerStore,
    MemoryLedgerStore, OutgoingRequest, Quota, RedisLedgerStore, SchedulerBuilder, Transport,
    TransportFuture,
};
use http::Method;

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// `clients` tasks, each reserving `n` slots of one key through its own store.
async fn run<S: LedgerStore + Clone>(stores: Vec<S>, key: &KeyId, n: usize) -> Run {
    let started = WallInstant::now();
    let mut tasks = Vec::new();
    for store in stores {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            for _ in 0..n {
                let t = WallInstant::now();
                store.reserve(&key, Instant::now()).await.expect("reserves");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    summarise(all, started.elapsed())
}

/// `n` PINGs one after another through one connection manager.
async fn ping_round_trips(url: &str, n: usize) -> Run {
    let client = redis::Client::open(url).expect("url");
    let mut conn = redis::aio::ConnectionManager::new(client)
        .await
        .expect("connects");
    let started = WallInstant::now();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = WallInstant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PONG");
        latencies.push(t.elapsed());
    }
    summarise(latencies, started.elapsed())
}

/// Answers every request with an empty 200 at once.
struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, _request: OutgoingRequest<'_>) -> TransportFuture {
        Box::pin(async { Ok(HttpResponse::new(Bytes::new())) })
    }
}

/// Jobs per second through one scheduler with one dispatch task on `store`: `n` jobs submitted
/// round robin over `keys` keys (unlimited quota), then every outcome awaited.
async fn scheduler_jobs<S: LedgerStore>(store: S, keys: usize, n: usize, tag: &str) -> f64 {
    let scheduler = SchedulerBuilder::with_store(store)
        .transport(Arc::new(NoopTransport))
        .dispatch_tasks(1)
        .seed(1)
        .build()
        .expect("scheduler builds");
    let mut ids = Vec::with_capacity(keys);
    for i in 0..keys {
        let id = KeyId::new(format!("jobs-{keys}-{i}"));
        let config = KeyConfig::new(
            id.clone(),
            ApiKey::new(format!("bench-{tag}-{keys}-{i}")).expect("key"),
            "http://127.0.0.1:9/v1",
            Quota::unlimited(),
        )
        .expect("loopback endpoint")
        .queue_capacity(n);
        scheduler.add_key(config).await.expect("key added");
        ids.push(id);
    }
    let started = WallInstant::now();
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let job = Job::new(Method::POST, "/event").with_body(Bytes::from_static(b"{}"));
        tickets.push(
            scheduler
                .submit(&ids[i % keys], job)
                .await
                .expect("submitted"),
        );
    }
    for t in tickets {
        t.await.expect("success");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn print(label: &str, clients: usize, redis: &Run, memory: &Run) {
    println!(
        "{label:>6} | {clients:>2} client(s) | redis {:>9.0}/s p50 {:>7.1} µs p99 {:>8.1} µs | memory {:>10.0}/s p50 {:>5.2} µs p99 {:>5.2} µs | memory/redis throughput {:>6.1}x",
        redis.per_second,
        redis.p50.as_secs_f64() * 1e6,
        redis.p99.as_secs_f64() * 1e6,
        memory.per_second,
        memory.p50.as_secs_f64() * 1e6,
        memory.p99.as_secs_f64() * 1e6,
        memory.per_second / redis.per_second,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RESERVATIONS_PER_CLIENT is a number"))
        .unwrap_or(20_000);
    let server = redis_support::RedisServer::start();
    let quota = Quota::production();
    let api_key = ApiKey::new("bench-key").unwrap();
    let now = Instant::now();
    for clients in [1usize, 16] {
        let key = KeyId::new(format!("bench-{clients}"));
        let mut redis_stores = Vec::new();
        for _ in 0..clients {
            let store = RedisLedgerStore::connect(&server.url())
                .await
                .expect("connects");
            store.bind_fingerprint(&key, &format!("{}{clients}", api_key.fingerprint()));
            store
                .register(&key, &quota, LedgerConfig::default(), now)
                .await
                .expect("registers");
            redis_stores.push(store);
        }
        let memory = MemoryLedgerStore::new();
        memory
            .register(&key, &quota, LedgerConfig::default(), now)
            .await
            .unwrap();
        let per_client = (n / clients).max(1);
        let redis = run(redis_stores, &key, per_client).await;
        let memory = run(vec![memory; clients], &key, per_client).await;
        print("one key", clients, &redis, &memory);
    }
    // The floor under one reservation from one client: a PING's round trip through the same kind
    // of connection (redis-rs's connection manager), in the same run.
    let ping = ping_round_trips(&server.url(), n).await;
    println!(
        "  PING |  1 client(s) | redis {:>9.0}/s p50 {:>7.1} µs p99 {:>8.1} µs (the round trip alone)",
        ping.per_second,
        ping.p50.as_secs_f64() * 1e6,
        ping.p99.as_secs_f64() * 1e6,
    );
    // The server's own time per reservation (the script's run in Redis, without the round trip),
    // and the commands the script ran, per reservation.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .expect("INFO");
    let calls = |line: &str| -> Option<(String, u64)> {
        let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
        let calls = rest
            .strip_prefix("calls=")?
            .split(',')
            .next()?
            .parse()
            .ok()?;
        Some((name.to_string(), calls))
    };
    let scripts = stats
        .lines()
        .filter_map(calls)
        .find(|(name, _)| name == "evalsha")
        .map_or(1, |(_, n)| n.max(1));
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha")) {
        println!("redis-server {line}");
    }
    let inner: Vec<String> = stats
        .lines()
        .filter_map(calls)
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "evalsha" | "eval" | "script|load" | "info" | "ping" | "hello" | "client|setinfo"
            )
        })
        .map(|(name, n)| format!("{name} {:.2}", n as f64 / scripts as f64))
        .collect();
    println!(
        "redis-server commands per script call: {}",
        inner.join(", ")
    );
    // After the counts above, which are the reservations' alone.
    for keys in [1usize, 16] {
        let store = RedisLedgerStore::connect(&server.url())
            .await
            .expect("connects");
        let redis = scheduler_jobs(store, keys, n, "redis").await;
        let memory = scheduler_jobs(MemoryLedgerStore::new(), keys, n, "memory").await;
        println!(
            "  jobs | {keys:>2} key(s), 1 dispatch task | redis {redis:>9.0} jobs/s | memory {memory:>10.0} jobs/s | memory/redis {:>6.1}x",
            memory / redis
        );
    }
}
