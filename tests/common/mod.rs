//! Shared set-up for the scheduler's integration tests: a mock server on loopback and a scheduler
//! with one key pointed at it.
#![allow(dead_code)]

use fabraix_scheduler::mock::{MockServer, MockServerBuilder};
use fabraix_scheduler::{
    ApiKey, Job, KeyConfig, KeyId, Priority, Quota, RetryPolicy, Scheduler, TransportConfig,
};
use std::time::Duration;

pub struct Rig {
    pub server: MockServer,
    pub scheduler: Scheduler,
    pub key: KeyId,
}

/// Timeouts far beyond any virtual wait in these tests, so a paused clock that jumps ahead never
/// fires one spuriously.
pub fn patient_transport() -> TransportConfig {
    let day = Duration::from_secs(24 * 3600);
    TransportConfig::default()
        .connect_timeout(day)
        .request_timeout(day)
        .read_timeout(day)
}

pub async fn rig(server: MockServerBuilder, secret: &str, quota: Quota) -> Rig {
    rig_with(server, secret, quota, RetryPolicy::default(), |c| c).await
}

pub async fn rig_with(
    server: MockServerBuilder,
    secret: &str,
    quota: Quota,
    policy: RetryPolicy,
    configure: impl FnOnce(KeyConfig) -> KeyConfig,
) -> Rig {
    rig_with_id(server, secret, quota, policy, configure, KeyId::new("k")).await
}

/// As [`rig_with`], with the key added under `key` (a test may add one id to several schedulers).
pub async fn rig_with_id(
    server: MockServerBuilder,
    secret: &str,
    quota: Quota,
    policy: RetryPolicy,
    configure: impl FnOnce(KeyConfig) -> KeyConfig,
    key: KeyId,
) -> Rig {
    let server = server.start().await.expect("mock server starts");
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .retry_policy(policy)
        .seed(42)
        .build()
        .expect("scheduler builds");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(secret).unwrap(),
        &server.base_url(),
        quota,
    )
    .unwrap();
    scheduler.add_key(configure(config)).await.unwrap();
    Rig {
        server,
        scheduler,
        key,
    }
}

pub fn event(n: usize) -> Job {
    Job::post_json(
        "/event",
        &serde_json::json!({
            "event_type": "user",
            "trace_id": "00000000-0000-4000-8000-000000000000",
            "timestamp": 1.0,
            "content": format!("{{\"n\":{n}}}"),
            "schema": "{}",
        }),
    )
    .unwrap()
}

pub fn check() -> Job {
    Job::post_json(
        "/check",
        &serde_json::json!({
            "event_type": "action_check",
            "trace_id": "00000000-0000-4000-8000-000000000000",
            "timestamp": 1.0,
            "content": "{\"cmd\":\"ls\"}",
            "schema": "{}",
        }),
    )
    .unwrap()
    .with_priority(Priority::Interactive)
}

/// Submits events 0..n to the rig's key, in order, and returns their tickets.
pub async fn submit_events(rig: &Rig, n: usize) -> Vec<fabraix_scheduler::Ticket> {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        tickets.push(rig.scheduler.submit(&rig.key, event(i)).await.unwrap());
    }
    tickets
}

/// Submits events 0..n and waits for every one to succeed (panics on a failed outcome).
pub async fn send_events(rig: &Rig, n: usize) -> Vec<fabraix_scheduler::Response> {
    let mut responses = Vec::with_capacity(n);
    for t in submit_events(rig, n).await {
        responses.push(t.await.unwrap());
    }
    responses
}
