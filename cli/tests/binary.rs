//! The real binary: `plan`, a usage error, a missing key, and `send --input -` (stdin) with the
//! key from the child's environment.

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_plans_refuses_bad_usage_and_sends_stdin() {
    let out = Command::new(BIN)
        .args(["plan", "--count", "1000"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("1,000 calls: 60 at once, then 940 paced by the minute window (60 per minute) from +1 min 0 s to +16 min 1 s."),
        "{text}"
    );

    let out = Command::new(BIN)
        .args(["plan", "--count", "5", "--quota", "5/0s"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--quota"));

    let d = dir("binary");
    let output = d.join("out.jsonl");
    let out = Command::new(BIN)
        .current_dir(&d) // no .env here
        .env_remove("FABRAIX_API_KEY")
        .args(["send", "--input", "-", "--output", output.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FABRAIX_API_KEY"));

    let server = server("100/1s").await;
    let mut child = Command::new(BIN)
        .current_dir(&d)
        .env("FABRAIX_API_KEY", KEY)
        .args([
            "send",
            "--input",
            "-",
            "--output",
            output.to_str().unwrap(),
            "--base-url",
            &server.base_url(),
            "--quota",
            "100/1s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = ["a", "b", "c"].iter().map(|id| event(id) + "\n").collect();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(KEY) && !String::from_utf8_lossy(&out.stdout).contains(KEY));
    assert!(stderr.contains("key#"), "{stderr}");
    let results = lines(&output);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["status"] == 200));
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_plans_with_the_calls_of_the_run_before() {
    let d = dir("dry-resume");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 2);
    std::fs::write(&output, "").unwrap();
    // The run before sent three calls ten seconds ago (its journal), no result yet: under 3/1m
    // they hold the window for another 50 s.
    let ms = (std::time::SystemTime::now() - std::time::Duration::from_secs(10))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::write(d.join("out.jsonl.calls"), ms.to_le_bytes().repeat(3)).unwrap();
    let dry_run = |extra: &[&str]| {
        let mut args = vec![
            "send",
            "--dry-run",
            "-i",
            input.to_str().unwrap(),
            "--quota",
            "3/1m",
        ];
        args.extend_from_slice(extra);
        Command::new(BIN).args(args).output()
    };
    let out_arg = output.to_str().unwrap();
    // Every send to this output reads the journal, resumed or not: so does its dry run.
    for extra in [&["-o", out_arg, "--resume"][..], &["-o", out_arg][..]] {
        let out = dry_run(extra).await.unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        // The plan waits for the earlier calls, and says so (not "all at once").
        assert!(
            text.starts_with(
                "2 calls: the key's windows holding 3 calls of the earlier run, 2 paced by the minute window"
            ) && !text.contains(" all at once")
                && text.contains("the first call at +"),
            "{extra:?}: {text}"
        );
    }
    // Without an output: a fresh key, the first call at once.
    let out = dry_run(&[]).await.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("the first call at once"), "{text}");
    // Nothing was changed.
    assert_eq!(
        std::fs::metadata(d.join("out.jsonl.calls")).unwrap().len(),
        24
    );
    assert!(!d.join("out.jsonl.calls.lock").exists());
}
