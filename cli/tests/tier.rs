//! A wrong tier is not silent: a key whose server allows far fewer calls than the configured
//! quota gets 429s, and `send` ends by saying what the server's limits look like.

mod common;

use common::*;
use fabraix_scheduler::Quota;
use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_far_below_the_quota_is_named_at_the_end() {
    // The server allows 4 calls a second; the run is told 40.
    let server = server("4/1s").await;
    let d = dir("tier");
    let input = d.join("in.jsonl");
    write_events(&input, 8);
    let run = |n: u32, quota: &'static str| {
        let output = d.join(format!("out{n}.jsonl"));
        let summary = d.join(format!("s{n}.json"));
        let base = server.base_url();
        let input = input.clone();
        async move {
            let out = Command::new(BIN)
                .env("FABRAIX_API_KEY", KEY)
                .args([
                    "send",
                    "--no-progress",
                    "--base-url",
                    &base,
                    "--quota",
                    quota,
                ])
                .args([
                    "-i",
                    input.to_str().unwrap(),
                    "-o",
                    output.to_str().unwrap(),
                ])
                .args(["--summary", summary.to_str().unwrap()])
                .output()
                .await
                .unwrap();
            let s: Value =
                serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
            (out, s)
        }
    };
    let (out, s) = run(1, "40/1s").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(s["rate_limited_429"].as_u64().unwrap() > 0, "{s}");
    let looks: Quota = s["server_limits_look_like"]
        .as_str()
        .unwrap_or_else(|| panic!("{s}"))
        .parse()
        .unwrap();
    let limit = looks.limits()[0];
    assert_eq!(limit.window(), std::time::Duration::from_secs(1), "{looks}");
    assert!((4..=6).contains(&limit.count()), "{looks}");
    assert!(
        err.contains(&format!(
            "its limits look like {looks}, not the configured 40/1s"
        )),
        "{err}"
    );
    // Told the server's quota: no such line.
    let (out, s) = run(2, "4/1s").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(s["server_limits_look_like"], Value::Null, "{s}");
    assert!(!err.contains("look like"), "{err}");
    server.shutdown().await;
}
