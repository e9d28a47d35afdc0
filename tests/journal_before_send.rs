//! A key's call journal holds every call before the call reaches the server: records are written
//! in groups, once per turn of the shard, before the turn's calls are polled onto the wire.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fabraix_scheduler::{ApiKey, Job, KeyConfig, KeyId, Quota, Scheduler, ShutdownMode};
use futures_util::stream::{self, StreamExt};
use http_body_util::Full;

/// Answers 200 to everything; for each request, counts it and whether the journal at `journal`
/// held fewer records than requests seen so far (a call that reached the server unrecorded).
async fn serve(
    listener: tokio::net::TcpListener,
    journal: std::path::PathBuf,
    seen: Arc<AtomicU64>,
    unrecorded: Arc<AtomicU64>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (journal, seen, unrecorded) =
            (journal.clone(), Arc::clone(&seen), Arc::clone(&unrecorded));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let records = std::fs::metadata(&journal).map_or(0, |m| m.len() / 8);
                if records < n {
                    unrecorded.fetch_add(1, Ordering::SeqCst);
                }
                async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_in_the_journal_before_it_reaches_the_server() {
    let dir = std::env::temp_dir().join(format!("fbx-journal-before-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("calls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (seen, unrecorded) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let server = tokio::spawn(serve(
        listener,
        journal.clone(),
        Arc::clone(&seen),
        Arc::clone(&unrecorded),
    ));
    let scheduler = Scheduler::builder().build().unwrap();
    let key = KeyId::new("k");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new("fbx-journal-test-key").unwrap(),
        &base,
        "unlimited".parse::<Quota>().unwrap(),
    )
    .unwrap()
    .max_in_flight(32)
    .call_journal(&journal);
    scheduler.add_key(config).await.unwrap();
    // Fewer calls than a compaction waits for: the file only grows.
    let calls = 2_000u64;
    stream::iter(0..calls)
        .map(|_| {
            let (scheduler, key) = (&scheduler, &key);
            async move {
                let job = Job::new(http::Method::POST, "/event").with_body(&b"{}"[..]);
                let outcome = scheduler.submit(key, job).await.unwrap().await;
                assert_eq!(outcome.unwrap().status, 200);
            }
        })
        .buffer_unordered(256)
        .for_each(|()| async {})
        .await;
    scheduler.shutdown(ShutdownMode::Drain).await;
    server.abort();
    assert_eq!(seen.load(Ordering::SeqCst), calls);
    assert_eq!(
        unrecorded.load(Ordering::SeqCst),
        0,
        "calls reached the server unrecorded"
    );
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 8 * calls);
    let _ = std::fs::remove_dir_all(&dir);
}
