//! The library against a hostile server on loopback (a raw socket, tests/hostile): absurd
//! rate-limit headers, panics, windows of a day, bodies of gigabytes, silence, drips, 429 storms,
//! the key echoed back, statuses that are not successes. Each test is short in real time; those
//! about quota time run on tokio's paused clock.

mod hostile;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fabraix_scheduler::{
    ApiKey, Clock, Instant, JobError, OutgoingRequest, ReqwestTransport, RetryPolicy, Scheduler,
    ShutdownMode, Sleep, SubmitError, TokioClock, Transport, TransportConfig, TransportFuture,
};
use hostile::{get, hold, ok, patient, respond, scheduler, Hostile};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// Long enough for any outcome these tests wait for in real time; a stranded job fails here.
const PROMPT: Duration = Duration::from_secs(5);

/// Log lines written while the guard returned by [`Logs::capture`] lives (this thread only).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ---- 1. Every number from the network through one checked path; panics never strand a job ----

#[tokio::test]
async fn absurd_reset_headers_on_successes_neither_panic_nor_strand_a_job() {
    let server = Hostile::start(|req, mut socket| async move {
        let reset = match req.n % 3 {
            0 => "x-ratelimit-remaining: 500\r\nx-ratelimit-reset: 1e19",
            1 => "x-ratelimit-remaining: 500\r\nx-ratelimit-reset: 1e20",
            _ => "ratelimit: remaining=500, reset=1e300",
        };
        respond(&mut socket, 200, &[reset.to_string()], b"{}").await;
    })
    .await;
    let policy = RetryPolicy::default();
    let (scheduler, key) = scheduler(&server, "k-1", "1/20ms", policy, patient()).await;
    let mut tickets = Vec::new();
    for i in 0..6 {
        tickets.push(
            scheduler
                .submit(&key, get(&format!("/r{i}")))
                .await
                .unwrap(),
        );
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let outcome = timeout(PROMPT, ticket).await;
        let response = outcome
            .unwrap_or_else(|_| panic!("job {i} stranded"))
            .unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(response.status, 200);
    }
    assert_eq!(server.requests(), 6);
}

/// A transport that panics on `/boom` and sends everything else with reqwest.
struct Exploding(ReqwestTransport);

impl Transport for Exploding {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        if request.uri().path() == "/boom" {
            return Box::pin(async { panic!("transport exploded on /boom") });
        }
        self.0.send(request)
    }
}

#[tokio::test]
async fn a_transport_that_panics_fails_only_its_job_and_the_key_goes_on() {
    let server = Hostile::start(|_, mut socket| async move { ok(&mut socket).await }).await;
    let transport = Exploding(ReqwestTransport::new(patient()).unwrap());
    let scheduler = Scheduler::builder()
        .transport(Arc::new(transport))
        .dispatch_tasks(1)
        .build()
        .unwrap();
    let key = fabraix_scheduler::KeyId::new("k");
    hostile::add_key(&scheduler, &key, &server, "k-2", "1/20ms").await;
    let boom = scheduler.submit(&key, get("/boom")).await.unwrap();
    let mut fine = Vec::new();
    for i in 0..3 {
        fine.push(
            scheduler
                .submit(&key, get(&format!("/ok{i}")))
                .await
                .unwrap(),
        );
    }
    let err = timeout(PROMPT, boom)
        .await
        .expect("boom stranded")
        .unwrap_err();
    match &err {
        JobError::Internal(message) => {
            assert!(message.contains("transport exploded on /boom"), "{message}")
        }
        other => panic!("not internal: {other:?}"),
    }
    for ticket in fine {
        timeout(PROMPT, ticket).await.expect("stranded").unwrap();
    }
    let later = scheduler.submit(&key, get("/later")).await.unwrap();
    timeout(PROMPT, later).await.expect("stranded").unwrap();
}

/// Tokio's clock, whose wall clock panics once armed (a bug in a user's clock, say).
#[derive(Debug)]
struct ArmedClock {
    inner: TokioClock,
    armed: AtomicBool,
}

impl Clock for ArmedClock {
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn wall_now(&self) -> SystemTime {
        assert!(!self.armed.load(Ordering::SeqCst), "clock exploded");
        self.inner.wall_now()
    }
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        self.inner.sleep_until(deadline)
    }
}

#[tokio::test]
async fn a_panic_while_handling_an_answer_fails_every_held_job_and_shutdown_returns() {
    // The 429's handling reads the wall clock (for an HTTP-date), which panics.
    let server = Hostile::start(|_, mut socket| async move {
        respond(&mut socket, 429, &["retry-after: 0".into()], b"{}").await;
    })
    .await;
    let clock = Arc::new(ArmedClock {
        inner: TokioClock::new(),
        armed: AtomicBool::new(false),
    });
    let scheduler = Scheduler::builder()
        .transport_config(patient())
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .dispatch_tasks(1)
        .build()
        .unwrap();
    let key = fabraix_scheduler::KeyId::new("k");
    hostile::add_key(&scheduler, &key, &server, "k-3", "1/100ms").await;
    clock.armed.store(true, Ordering::SeqCst);
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(
            scheduler
                .submit(&key, get(&format!("/j{i}")))
                .await
                .unwrap(),
        );
    }
    let mut named = 0;
    for (i, ticket) in tickets.into_iter().enumerate() {
        let outcome = timeout(PROMPT, ticket).await;
        match outcome.unwrap_or_else(|_| panic!("job {i} stranded")) {
            Err(JobError::Internal(message)) => {
                assert!(message.contains("panic"), "job {i}: {message}");
                named += usize::from(message.contains("clock exploded"));
            }
            other => panic!("job {i}: {other:?}"),
        }
    }
    // The job being handled was dropped by the unwind; every other names the panic.
    assert_eq!(named, 4);
    assert_eq!(server.requests(), 1);
    match scheduler.submit(&key, get("/after")).await {
        Err(SubmitError::ShuttingDown { .. }) => {}
        other => panic!("a key of the panicked shard takes no jobs: {other:?}"),
    }
    timeout(PROMPT, scheduler.shutdown(ShutdownMode::Drain))
        .await
        .expect("shutdown returns");
}

// ---- 2. Server windows capped and logged as retry_after is; never over a 429's retry_after ----

#[tokio::test(start_paused = true)]
async fn a_server_window_of_a_day_is_clamped_to_the_cap_and_logged() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let server = Hostile::start(|req, mut socket| async move {
        let headers = if req.n == 0 {
            vec![
                "ratelimit-remaining: 0".into(),
                "ratelimit-reset: 86400".into(),
            ]
        } else {
            vec![]
        };
        respond(&mut socket, 200, &headers, b"{}").await;
    })
    .await;
    // Quota 100/1s: the cap is its longest window plus a minute, 61 s.
    let (scheduler, key) =
        scheduler(&server, "k-4", "100/1s", RetryPolicy::default(), patient()).await;
    let first = scheduler
        .submit(&key, get("/a"))
        .await
        .unwrap()
        .await
        .unwrap();
    let second = scheduler
        .submit(&key, get("/b"))
        .await
        .unwrap()
        .await
        .unwrap();
    let held = second.sent_at - first.sent_at;
    assert!(
        held >= Duration::from_secs(60) && held <= Duration::from_secs(62),
        "held {held:?}"
    );
    let text = logs.text();
    assert!(text.contains("server's rate-limit reset clamped"), "{text}");
    assert!(text.contains("announced_s=86400"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn on_a_429_a_long_server_window_does_not_outlast_the_capped_retry_after() {
    let server = Hostile::start(|req, mut socket| async move {
        if req.n == 0 {
            let headers = [
                "retry-after: 1".to_string(),
                "x-ratelimit-remaining: 0".into(),
                "x-ratelimit-reset: 999999999".into(),
            ];
            respond(
                &mut socket,
                429,
                &headers,
                br#"{"error":{"retry_after":1}}"#,
            )
            .await;
        } else {
            ok(&mut socket).await;
        }
    })
    .await;
    let (scheduler, key) =
        scheduler(&server, "k-5", "100/1s", RetryPolicy::default(), patient()).await;
    let t0 = scheduler.clock().now();
    let response = scheduler
        .submit(&key, get("/a"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(response.attempts, 2);
    // retry_after 1 s plus at most 250 ms of jitter: not 31 years, not the 61 s cap.
    let waited = response.sent_at - t0;
    assert!(waited <= Duration::from_millis(1300), "waited {waited:?}");
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
}

// ---- 3. Bodies read as a stream, with a limit ----

/// Writes a chunked 200 of `total` bytes in 64 KiB chunks (or until the client goes).
async fn chunked_body(mut socket: tokio::net::TcpStream, total: u64) {
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let frame = [
        format!("{:x}\r\n", chunk.len()).into_bytes(),
        chunk,
        b"\r\n".to_vec(),
    ]
    .concat();
    let mut sent = 0u64;
    while sent < total {
        if socket.write_all(&frame).await.is_err() {
            return;
        }
        sent += 64 * 1024;
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
}

#[tokio::test]
async fn a_huge_chunked_body_fails_the_job_once_past_the_limit() {
    let server = Hostile::start(|_, socket| chunked_body(socket, 2 << 30)).await;
    let config = TransportConfig::default().max_response_bytes(256 * 1024);
    let (scheduler, key) = scheduler(&server, "k-6", "10/1s", RetryPolicy::default(), config).await;
    let ticket = scheduler.submit(&key, get("/huge")).await.unwrap();
    let err = timeout(PROMPT, ticket).await.expect("bounded").unwrap_err();
    match &err {
        JobError::ResponseTooLarge {
            reason, attempts, ..
        } => {
            assert!(reason.contains("262144"), "{reason}");
            assert_eq!(*attempts, 1, "not retried");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "response_too_large");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn an_announced_huge_body_is_refused_before_it_is_read_and_the_default_limit_is_a_mebibyte() {
    let server = Hostile::start(|_, mut socket| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 2147483648\r\nconnection: close\r\n\r\n";
        let _ = socket.write_all(head.as_bytes()).await;
        hold(socket, Duration::from_secs(10)).await;
    })
    .await;
    let config = TransportConfig::default();
    assert_eq!(config.max_response_bytes, 1 << 20);
    let (scheduler, key) = scheduler(&server, "k-7", "10/1s", RetryPolicy::default(), config).await;
    let ticket = scheduler.submit(&key, get("/announced")).await.unwrap();
    let err = timeout(Duration::from_secs(2), ticket)
        .await
        .expect("refused without reading")
        .unwrap_err();
    assert!(
        matches!(&err, JobError::ResponseTooLarge { reason, .. } if reason.contains("2147483648 bytes announced")),
        "{err:?}"
    );
}

// ---- 5. Silence and drips cost the timeouts, not minutes ----

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_costs_the_read_timeout() {
    let server = Hostile::start(|_, socket| hold(socket, Duration::from_secs(30))).await;
    let config = TransportConfig::default()
        .read_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(20));
    let policy = RetryPolicy::default()
        .max_transient_retries(1)
        .backoff_min(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(10));
    let (scheduler, key) = scheduler(&server, "k-8", "10/1s", policy, config).await;
    let started = std::time::Instant::now();
    let ticket = scheduler.submit(&key, get("/silent")).await.unwrap();
    let err = timeout(PROMPT, ticket).await.expect("bounded").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, JobError::Transient { attempts: 2, message, .. } if message.contains("timed out")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_drip_fed_answer_costs_the_request_timeout() {
    let server = Hostile::start(|_, mut socket| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if socket.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let config = TransportConfig::default()
        .read_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_millis(400));
    let policy = RetryPolicy::default().max_transient_retries(0);
    let (scheduler, key) = scheduler(&server, "k-9", "10/1s", policy, config).await;
    let started = std::time::Instant::now();
    let ticket = scheduler.submit(&key, get("/drip")).await.unwrap();
    let err = timeout(PROMPT, ticket).await.expect("bounded").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, JobError::Transient { message, .. } if message.contains("timed out")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn the_default_timeouts_suit_a_batch() {
    let config = TransportConfig::default();
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.read_timeout, Duration::from_secs(15));
    assert_eq!(config.request_timeout, Duration::from_secs(30));
}

// ---- 6. A 429 storm is the key's, not the head job's ----

#[tokio::test(start_paused = true)]
async fn a_storm_of_429s_does_not_fail_the_job_in_front_while_others_wait() {
    // 24 refusals with a Retry-After in the past: more than one job's old limit of 16, fewer
    // than the key's 32 in a row.
    let server = Hostile::start(|req, mut socket| async move {
        if req.n < 24 {
            let past = "retry-after: Tue, 14 Nov 2023 22:13:20 GMT".to_string();
            respond(
                &mut socket,
                429,
                &[past],
                br#"{"error":{"type":"rate_limit_error"}}"#,
            )
            .await;
        } else {
            ok(&mut socket).await;
        }
    })
    .await;
    let (scheduler, key) =
        scheduler(&server, "k-10", "100/1s", RetryPolicy::default(), patient()).await;
    let t0 = scheduler.clock().now();
    let mut tickets = Vec::new();
    for i in 0..3 {
        tickets.push(
            scheduler
                .submit(&key, get(&format!("/s{i}")))
                .await
                .unwrap(),
        );
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let response = ticket.await.unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(response.status, 200);
    }
    assert_eq!(server.requests(), 27);
    // Paused, not hammered: from the second refusal in a row the key backs off (a past date is
    // a zero wait), so 24 refusals take minutes, not 24 round trips.
    let took = scheduler.clock().now() - t0;
    assert!(took >= Duration::from_secs(120), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_storm_beyond_the_key_limit_fails_all_its_jobs_together() {
    let server = Hostile::start(|_, mut socket| async move {
        respond(&mut socket, 429, &[], br#"{"error":{"retry_after":1}}"#).await;
    })
    .await;
    let policy = RetryPolicy::default().max_rate_limited(3);
    let (scheduler, key) = scheduler(&server, "k-11", "100/1s", policy, patient()).await;
    let mut tickets = Vec::new();
    for i in 0..4 {
        tickets.push(
            scheduler
                .submit(&key, get(&format!("/f{i}")))
                .await
                .unwrap(),
        );
    }
    let mut refused_each = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        match ticket.await {
            Err(JobError::RateLimited { rate_limited, .. }) => refused_each.push(rate_limited),
            other => panic!("job {i}: {other:?}"),
        }
    }
    // Four refusals in a row (the 4th is beyond 3): the key gives up, and every job fails with
    // it, whichever of them took the refusals (here all four went at once).
    assert_eq!(refused_each.iter().sum::<u32>(), 4, "{refused_each:?}");
    assert_eq!(server.requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_call_ends_the_storm_so_the_next_one_counts_from_zero() {
    // Two storms of 20 refusals, one success between: 40 refusals, never more than 20 in a row.
    let server = Hostile::start(|req, mut socket| async move {
        if req.n == 20 || req.n > 40 {
            ok(&mut socket).await;
        } else {
            let past = "retry-after: Tue, 14 Nov 2023 22:13:20 GMT".to_string();
            respond(&mut socket, 429, &[past], b"{}").await;
        }
    })
    .await;
    // Without pacing the success takes the plain path (no headers, a key not paced).
    let scheduler = Scheduler::builder()
        .transport_config(patient())
        .adaptive_pacing(false)
        .dispatch_tasks(1)
        .seed(42)
        .build()
        .unwrap();
    let key = fabraix_scheduler::KeyId::new("k");
    hostile::add_key(&scheduler, &key, &server, "k-13", "100/1s").await;
    for i in 0..2 {
        let ticket = scheduler
            .submit(&key, get(&format!("/t{i}")))
            .await
            .unwrap();
        let response = ticket.await.unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(response.attempts, 21, "job {i}");
    }
}

// ---- 7. The key is redacted from whatever the server echoes ----

const SECRET: &str = "fbx_live_SECRET_0123456789";

#[tokio::test]
async fn a_key_the_server_echoes_is_never_shown_logged_or_kept() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let server = Hostile::start(|req, mut socket| async move {
        let key = req.header("x-api-key").unwrap_or("").to_string();
        match req.path() {
            "/json" => {
                let body = format!(
                    r#"{{"error":{{"message":"Invalid API key {key}","type":"auth {key}","code":"{key}"}}}}"#
                );
                respond(&mut socket, 401, &[], body.as_bytes()).await;
            }
            "/redirect" => {
                let to = [format!("location: /gone?k={key}")];
                respond(&mut socket, 302, &to, b"").await;
            }
            // Closed without an answer, after a redirect to a URL that carries the key.
            p if p.starts_with("/gone") => drop(socket),
            "/html" => {
                let body = format!("<html>your key {key} was refused</html>");
                respond(&mut socket, 400, &[], body.as_bytes()).await;
            }
            _ => {
                let headers = [format!("retry-after: {key}")];
                let body = format!(r#"{{"error":{{"retry_after":"{key}"}}}}"#);
                if req.n < 3 {
                    respond(&mut socket, 429, &headers, body.as_bytes()).await;
                } else {
                    let body = format!(r#"{{"error":{{"message":"overloaded for {key}"}}}}"#);
                    respond(&mut socket, 503, &[], body.as_bytes()).await;
                }
            }
        }
    })
    .await;
    let fingerprint = ApiKey::new(SECRET).unwrap().fingerprint().to_string();
    let policy = RetryPolicy::default().max_transient_retries(0);
    let (scheduler, key) = scheduler(&server, SECRET, "100/1s", policy, patient()).await;
    let storm = scheduler.submit(&key, get("/storm")).await.unwrap();
    let storm = timeout(PROMPT, storm).await.expect("bounded").unwrap_err();
    let html = scheduler.submit(&key, get("/html")).await.unwrap();
    let html = timeout(PROMPT, html).await.expect("bounded").unwrap_err();
    let gone = scheduler.submit(&key, get("/redirect")).await.unwrap();
    let gone = timeout(PROMPT, gone).await.expect("bounded").unwrap_err();
    // Last: a 401 marks the key revoked.
    let json = scheduler.submit(&key, get("/json")).await.unwrap();
    let json = timeout(PROMPT, json).await.expect("bounded").unwrap_err();
    assert!(matches!(gone, JobError::Transient { .. }), "{gone:?}");
    for err in [&storm, &html, &json, &gone] {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("SECRET_0123456789"), "{shown}");
        }
    }
    for err in [&storm, &html, &json] {
        assert!(err.to_string().contains(&fingerprint), "{err}");
    }
    assert!(matches!(json, JobError::Unauthorized { .. }), "{json:?}");
    let text = logs.text();
    assert!(text.contains("unusable retry_after"), "{text}");
    assert!(!text.contains("SECRET_0123456789"), "{text}");
}

// ---- 8. Only 2xx is a success ----

#[tokio::test]
async fn statuses_outside_2xx_are_never_successes() {
    let server = Hostile::start(|req, mut socket| async move {
        let status = req.path().trim_start_matches('/').parse().unwrap_or(500);
        respond(&mut socket, status, &[], b"weird").await;
    })
    .await;
    let (scheduler, key) =
        scheduler(&server, "k-12", "100/1s", RetryPolicy::default(), patient()).await;
    for status in [999_u16, 600, 304, 302, 299] {
        let ticket = scheduler
            .submit(&key, get(&format!("/{status}")))
            .await
            .unwrap();
        let outcome = timeout(PROMPT, ticket).await.expect("bounded");
        if status == 299 {
            assert_eq!(outcome.unwrap().status, 299);
            continue;
        }
        let err = outcome.expect_err("not a success");
        assert_eq!(err.status(), Some(status), "{err:?}");
        assert!(
            matches!(err, JobError::Rejected { attempts: 1, .. }),
            "{err:?}"
        );
    }
}

// ---- 9. Control characters in the key ----

#[test]
fn a_tab_or_any_control_character_in_the_key_is_refused() {
    for key in ["fbx\tlive", "fbx_live\u{7f}", "fbx\u{1}x", "fbx\u{0}x"] {
        assert_eq!(
            ApiKey::new(key).unwrap_err(),
            fabraix_scheduler::ApiKeyError::InvalidCharacters,
            "{key:?}"
        );
    }
    // Surrounding whitespace (a TAB after the key in a .env file) is trimmed, as before.
    assert!(ApiKey::new("fbx_live_ok\t").is_ok());
}
