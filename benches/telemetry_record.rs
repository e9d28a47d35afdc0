//! `TelemetrySender::record` with a backlog of 1,000,000 events (10,000 in memory, the rest in
//! the disk spool): the per-call cost the agent pays. Besides criterion's mean, prints the p50,
//! p99 and p99.9 of 200,000 single calls, and how far the durable watermark trails the last
//! spooled event (group commit: `record` only buffers; the writer task writes one batch per
//! `write`).

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use fabraix_scheduler::telemetry::{Recorded, TelemetryConfig, TelemetrySender};
use fabraix_scheduler::{
    ApiKey, Event, EventType, FabraixClient, KeyConfig, KeyId, Quota, Scheduler,
};

fn event(i: u64) -> Event {
    Event::new(
        EventType::Tool,
        "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        &serde_json::json!({ "id": i, "tool": "search", "query": "rate limits" }),
        &serde_json::json!({"type": "object"}),
        UNIX_EPOCH + Duration::from_secs(1_704_067_200 + i),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fabraix-bench-telemetry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sender = rt.block_on(async {
        let scheduler = Scheduler::builder().build().unwrap();
        // Nothing listens on port 1: the backlog stays (the feeder pauses on errors).
        let key = KeyConfig::new(
            "dev",
            ApiKey::new("k").unwrap(),
            "http://127.0.0.1:1/v1",
            Quota::development(),
        )
        .unwrap();
        scheduler.add_key(key).await.unwrap();
        let client = FabraixClient::from_scheduler(scheduler, KeyId::new("dev"));
        let (sender, _) = TelemetrySender::open(
            client,
            Quota::development(),
            TelemetryConfig::new(&dir).spool_capacity(10_000_000),
        )
        .unwrap();
        Arc::new(sender)
    });
    let _guard = rt.enter();
    let events: Vec<Event> = (0..1_000_000).map(event).collect();
    for e in events {
        assert!(sender.record(e).is_taken());
    }
    let mut next = 1_000_000u64;

    // Percentiles of single calls (the event is built outside the timed part).
    let mut samples = Vec::with_capacity(200_000);
    let mut last_seq = 0;
    for _ in 0..200_000 {
        let e = event(next);
        next += 1;
        let t = Instant::now();
        let r = sender.record(e);
        samples.push(t.elapsed());
        match r {
            Recorded::Spooled(seq) => last_seq = seq,
            other => assert!(other.is_taken(), "{other:?}"),
        }
    }
    let lag = last_seq.saturating_sub(sender.durable_through());
    let t = Instant::now();
    assert!(rt.block_on(sender.wait_durable(last_seq)));
    println!(
        "durable watermark {lag} records behind the last spooled event; durable {:?} later (wait_durable)",
        t.elapsed()
    );
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "record() with a 1,000,000-event backlog: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1]
    );

    c.bench_function("record_with_1m_backlog", |b| {
        b.iter_batched(
            || {
                next += 1;
                event(next)
            },
            |e| sender.record(e),
            criterion::BatchSize::SmallInput,
        )
    });
    drop(_guard);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
