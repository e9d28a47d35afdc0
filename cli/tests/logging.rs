//! Warnings reach the user: the library's warnings on stderr by default, `-q` and `RUST_LOG`
//! change that, and no log line carries the key.

use std::process::Output;

use fabraix_scheduler::mock::{MockServer, TEST_RESTRICTED_KEY};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_warnings_show_by_default_with_the_fingerprint_never_the_key() {
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let d = std::env::temp_dir().join(format!("fbx-cli-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let input = d.join("in.jsonl");
    // A restricted key may not call /check: the scheduler warns "call forbidden for this key".
    std::fs::write(
        &input,
        r#"{"id":"c","path":"/check","body":{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"x","schema":"{}"}}"#,
    )
    .unwrap();
    let run = |n: usize, extra: &[&str], rust_log: Option<&str>| {
        let output = d.join(format!("out{n}.jsonl"));
        let mut cmd = Command::new(BIN);
        cmd.env("FABRAIX_API_KEY", TEST_RESTRICTED_KEY)
            .env_remove("RUST_LOG")
            .args(["send", "--no-progress", "--base-url", &server.base_url()])
            .args([
                "-i",
                input.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
            ])
            .args(extra);
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        cmd.output()
    };
    let check = |out: &Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains(TEST_RESTRICTED_KEY), "{err}");
        err
    };
    let err = check(&run(1, &[], None).await.unwrap());
    assert!(
        err.contains("WARN") && err.contains("call forbidden for this key"),
        "{err}"
    );
    assert!(err.contains("key#"), "{err}");
    let err = check(&run(2, &["-q"], None).await.unwrap());
    assert!(!err.contains("WARN"), "{err}");
    let err = check(&run(3, &[], Some("off")).await.unwrap());
    assert!(!err.contains("WARN"), "{err}");
    let err = check(&run(4, &["-vv"], Some("off")).await.unwrap());
    assert!(err.contains("WARN") && err.contains("DEBUG"), "{err}");
    assert!(!err.contains(TEST_RESTRICTED_KEY));
    for n in 1..=4 {
        let out = std::fs::read_to_string(d.join(format!("out{n}.jsonl"))).unwrap();
        assert!(!out.contains(TEST_RESTRICTED_KEY));
    }
    server.shutdown().await;
}
