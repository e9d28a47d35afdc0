//! The scheduler under a user's HTTP stack: `QuotaLayer` over hyper's client and over test doubles
//! (stacked with `tower::timeout`), `QuotaMiddleware` in a reqwest-middleware client, and a tower
//! service as the scheduler's transport; real HTTP to the mock server on tokio's paused clock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fabraix_scheduler::mock::{key_fingerprint, MockServer, ServerModel, TEST_DEV_KEY};
use fabraix_scheduler::{
    AdapterError, ApiKey, Instant, Job, JobError, KeyConfig, KeyId, Quota, QuotaLayer,
    QuotaMiddleware, Scheduler, ServiceTransport,
};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};

const CHECK: &str =
    r#"{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"ls","schema":"{}"}"#;

type Req = http::Request<Full<Bytes>>;

type HyperClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

/// A mock server (sliding log, the strictest model) with the test key under `quota`, and a
/// scheduler with that key added as "k", configured by `configure`.
async fn mock_and_scheduler(
    quota: &str,
    configure: impl FnOnce(KeyConfig) -> KeyConfig,
) -> (MockServer, Scheduler) {
    let quota: Quota = quota.parse().unwrap();
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .model(ServerModel::SlidingLog)
        .start()
        .await
        .expect("mock server starts");
    let scheduler = Scheduler::builder().seed(7).build().unwrap();
    let config = KeyConfig::new(
        "k",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &server.base_url(),
        quota,
    )
    .unwrap();
    scheduler.add_key(configure(config)).await.unwrap();
    (server, scheduler)
}

fn check_request(base: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{base}/check"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHECK.as_bytes())))
        .unwrap()
}

fn refused(server: &MockServer) -> u64 {
    server
        .key_stats(&key_fingerprint(TEST_DEV_KEY))
        .map_or(0, |s| s.refused)
}

#[tokio::test(start_paused = true)]
async fn the_layer_over_hyper_sends_at_the_quota_with_zero_429() {
    let (server, scheduler) = mock_and_scheduler("10/1s", |c| c).await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let client = ServiceBuilder::new().layer(layer).service(hyper_client());
    let base = server.base_url();
    let start = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..35 {
        let mut client = client.clone();
        let request = check_request(&base);
        calls.push(tokio::spawn(async move {
            ServiceExt::<Req>::ready(&mut client)
                .await
                .unwrap()
                .call(request)
                .await
        }));
    }
    for call in calls {
        let response = call.await.unwrap().expect("a response");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{"), "{body:?}");
    }
    assert_eq!(refused(&server), 0, "the server refused calls");
    server.verify().expect("never above 10 in any second");
    assert_eq!(server.record().len(), 35);
    // 35 calls at 10 per second: the last ten wait for the third second to end.
    assert!(Instant::now() - start >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_pending_while_the_layer_holds_its_queue_capacity() {
    // One call an hour, spent first: then every request waits in the key's queue of three.
    let (server, scheduler) = mock_and_scheduler("1/1h", |c| c.queue_capacity(3)).await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let mut client = ServiceBuilder::new().layer(layer).service(hyper_client());
    let base = server.base_url();
    let first = client.clone().oneshot(check_request(&base)).await.unwrap();
    assert_eq!(first.status(), 200);
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let ready = ServiceExt::<Req>::ready(&mut client)
            .now_or_never()
            .expect("room for three");
        waiting.push(tokio::spawn(ready.unwrap().call(check_request(&base))));
    }
    let mut fourth = Box::pin(ServiceExt::<Req>::ready(&mut client));
    assert!(
        (&mut fourth).now_or_never().is_none(),
        "a fourth request must wait for room"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!((&mut fourth).now_or_never().is_none(), "still no room");
    // One waiting request given up: its place is free, and its job is never sent.
    waiting.pop().unwrap().abort();
    tokio::time::timeout(Duration::from_secs(1), fourth)
        .await
        .expect("ready once a request ends")
        .unwrap();
    let stats = scheduler.stats(&KeyId::new("k")).unwrap();
    assert_eq!((stats.cancelled, stats.queued), (1, 2), "{stats:?}");
    assert_eq!(server.record().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_above_the_layer_bounds_the_wait_and_cancels_the_job() {
    let (server, scheduler) = mock_and_scheduler("1/1h", |c| c).await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let client = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .layer(layer)
        .service(hyper_client());
    let base = server.base_url();
    let first = client.clone().oneshot(check_request(&base)).await.unwrap();
    assert_eq!(first.status(), 200);
    let started = Instant::now();
    let second = client.clone().oneshot(check_request(&base)).await;
    let error = second.expect_err("the hour's one call is spent");
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert!(Instant::now() - started < Duration::from_secs(6));
    tokio::task::yield_now().await;
    let stats = scheduler.stats(&KeyId::new("k")).unwrap();
    assert_eq!((stats.cancelled, stats.queued), (1, 0), "{stats:?}");
    assert_eq!(server.record().len(), 1);
}

/// A test double counting its calls: `answer(n)` answers the n-th (0-based).
#[derive(Clone)]
struct Double<F> {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<http::Request<Full<Bytes>>>>>,
    answer: F,
}

impl<F> Double<F>
where
    F: Fn(usize) -> (u16, &'static str, Option<Duration>) + Clone + Send + Sync + 'static,
{
    fn new(answer: F) -> Self {
        Self {
            calls: Arc::default(),
            seen: Arc::default(),
            answer,
        }
    }

    fn service(
        &self,
    ) -> impl Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let this = self.clone();
        tower::service_fn(move |request: http::Request<Full<Bytes>>| {
            let n = this.calls.fetch_add(1, Ordering::SeqCst);
            this.seen.lock().unwrap().push(request);
            let (status, body, delay) = (this.answer)(n);
            async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                let mut response =
                    http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                if status == 429 {
                    response
                        .headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static("2"));
                }
                Ok::<_, Infallible>(response)
            }
        })
    }
}

/// A scheduler with key "k" at `http://127.0.0.1:9/v1` (nothing listens there: only doubles
/// answer), 100 calls a second.
async fn scheduler_for_doubles() -> Scheduler {
    let scheduler = Scheduler::builder().seed(7).build().unwrap();
    let config = KeyConfig::new(
        "k",
        ApiKey::new("secret-of-k").unwrap(),
        "http://127.0.0.1:9/v1",
        "100/1s".parse().unwrap(),
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    scheduler
}

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .header("x-api-key", "forged")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_its_retry_after_and_the_key_replaces_the_callers() {
    let double = Double::new(|n| {
        if n == 0 {
            (429, "{}", None)
        } else {
            (200, "ok", None)
        }
    });
    let scheduler = scheduler_for_doubles().await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let client = ServiceBuilder::new().layer(layer).service(double.service());
    let started = Instant::now();
    let response = client
        .oneshot(get("http://127.0.0.1:9/v1/status?x=1"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    assert_eq!(double.calls.load(Ordering::SeqCst), 2);
    assert!(
        Instant::now() - started >= Duration::from_secs(2),
        "retry_after honoured"
    );
    let seen = double.seen.lock().unwrap();
    for request in seen.iter() {
        assert_eq!(request.uri(), "http://127.0.0.1:9/v1/status?x=1");
        assert_eq!(request.headers()["x-api-key"], "secret-of-k");
        assert_eq!(request.headers().get_all("x-api-key").iter().count(), 1);
    }
    assert_eq!(scheduler.stats(&KeyId::new("k")).unwrap().rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn a_final_answer_keeps_its_status_and_body() {
    let double = Double::new(|_| (404, r#"{"error":{"code":"not_found"}}"#, None));
    let scheduler = scheduler_for_doubles().await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let client = ServiceBuilder::new().layer(layer).service(double.service());
    let response = client.oneshot(get("/v1/missing")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"error":{"code":"not_found"}}"#);
    // An origin-form URI goes to the key's origin.
    let seen = double.seen.lock().unwrap();
    assert_eq!(seen[0].uri(), "http://127.0.0.1:9/v1/missing");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_below_the_layer_is_a_transient_failure_retried() {
    // The first attempt hangs; the timeout under the layer ends it; the retry succeeds.
    let double = Double::new(|n| {
        let hang = (n == 0).then_some(Duration::from_secs(3600));
        (200, "ok", hang)
    });
    let scheduler = scheduler_for_doubles().await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap();
    let client = ServiceBuilder::new()
        .layer(layer)
        .timeout(Duration::from_secs(2))
        .service(double.service());
    let response = client.oneshot(get("/v1/status")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(double.calls.load(Ordering::SeqCst), 2);
    assert_eq!(scheduler.stats(&KeyId::new("k")).unwrap().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn requests_elsewhere_or_too_long_are_refused_unsent() {
    let double = Double::new(|_| (200, "ok", None));
    let scheduler = scheduler_for_doubles().await;
    let layer = QuotaLayer::new(&scheduler, &KeyId::new("k"))
        .unwrap()
        .max_body_bytes(8);
    let client = ServiceBuilder::new().layer(layer).service(double.service());
    let elsewhere = client
        .clone()
        .oneshot(get("http://127.0.0.2:9/v1/status"))
        .await;
    assert!(
        matches!(elsewhere, Err(AdapterError::OtherOrigin { .. })),
        "{elsewhere:?}"
    );
    let long = http::Request::post("/v1/event")
        .body(Full::new(Bytes::from_static(b"123456789")))
        .unwrap();
    let long = client.clone().oneshot(long).await;
    assert!(matches!(long, Err(AdapterError::Body { .. })), "{long:?}");
    if let Err(AdapterError::Body { source, .. }) = &long {
        let source = source.as_ref().expect("the body's error is kept");
        assert!(
            source.get_ref().is::<http_body_util::LengthLimitError>(),
            "{source:?}"
        );
    }
    assert_eq!(double.calls.load(Ordering::SeqCst), 0);
    // And a key chosen per request must have been added.
    let routed = QuotaLayer::new(&scheduler, &KeyId::new("k"))
        .unwrap()
        .key_by(|parts| parts.headers.get("x-tenant").map(|_| KeyId::new("nobody")));
    let client = ServiceBuilder::new()
        .layer(routed)
        .service(double.service());
    let mut request = get("/v1/status");
    request
        .headers_mut()
        .insert("x-tenant", http::HeaderValue::from_static("t"));
    let unknown = client.oneshot(request).await;
    assert!(
        matches!(unknown, Err(AdapterError::UnknownKey(_))),
        "{unknown:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_middleware_in_a_reqwest_client_sends_at_the_quota_with_zero_429() {
    let (server, scheduler) = mock_and_scheduler("10/1s", |c| c).await;
    let middleware = QuotaMiddleware::new(&scheduler, &KeyId::new("k")).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(middleware)
        .build();
    let base = server.base_url();
    let start = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..25 {
        let request = client
            .post(format!("{base}/check"))
            .header("content-type", "application/json")
            .body(CHECK);
        calls.push(tokio::spawn(request.send()));
    }
    for call in calls {
        let response = call.await.unwrap().expect("a response");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(refused(&server), 0);
    server.verify().expect("never above 10 in any second");
    assert_eq!(server.record().len(), 25);
    assert!(Instant::now() - start >= Duration::from_secs(2));
    // A request the server rejects comes back as its answer, not as an error.
    let bad = client
        .post(format!("{base}/check"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error(), "{}", bad.status());
}

#[tokio::test(start_paused = true)]
async fn a_user_tower_service_carries_the_scheduler_calls() {
    // A test double as the whole transport.
    let double = Double::new(|_| (200, r#"{"ok":true}"#, None));
    let scheduler = Scheduler::builder()
        .transport(Arc::new(ServiceTransport::new(double.service())))
        .build()
        .unwrap();
    let config = KeyConfig::new(
        "k",
        ApiKey::new("secret-of-k").unwrap(),
        "http://127.0.0.1:9/v1",
        "100/1s".parse().unwrap(),
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    let job = Job::new(http::Method::GET, "/status");
    let response = scheduler
        .submit(&KeyId::new("k"), job)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(response.body, r#"{"ok":true}"#);
    let seen = double.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri(), "http://127.0.0.1:9/v1/status");
    assert_eq!(seen[0].headers()["x-api-key"], "secret-of-k");
}

#[tokio::test(start_paused = true)]
async fn hyper_with_a_timeout_layer_as_the_transport_against_the_mock() {
    let quota: Quota = "10/1s".parse().unwrap();
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, quota.clone())
        .start()
        .await
        .unwrap();
    let hyper = ServiceBuilder::new()
        .timeout(Duration::from_secs(3600))
        .service(hyper_client());
    let scheduler = Scheduler::builder()
        .transport(Arc::new(ServiceTransport::new(hyper)))
        .build()
        .unwrap();
    let config = KeyConfig::new(
        "k",
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &server.base_url(),
        quota,
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    let mut tickets = Vec::new();
    for _ in 0..15 {
        let job = Job::new(http::Method::POST, "/check").with_body(CHECK);
        tickets.push(scheduler.submit(&KeyId::new("k"), job).await.unwrap());
    }
    for ticket in tickets {
        let response = ticket.await.expect("success");
        assert_eq!(response.status, 200);
    }
    assert_eq!(refused(&server), 0);
    server.verify().unwrap();
    // Nothing listens on port 9: a connection error, retried, then given up.
    let unreachable = Scheduler::builder()
        .transport(Arc::new(ServiceTransport::new(hyper_client())))
        .retry_policy(fabraix_scheduler::RetryPolicy::default().max_transient_retries(1))
        .build()
        .unwrap();
    let config = KeyConfig::new(
        "u",
        ApiKey::new("s").unwrap(),
        "http://127.0.0.1:9/v1",
        "10/1s".parse().unwrap(),
    )
    .unwrap();
    unreachable.add_key(config).await.unwrap();
    let job = Job::new(http::Method::GET, "/status");
    let outcome = unreachable
        .submit(&KeyId::new("u"), job)
        .await
        .unwrap()
        .await;
    assert!(
        matches!(outcome, Err(JobError::Transient { attempts: 2, .. })),
        "{outcome:?}"
    );
}
