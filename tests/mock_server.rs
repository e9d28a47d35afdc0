//! The mock server over real HTTP on loopback.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabraix_scheduler::mock::{
    max_in_any_window, verify_quota, Faults, KeyProfile, MockServer, RetryAfterHeader,
    ScriptedResponse, ServerModel, TEST_DEV_KEY, TEST_PROD_KEY, TEST_RESTRICTED_KEY,
    TEST_REVOKED_KEY,
};
use fabraix_scheduler::{Quota, TokioClock};
use serde_json::{json, Value};

const KEY: &str = "sk-mock-test-key";

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn event_body() -> String {
    json!({
        "event_type": "tool",
        "trace_id": "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        "timestamp": 1_704_067_200.5,
        "content": "{\"tool\":\"search\"}",
        "schema": "{}"
    })
    .to_string()
}

fn check_body(content: &str) -> String {
    json!({
        "event_type": "action_check",
        "trace_id": "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        "timestamp": 1_704_067_200,
        "content": content,
        "schema": "{}"
    })
    .to_string()
}

fn register_body() -> String {
    json!({
        "agent_id": "cs-agent-prod-v1",
        "timestamp": "2024-01-01T00:00:00Z",
        "system_prompt": "You are a helpful assistant"
    })
    .to_string()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &MockServer) -> Self {
        Self {
            http: http(),
            base: server.base_url(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: String) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap()
    }

    async fn event(&self, key: &str) -> reqwest::Response {
        self.post("/event", Some(key), event_body()).await
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[2].starts_with('4')
}

async fn server_with(model: ServerModel, quota: &str) -> MockServer {
    MockServer::builder()
        .key(KEY, KeyProfile::new(quota.parse().unwrap()).label("k"))
        .model(model)
        .start()
        .await
        .unwrap()
}

/// Sends one `/event` at each offset (ms after the server's start) and returns the statuses.
async fn statuses_at(server: &MockServer, offsets_ms: &[u64]) -> Vec<u16> {
    let api = Api::new(server);
    let mut out = Vec::new();
    for &ms in offsets_ms {
        tokio::time::sleep_until(server.origin() + Duration::from_millis(ms)).await;
        out.push(api.event(KEY).await.status().as_u16());
    }
    out
}

async fn run_model(model: ServerModel, quota: &str, offsets_ms: &[u64]) -> Vec<u16> {
    let server = server_with(model, quota).await;
    let statuses = statuses_at(&server, offsets_ms).await;
    server.shutdown().await;
    statuses
}

#[tokio::test]
async fn endpoints_answer_documented_success_bodies() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(server.base_url().ends_with("/v1"));
    let api = Api::new(&server);

    let r = api
        .post("/register-agent-run", Some(TEST_DEV_KEY), register_body())
        .await;
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert!(is_uuid_v4(body["trace_id"].as_str().unwrap()), "{body}");
    let ts = body["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");

    let body = json_of(api.event(TEST_PROD_KEY).await).await;
    assert!(is_uuid_v4(body["event_id"].as_str().unwrap()), "{body}");
    assert!(body["timestamp"].as_f64().unwrap() > 1.6e9);

    let r = api
        .post("/check", Some(TEST_DEV_KEY), check_body("ls -la"))
        .await;
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert_eq!(body["is_safe"], true);
    assert!(is_uuid_v4(body["action_check_id"].as_str().unwrap()));
    assert!(!body["reasoning"].as_str().unwrap().is_empty());
    assert!(body["timestamp"].is_number());

    let body = json_of(
        api.post("/check", Some(TEST_DEV_KEY), check_body("rm -rf /"))
            .await,
    )
    .await;
    assert_eq!(body["is_safe"], false, "{body}");

    let record = server.record();
    assert_eq!(record.len(), 4);
    assert_eq!(record[0].path, "/v1/register-agent-run");
    assert_eq!(record[0].key, "test-dev");
    assert_eq!(record[1].key, "test-prod");
    assert!(record.iter().all(|c| c.status == Some(200)));
    assert!(record.iter().all(|c| !c.key.contains("fbx-mock")));
    server.shutdown().await;
}

#[tokio::test]
async fn authentication_errors_do_not_consume_quota() {
    let restricted = "sk-restricted-small";
    let server = MockServer::builder()
        .with_test_keys()
        .key(
            restricted,
            KeyProfile::new("1/1m".parse().unwrap()).restricted(),
        )
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);
    let invalid = json!({"error":{"message":"Invalid API key provided","type":"authentication_error","code":"invalid_api_key"}});
    let forbidden = json!({"error":{"message":"API key does not have permission for this operation","type":"authorization_error","code":"insufficient_permissions"}});

    for key in [None, Some("sk-unknown"), Some(TEST_REVOKED_KEY)] {
        let r = api.post("/event", key, event_body()).await;
        assert_eq!(r.status(), 401, "{key:?}");
        assert_eq!(json_of(r).await, invalid);
    }
    for path in ["/check", "/register-agent-run"] {
        let body = if path == "/check" {
            check_body("ls")
        } else {
            register_body()
        };
        let r = api.post(path, Some(TEST_RESTRICTED_KEY), body).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(json_of(r).await, forbidden);
    }
    assert_eq!(api.event(TEST_RESTRICTED_KEY).await.status(), 200);

    // A 1/1m restricted key: two 403s consume nothing, so its one /event still goes through.
    for _ in 0..2 {
        let r = api.post("/check", Some(restricted), check_body("ls")).await;
        assert_eq!(r.status(), 403);
    }
    assert_eq!(api.event(restricted).await.status(), 200);
    assert_eq!(api.event(restricted).await.status(), 429);

    assert_eq!(server.unauthorized(), 3);
    assert_eq!(server.key_stats("test-revoked").unwrap().revoked, 1);
    assert_eq!(server.key_stats("test-restricted").unwrap().forbidden, 2);
    assert_eq!(server.record().len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_fastapi_and_envelope_errors_and_count() {
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new("3/1m".parse().unwrap()))
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);

    let r = api.post("/event", Some(KEY), "not json".into()).await;
    assert_eq!(r.status(), 400);
    let body = json_of(r).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_body");

    let r = api
        .post(
            "/register-agent-run",
            Some(KEY),
            json!({"agent_id": "a"}).to_string(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let message = json_of(r).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("timestamp") && message.contains("system_prompt"),
        "{message}"
    );

    let mut wrong = serde_json::from_str::<Value>(&event_body()).unwrap();
    wrong["timestamp"] = json!("yesterday");
    wrong["event_type"] = json!("telemetry");
    let r = api.post("/event", Some(KEY), wrong.to_string()).await;
    assert_eq!(r.status(), 422);
    let detail = json_of(r).await["detail"].clone();
    let items = detail.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .any(|d| d["loc"] == json!(["body", "timestamp"])));
    assert!(items
        .iter()
        .all(|d| d["msg"].is_string() && d["type"].is_string()));

    // The three bad bodies were accepted calls: the 3/1m quota is spent.
    assert_eq!(api.event(KEY).await.status(), 429);
    let statuses: Vec<_> = server.record().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(400), Some(400), Some(422)]);

    let r = api.post("/nope", Some(KEY), "{}".into()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await, json!({"detail": "Not Found"}));
    let r = http()
        .get(format!("{}/event", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(json_of(r).await, json!({"detail": "Method Not Allowed"}));
    server.shutdown().await;
}

#[tokio::test]
async fn check_requires_action_check_event_type() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);
    let r = api.post("/check", Some(TEST_DEV_KEY), event_body()).await;
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r).await["detail"][0]["type"], "literal_error");
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn sliding_log_boundary_and_retry_after() {
    let server = server_with(ServerModel::SlidingLog, "3/1s,5/10s").await;
    let api = Api::new(&server);
    for _ in 0..3 {
        assert_eq!(api.event(KEY).await.status(), 200);
    }
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        json_of(r).await,
        json!({"error":{"message":"Rate limit exceeded","type":"rate_limit_error","retry_after":1}})
    );
    // One millisecond early (tokio's timer resolution) is still refused; exactly W later is
    // accepted.
    tokio::time::sleep_until(server.origin() + Duration::from_millis(999)).await;
    assert_eq!(api.event(KEY).await.status(), 429);
    tokio::time::sleep_until(server.origin() + Duration::from_secs(1)).await;
    assert_eq!(api.event(KEY).await.status(), 200);
    assert_eq!(api.event(KEY).await.status(), 200);
    // Five in 10 s: the 10 s limit refuses until the first three leave it, at 10 s.
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 429);
    assert_eq!(json_of(r).await["error"]["retry_after"], 9);
    assert_eq!(server.refused(), 3);
    assert!(server.verify().is_ok());
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fixed_window_admits_a_burst_across_the_boundary() {
    let pattern = [900, 900, 900, 1000, 1000, 1000, 1000];
    let fixed = run_model(ServerModel::FixedWindow, "3/1s", &pattern).await;
    assert_eq!(fixed, [200, 200, 200, 200, 200, 200, 429]);
    let log = run_model(ServerModel::SlidingLog, "3/1s", &pattern).await;
    assert_eq!(log, [200, 200, 200, 429, 429, 429, 429]);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_accepts_more_than_sliding_log() {
    // 3/1s: a full bucket takes 3 at once, then refills one every 333.3 ms.
    let pattern = [0, 0, 0, 334, 667, 668];
    let bucket = run_model(ServerModel::TokenBucket, "3/1s", &pattern).await;
    assert_eq!(bucket, [200, 200, 200, 200, 200, 429]);
    let log = run_model(ServerModel::SlidingLog, "3/1s", &pattern).await;
    assert_eq!(log, [200, 200, 200, 429, 429, 429]);
}

#[tokio::test(start_paused = true)]
async fn counter_refuses_what_sliding_log_accepts() {
    // Two calls early in window 0 (laid from the first call, at 0); at 1.25 s the log is empty,
    // but the counter estimates 2 × 0.75 = 1.5 calls, and 1.5 + 1 > 2. At 1.5 s the estimate is
    // 1.0: one more fits.
    let pattern = [0, 100, 1250, 1500];
    let counter = run_model(ServerModel::SlidingWindowCounter, "2/1s", &pattern).await;
    assert_eq!(counter, [200, 200, 429, 200]);
    let log = run_model(ServerModel::SlidingLog, "2/1s", &pattern).await;
    assert_eq!(log, [200, 200, 200, 200]);
}

#[tokio::test(start_paused = true)]
async fn every_model_keeps_both_limits_of_a_small_quota_on_a_steady_stream() {
    for model in ServerModel::ALL {
        let server = server_with(model, "3/1s,5/10s").await;
        let offsets: Vec<u64> = (0..30).map(|i| i * 400).collect();
        let statuses = statuses_at(&server, &offsets).await;
        let accepted = statuses.iter().filter(|s| **s == 200).count();
        // 12 s of calls: no model lets more than 5 per 10 s plus the next window's share through.
        assert!((5..=10).contains(&accepted), "{model}: {accepted}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            30 - accepted
        );
        let arrivals = server.arrivals("k");
        assert!(
            max_in_any_window(&arrivals, Duration::from_secs(1)) <= 3,
            "{model}"
        );
        server.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn count_refused_extends_the_lockout() {
    let pattern = [0, 0, 900, 900, 1200];
    let lenient = run_model(ServerModel::SlidingLog, "2/1s", &pattern).await;
    assert_eq!(lenient, [200, 200, 429, 429, 200]);

    let server = MockServer::builder()
        .key(KEY, KeyProfile::new("2/1s".parse().unwrap()))
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let strict = statuses_at(&server, &pattern).await;
    assert_eq!(strict, [200, 200, 429, 429, 429]);
    assert_eq!(server.refused(), 3);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_header_in_seconds_and_as_http_date() {
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new("1/1m".parse().unwrap()))
        .retry_after_header(RetryAfterHeader::Seconds)
        .start()
        .await
        .unwrap();
    let statuses = statuses_at(&server, &[0]).await;
    assert_eq!(statuses, [200]);
    tokio::time::sleep_until(server.origin() + Duration::from_millis(500)).await;
    let r = Api::new(&server).event(KEY).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60"); // 59.5 s, rounded up
    assert_eq!(json_of(r).await["error"]["retry_after"], 60);
    server.shutdown().await;

    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new("1/1m".parse().unwrap()))
        .retry_after_header(RetryAfterHeader::HttpDate)
        .retry_after_in_body(false)
        .clock(Arc::new(TokioClock::with_wall_time(wall)))
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);
    assert_eq!(api.event(KEY).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 429);
    let date = r.headers()["retry-after"].to_str().unwrap().to_string();
    let at: SystemTime = httpdate::parse_http_date(&date).unwrap();
    // The wall clock started at `wall` (within the sub-millisecond it took to start the server).
    assert_eq!(at, wall + Duration::from_secs(60), "{date}");
    let body = json_of(r).await;
    assert!(body["error"].get("retry_after").is_none(), "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    server.shutdown().await;
}

fn rate_headers(r: &reqwest::Response) -> Option<(u64, u64, u64)> {
    let get = |name: &str| -> Option<u64> { r.headers().get(name)?.to_str().ok()?.parse().ok() };
    Some((
        get("x-ratelimit-limit")?,
        get("x-ratelimit-remaining")?,
        get("x-ratelimit-reset")?,
    ))
}

#[tokio::test(start_paused = true)]
async fn ratelimit_headers_describe_the_tightest_limit() {
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new("3/1s,5/10s".parse().unwrap()))
        .ratelimit_headers(true)
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);
    let r = api.event(KEY).await;
    assert_eq!(rate_headers(&r), Some((3, 2, 1)));
    api.event(KEY).await;
    let r = api.event(KEY).await;
    assert_eq!(rate_headers(&r), Some((3, 0, 1)));
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 429);
    assert_eq!(rate_headers(&r), Some((3, 0, 1)));
    // At 1 s the per-second limit has 2 left after this call, the 10 s limit only 1, and it frees
    // its next slot when the first call leaves it at 10 s.
    tokio::time::sleep_until(server.origin() + Duration::from_secs(1)).await;
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 200);
    assert_eq!(rate_headers(&r), Some((5, 1, 9)));
    // Bad bodies carry them too.
    let r = api.post("/event", Some(KEY), "{}".into()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(rate_headers(&r), Some((5, 0, 9)));
    server.shutdown().await;

    let plain = server_with(ServerModel::SlidingLog, "3/1s").await;
    let r = Api::new(&plain).event(KEY).await;
    assert_eq!(r.status(), 200);
    assert_eq!(rate_headers(&r), None);
    plain.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn time_scale_passes_an_hour_of_quota_in_a_minute() {
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(Quota::development()).label("dev"))
        .time_scale(60.0)
        .start()
        .await
        .unwrap();
    assert_eq!(
        server.key_stats("dev").unwrap().quota.to_string(),
        "60/1s,1000/1m"
    );
    let api = Api::new(&server);
    for _ in 0..60 {
        assert_eq!(api.event(KEY).await.status(), 200);
    }
    let r = api.event(KEY).await;
    assert_eq!(r.status(), 429);
    assert_eq!(json_of(r).await["error"]["retry_after"], 1); // real seconds
    tokio::time::sleep_until(server.origin() + Duration::from_secs(1)).await;
    for _ in 0..60 {
        assert_eq!(api.event(KEY).await.status(), 200);
    }
    assert_eq!(server.key_stats("dev").unwrap().accepted, 120);
    assert!(server.verify().is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn scripted_responses_are_served_first_and_in_order() {
    let server = MockServer::builder()
        .with_test_keys()
        .script(
            "/event",
            [
                ScriptedResponse::new(502)
                    .header("content-type", "text/html")
                    .body("<html><body>502 Bad Gateway</body></html>"),
                ScriptedResponse::new(503),
                ScriptedResponse::json(
                    429,
                    json!({"error":{"message":"Rate limit exceeded","type":"rate_limit_error","retry_after":"abc"}}),
                )
                .header("retry-after", "-5"),
                ScriptedResponse::drop_connection(),
            ],
        )
        .start()
        .await
        .unwrap();
    server.script("/v1/check", [ScriptedResponse::new(408)]);
    let api = Api::new(&server);

    let r = api.event(TEST_DEV_KEY).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r.text().await.unwrap().contains("Bad Gateway"));
    let r = api.event(TEST_DEV_KEY).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().is_empty());
    let r = api.event(TEST_DEV_KEY).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "-5");
    assert_eq!(json_of(r).await["error"]["retry_after"], "abc");
    let dropped = api
        .http
        .post(format!("{}/event", server.base_url()))
        .body(event_body())
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    // The queue is empty: the real endpoint answers again (with authentication).
    assert_eq!(api.event(TEST_DEV_KEY).await.status(), 200);
    let r = api.post("/check", None, check_body("ls")).await;
    assert_eq!(r.status(), 408);
    assert_eq!(
        api.post("/check", None, check_body("ls")).await.status(),
        401
    );

    assert_eq!(server.scripted_served(), 5);
    assert_eq!(server.record().len(), 1);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn faults_drop_connections_fail_and_delay() {
    let drop_all = MockServer::builder()
        .with_test_keys()
        .faults(Faults {
            drop_rate: 1.0,
            ..Faults::none()
        })
        .start()
        .await
        .unwrap();
    let result = http()
        .post(format!("{}/event", drop_all.base_url()))
        .header("x-api-key", TEST_DEV_KEY)
        .body(event_body())
        .send()
        .await;
    let error = result.unwrap_err();
    assert!(!error.is_status(), "{error:?}");
    assert_eq!(drop_all.record()[0].status, None);
    drop_all.shutdown().await;

    let fail_all = MockServer::builder()
        .with_test_keys()
        .faults(Faults {
            server_error_rate: 1.0,
            latency: Duration::from_secs(2),
            latency_jitter: Duration::from_millis(500),
            ..Faults::none()
        })
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let r = Api::new(&fail_all).event(TEST_DEV_KEY).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 500);
    assert_eq!(
        json_of(r).await,
        json!({"error":{"message":"Internal server error","type":"api_error","code":"internal_error"}})
    );
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_millis(2600),
        "{took:?}"
    );
    assert_eq!(fail_all.record()[0].status, Some(500));
    fail_all.shutdown().await;
}

#[tokio::test]
async fn seeded_faults_repeat_exactly() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let server = MockServer::builder()
            .with_test_keys()
            .seed(seed)
            .faults(Faults {
                server_error_rate: 0.5,
                ..Faults::none()
            })
            .start()
            .await
            .unwrap();
        let api = Api::new(&server);
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(api.event(TEST_PROD_KEY).await.status().as_u16());
        }
        server.shutdown().await;
        out
    }
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await);
    assert!(a.contains(&200) && a.contains(&500), "{a:?}");
    assert_ne!(a, statuses(8).await);
}

#[tokio::test(start_paused = true)]
async fn record_and_verify_quota_catch_a_violation() {
    let quota: Quota = "3/1s".parse().unwrap();
    let fixed = server_with(ServerModel::FixedWindow, "3/1s").await;
    statuses_at(&fixed, &[900, 900, 900, 1000, 1000, 1000]).await;
    let record = fixed.record();
    assert_eq!(record.len(), 6);
    let arrivals: Vec<_> = record.iter().map(|c| c.arrival).collect();
    assert_eq!(max_in_any_window(&arrivals, Duration::from_secs(1)), 6);
    let violation = verify_quota(&record, &quota).unwrap_err();
    assert_eq!(violation.key, "k");
    assert_eq!(violation.count, 6);
    assert_eq!(violation.start, fixed.origin() + Duration::from_millis(900));
    assert_eq!(fixed.verify().unwrap_err().count, 6);
    fixed.shutdown().await;

    let log = server_with(ServerModel::SlidingLog, "3/1s").await;
    statuses_at(&log, &[900, 900, 900, 1000, 1000, 1000, 1900, 1900]).await;
    assert!(verify_quota(&log.record(), &quota).is_ok());
    assert_eq!(log.record().len(), 5);
    log.shutdown().await;
}

#[tokio::test]
async fn keys_rotate_and_revoke_at_run_time() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let api = Api::new(&server);
    assert_eq!(api.event(TEST_DEV_KEY).await.status(), 200);
    server.add_key(
        "sk-rotated-in",
        KeyProfile::new(Quota::development()).label("new"),
    );
    assert!(server.revoke_key(TEST_DEV_KEY));
    assert!(!server.revoke_key("sk-never-registered"));
    assert_eq!(api.event(TEST_DEV_KEY).await.status(), 401);
    assert_eq!(api.event("sk-rotated-in").await.status(), 200);
    assert_eq!(server.key_stats("new").unwrap().accepted, 1);
    assert_eq!(server.key_stats("test-dev").unwrap().revoked, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let url = format!("{}/event", server.base_url());
    assert_eq!(Api::new(&server).event(TEST_DEV_KEY).await.status(), 200);
    server.shutdown().await;
    server.shutdown().await; // twice is fine
    let after = http().post(url).body(event_body()).send().await;
    assert!(after.unwrap_err().is_connect());
}

#[test]
fn server_models_parse() {
    assert_eq!(
        "fixed".parse::<ServerModel>().unwrap(),
        ServerModel::FixedWindow
    );
    assert_eq!(
        "sliding-log".parse::<ServerModel>().unwrap(),
        ServerModel::SlidingLog
    );
    assert_eq!(
        "token-bucket".parse::<ServerModel>().unwrap(),
        ServerModel::TokenBucket
    );
    assert_eq!(
        "counter".parse::<ServerModel>().unwrap(),
        ServerModel::SlidingWindowCounter
    );
    assert!("leaky-bucket".parse::<ServerModel>().is_err());
}
