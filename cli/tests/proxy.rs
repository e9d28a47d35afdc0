//! `fabraix-sched proxy` through the real binary, over real HTTP on loopback: the mock's answers
//! for clients without a key, a forged client key never upstream, lanes, back-pressure with a
//! Retry-After that is then honoured, a vanished client, SIGTERM drain, the token off loopback,
//! a key file rotated mid-run, a failing key command.
//!
//! Quotas here are short (milliseconds to a few seconds of wall clock): the binary runs on the
//! real clock. The hour-long behaviour of the scheduler behind it is tested on the paused clock
//! in the library's tests.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KEY, LABEL};
use fabraix_scheduler::mock::{KeyProfile, MockServer};
use fabraix_scheduler::Quota;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");
const FORGED: &str = "fbx-forged-client-key";
const NEW_KEY: &str = "fbx-cli-test-key-rotated";
const TOKEN: &str = "proxy-token-0123456789abcdef";

/// A running proxy: the child, its URL, and what it printed on stderr so far.
struct Proxy {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut cmd = Command::new(BIN);
        cmd.arg("proxy")
            .args(args)
            .env_remove("FABRAIX_API_KEY")
            .env_remove("FABRAIX_PROXY_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the proxy says where it listens within 20 s")
            .unwrap();
        let Some(line) = first else {
            let status = child.wait().await.unwrap();
            panic!("proxy exited ({status}): {}", stderr.lock().unwrap());
        };
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        Proxy { child, url, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The proxy's usual flags toward `server`, plus `extra`.
fn args<'a>(server: &'a str, quota: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--listen",
        "127.0.0.1:0",
        "--base-url",
        server,
        "--quota",
        quota,
    ];
    a.extend_from_slice(extra);
    a
}

async fn mock(quota: &str) -> MockServer {
    let q: Quota = quota.parse().unwrap();
    MockServer::builder()
        .key(KEY, KeyProfile::new(q.clone()).label(LABEL))
        .key(FORGED, KeyProfile::new(q.clone()).label("forged"))
        .key(NEW_KEY, KeyProfile::new(q).label("rotated"))
        .start()
        .await
        .unwrap()
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn event_body(n: usize) -> String {
    format!(
        r#"{{"event_type":"user","trace_id":"00000000-0000-4000-8000-000000000000","timestamp":1.0,"content":"{{\"n\":{n}}}","schema":"{{}}"}}"#
    )
}

fn check_body() -> String {
    r#"{"event_type":"action_check","trace_id":"00000000-0000-4000-8000-000000000000","timestamp":1.0,"content":"{\"cmd\":\"ls\"}","schema":"{}"}"#.to_string()
}

async fn post(url: &str, path: &str, body: String) -> reqwest::Response {
    http()
        .post(format!("{url}/v1{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// Waits (up to 10 s) until `metric` reaches `at_least`.
async fn wait_for_metric(url: &str, name: &str, at_least: f64) {
    for _ in 0..1_000 {
        if metric(url, name).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_key_get_the_mocks_answers() {
    let server = mock("100/1s").await;
    let base = server.base_url();
    let proxy = Proxy::start(&args(&base, "100/1s", &[]), &[("FABRAIX_API_KEY", KEY)]).await;
    let url = &proxy.url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let ok = post(url, "/event", event_body(1)).await;
    assert_eq!(ok.status(), 200);
    let direct = http()
        .post(format!("{base}/event"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(event_body(1))
        .send()
        .await
        .unwrap();
    let through: serde_json::Value = json(ok).await;
    let direct: serde_json::Value = json(direct).await;
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&through), keys(&direct), "{through}");
    assert_eq!(post(url, "/check", check_body()).await.status(), 200);
    // The mock's own refusal, as it sent it.
    let bad = post(url, "/event", "{}".into()).await;
    let status = bad.status();
    let body: serde_json::Value = json(bad).await;
    assert!(status == 422 || status == 400, "{status} {body}");
    assert!(
        body.get("detail").is_some() || body.get("error").is_some(),
        "{body}"
    );
    let health = http().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let elsewhere = http().get(format!("{url}/other")).send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(metric(url, "fabraix_scheduler_calls_sent_total").await, 3.0);
    assert_eq!(
        metric(url, "fabraix_proxy_requests_total{lane=\"interactive\"}").await,
        1.0
    );
    // Three through the proxy, one direct.
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 4);
    assert!(!proxy.stderr().contains(KEY), "{}", proxy.stderr());
}

/// A raw upstream that answers every request 200 with `{}` and hands back the request heads it
/// read.
async fn recording_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    recording_upstream_with("{}").await
}

/// As [`recording_upstream`], answering with `reply` as the body.
async fn recording_upstream_with(
    reply: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end + 4]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if seen.len() < end + 4 + length {
                            break;
                        }
                        seen.drain(..end + 4 + length);
                        let _ = tx.send(head);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: yes\r\n\r\n{reply}",
                            reply.len()
                        );
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_client_key_and_other_credentials_never_reach_upstream() {
    // To the mock: the call is counted for the proxy's key, none for the forged one.
    let server = mock("100/1s").await;
    let proxy = Proxy::start(
        &args(&server.base_url(), "100/1s", &[]),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let r = http()
        .post(format!("{}/v1/event", proxy.url))
        .header("x-api-key", FORGED)
        .header("content-type", "application/json")
        .body(event_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 1);
    assert_eq!(server.key_stats("forged").unwrap().accepted, 0);
    assert!(server.record().iter().all(|c| c.key == LABEL));

    // To a raw upstream: what exactly arrives.
    let (upstream, mut heads) = recording_upstream().await;
    let proxy = Proxy::start(&args(&upstream, "100/1s", &[]), &[("FABRAIX_API_KEY", KEY)]).await;
    let r = http()
        .post(format!("{}/v1/event?x=1", proxy.url))
        .header("x-api-key", FORGED)
        .header("authorization", "Bearer client-secret")
        .header("cookie", "session=client-secret")
        .header("x-fabraix-priority", "bulk")
        .header("x-fabraix-proxy-call", "999")
        .header("x-trace", "t1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "yes");
    let head = heads.recv().await.unwrap();
    assert!(
        head.starts_with("post /v1/event?x=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nx-api-key: {KEY}\r\n")),
        "{head}"
    );
    assert_eq!(head.matches("x-api-key").count(), 1, "{head}");
    for gone in [
        FORGED,
        "client-secret",
        "authorization",
        "cookie",
        "x-fabraix-",
    ] {
        assert!(!head.contains(gone), "{gone} forwarded: {head}");
    }
    assert!(head.contains("\r\nx-trace: t1\r\n"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_overtakes_a_queued_backlog() {
    let server = mock("5/200ms").await;
    let proxy = Proxy::start(
        &args(&server.base_url(), "5/200ms", &["--concurrency", "1"]),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let url = proxy.url.clone();
    let backlog: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = http()
                    .post(format!("{url}/v1/event"))
                    .header("x-fabraix-priority", "bulk")
                    .header("content-type", "application/json")
                    .body(event_body(i))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    wait_for_metric(&url, "fabraix_scheduler_queued", 10.0).await;
    assert_eq!(post(&url, "/check", check_body()).await.status(), 200);
    for b in backlog {
        assert_eq!(b.await.unwrap(), 200);
    }
    let paths: Vec<String> = server.record().iter().map(|c| c.path.clone()).collect();
    let at = paths.iter().position(|p| p == "/v1/check").unwrap();
    let after = paths.len() - at - 1;
    assert!(
        after >= 5,
        "the check went with only {after} of 20 bulk calls after it: {paths:?}"
    );
    server.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_a_retry_after_that_is_then_honoured() {
    let server = mock("1/1s").await;
    let proxy = Proxy::start(
        &args(
            &server.base_url(),
            "1/1s",
            &["--queue-capacity", "1", "--concurrency", "1"],
        ),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let url = proxy.url.clone();
    assert_eq!(post(&url, "/event", event_body(0)).await.status(), 200);
    // The next one waits for its slot in the queue; the one after finds the queue full.
    let queued = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "/event", event_body(1)).await.status().as_u16() }
    });
    wait_for_metric(&url, "fabraix_scheduler_queued", 1.0).await;
    let full = post(&url, "/event", event_body(2)).await;
    assert_eq!(full.status(), 429);
    let retry_after: u64 = full.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The slot after the one held for the queued call: 2 s, and the ledger's latency guard.
    assert!((2..=3).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = json(full).await;
    assert_eq!(body["error"]["code"], "proxy_queue_full", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["retry_after"], retry_after);
    assert_eq!(
        metric(&url, "fabraix_proxy_refused_total{reason=\"queue_full\"}").await,
        1.0
    );
    // Honoured: after Retry-After the queue has room again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(post(&url, "/event", event_body(2)).await.status(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    assert_eq!(
        server.key_stats(LABEL).unwrap().refused,
        0,
        "never a 429 from the API"
    );
    server.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_costs_only_its_slot() {
    let server = mock("1/1s").await;
    let proxy = Proxy::start(
        &args(&server.base_url(), "1/1s", &["--concurrency", "1"]),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let url = proxy.url.clone();
    assert_eq!(post(&url, "/event", event_body(0)).await.status(), 200);
    // A client sends a call that must wait for the next slot, and goes away.
    let addr = url.strip_prefix("http://").unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = event_body(1);
    let request = format!(
        "POST /v1/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    wait_for_metric(&url, "fabraix_scheduler_queued", 1.0).await;
    drop(socket);
    wait_for_metric(&url, "fabraix_proxy_abandoned_total", 1.0).await;
    assert_eq!(metric(&url, "fabraix_scheduler_queued").await, 0.0);
    // The next call takes the slot the vanished one had.
    assert_eq!(post(&url, "/event", event_body(2)).await.status(), 200);
    assert_eq!(
        server.record().len(),
        2,
        "the vanished client's call was never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_accepted_requests_and_exits_0() {
    let server = mock("2/1s").await;
    let mut proxy = Proxy::start(
        &args(&server.base_url(), "2/1s", &["--drain-timeout", "20s"]),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let url = proxy.url.clone();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, "/event", event_body(i)).await.status().as_u16() })
        })
        .collect();
    wait_for_metric(&url, "fabraix_proxy_requests_total{lane=\"normal\"}", 5.0).await;
    assert!(metric(&url, "fabraix_proxy_queue_depth{lane=\"normal\"}").await >= 2.0);
    proxy.sigterm();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let status = tokio::time::timeout(Duration::from_secs(20), proxy.child.wait())
        .await
        .expect("the proxy exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 5);
    assert!(
        http().get(format!("{url}/healthz")).send().await.is_err(),
        "still accepting"
    );
    server.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listen_needs_the_flag_and_a_token() {
    let server = mock("100/1s").await;
    let base = server.base_url();
    let refused = |extra: Vec<&'static str>, env: Vec<(&'static str, &'static str)>| {
        let base = base.clone();
        async move {
            let mut cmd = Command::new(BIN);
            cmd.args(["proxy", "--listen", "0.0.0.0:0", "--base-url", &base])
                .args(extra)
                .env_remove("FABRAIX_PROXY_TOKEN")
                .env("FABRAIX_API_KEY", KEY);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = cmd.output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (code, err) = refused(vec![], vec![]).await;
    assert_eq!(code, Some(2));
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-non-loopback"),
        "{err}"
    );
    let (code, err) = refused(vec!["--allow-non-loopback"], vec![]).await;
    assert_eq!(code, Some(2));
    assert!(
        err.contains("needs a client token") && err.contains("FABRAIX_PROXY_TOKEN"),
        "{err}"
    );

    let proxy = Proxy::start(
        &[
            "--listen",
            "0.0.0.0:0",
            "--allow-non-loopback",
            "--base-url",
            &base,
            "--quota",
            "100/1s",
        ],
        &[("FABRAIX_API_KEY", KEY), ("FABRAIX_PROXY_TOKEN", TOKEN)],
    )
    .await;
    // Traffic stays on loopback: the port on 127.0.0.1.
    let port = proxy.url.rsplit(':').next().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let without = post(&url, "/event", event_body(1)).await;
    assert_eq!(without.status(), 401);
    let body: serde_json::Value = json(without).await;
    assert_eq!(body["error"]["code"], "proxy_token_required");
    let wrong = http()
        .post(format!("{url}/v1/event"))
        .header("authorization", "Bearer proxy-token-0123456789abcdeX")
        .body(event_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let with = http()
        .post(format!("{url}/v1/event"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(event_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    assert_eq!(
        server.key_stats(LABEL).unwrap().accepted,
        1,
        "only the call with the token"
    );
    assert!(!proxy.stderr().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_rotated_mid_run_loses_no_request() {
    let server = mock("20/1s").await;
    let d = common::dir("proxy-key-file");
    let file = d.join("key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let proxy = Proxy::start(
        &args(
            &server.base_url(),
            "20/1s",
            &["--key-file", file.to_str().unwrap(), "--key-reread", "50ms"],
        ),
        &[],
    )
    .await;
    let url = proxy.url.clone();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, "/event", event_body(i)).await.status().as_u16() })
        })
        .collect();
    wait_for_metric(&url, "fabraix_scheduler_calls_sent_total", 10.0).await;
    std::fs::write(&file, NEW_KEY).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.revoke_key(KEY); // once the new key is deployed
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let old = server.arrivals(LABEL).len();
    let new = server.arrivals("rotated").len();
    assert_eq!(old + new, 40, "old {old}, new {new}");
    assert!(old >= 10 && new >= 5, "old {old}, new {new}");
    let err = proxy.stderr();
    assert!(!err.contains(KEY) && !err.contains(NEW_KEY), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_command_gives_the_key_and_a_failing_one_a_clear_error() {
    let server = mock("100/1s").await;
    let base = server.base_url();
    let out = Command::new(BIN)
        .args(["proxy", "--listen", "127.0.0.1:0", "--base-url", &base])
        .args([
            "--key-command",
            "echo 'vault: permission denied' >&2; exit 3",
        ])
        .env_remove("FABRAIX_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key command `echo 'vault: permission denied' >&2; exit 3` failed: it exited with exit status: 3 (stderr: vault: permission denied)"),
        "{err}"
    );
    let printing = format!("printf '%s' {KEY}");
    let proxy = Proxy::start(&args(&base, "100/1s", &["--key-command", &printing]), &[]).await;
    assert_eq!(
        post(&proxy.url, "/event", event_body(1)).await.status(),
        200
    );
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_sends_through_the_proxy_without_a_key() {
    let server = mock("100/1s").await;
    let proxy = Proxy::start(
        &args(&server.base_url(), "100/1s", &[]),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python_client.py");
    let out = Command::new("python3")
        .args([script, "--proxy", &proxy.url, "--events", "2"])
        .env_remove("FABRAIX_API_KEY")
        .output()
        .await
        .expect("python3 runs (CPython 3 is needed for this test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<&str> = answers
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/event", "/event", "/check"]);
    assert!(answers.iter().all(|a| a["status"] == 200), "{stdout}");
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_answer_413_and_502_without_a_retry() {
    let (upstream, mut heads) =
        recording_upstream_with("{\"padding\":\"0123456789012345678901234567890123456789\"}").await;
    let proxy = Proxy::start(
        &args(
            &upstream,
            "100/1s",
            &["--max-request-bytes", "64", "--max-response-bytes", "16"],
        ),
        &[("FABRAIX_API_KEY", KEY)],
    )
    .await;
    let big = post(&proxy.url, "/event", "x".repeat(65)).await;
    assert_eq!(big.status(), 413);
    assert_eq!(json(big).await["error"]["code"], "request_too_large");
    let r = post(&proxy.url, "/event", "{}".into()).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        json(r).await["error"]["code"],
        "upstream_response_too_large"
    );
    assert!(heads.recv().await.unwrap().starts_with("post /v1/event "));
    assert_eq!(
        metric(&proxy.url, "fabraix_scheduler_calls_sent_total").await,
        1.0,
        "not retried"
    );
    assert!(
        heads.try_recv().is_err(),
        "the too-large request never went upstream"
    );
}

#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

/// Two proxies on one key through one Redis share the quota: the strict mock refuses nothing,
/// where two proxies each planning alone would send twice the quota in the first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_one_key_through_redis_stay_within_its_quota() {
    let redis = redis_support::RedisServer::start();
    let quota = "4/1s";
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(quota.parse().unwrap()).label(LABEL))
        .model(fabraix_scheduler::mock::ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let base = server.base_url();
    let redis_url = redis.url();
    let extra = ["--redis", redis_url.as_str(), "--refused-calls", "count"];
    let env = [("FABRAIX_API_KEY", KEY)];
    let a = Proxy::start(&args(&base, quota, &extra), &env).await;
    let b = Proxy::start(&args(&base, quota, &extra), &env).await;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..12 {
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        sends.spawn(async move { post(&url, "/event", event_body(i)).await.status() });
    }
    let statuses = sends.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(server.refused(), 0, "the mock refused calls of the fleet");
    server
        .verify()
        .expect("no window of the quota held more than 4 calls");
}
