//! Input and output mistakes through the real binary: a misspelled field, a line over the size
//! limit, a directory as input or output, a dry run that checks what a real run checks, the
//! plain-http hint only where it applies, no lock file left, plurals.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

async fn sched(args: &[&str]) -> Output {
    Command::new(BIN)
        .env("FABRAIX_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .await
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_field_is_an_error_line_and_spends_no_call() {
    let server = server("100/1s").await;
    let d = dir("in-fields");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    let text = [
        event("good"),
        r#"{"id":"typo","path":"/event","bdy":{"event_type":"user"}}"#.to_string(),
        event("after"),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    let base = server.base_url();
    let args = [
        "send",
        "--no-progress",
        "--quota",
        "100/1s",
        "--base-url",
        &base,
        "-i",
        s(&input),
        "-o",
        s(&output),
    ];
    let out = sched(&args).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = lines(&output);
    assert_eq!(results.len(), 3);
    let typo = results.iter().find(|l| l["id"] == "typo").unwrap();
    assert_eq!(typo["error"]["kind"], "invalid_input");
    assert_eq!(
        typo["error"]["message"],
        "line 2: unknown field \"bdy\" (did you mean \"body\"? the fields are id, method, path, body, priority)"
    );
    // Only the good lines spent a call.
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 2);
    // --strict: exit 2 at the misspelled field.
    let strict_out = d.join("strict.jsonl");
    let mut strict = args.to_vec();
    strict[9] = s(&strict_out);
    strict.push("--strict");
    let out = sched(&strict).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field \"bdy\""),
        "{}",
        stderr(&out)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_size_limit_is_an_error_line_and_the_rest_go() {
    let server = server("100/1s").await;
    let d = dir("in-long");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    let long = event("long").replace(
        "\"content\":\"x\"",
        &format!("\"content\":\"{}\"", "y".repeat(5_000)),
    );
    std::fs::write(&input, [event("good"), long, event("after")].join("\n")).unwrap();
    let base = server.base_url();
    let out = sched(&[
        "send",
        "--no-progress",
        "--quota",
        "100/1s",
        "--base-url",
        &base,
        "-i",
        s(&input),
        "-o",
        s(&output),
        "--max-line-bytes",
        "1000",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = lines(&output);
    assert_eq!(results.len(), 3);
    let long = results.iter().find(|l| l["id"] == "2").unwrap();
    assert_eq!(long["error"]["kind"], "invalid_input");
    let message = long["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 2: 5,"), "{long}");
    assert!(
        message.contains("longer than --max-line-bytes (1,000)"),
        "{long}"
    );
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 2);
    // The documented default.
    let help = String::from_utf8(sched(&["send", "--help"]).await.stdout).unwrap();
    assert!(help.contains("[default: 1048576]"), "{help}");
    server.shutdown().await;
}

fn entries(d: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_directory_as_input_or_output_is_one_error_and_nothing_is_written() {
    let d = dir("in-dirs");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 2);
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    for dry in [false, true] {
        let mut args = vec!["send", "--no-progress", "-i", s(&sub), "-o", s(&output)];
        if dry {
            args.push("--dry-run");
        }
        let out = sched(&args).await;
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: --input ") && err.contains("is a directory"),
            "{err}"
        );
        // The output is a directory.
        let mut args = vec!["send", "--no-progress", "-i", s(&input), "-o", s(&sub)];
        if dry {
            args.push("--dry-run");
        }
        let out = sched(&args).await;
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--output ") && err.contains("is a directory"),
            "{err}"
        );
        assert!(!err.contains("already holds results"), "{err}");
    }
    assert_eq!(entries(&d), ["in.jsonl", "sub"]);
    assert!(entries(&sub).is_empty());
}

#[tokio::test]
async fn a_dry_run_refuses_what_a_real_run_refuses_and_the_hint_fits_the_error() {
    let d = dir("in-dry");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 2);
    for (url, hinted) in [
        ("http://example.com", true),
        ("not a url", false),
        ("ftp://x.example", false),
    ] {
        let real = sched(&["send", "-i", s(&input), "-o", s(&output), "--base-url", url]).await;
        let dry = sched(&["send", "--dry-run", "-i", s(&input), "--base-url", url]).await;
        assert_eq!(real.status.code(), Some(2), "{url}");
        assert_eq!(
            dry.status.code(),
            Some(2),
            "{url}: {}",
            String::from_utf8_lossy(&dry.stdout)
        );
        assert_eq!(stderr(&real), stderr(&dry), "{url}");
        assert_eq!(
            stderr(&real).contains("--allow-insecure-http"),
            hinted,
            "{url}: {}",
            stderr(&real)
        );
        assert!(!output.exists());
    }
    // An output that holds results, without --resume.
    std::fs::write(&output, "{\"id\":\"e1\",\"status\":200}\n").unwrap();
    let real = sched(&["send", "-i", s(&input), "-o", s(&output)]).await;
    let dry = sched(&["send", "--dry-run", "-i", s(&input), "-o", s(&output)]).await;
    assert_eq!((real.status.code(), dry.status.code()), (Some(2), Some(2)));
    assert_eq!(stderr(&real), stderr(&dry));
    assert!(stderr(&dry).contains("already holds results"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_leaves_no_lock_file_and_counts_one_call_in_the_singular() {
    let server = server("100/1s").await;
    let d = dir("in-lock");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 1);
    let base = server.base_url();
    let out = sched(&[
        "send",
        "--no-progress",
        "--quota",
        "100/1s",
        "--base-url",
        &base,
        "-i",
        s(&input),
        "-o",
        s(&output),
    ])
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(entries(&d), ["in.jsonl", "out.jsonl", "out.jsonl.calls"]);
    assert!(err.contains("1 succeeded, 0 failed"), "{err}");
    assert!(
        err.contains("1 call sent, 0 answered 429, 0 retries;"),
        "{err}"
    );
    assert!(err.contains("planned minimum for 1 call "), "{err}");
    assert!(!err.contains("1 calls"), "{err}");
    let results: Vec<Value> = lines(&output);
    assert_eq!(results.len(), 1);
    server.shutdown().await;
}
