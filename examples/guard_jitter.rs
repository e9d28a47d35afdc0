//! Measures what the ledger's latency guard must cover, in real time over loopback: for each
//! guard, the spread of (server arrival − send instant) and the 429s a sliding-log server returns.
//!
//! `cargo run --release --example guard_jitter [GUARD_US ...]`

use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ServerModel, TEST_DEV_KEY};
use fabraix_scheduler::{ApiKey, Job, KeyConfig, KeyId, Quota, Scheduler, ShutdownMode};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls = 1_000;
    // 50 per 100 ms: windows roll every 100 ms, so most calls wait for a slot (the case the guard
    // protects); 1,000 calls take about 2 s per guard.
    let quota: Quota = "50/100ms".parse()?;
    println!("{calls} calls per guard, quota {quota}, sliding-log mock server, loopback HTTP/1.1");
    println!("| guard | 429s | arrival − send p50 | p99 | p99.9 | max | wall time |");
    println!("|---|---|---|---|---|---|---|");
    // Guards to try, in microseconds: the arguments, or a default sweep.
    let mut guards: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if guards.is_empty() {
        guards = vec![0, 1_000, 5_000, 10_000, 20_000];
    }
    for guard_us in guards {
        let server = MockServer::builder()
            .key(TEST_DEV_KEY, quota.clone())
            .model(ServerModel::SlidingLog)
            .start()
            .await?;
        let scheduler = Scheduler::builder().build()?;
        let key = KeyId::new("jitter");
        let config = KeyConfig::new(
            key.clone(),
            ApiKey::new(TEST_DEV_KEY)?,
            &server.base_url(),
            quota.clone(),
        )?
        .guard(Duration::from_micros(guard_us))
        .max_in_flight(64);
        scheduler.add_key(config).await?;
        let start = scheduler.clock().now();
        let mut tickets = Vec::with_capacity(calls);
        for i in 0..calls {
            let job = Job::post_json(
                "/event",
                &serde_json::json!({"event_type": "user", "trace_id": "t", "timestamp": 0.0, "content": i.to_string(), "schema": "{}"}),
            )?;
            tickets.push(scheduler.submit(&key, job).await?);
        }
        let mut sent = Vec::with_capacity(calls);
        for t in tickets {
            sent.push(t.await?.sent_at);
        }
        let wall = scheduler.clock().now() - start;
        let arrivals: Vec<_> = server.record().into_iter().map(|c| c.arrival).collect();
        sent.sort_unstable();
        let mut delays: Vec<u128> = sent
            .iter()
            .zip(&arrivals)
            .map(|(s, a)| a.saturating_duration_since(*s).as_micros())
            .collect();
        delays.sort_unstable();
        let pct = |p: f64| delays[((delays.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {guard_us} µs | {} | {} µs | {} µs | {} µs | {} µs | {:.2} s |",
            server.refused(),
            pct(0.5),
            pct(0.99),
            pct(0.999),
            pct(1.0),
            wall.as_secs_f64()
        );
        scheduler.shutdown(ShutdownMode::Drain).await;
        server.shutdown().await;
    }
    Ok(())
}
