//! The scheduler's span per attempt, recorded by a tracing subscriber writing to a buffer while
//! it sends to the mock server on tokio's paused clock (a binary of its own: a subscriber set
//! for one thread misses callsites that another test's thread saw first without one).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::rig_with;
use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{ApiKey, Quota, RetryPolicy};

/// A writer into a shared buffer, for the subscriber.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_runs_in_a_span_with_its_key_lane_slot_and_attempt() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _in_force = tracing::subscriber::set_default(subscriber);
    // A callsite first hit before this subscriber existed would stay disabled.
    tracing::callsite::rebuild_interest_cache();
    let quota: Quota = "5/1s".parse().unwrap();
    let builder = MockServer::builder().key(TEST_DEV_KEY, quota.clone());
    let rig = rig_with(builder, TEST_DEV_KEY, quota, RetryPolicy::default(), |c| c).await;
    let ticket = rig
        .scheduler
        .submit(&rig.key, common::check())
        .await
        .unwrap();
    ticket.await.expect("success");
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("fabraix_call{"))
        .unwrap_or_else(|| panic!("no span in:\n{text}"));
    let fingerprint = ApiKey::new(TEST_DEV_KEY).unwrap().fingerprint().to_string();
    for field in [
        "key=k".to_string(),
        format!("label={fingerprint}"),
        "lane=\"interactive\"".to_string(),
        "slot=".to_string(),
        "attempt=1".to_string(),
    ] {
        assert!(line.contains(&field), "{field} not in {line}");
    }
    assert!(!text.contains(TEST_DEV_KEY), "the key itself was logged");
}
