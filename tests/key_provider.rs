//! Key providers against the mock over HTTP: a 401 reads the key's source again before it fails
//! the queue (once), and a key file watched on the scheduler's clock is rotated mid-run without
//! losing a job.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{event, patient_transport};
use fabraix_scheduler::mock::{KeyProfile, MockServer, TEST_DEV_KEY, TEST_PROD_KEY};
use fabraix_scheduler::{
    ApiKey, JobError, KeyConfig, KeyId, KeyProvider, KeyWatch, Quota, Scheduler,
};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fbx-keyprov-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Setup {
    server: MockServer,
    scheduler: Scheduler,
    key: KeyId,
    file: PathBuf,
}

/// A mock with the dev key (label "old") and the prod key ("new"), a key file holding the dev
/// key, and a scheduler whose key reads that file again on a 401 (if `refresh`).
async fn setup(name: &str, quota: &str, refresh: bool) -> Setup {
    let quota: Quota = quota.parse().unwrap();
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label("old"))
        .key(TEST_PROD_KEY, KeyProfile::new(quota.clone()).label("new"))
        .start()
        .await
        .unwrap();
    let file = dir(name).join("key");
    std::fs::write(&file, format!("{TEST_DEV_KEY}\n")).unwrap();
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .seed(7)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    let provider = KeyProvider::file(&file);
    let first = provider.read().await.unwrap();
    let mut config = KeyConfig::new(key.clone(), first, &server.base_url(), quota)
        .unwrap()
        .max_in_flight(1);
    if refresh {
        config = config.on_unauthorized(provider.refresher(Arc::clone(scheduler.clock())));
    }
    scheduler.add_key(config).await.unwrap();
    Setup {
        server,
        scheduler,
        key,
        file,
    }
}

async fn submit(s: &Setup, n: usize) -> Vec<fabraix_scheduler::Ticket> {
    let mut tickets = Vec::new();
    for i in 0..n {
        tickets.push(s.scheduler.submit(&s.key, event(i)).await.unwrap());
    }
    tickets
}

#[tokio::test(start_paused = true)]
async fn a_401_reads_the_key_file_again_and_no_queued_job_is_lost() {
    let s = setup("refresh", "100/1s", true).await;
    // The secret was rotated at its source: the file holds the new key, the old one is revoked.
    std::fs::write(&s.file, TEST_PROD_KEY).unwrap();
    s.server.revoke_key(TEST_DEV_KEY);
    for t in submit(&s, 10).await {
        t.await.unwrap();
    }
    assert_eq!(s.server.unauthorized(), 1, "one call spent on the old key");
    assert_eq!(s.server.arrivals("new").len(), 10);
    assert!(s.server.arrivals("old").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_401_with_the_source_unchanged_fails_the_queue_after_one_read() {
    let s = setup("unchanged", "100/1s", true).await;
    s.server.revoke_key(TEST_DEV_KEY);
    let mut unauthorized = 0;
    let mut revoked = 0;
    for t in submit(&s, 10).await {
        match t.await {
            Err(JobError::Unauthorized { .. }) => unauthorized += 1,
            Err(JobError::KeyRevoked { .. }) => revoked += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((unauthorized, revoked), (1, 9));
    assert_eq!(s.server.unauthorized(), 1, "the same key is not sent again");
}

#[tokio::test(start_paused = true)]
async fn a_new_key_refused_too_fails_the_queue_without_another_read() {
    let s = setup("both-revoked", "100/1s", true).await;
    std::fs::write(&s.file, TEST_PROD_KEY).unwrap();
    s.server.revoke_key(TEST_DEV_KEY);
    s.server.revoke_key(TEST_PROD_KEY);
    let outcomes: Vec<_> = {
        let mut v = Vec::new();
        for t in submit(&s, 5).await {
            v.push(t.await);
        }
        v
    };
    assert!(outcomes.iter().all(Result::is_err));
    assert_eq!(
        s.server.unauthorized(),
        2,
        "the old key once, the new key once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watched_key_file_rotated_mid_run_loses_no_job() {
    let s = setup("watched", "2/1s", false).await;
    let current = ApiKey::new(TEST_DEV_KEY).unwrap();
    let provider = KeyProvider::file(&s.file);
    let _watch = KeyWatch::spawn(
        &s.scheduler,
        s.key.clone(),
        provider,
        current,
        Duration::from_millis(100),
    );
    let tickets = submit(&s, 20).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    std::fs::write(&s.file, TEST_PROD_KEY).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.server.revoke_key(TEST_DEV_KEY);
    for t in tickets {
        t.await.unwrap();
    }
    let old = s.server.arrivals("old").len();
    let new = s.server.arrivals("new").len();
    assert_eq!(old + new, 20);
    assert!(old >= 8 && new >= 8, "old {old}, new {new}");
    assert_eq!(s.server.unauthorized(), 0);
}

/// A transport that holds the first call until told, answers 401 for the old key and 200 for
/// any other, and records the key of every call.
#[derive(Debug, Default)]
struct HeldTransport {
    release: tokio::sync::Notify,
    on_wire: tokio::sync::Notify,
    keys: std::sync::Mutex<Vec<String>>,
}

/// The transport as the scheduler holds it, sharing its state with the test.
struct Held(Arc<HeldTransport>);

impl fabraix_scheduler::Transport for Held {
    fn send(
        &self,
        request: fabraix_scheduler::OutgoingRequest<'_>,
    ) -> fabraix_scheduler::TransportFuture {
        let key = request.api_key().to_str().unwrap().to_string();
        let this = Arc::clone(&self.0);
        Box::pin(async move {
            let first = {
                let mut keys = this.keys.lock().unwrap();
                keys.push(key.clone());
                keys.len() == 1
            };
            if first {
                this.on_wire.notify_one();
                this.release.notified().await;
            }
            let status = if key == TEST_DEV_KEY { 401 } else { 200 };
            let mut response =
                fabraix_scheduler::HttpResponse::new(bytes::Bytes::from_static(b"{}"));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok(response)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_of_a_call_sent_before_a_rotation_is_sent_again_with_the_new_key() {
    let transport = Arc::new(HeldTransport::default());
    let scheduler = Scheduler::builder()
        .transport(Arc::new(Held(Arc::clone(&transport))))
        .build()
        .unwrap();
    let key = KeyId::new("k");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        "http://127.0.0.1:9/v1",
        "100/1s".parse().unwrap(),
    )
    .unwrap();
    scheduler.add_key(config).await.unwrap();
    let ticket = scheduler.submit(&key, event(0)).await.unwrap();
    transport.on_wire.notified().await;
    // Rotated while the call is on the wire; the old key is then refused.
    assert!(scheduler.rotate_key(&key, ApiKey::new(TEST_PROD_KEY).unwrap()));
    transport.release.notify_one();
    let response = ticket.await.expect("sent again with the new key");
    assert_eq!(response.status, 200);
    assert_eq!(response.attempts, 2);
    assert_eq!(
        *transport.keys.lock().unwrap(),
        [TEST_DEV_KEY, TEST_PROD_KEY]
    );
    // The key is not revoked: later jobs go.
    scheduler
        .submit(&key, event(1))
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A refresh that takes 10 s (on the test's paused clock) and gives the prod key; counts its calls.
#[derive(Debug, Default)]
struct SlowRefresh {
    calls: std::sync::atomic::AtomicUsize,
}

impl fabraix_scheduler::KeyRefresh for SlowRefresh {
    fn refresh<'a>(&'a self, _refused: &'a ApiKey) -> fabraix_scheduler::RefreshFuture<'a> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Some(ApiKey::new(TEST_PROD_KEY).unwrap())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn while_a_slow_refresh_runs_nothing_goes_with_the_refused_key_and_it_is_asked_once() {
    let quota: Quota = "2/1s".parse().unwrap();
    let server = MockServer::builder()
        .key(TEST_DEV_KEY, KeyProfile::new(quota.clone()).label("old"))
        .key(TEST_PROD_KEY, KeyProfile::new(quota.clone()).label("new"))
        .start()
        .await
        .unwrap();
    server.revoke_key(TEST_DEV_KEY);
    let scheduler = Scheduler::builder()
        .transport_config(patient_transport())
        .seed(7)
        .build()
        .unwrap();
    let key = KeyId::new("k");
    let refresh = Arc::new(SlowRefresh::default());
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(TEST_DEV_KEY).unwrap(),
        &server.base_url(),
        quota,
    )
    .unwrap()
    .max_in_flight(4)
    .on_unauthorized(Arc::clone(&refresh) as Arc<dyn fabraix_scheduler::KeyRefresh>);
    scheduler.add_key(config).await.unwrap();
    // Two calls go at once with the revoked key; the third's slot, a second on, is held.
    let mut tickets = Vec::new();
    for i in 0..6 {
        tickets.push(scheduler.submit(&key, event(i)).await.unwrap());
    }
    for t in tickets {
        t.await.expect("sent again with the new key");
    }
    assert_eq!(
        refresh.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the source asked once"
    );
    assert_eq!(
        server.unauthorized(),
        2,
        "only the two calls already on the wire were refused"
    );
    assert_eq!(server.arrivals("new").len(), 6);
}
