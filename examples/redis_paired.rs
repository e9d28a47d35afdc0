//! Reservations per second on one key through `RedisLedgerStore` against `MemoryLedgerStore`, in
//! the same run: 1 client, then 16 (each its own connection, as 16 processes would have), then one
//! client (one store, one multiplexed connection) with 4 and 16 reservations in flight at once;
//! Production quota (its windows fill within the first thousands of reservations and then roll),
//! latency p50 / p99 of one reservation, and the ratio of the two stores. For each row, Redis's
//! own time per script call and the Redis commands the script ran per call (`INFO
//! commandstats`); last, the round-trip floor: a `PING` through the same kind of connection, and
//! one client's reservation p50 less the PING's. Starts its own redis-server on a free loopback
//! port (`FABRAIX_REDIS_SERVER` or `redis-server` on PATH).
//!
//! `cargo run --example redis_paired -- [RESERVATIONS_PER_CLIENT]` (default 20,000)

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant as WallInstant};

use fabraix_scheduler::{
    ApiKey, Instant, KeyId, LedgerConfig, LedgerStore, MemoryLedgerStore, Quota, RedisLedgerStore,
};

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

/// One task per store, each reserving `n` slots of one key through it (a store given several
/// times: that many reservations in flight on its connection).
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

fn print(label: &str, clients: &str, redis: &Run, memory: &Run) {
    println!(
        "{label:>8} | {clients:>11} | redis {:>9.0}/s p50 {:>7.1} µs p99 {:>8.1} µs | memory {:>10.0}/s p50 {:>5.2} µs p99 {:>5.2} µs | memory/redis throughput {:>6.1}x",
        redis.per_second,
        us(redis.p50),
        us(redis.p99),
        memory.per_second,
        us(memory.p50),
        us(memory.p99),
        memory.per_second / redis.per_second,
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Redis's own time per script call (µs, `usec_per_call` of `EVALSHA`) and the commands the
/// script ran per call, since the last `CONFIG RESETSTAT`; then resets the counts.
fn server_stats(conn: &mut redis::Connection) -> String {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO");
    let field = |rest: &str, name: &str| -> Option<f64> {
        rest.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let entries: Vec<(String, f64, f64)> = stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            Some((
                name.to_string(),
                field(rest, "calls")?,
                field(rest, "usec_per_call")?,
            ))
        })
        .collect();
    let (scripts, per_call) = entries
        .iter()
        .find(|(name, _, _)| name == "evalsha")
        .map_or((1.0, 0.0), |(_, calls, per)| (calls.max(1.0), *per));
    let mut inner: Vec<(String, f64)> = entries
        .iter()
        .filter(|(name, _, _)| {
            !matches!(
                name.as_str(),
                "evalsha"
                    | "eval"
                    | "script|load"
                    | "info"
                    | "ping"
                    | "hello"
                    | "client|setinfo"
                    | "config|resetstat"
            )
        })
        .map(|(name, calls, _)| (name.clone(), calls / scripts))
        .collect();
    inner.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = inner.iter().map(|(_, n)| n).sum();
    let listed: Vec<String> = inner
        .iter()
        .filter(|(_, n)| *n >= 0.01)
        .map(|(name, n)| format!("{name} {n:.2}"))
        .collect();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(conn)
        .expect("RESETSTAT");
    format!(
        "{per_call:.1} µs of Redis per script call, {total:.1} commands ({})",
        listed.join(", ")
    )
}

/// Each store `in_flight` times: that many tasks share its one multiplexed connection.
fn spread<S: Clone>(stores: Vec<S>, in_flight: usize) -> Vec<S> {
    stores
        .into_iter()
        .flat_map(|s| std::iter::repeat_n(s, in_flight))
        .collect()
}

/// A Redis store and a memory store for `key`, registered, `count` of each (one connection per
/// Redis store).
async fn stores(
    url: &str,
    key: &KeyId,
    fingerprint: &str,
    count: usize,
) -> (Vec<RedisLedgerStore>, Vec<MemoryLedgerStore>) {
    let quota = Quota::production();
    let now = Instant::now();
    let mut redis_stores = Vec::new();
    for _ in 0..count {
        let store = RedisLedgerStore::connect(url).await.expect("connects");
        store.bind_fingerprint(key, fingerprint);
        store
            .register(key, &quota, LedgerConfig::default(), now)
            .await
            .expect("registers");
        redis_stores.push(store);
    }
    let memory = MemoryLedgerStore::new();
    memory
        .register(key, &quota, LedgerConfig::default(), now)
        .await
        .unwrap();
    (redis_stores, vec![memory; count])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RESERVATIONS_PER_CLIENT is a number"))
        .unwrap_or(20_000);
    let server = redis_support::RedisServer::start();
    let mut stats_conn = server.conn();
    let api_key = ApiKey::new("bench-key").unwrap();
    let mut one_client_p50 = Duration::ZERO;
    // (connections, reservations in flight on each)
    for (connections, in_flight) in [(1usize, 1usize), (16, 1), (1, 4), (1, 16)] {
        let label = format!("{connections}x{in_flight}");
        let key = KeyId::new(format!("bench-{label}"));
        let fingerprint = format!("{}{label}", api_key.fingerprint());
        let (redis_stores, memory_stores) =
            stores(&server.url(), &key, &fingerprint, connections).await;
        let tasks = connections * in_flight;
        let per_task = (n / tasks).max(1);
        let _ = server_stats(&mut stats_conn);
        let redis = run(spread(redis_stores, in_flight), &key, per_task).await;
        let server_side = server_stats(&mut stats_conn);
        let memory = run(spread(memory_stores, in_flight), &key, per_task).await;
        let clients = if in_flight == 1 {
            format!("{connections} client(s)")
        } else {
            format!("1 client x{in_flight}")
        };
        print("one key", &clients, &redis, &memory);
        println!("{:>8}   {server_side}", "");
        if (connections, in_flight) == (1, 1) {
            one_client_p50 = redis.p50;
        }
    }
    // The floor under one reservation from one client: a PING's round trip through the same kind
    // of connection (redis-rs's connection manager), in the same run.
    let ping = ping_round_trips(&server.url(), n).await;
    println!(
        "{:>8} | {:>11} | redis {:>9.0}/s p50 {:>7.1} µs p99 {:>8.1} µs (the round trip alone)",
        "PING",
        "1 client(s)",
        ping.per_second,
        us(ping.p50),
        us(ping.p99),
    );
    println!(
        "one client's reservation p50 less the PING's: {:.1} µs",
        us(one_client_p50) - us(ping.p50)
    );
}
