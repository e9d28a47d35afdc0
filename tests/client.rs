//! The typed Fabraix calls, end to end against the mock server.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::patient_transport;
use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY, TEST_RESTRICTED_KEY};
use fabraix_scheduler::{
    ActionCheck, ApiKey, ClientError, Event, EventType, FabraixClient, Job, JobError, KeyConfig,
    KeyId, Quota, RegisterAgentRun, Scheduler,
};
use serde_json::json;

async fn client(server: &MockServer, secret: &str) -> FabraixClient {
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .build()
        .unwrap();
    let key = KeyId::new("agent");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(secret).unwrap(),
        &server.base_url(),
        Quota::development(),
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    FabraixClient::from_scheduler(scheduler, key)
}

#[tokio::test(start_paused = true)]
async fn a_run_its_events_and_a_check() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let client = client(&server, TEST_DEV_KEY).await;
    let at = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let run = client
        .register_agent_run(&RegisterAgentRun::new(
            "cs-agent-prod-v1",
            "You are a helpful assistant",
            at,
        ))
        .await
        .unwrap();
    assert!(!run.trace_id.is_empty());
    let event = Event::new(
        EventType::ModelOutput,
        &run.trace_id,
        &json!({"text": "hi"}),
        &json!({"type": "object"}),
        at,
    )
    .unwrap();
    let ack = client.event(&event).await.unwrap();
    assert!(!ack.event_id.is_empty());
    let safe = client
        .check(&ActionCheck::new(&run.trace_id, &json!({"cmd": "ls"}), &json!({}), at).unwrap())
        .await
        .unwrap();
    assert!(safe.is_safe);
    let unsafe_ = client
        .check(
            &ActionCheck::new(&run.trace_id, &json!({"cmd": "rm -rf /"}), &json!({}), at).unwrap(),
        )
        .await
        .unwrap();
    assert!(!unsafe_.is_safe);
    let paths: Vec<String> = server.record().into_iter().map(|c| c.path).collect();
    assert_eq!(paths.len(), 4);
    assert!(paths[0].ends_with("/register-agent-run") && paths[1].ends_with("/event"));
    // A raw request to an endpoint the typed client does not know.
    let err = client
        .request(Job::new(http::Method::GET, "/unknown"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Job(JobError::Rejected { api, .. }) if api.status == 404 || api.status == 405)
    );
}

#[tokio::test(start_paused = true)]
async fn typed_errors_reach_the_caller() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let client = client(&server, TEST_RESTRICTED_KEY).await;
    let check = ActionCheck::new("t", &json!({"cmd": "ls"}), &json!({}), UNIX_EPOCH).unwrap();
    match client.check(&check).await {
        Err(ClientError::Job(JobError::Forbidden { api, .. })) => {
            assert_eq!(api.kind.as_deref(), Some("authorization_error"));
        }
        other => panic!("{other:?}"),
    }
}
