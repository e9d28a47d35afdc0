//! Colliding ids through the real binary: `"7"` and `7`, a line without an id (its line number)
//! and a line with that id, the same id twice. Each id is one call and one result line; each
//! collision is reported with both line numbers and counted; `--resume` after a kill sends every
//! id that has no result and reports the collisions again.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

fn with_id(id: &str) -> String {
    event("x").replace(r#""id":"x""#, id)
}

/// Lines 1 and 2: "7" and 7; 3 (no id) and 4 ("3"); 5 and 6: "a" twice; 7: "b".
fn colliding_input() -> String {
    [
        with_id(r#""id":"7""#),
        with_id(r#""id":7"#),
        with_id("").replacen("{,", "{", 1),
        with_id(r#""id":"3""#),
        with_id(r#""id":"a""#),
        with_id(r#""id":"a""#),
        with_id(r#""id":"b""#),
    ]
    .iter()
    .map(|l| l.clone() + "\n")
    .collect()
}

fn count_by_id(results: &[Value]) -> HashMap<String, usize> {
    let mut by_id = HashMap::new();
    for r in results {
        *by_id
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    by_id
}

async fn send(
    args: &[&str],
    base: &str,
    input: &std::path::Path,
    output: &std::path::Path,
) -> std::process::Output {
    Command::new(BIN)
        .env("FABRAIX_API_KEY", KEY)
        .args([
            "send",
            "--no-progress",
            "--quota",
            "100/1s",
            "--base-url",
            base,
        ])
        .args([
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_ids_are_one_call_and_one_line_each_and_reported_with_both_lines() {
    let server = server("100/1s").await;
    let d = dir("ids-collide");
    let (input, output, summary) = (d.join("in.jsonl"), d.join("out.jsonl"), d.join("s.json"));
    std::fs::write(&input, colliding_input()).unwrap();
    assert!(!colliding_input().lines().nth(2).unwrap().contains("\"id\""));
    let out = send(
        &["--summary", summary.to_str().unwrap()],
        &server.base_url(),
        &input,
        &output,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let by_id = count_by_id(&lines(&output));
    let expected: HashMap<String, usize> = ["7", "3", "a", "b"]
        .iter()
        .map(|id| (id.to_string(), 1))
        .collect();
    assert_eq!(by_id, expected, "{stderr}");
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 4);
    for (line, first, id) in [(2, 1, "7"), (4, 3, "3"), (6, 5, "a")] {
        let said = format!("line {line}: id \"{id}\" is already the id of line {first}");
        assert!(stderr.contains(&said), "{said}: {stderr}");
    }
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["duplicate_ids"], 3, "{s}");
    assert!(stderr.contains("3 lines not sent"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_kill_sends_every_id_without_a_result_and_reports_collisions_again() {
    let server = server("100/1s").await;
    let d = dir("ids-resume");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    std::fs::write(&input, colliding_input()).unwrap();
    // A run killed after the result of "7" (line 1), and in the middle of another line.
    std::fs::write(
        &output,
        "{\"id\":\"7\",\"status\":200,\"attempts\":1,\"body\":null,\"finished_at_ms\":1}\n{\"id\":\"3\",\"sta",
    )
    .unwrap();
    let out = send(&["--resume"], &server.base_url(), &input, &output).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let by_id = count_by_id(&lines(&output));
    let expected: HashMap<String, usize> = ["7", "3", "a", "b"]
        .iter()
        .map(|id| (id.to_string(), 1))
        .collect();
    assert_eq!(by_id, expected, "{stderr}");
    // "7" was done; 3, a and b had no result and went, once each.
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 3);
    assert!(
        stderr.contains("line 2: id \"7\" is already the id of line 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 skipped (already in the output)"),
        "{stderr}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn help_says_how_ids_are_compared_and_a_dry_run_counts_collisions() {
    let out = Command::new(BIN)
        .args(["send", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("Ids are compared as these strings, exactly"),
        "{help}"
    );
    let d = dir("ids-dry");
    let input = d.join("in.jsonl");
    std::fs::write(&input, colliding_input()).unwrap();
    let out = Command::new(BIN)
        .args(["send", "--dry-run", "-i", input.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "as the real run would");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("4 calls: all at once"), "{text}");
    assert!(text.contains("3 lines would not be sent"), "{text}");
    let out = Command::new(BIN)
        .args([
            "send",
            "--dry-run",
            "--strict",
            "-i",
            input.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: id \"7\""));
}
