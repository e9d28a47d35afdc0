//! `send --timeout` / `--connect-timeout` against a server that accepts and never answers: the
//! batch ends in seconds, each call with a timeout error line, not a minute per attempt.

mod common;

use std::time::Duration;

use common::{dir, event, lines, send};
use fabraix_sched::{Exit, Stop};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[tokio::test]
async fn a_server_that_never_answers_costs_the_timeout_per_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Reads the request, answers nothing, holds the connection.
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let d = dir("timeouts");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    std::fs::write(&input, format!("{}\n{}\n", event("a"), event("b"))).unwrap();
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        send(
            &[
                "-i",
                input.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
                "--base-url",
                &base,
                "--quota",
                "100/1s",
                "--timeout",
                "150ms",
                "--connect-timeout",
                "1s",
            ],
            Stop::new(),
        ),
    )
    .await
    .expect("the batch ends")
    .unwrap();
    let took = started.elapsed();
    assert_eq!(report.exit, Exit::SomeFailed);
    let out = lines(&output);
    assert_eq!(out.len(), 2, "{out:?}");
    for line in &out {
        assert_eq!(line["error"]["kind"], "transient", "{line}");
        assert!(
            line["error"]["message"]
                .as_str()
                .unwrap()
                .contains("timed out"),
            "{line}"
        );
    }
    // Five attempts of 150 ms and their backoffs (at most 0.25 + 0.5 + 1 + 2 s), not 5 × 60 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}
