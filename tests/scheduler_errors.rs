//! Every status class and error body, every bad `retry_after`, 401 fast-fail, 403, rotation, and
//! the server's rate-limit headers — over real HTTP to the mock server, on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{check, event, rig, rig_with};
use fabraix_scheduler::mock::{
    key_fingerprint, KeyProfile, MockServer, RetryAfterHeader, ScriptedResponse, ServerModel,
    TEST_DEV_KEY, TEST_PROD_KEY, TEST_RESTRICTED_KEY,
};
use fabraix_scheduler::{ApiKey, Delivery, Instant, JobError, Quota, RetryPolicy};
use serde_json::json;

fn generous() -> Quota {
    "1000/1s".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn fatal_statuses_fail_once_with_the_servers_words() {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, generous())
        .script(
            "/event",
            [
                ScriptedResponse::json(400, json!({"error": {"message": "bad body", "type": "invalid_request_error", "code": "invalid_body"}})),
                ScriptedResponse::json(404, json!({"detail": "Not Found"})),
                ScriptedResponse::json(422, json!({"detail": [{"loc": ["body", "trace_id"], "msg": "field required", "type": "value_error.missing"}]})),
            ],
        );
    let rig = rig(builder, TEST_DEV_KEY, generous()).await;
    let mut errors = Vec::new();
    for i in 0..3 {
        let t = rig.scheduler.submit(&rig.key, event(i)).await.unwrap();
        errors.push(t.await.unwrap_err());
    }
    assert!(
        matches!(&errors[0], JobError::Rejected { api, attempts: 1 } if api.code.as_deref() == Some("invalid_body") && api.message == "bad body")
    );
    assert_eq!(errors[0].status(), Some(400));
    assert!(
        matches!(&errors[1], JobError::Rejected { api, attempts: 1 } if api.status == 404 && api.message == "Not Found")
    );
    assert!(
        matches!(&errors[2], JobError::Rejected { api, attempts: 1 } if api.message == "body.trace_id: field required")
    );
    assert_eq!(errors[2].kind(), "rejected");
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!((stats.sent, stats.failed, stats.retries), (3, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn transient_statuses_are_retried_then_succeed() {
    let builder = MockServer::builder().key(TEST_DEV_KEY, generous()).script(
        "/event",
        [
            ScriptedResponse::new(502).header("content-type", "text/html").body("<html>Bad Gateway</html>"),
            ScriptedResponse::new(503),
            ScriptedResponse::json(500, json!({"error": {"message": "Internal server error", "type": "api_error", "code": "internal_error"}})),
            ScriptedResponse::new(408),
            ScriptedResponse::drop_connection(),
        ],
    );
    let policy = RetryPolicy::default().max_transient_retries(5);
    let rig = rig_with(builder, TEST_DEV_KEY, generous(), policy, |c| c).await;
    let response = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.attempts, 6);
    assert_eq!(rig.scheduler.stats(&rig.key).unwrap().retries, 5);
    assert_eq!(rig.server.record().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_with_a_clear_error() {
    let builder = MockServer::builder().key(TEST_DEV_KEY, generous()).script(
        "/event",
        (0..3).map(|_| ScriptedResponse::new(502).body("<html>gateway</html>")),
    );
    let policy = RetryPolicy::default().max_transient_retries(2);
    let rig = rig_with(builder, TEST_DEV_KEY, generous(), policy, |c| c).await;
    let err = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    match &err {
        JobError::Transient {
            attempts,
            status,
            message,
            why,
            ..
        } => {
            assert_eq!(
                (*attempts, *status, *why),
                (3, Some(502), "retries exhausted")
            );
            assert!(message.contains("non-JSON"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_final_refusal_counts_every_attempt_before_it() {
    // The first job is retried after a 502 and a 429, then rejected; the second is retried after
    // a 503, then forbidden.
    let builder = MockServer::builder().key(TEST_DEV_KEY, generous()).script(
        "/event",
        [
            ScriptedResponse::new(502),
            rate_limited(json!(1)),
            ScriptedResponse::json(400, json!({"detail": "bad"})),
            ScriptedResponse::new(503),
            ScriptedResponse::json(403, json!({"detail": "no"})),
        ],
    );
    let rig = rig(builder, TEST_DEV_KEY, generous()).await;
    let mut errors = Vec::new();
    for i in 0..2 {
        let t = rig.scheduler.submit(&rig.key, event(i)).await.unwrap();
        errors.push(t.await.unwrap_err());
    }
    assert!(
        matches!(&errors[0], JobError::Rejected { api, attempts: 3 } if api.status == 400),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(&errors[1], JobError::Forbidden { api, attempts: 2, .. } if api.status == 403),
        "{:?}",
        errors[1]
    );
    assert_eq!(
        (errors[0].attempts(), errors[1].attempts()),
        (Some(3), Some(2))
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_once_does_not_resend_what_may_have_arrived() {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, generous())
        .script("/event", [ScriptedResponse::new(500)]);
    let policy = RetryPolicy::default().delivery(Delivery::AtMostOnce);
    let rig = rig_with(builder, TEST_DEV_KEY, generous(), policy, |c| c).await;
    let err = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::Transient { attempts: 1, why, .. } if why.contains("at-most-once"))
    );
    // The same job with at-least-once (per job) is retried.
    rig.server.script("/event", [ScriptedResponse::new(500)]);
    let job = event(1).with_delivery(Delivery::AtLeastOnce);
    let ok = rig
        .scheduler
        .submit(&rig.key, job)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);
}

/// Submits one job whose first answer is the given 429 and returns how long it took.
async fn time_after_429(response: ScriptedResponse, policy: RetryPolicy) -> Duration {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, Quota::development())
        .script("/event", [response]);
    let rig = rig_with(builder, TEST_DEV_KEY, Quota::development(), policy, |c| c).await;
    let start = Instant::now();
    let ok = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);
    assert_eq!(rig.scheduler.stats(&rig.key).unwrap().rate_limited, 1);
    Instant::now() - start
}

fn rate_limited(retry_after: serde_json::Value) -> ScriptedResponse {
    ScriptedResponse::json(
        429,
        json!({"error": {"message": "Rate limit exceeded", "type": "rate_limit_error", "retry_after": retry_after}}),
    )
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honored_with_bounded_jitter() {
    let no_jitter = RetryPolicy::default().retry_after_jitter(Duration::ZERO);
    let waited = time_after_429(rate_limited(json!(30)), no_jitter.clone()).await;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_millis(30_010),
        "{waited:?}"
    );
    let waited = time_after_429(rate_limited(json!(30)), RetryPolicy::default()).await;
    assert!(
        waited >= Duration::from_secs(30) && waited <= Duration::from_millis(30_260),
        "{waited:?}"
    );
    // The header wins when it asks for more; the body when it does.
    let waited = time_after_429(
        rate_limited(json!(5)).header("retry-after", "12"),
        no_jitter.clone(),
    )
    .await;
    assert!(
        waited >= Duration::from_secs(12) && waited < Duration::from_millis(12_010),
        "{waited:?}"
    );
    let waited = time_after_429(rate_limited(json!(9)).header("retry-after", "2"), no_jitter).await;
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_millis(9_010),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_retry_after_values_fall_back_to_backoff() {
    let policy = RetryPolicy::default().retry_after_jitter(Duration::ZERO);
    for bad in [
        json!("abc"),
        json!(-5),
        json!("NaN"),
        json!(null),
        json!({"s": 3}),
    ] {
        let waited = time_after_429(rate_limited(bad.clone()), policy.clone()).await;
        // Equal-jitter backoff from 250 ms: between 125 ms and 250 ms.
        assert!(
            waited >= Duration::from_millis(125) && waited <= Duration::from_millis(260),
            "{bad}: {waited:?}"
        );
    }
    let missing = ScriptedResponse::json(429, json!({"error": {"message": "Rate limit exceeded"}}));
    let waited = time_after_429(missing, policy.clone()).await;
    assert!(waited <= Duration::from_millis(260), "{waited:?}");
    let html = ScriptedResponse::new(429).body("<html>slow down</html>");
    let waited = time_after_429(html, policy).await;
    assert!(waited <= Duration::from_millis(260), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn absurd_retry_after_is_clamped_to_the_longest_window_plus_a_margin() {
    let policy = RetryPolicy::default().retry_after_jitter(Duration::ZERO);
    let waited = time_after_429(rate_limited(json!(1e12)), policy.clone()).await;
    let cap = Duration::from_secs(3600 + 60);
    assert!(
        waited >= cap && waited < cap + Duration::from_millis(10),
        "{waited:?}"
    );
    let custom = policy.retry_after_cap(Some(Duration::from_secs(90)));
    let waited = time_after_429(rate_limited(json!(86_400)), custom).await;
    assert!(
        waited >= Duration::from_secs(90) && waited < Duration::from_millis(90_010),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_the_whole_key_and_loses_nothing() {
    // The server's quota is tighter than the client believes: 5 per 10 s against 50 per 10 s.
    let server_quota: Quota = "5/10s".parse().unwrap();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, server_quota.clone())
        .retry_after_header(RetryAfterHeader::HttpDate);
    let rig = rig_with(
        builder,
        TEST_DEV_KEY,
        "50/10s".parse().unwrap(),
        RetryPolicy::default(),
        |c| c.max_in_flight(1),
    )
    .await;
    common::send_events(&rig, 20).await;
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(stats.succeeded, 20);
    assert!(stats.rate_limited >= 1);
    // Every refused call was paused for, not hammered: far fewer 429s than calls.
    assert!(stats.rate_limited <= 8, "{stats:?}");
    rig.server.verify().unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limit_headers_tighten_the_ledger() {
    // Same misconfiguration, but the server announces what is left: the client learns at once.
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, "5/10s".parse::<Quota>().unwrap())
        .ratelimit_headers(true);
    let rig = rig_with(
        builder,
        TEST_DEV_KEY,
        "50/10s".parse().unwrap(),
        RetryPolicy::default(),
        |c| c.max_in_flight(1),
    )
    .await;
    common::send_events(&rig, 20).await;
    let refused = rig
        .server
        .key_stats(&key_fingerprint(TEST_DEV_KEY))
        .unwrap()
        .refused;
    assert_eq!(refused, 0, "the headers should have prevented every 429");
}

#[tokio::test(start_paused = true)]
async fn unauthorized_fails_every_queued_job_at_once_until_rotation() {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, generous())
        .key(TEST_PROD_KEY, generous());
    let rig = rig_with(
        builder,
        TEST_DEV_KEY,
        generous(),
        RetryPolicy::default(),
        |c| c.max_in_flight(1),
    )
    .await;
    rig.server.revoke_key(TEST_DEV_KEY);
    let tickets = common::submit_events(&rig, 10).await;
    let mut unauthorized = 0;
    let mut failed_fast = 0;
    for t in tickets {
        match t.await {
            Err(JobError::Unauthorized {
                fingerprint,
                api,
                attempts: 1,
            }) => {
                unauthorized += 1;
                assert_eq!(api.code.as_deref(), Some("invalid_api_key"));
                assert!(fingerprint.starts_with("key#"));
            }
            Err(JobError::KeyRevoked { attempts: 0, .. }) => failed_fast += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        unauthorized, 1,
        "only one request was spent on a revoked key"
    );
    assert_eq!(failed_fast, 9);
    assert_eq!(rig.server.unauthorized(), 1);
    // New jobs fail fast too, without a request...
    let err = rig
        .scheduler
        .submit(&rig.key, event(99))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "key_revoked");
    assert_eq!(rig.server.unauthorized(), 1);
    // ...until the key is rotated.
    assert!(rig
        .scheduler
        .rotate_key(&rig.key, ApiKey::new(TEST_PROD_KEY).unwrap()));
    rig.scheduler
        .submit(&rig.key, event(100))
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn rotation_keeps_queued_jobs() {
    let slow: Quota = "2/1s".parse().unwrap();
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, KeyProfile::new(slow.clone()).label("old"))
        .key(TEST_PROD_KEY, KeyProfile::new(slow.clone()).label("new"));
    let rig = rig(builder, TEST_DEV_KEY, slow).await;
    let tickets = common::submit_events(&rig, 20).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert!(rig
        .scheduler
        .rotate_key(&rig.key, ApiKey::new(TEST_PROD_KEY).unwrap()));
    rig.server.revoke_key(TEST_DEV_KEY); // revocation is immediate once the new key is deployed
    for t in tickets {
        t.await.unwrap();
    }
    let old = rig.server.arrivals("old").len();
    let new = rig.server.arrivals("new").len();
    assert_eq!(old + new, 20);
    assert!(old >= 8 && new >= 8, "old {old}, new {new}");
    assert_eq!(rig.server.unauthorized(), 0);
}

#[tokio::test(start_paused = true)]
async fn forbidden_fails_only_that_job() {
    let builder = MockServer::builder().with_test_keys();
    let rig = rig(builder, TEST_RESTRICTED_KEY, Quota::development()).await;
    let denied = rig.scheduler.submit(&rig.key, check()).await.unwrap();
    let allowed = rig.scheduler.submit(&rig.key, event(1)).await.unwrap();
    let err = denied.await.unwrap_err();
    assert!(
        matches!(&err, JobError::Forbidden { api, .. } if api.code.as_deref() == Some("insufficient_permissions"))
    );
    allowed.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn too_many_429s_end_the_job_with_an_outcome() {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, generous())
        .script("/event", (0..5).map(|_| rate_limited(json!(1))));
    let policy = RetryPolicy::default().max_rate_limited(3);
    let rig = rig_with(builder, TEST_DEV_KEY, generous(), policy, |c| c).await;
    let err = rig
        .scheduler
        .submit(&rig.key, event(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobError::RateLimited {
                attempts: 4,
                rate_limited: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_never_lose_a_job() {
    let builder = MockServer::builder()
        .key(TEST_DEV_KEY, "50/1s".parse::<Quota>().unwrap())
        .model(ServerModel::SlidingLog)
        .seed(7)
        .faults(fabraix_scheduler::mock::Faults {
            server_error_rate: 0.2,
            latency: Duration::from_millis(20),
            latency_jitter: Duration::from_millis(30),
            drop_rate: 0.1,
        });
    let policy = RetryPolicy::default().max_transient_retries(10);
    let rig = rig_with(
        builder,
        TEST_DEV_KEY,
        "50/1s".parse().unwrap(),
        policy,
        |c| c,
    )
    .await;
    let tickets = common::submit_events(&rig, 200).await;
    let mut ok = 0;
    let mut failed = 0;
    for t in tickets {
        match t.await {
            Ok(_) => ok += 1,
            // With 30 % of calls failing, the default budget (10 + 20 % of first attempts) runs
            // out before every job is through: those jobs end with the reason, never silently.
            Err(JobError::Transient { why, .. }) => {
                assert!(
                    why == "retry budget spent" || why == "retries exhausted",
                    "{why}"
                );
                failed += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok + failed, 200, "every job has exactly one outcome");
    assert!(ok >= 150, "{ok} succeeded");
    rig.server.verify().unwrap();
    let stats = rig.scheduler.stats(&rig.key).unwrap();
    assert_eq!(stats.succeeded + stats.failed, 200);
}
