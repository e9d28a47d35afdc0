//! Kill -9 while spooling: every event acknowledged to the producer as spooled is delivered after
//! a restart, and a torn tail is detected and reported.
//!
//! The child is this test binary itself, re-run with `FABRAIX_TELEMETRY_CRASH_CHILD=<dir>`: it
//! spools events (to a server that is not there, so nothing is sent) and prints `spooled <id>` for
//! each `Recorded::Spooled(seq)` once it is durable (`durable_through() >= seq`: the acknowledgement
//! the producer may rely on), until the parent kills it. Events spooled but not yet durable when
//! the child dies may be lost; they were never printed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fabraix_scheduler::mock::{MockServer, TEST_PROD_KEY};
use fabraix_scheduler::telemetry::{Recorded, TelemetryConfig, TelemetrySender};
use fabraix_scheduler::{
    ApiKey, Event, EventType, FabraixClient, KeyConfig, KeyId, OutgoingRequest, Quota,
    ReqwestTransport, Scheduler, Transport, TransportConfig, TransportFuture,
};

const CHILD_ENV: &str = "FABRAIX_TELEMETRY_CRASH_CHILD";

fn event(i: u64) -> Event {
    Event::new(
        EventType::ModelOutput,
        "a1b2c3d4-e5f6-4890-9234-567890abcdef",
        &serde_json::json!({ "id": i, "text": "x".repeat((i % 200) as usize) }),
        &serde_json::json!({"type": "object"}),
        UNIX_EPOCH + Duration::from_secs(1_704_067_200 + i),
    )
    .unwrap()
}

/// The child's body (a no-op in a normal test run).
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let scheduler = Scheduler::builder().build().unwrap();
        // Nothing listens on port 1: nothing is sent, everything stays in the spool.
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
            TelemetryConfig::new(&dir)
                .memory_capacity(0)
                .segment_bytes(64 << 10),
        )
        .unwrap();
        let mut out = std::io::stdout().lock();
        // (seq, id) of spooled events not yet durable, in order.
        let mut waiting: std::collections::VecDeque<(u64, u64)> = Default::default();
        for i in 0.. {
            if let Recorded::Spooled(seq) = sender.record(event(i)) {
                waiting.push_back((seq, i));
            }
            if i % 64 == 0 {
                // Lets the spool's writer task run (group commit).
                tokio::task::yield_now().await;
            }
            let durable = sender.durable_through();
            let mut printed = false;
            while let Some(&(seq, id)) = waiting.front() {
                if seq > durable {
                    break;
                }
                waiting.pop_front();
                writeln!(out, "spooled {id}").unwrap();
                printed = true;
            }
            if printed {
                out.flush().unwrap();
            }
        }
    });
}

/// (path, request body, status) of one call.
type Sent = (String, bytes::Bytes, Option<u16>);

#[derive(Clone)]
struct Recording {
    inner: ReqwestTransport,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl Transport for Recording {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let path = request.uri().path().to_string();
        let body = request.body().clone();
        let log = Arc::clone(&self.log);
        let fut = self.inner.send(request);
        Box::pin(async move {
            let result = fut.await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            log.lock().unwrap().push((path, body, status));
            result
        })
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn killed_while_spooling_then_restarted_delivers_every_spooled_event() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = TempDir(
        std::env::temp_dir().join(format!("fabraix-telemetry-crash-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut spooled: HashSet<u64> = HashSet::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("spooled ") {
            spooled.insert(id.trim().parse().unwrap());
            if spooled.len() >= 3_000 {
                child.kill().unwrap(); // SIGKILL, mid-stream
                break;
            }
        }
    }
    let _ = child.wait();
    assert!(spooled.len() >= 3_000);

    // Simulate the worst crash too: a torn record at the end of the newest segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 1, "several segments: {segments:?}");
    let last = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let server = MockServer::builder()
            .with_test_keys()
            .start()
            .await
            .unwrap();
        let recording = Recording {
            inner: ReqwestTransport::new(TransportConfig::default()).unwrap(),
            log: Arc::default(),
        };
        let scheduler = Scheduler::builder()
            .transport(Arc::new(recording.clone()))
            .build()
            .unwrap();
        let key = KeyConfig::new(
            "prod",
            ApiKey::new(TEST_PROD_KEY).unwrap(),
            &server.base_url(),
            Quota::production(),
        )
        .unwrap();
        scheduler.add_key(key).await.unwrap();
        let client = FabraixClient::from_scheduler(scheduler, KeyId::new("prod"));
        let (sender, recovered) =
            TelemetrySender::open(client, Quota::production(), TelemetryConfig::new(&dir.0))
                .unwrap();
        assert!(recovered.torn_tail(), "{recovered:?}");
        assert!(recovered.replay >= spooled.len() as u64, "{recovered:?}");
        let report = sender
            .shutdown(tokio::time::Instant::now() + Duration::from_secs(24 * 3600))
            .await;
        assert_eq!(report.persisted, 0, "{report:?}");
        let mut delivered: HashSet<u64> = HashSet::new();
        for (path, body, status) in recording.log.lock().unwrap().iter() {
            if path == "/v1/event" && *status == Some(200) {
                let outer: serde_json::Value = serde_json::from_slice(body).unwrap();
                let content: serde_json::Value =
                    serde_json::from_str(outer["content"].as_str().unwrap()).unwrap();
                assert!(
                    delivered.insert(content["id"].as_u64().unwrap()),
                    "sent twice"
                );
            }
        }
        let missing: Vec<_> = spooled.difference(&delivered).collect();
        assert!(missing.is_empty(), "{} spooled events lost", missing.len());
        assert_eq!(server.key_stats("test-prod").unwrap().refused, 0);
        server.shutdown().await;
    });
}
