//! `send --metrics ADDR`: the scheduler's metrics scraped over HTTP while the process runs. (Its
//! own test binary: the Prometheus recorder is installed once per process.)

mod common;

use common::{dir, send, server, write_events, KEY};
use fabraix_sched::Stop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback address free a moment ago.
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `GET /metrics` over a raw socket; the response's body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics endpoint listens");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_serves_the_scheduler_metrics_for_prometheus() {
    let server = server("50/1s").await;
    let d = dir("metrics");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 12);
    let addr = free_addr().to_string();
    let base = server.base_url();
    let args = [
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--base-url",
        &base,
        "--quota",
        "50/1s",
        "--metrics",
        &addr,
    ];
    let report = send(&args, Stop::new()).await.unwrap();
    assert_eq!(report.exit, fabraix_sched::Exit::Success);
    let text = scrape(addr.parse().unwrap()).await;
    let fingerprint = fabraix_scheduler::ApiKey::new(KEY)
        .unwrap()
        .fingerprint()
        .to_string();
    let calls =
        format!("fabraix_scheduler_calls_total{{key=\"{fingerprint}\",status_class=\"2xx\"}} 12");
    assert!(text.contains(&calls), "{calls} not in:\n{text}");
    assert!(
        text.contains("fabraix_scheduler_slot_wait_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("fabraix_scheduler_in_flight"), "{text}");
    assert!(!text.contains(KEY), "the key itself must never be a label");
}
