//! The key is a secret: never in logs, Debug output or errors; never over plain http to a
//! non-loopback host; never to another origin, redirects included.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{check, event, rig, rig_with};
use fabraix_scheduler::mock::{MockServer, ScriptedResponse, TEST_DEV_KEY, TEST_RESTRICTED_KEY};
use fabraix_scheduler::{ApiKey, Endpoint, JobError, KeyConfig, Quota, RetryPolicy};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_traced_run_with_every_kind_of_failure_never_logs_the_key() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let quota: Quota = "1000/1s".parse().unwrap();
    let builder = MockServer::builder()
        .with_test_keys()
        .key(TEST_DEV_KEY, quota.clone())
        .script(
            "/event",
            [
                ScriptedResponse::json(
                    429,
                    json!({"error": {"type": "rate_limit_error", "retry_after": "abc"}}),
                ),
                ScriptedResponse::new(502).body("<html>bad gateway</html>"),
                ScriptedResponse::drop_connection(),
                ScriptedResponse::json(
                    400,
                    json!({"error": {"message": "bad", "code": "invalid_body"}}),
                ),
            ],
        );
    let rig = rig(builder, TEST_DEV_KEY, quota).await;
    let mut errors = Vec::new();
    for i in 0..4 {
        if let Err(e) = rig
            .scheduler
            .submit(&rig.key, event(i))
            .await
            .unwrap()
            .await
        {
            errors.push(e);
        }
    }
    // 403 and 401 paths, and a rotation.
    rig.scheduler
        .rotate_key(&rig.key, ApiKey::new(TEST_RESTRICTED_KEY).unwrap());
    errors.push(
        rig.scheduler
            .submit(&rig.key, check())
            .await
            .unwrap()
            .await
            .unwrap_err(),
    );
    rig.server.revoke_key(TEST_RESTRICTED_KEY);
    errors.push(
        rig.scheduler
            .submit(&rig.key, event(9))
            .await
            .unwrap()
            .await
            .unwrap_err(),
    );
    errors.push(
        rig.scheduler
            .submit(&rig.key, event(10))
            .await
            .unwrap()
            .await
            .unwrap_err(),
    );
    assert!(errors
        .iter()
        .any(|e| matches!(e, JobError::Forbidden { .. })));
    assert!(errors
        .iter()
        .any(|e| matches!(e, JobError::Unauthorized { .. })));
    assert!(errors
        .iter()
        .any(|e| matches!(e, JobError::KeyRevoked { .. })));

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let dev_fp = ApiKey::new(TEST_DEV_KEY).unwrap().fingerprint().to_string();
    let restricted_fp = ApiKey::new(TEST_RESTRICTED_KEY)
        .unwrap()
        .fingerprint()
        .to_string();
    assert!(log.contains("429"), "the log captured the run");
    assert!(
        log.contains(&restricted_fp),
        "the fingerprint stands in for the key"
    );
    for secret in [TEST_DEV_KEY, TEST_RESTRICTED_KEY] {
        assert!(!log.contains(secret), "the log contains a key");
        for e in &errors {
            assert!(!format!("{e} {e:?}").contains(secret));
        }
    }
    let config = KeyConfig::new(
        "x",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &rig.server.base_url(),
        Quota::development(),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains(TEST_DEV_KEY));
    assert!(format!("{config:?}").contains(&dev_fp));
    assert!(!format!("{:?}", rig.scheduler).contains(TEST_DEV_KEY));
}

#[test]
fn plain_http_to_a_remote_host_is_refused_unless_asked() {
    let key = || ApiKey::new("k").unwrap();
    let err = KeyConfig::new(
        "x",
        key(),
        "http://api.fabraix.com/v1",
        Quota::development(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("plain http"), "{err}");
    assert!(KeyConfig::new(
        "x",
        key(),
        "https://api.fabraix.com/v1",
        Quota::development()
    )
    .is_ok());
    assert!(KeyConfig::new("x", key(), "http://127.0.0.1:9/v1", Quota::development()).is_ok());
    let insecure = Endpoint::new("http://api.fabraix.com/v1", true).unwrap();
    assert!(KeyConfig::with_endpoint("x", key(), insecure, Quota::development()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn redirects_to_another_origin_are_not_followed() {
    let elsewhere = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let target = format!("{}/event", elsewhere.base_url());
    let quota: Quota = "1000/1s".parse().unwrap();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .script(
            "/event",
            [ScriptedResponse::new(302).header("location", &target)],
        );
    let rig = rig_with(builder, TEST_DEV_KEY, quota, RetryPolicy::default(), |c| c).await;
    let err = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_request", "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        elsewhere.unauthorized(),
        0,
        "nothing reached the other origin"
    );
    assert!(elsewhere.record().is_empty());

    // A redirect within the same origin is followed, with the key.
    rig.server.script(
        "/event",
        [ScriptedResponse::new(307)
            .header("location", &format!("{}/event", rig.server.base_url()))],
    );
    let ok = rig
        .scheduler
        .submit(&rig.key, event(1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test(start_paused = true)]
async fn jobs_cannot_point_the_key_elsewhere() {
    let quota: Quota = "1000/1s".parse().unwrap();
    let rig = rig(
        MockServer::builder().key(TEST_DEV_KEY, quota.clone()),
        TEST_DEV_KEY,
        quota,
    )
    .await;
    for path in [
        "https://evil.example/steal",
        "//evil.example/steal",
        "/../admin",
    ] {
        let job = fabraix_scheduler::Job::new(http::Method::GET, path);
        let err = rig.scheduler.submit(&rig.key, job).await.unwrap_err();
        assert!(err.to_string().contains("invalid job"), "{err}");
    }
    let job = fabraix_scheduler::Job::new(http::Method::POST, "/event").with_header(
        http::HeaderName::from_static("x-api-key"),
        http::HeaderValue::from_static("other"),
    );
    let err = rig
        .scheduler
        .submit(&rig.key, job)
        .await
        .unwrap()
        .await
        .unwrap_err();
    // The job's own x-api-key header is ignored: the scheduler's key went (and the body was empty).
    assert_eq!(err.status(), Some(400));
    assert_eq!(rig.server.unauthorized(), 0);
}
