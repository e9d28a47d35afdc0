//! An agent that emits 250 events/s against the embedded mock server (Development key, time scaled
//! 360×: an hour of quota passes in 10 s) and prints the backlog as it drains. The key carries 100/s at this scale, so a backlog builds. It produces for 10 s,
//! asks a `/check` now and then (answered at the key's next free slot, ahead of the backlog), then
//! waits for the backlog to drain. Ctrl-C ends it like `shutdown(deadline)`: what the quota allows
//! in 2 s is sent, the rest is persisted to the spool and counted.
//!
//! ```text
//! cargo run --example agent_telemetry
//! ```

use std::time::{Duration, SystemTime};

use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
use fabraix_scheduler::telemetry::{TelemetryConfig, TelemetrySender};
use fabraix_scheduler::{
    ActionCheck, ApiKey, Event, EventType, FabraixClient, KeyConfig, KeyId, Quota, Scheduler,
};

const SCALE: f64 = 360.0;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::builder()
        .with_test_keys()
        .time_scale(SCALE)
        .start()
        .await?;
    let quota = Quota::development().time_scaled(SCALE);
    let scheduler = Scheduler::builder().build()?;
    let key = KeyConfig::new(
        "agent",
        ApiKey::new(TEST_DEV_KEY)?,
        &server.base_url(),
        quota.clone(),
    )?;
    scheduler.add_key(key).await?;
    let client = FabraixClient::from_scheduler(scheduler.clone(), KeyId::new("agent"));
    let spool = std::env::temp_dir().join("fabraix-agent-telemetry-example");
    let (sender, recovered) = TelemetrySender::open(client, quota, TelemetryConfig::new(&spool))?;
    println!(
        "spool {} (replaying {} events from a previous run)",
        spool.display(),
        recovered.replay
    );
    let clock = scheduler.clock().clone();

    let mut tick = tokio::time::interval(Duration::from_millis(4));
    let mut report_every = tokio::time::interval(Duration::from_secs(1));
    let started = clock.now();
    let mut produced = 0u64;
    loop {
        let producing = clock.now().saturating_duration_since(started) < Duration::from_secs(10);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("\nCtrl-C: shutting down (2 s to send what the quota allows)");
                break;
            }
            _ = tick.tick(), if producing => {
                let event = Event::new(EventType::ModelOutput, "a1b2c3d4-e5f6-4890-9234-567890abcdef",
                    &serde_json::json!({"step": produced}), &serde_json::json!({"type": "object"}), clock.wall_now())?;
                sender.record(event);
                produced += 1;
                if produced.is_multiple_of(500) {
                    let check = ActionCheck::new("a1b2c3d4-e5f6-4890-9234-567890abcdef",
                        &serde_json::json!({"cmd": "deploy"}), &serde_json::json!({}), SystemTime::UNIX_EPOCH)?;
                    let asked = clock.now();
                    let verdict = sender.check(&check).await?;
                    println!("  /check answered in {:?} (is_safe: {})", clock.now() - asked, verdict.is_safe);
                }
            }
            _ = report_every.tick() => {
                let b = sender.backlog().await;
                println!("{b}");
                if let Some(w) = &b.warning {
                    println!("  warning: {w}");
                }
                if !producing && b.waiting() == 0 {
                    println!("drained");
                    break;
                }
            }
        }
    }
    let report = sender.shutdown(clock.now() + Duration::from_secs(2)).await;
    println!(
        "sent {}, persisted to the spool {}, failed {}, dropped {}",
        report.sent,
        report.persisted,
        report.failed,
        report.dropped.total()
    );
    println!("server: {:?}", server.key_stats("test-dev"));
    server.shutdown().await;
    Ok(())
}
