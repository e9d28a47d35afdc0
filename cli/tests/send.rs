//! `send` in-process against the mock server: every exit code, resume after a crash, bad lines,
//! bounded read-ahead on a large input, and the summary checked against the server's record.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use fabraix_sched::{Exit, Stop};
use serde_json::Value;

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn all_succeed_exit_0_and_the_summary_matches_the_server_record() {
    let server = server("5/1s,20/10s").await;
    let d = dir("ok");
    let (input, output, summary) = (d.join("in.jsonl"), d.join("out.jsonl"), d.join("sum.json"));
    write_events(&input, 30);
    let base = server.base_url();
    let report = send(
        &[
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "5/1s,20/10s",
            "--summary",
            summary.to_str().unwrap(),
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Success);
    let out = lines(&output);
    assert_eq!(out.len(), 30);
    let unique: HashSet<_> = ids(&out).into_iter().collect();
    assert_eq!(unique.len(), 30);
    assert!(out.iter().all(|l| l["status"] == 200 && l["attempts"] == 1));
    assert!(out[0]["body"].is_object(), "{}", out[0]);
    // The summary against the server's own record.
    let stats = server.key_stats(LABEL).unwrap();
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["succeeded"], 30);
    assert_eq!(s["succeeded"].as_u64(), Some(stats.accepted));
    assert_eq!(s["rate_limited_429"].as_u64(), Some(stats.refused));
    assert_eq!(s["rate_limited_429"], 0);
    assert_eq!(s["calls_sent"], 30);
    assert_eq!(s["failed"], 0);
    assert!(server.verify().is_ok());
    // 30 calls under 20/10s: the last waits for the 10 s window, and the run took that long.
    let planned = s["planned_minimum_secs"].as_f64().unwrap();
    assert!(planned >= 10.0, "{planned}");
    assert!(s["elapsed_secs"].as_f64().unwrap() >= planned - 0.01, "{s}");
    assert!(!std::fs::read_to_string(&output).unwrap().contains(KEY));
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failures_and_bad_lines_exit_1_each_with_one_result_line() {
    let server = server("100/1s").await;
    let d = dir("fail");
    let (input, output, summary) = (d.join("in.jsonl"), d.join("out.jsonl"), d.join("sum.json"));
    let text = [
        event("good"),
        r#"{"id":"bad-body","path":"/event","body":{"event_type":"user"}}"#.to_string(),
        r#"{"id":"no-route","path":"/nope","body":{}}"#.to_string(),
        "this is not json".to_string(),
        r#"{"id":"no-path","body":{}}"#.to_string(),
        String::new(),
        r#"{"id":"urgent","path":"/event","priority":"urgent"}"#.to_string(),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    let base = server.base_url();
    let report = send(
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "100/1s",
            "--summary",
            summary.to_str().unwrap(),
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::SomeFailed);
    let out = lines(&output);
    let by_id = |id: &str| out.iter().find(|l| l["id"] == id).unwrap().clone();
    assert_eq!(out.len(), 6, "one line per input id: {out:?}");
    assert_eq!(by_id("good")["status"], 200);
    assert_eq!(by_id("bad-body")["error"]["kind"], "rejected");
    assert_eq!(by_id("bad-body")["error"]["status"], 400);
    assert_eq!(by_id("no-route")["error"]["status"], 404);
    // Bad lines: their id (or line number), kind invalid_input, the line number in the message.
    let not_json = by_id("4");
    assert_eq!(not_json["error"]["kind"], "invalid_input");
    assert!(not_json["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 4: not JSON"));
    assert_eq!(
        by_id("no-path")["error"]["message"],
        "line 5: missing \"path\""
    );
    assert!(by_id("urgent")["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 7: unknown priority \"urgent\""));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["failed"], 5);
    assert_eq!(s["failed_by_kind"]["invalid_input"], 3);
    assert_eq!(s["failed_by_kind"]["rejected"], 2);
    assert_eq!(s["succeeded"], 1);
    // 400 counts against the quota on the server; 404 is refused before the quota.
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 2);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn strict_stops_at_the_first_bad_line_with_exit_2() {
    let server = server("2/1s").await;
    let d = dir("strict");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    let mut text: Vec<String> = (1..=5).map(|i| event(&format!("a{i}"))).collect();
    text.push(r#"{"id":"bad","path":"/event","priority":"high"}"#.into());
    text.extend((1..=5).map(|i| event(&format!("b{i}"))));
    std::fs::write(&input, text.join("\n")).unwrap();
    let base = server.base_url();
    let report = send(
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "2/1s",
            "--strict",
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Usage);
    let out = lines(&output);
    assert!(out.len() <= 5, "{out:?}");
    assert!(ids(&out).iter().all(|id| id.starts_with('a')), "{out:?}");
    // Every call the server saw has its result written: nothing sent and lost.
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, out.len() as u64);
    server.shutdown().await;
}

#[tokio::test]
async fn usage_errors_exit_2_and_name_the_flag() {
    let d = dir("usage");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 1);
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    let e = send(
        &["-i", i, "-o", o, "--base-url", "http://api.example.com/v1"],
        Stop::new(),
    )
    .await
    .unwrap_err();
    assert!(e.0.contains("--base-url http://api.example.com/v1"), "{e}");
    assert_eq!(e.exit(), Exit::Usage);
    let missing = d.join("missing.jsonl");
    let e = send(&["-i", missing.to_str().unwrap(), "-o", o], Stop::new())
        .await
        .unwrap_err();
    assert!(e.0.contains("cannot open --input"), "{e}");
    std::fs::write(&output, "{\"id\":\"x\",\"status\":200}\n").unwrap();
    let e = send(&["-i", i, "-o", o], Stop::new()).await.unwrap_err();
    assert!(e.0.contains("--resume"), "{e}");
    // --allow-insecure-http lifts the refusal (an empty input sends nothing).
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let fresh = d.join("fresh.jsonl");
    let r = send(
        &[
            "-i",
            empty.to_str().unwrap(),
            "-o",
            fresh.to_str().unwrap(),
            "--base-url",
            "http://api.example.com/v1",
            "--allow-insecure-http",
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.exit, Exit::Success);
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_exits_130_after_writing_in_flight_results_and_resume_finishes_exactly_once() {
    let server = server("2/1s").await;
    let d = dir("ctrlc");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 20);
    let base = server.base_url();
    let args = [
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--base-url",
        &base,
        "--quota",
        "2/1s",
    ];
    let report = send(&args, ctrl_c_after(Duration::from_millis(3_500)))
        .await
        .unwrap();
    assert_eq!(report.exit, Exit::Interrupted);
    let first = lines(&output);
    assert!((4..20).contains(&first.len()), "{} lines", first.len());
    // Graceful: every call the server accepted has its result written; unsent jobs are not.
    assert_eq!(
        server.key_stats(LABEL).unwrap().accepted,
        first.len() as u64
    );
    let summary = report.summary.unwrap();
    assert!(summary.interrupted);
    assert_eq!(summary.succeeded, first.len() as u64);
    // Every call was recorded in the journal next to the output before it went.
    let journal = std::fs::metadata(d.join("out.jsonl.calls")).unwrap().len();
    assert_eq!(journal, 8 * summary.calls_sent);

    let mut resume = args.to_vec();
    resume.push("--resume");
    let report = send(&resume, Stop::new()).await.unwrap();
    assert_eq!(report.exit, Exit::Success);
    assert_eq!(report.summary.unwrap().skipped, first.len() as u64);
    let all = lines(&output);
    assert_eq!(all.len(), 20);
    assert_eq!(ids(&all).into_iter().collect::<HashSet<_>>().len(), 20);
    // Nothing was sent twice, and the resumed run was never refused: it counted the calls of
    // the run before, which the server's window still held.
    let stats = server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (20, 0));
    assert!(server.verify().is_ok());
    assert!(
        all.iter().all(|l| l["finished_at_ms"].as_u64().is_some()),
        "{}",
        all[0]
    );
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn resume_after_a_crash_cuts_the_truncated_last_line_and_sends_the_rest_once() {
    let server = server("50/1s").await;
    let d = dir("crash");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 12);
    // What a `kill -9` mid-write leaves: 5 complete lines and half of the 6th.
    let done: String = (1..=5)
        .map(|i| format!("{{\"id\":\"e{i}\",\"status\":200,\"attempts\":1,\"body\":{{}}}}\n"))
        .collect();
    std::fs::write(&output, done + "{\"id\":\"e6\",\"status\":2").unwrap();
    let base = server.base_url();
    let report = send(
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "50/1s",
            "--resume",
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Success);
    let out = lines(&output); // every line parses: the fragment is gone
    assert_eq!(out.len(), 12);
    let mut got = ids(&out);
    got.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    assert_eq!(got, (1..=12).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert_eq!(server.key_stats(LABEL).unwrap().accepted, 7); // e6..e12
    assert_eq!(report.summary.unwrap().skipped, 5);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn resume_waits_for_the_calls_of_the_run_before_to_leave_the_window() {
    let server = server("3/1s").await;
    let d = dir("resume-window");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    // The run before finished e1 and e2 half a second ago (wall clock), then was killed.
    std::fs::write(&output, e1_e2_finished_half_a_second_ago()).unwrap();
    // The window holds e1, e2 (0.5 s old) and one call that may have been on the wire: the first
    // call of this run waits until e1 and e2 leave it (0.5 s, plus the 100 ms guard).
    let (first, planned) = resume_and_plan(&server, &input, &output).await;
    assert_waited_for_the_window(first);
    // The summary's plan counts them too: two calls at about 0.6 s, the third once the call
    // that may have been on the wire leaves the window (about 1.1 s); a fresh key: at once.
    assert!((1.0..1.3).contains(&planned), "planned minimum {planned} s");
    assert_eq!(lines(&output).len(), 5);
    assert_eq!(server.arrivals(LABEL).len(), 3);
    server.shutdown().await;
}

/// `output` as a run left it that sent three calls half a second ago (in its journal) and was
/// killed before any result.
fn killed_after_three_calls_half_a_second_ago(output: &std::path::Path) {
    std::fs::write(output, "").unwrap();
    let ms = half_a_second_ago_ms();
    std::fs::write(
        output.with_file_name("out.jsonl.calls"),
        ms.to_le_bytes().repeat(3),
    )
    .unwrap();
}

/// Result lines of e1 and e2, finished half a second ago (wall clock).
fn e1_e2_finished_half_a_second_ago() -> String {
    let ms = half_a_second_ago_ms();
    (1..=2)
        .map(|i| {
            format!("{{\"id\":\"e{i}\",\"status\":200,\"attempts\":1,\"finished_at_ms\":{ms}}}\n")
        })
        .collect()
}

/// A first call that waited for calls of half a second ago to leave a 1 s window (0.5 s, plus the
/// 100 ms guard), give or take the test's own start.
fn assert_waited_for_the_window(first: Duration) {
    assert!(
        first >= Duration::from_millis(450) && first <= Duration::from_millis(700),
        "first call after {first:?}"
    );
}

/// The wall-clock time half a second ago, in Unix milliseconds.
fn half_a_second_ago_ms() -> u64 {
    (std::time::SystemTime::now() - Duration::from_millis(500))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `send --resume` on `output` (3/1s, one call at a time) with the five events of `input`; returns
/// when the first call reached the server, after the start.
async fn resume_first_call_after(
    server: &fabraix_scheduler::mock::MockServer,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Duration {
    resume_and_plan(server, input, output).await.0
}

/// As [`resume_first_call_after`], and the summary's planned minimum (seconds).
async fn resume_and_plan(
    server: &fabraix_scheduler::mock::MockServer,
    input: &std::path::Path,
    output: &std::path::Path,
) -> (Duration, f64) {
    let base = server.base_url();
    let start = tokio::time::Instant::now();
    let report = send(
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "3/1s",
            "--concurrency",
            "1",
            "--resume",
        ],
        Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Success);
    assert_eq!(server.key_stats(LABEL).unwrap().refused, 0);
    let first = server
        .arrivals(LABEL)
        .iter()
        .min()
        .unwrap()
        .duration_since(start);
    (first, report.summary.unwrap().planned_minimum_secs)
}

#[tokio::test(start_paused = true)]
async fn resume_counts_the_calls_in_the_journal_even_those_without_a_result() {
    let server = server("3/1s").await;
    let d = dir("resume-journal");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    // The run before sent three calls half a second ago and was killed before any result.
    killed_after_three_calls_half_a_second_ago(&output);
    // The window is full until they leave it (0.5 s, plus the 100 ms guard); nothing more is
    // counted (no allowance for calls on the wire: the journal has them all).
    let (first, planned) = resume_and_plan(&server, &input, &output).await;
    // The plan: three calls at about 0.6 s, two more a window and a guard later (1.7 s); for a
    // fresh key it would be 1.1 s.
    assert!((1.6..1.9).contains(&planned), "planned minimum {planned} s");
    assert_waited_for_the_window(first);
    assert_eq!(lines(&output).len(), 5);
    // The journal now holds those three and this run's five.
    let journal = std::fs::metadata(d.join("out.jsonl.calls")).unwrap().len();
    assert_eq!(journal, 8 * 8);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_journal_that_cannot_be_written_is_done_without() {
    let server = server("3/1s").await;
    let d = dir("no-journal");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    // Something else where the journal would go.
    std::fs::create_dir(d.join("out.jsonl.calls")).unwrap();
    let first = resume_first_call_after(&server, &input, &output).await;
    assert_eq!(first, Duration::ZERO);
    assert_eq!(lines(&output).len(), 5);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_journal_that_can_be_read_but_not_written_still_counts_its_calls() {
    let server = server("3/1s").await;
    let d = dir("read-only-journal");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    // The run before sent three calls half a second ago and was killed before any result; its
    // journal can be read, but not locked for this run (something else where the lock goes).
    killed_after_three_calls_half_a_second_ago(&output);
    std::fs::create_dir(d.join("out.jsonl.calls.lock")).unwrap();
    // The journal's three calls fill the window until they leave it (0.5 s, plus the guard).
    let first = resume_first_call_after(&server, &input, &output).await;
    assert_waited_for_the_window(first);
    assert_eq!(lines(&output).len(), 5);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_journal_that_cannot_be_read_leaves_the_result_lines_to_count_the_run_before() {
    let server = server("3/1s").await;
    let d = dir("unreadable-journal");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    // The run before finished e1 and e2 half a second ago; its journal cannot be opened now
    // (something else is in its place).
    std::fs::write(&output, e1_e2_finished_half_a_second_ago()).unwrap();
    std::fs::create_dir(d.join("out.jsonl.calls")).unwrap();
    // As without a journal: the first call waits until e1 and e2 leave the window.
    let first = resume_first_call_after(&server, &input, &output).await;
    assert_waited_for_the_window(first);
    assert_eq!(lines(&output).len(), 5);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_large_input_is_streamed_never_more_than_the_queue_ahead() {
    let server = server("10/1s").await;
    let d = dir("large");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 200_000);
    let base = server.base_url();
    let report = send(
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--base-url",
            &base,
            "--quota",
            "10/1s",
            "--queue-capacity",
            "16",
            "--concurrency",
            "4",
        ],
        ctrl_c_after(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Interrupted);
    let summary = report.summary.unwrap();
    let written = lines(&output).len() as u64;
    assert!(written >= 40, "{written}");
    // The reader stayed within queue + in flight of the output, and read only that far.
    assert!(report.max_read_ahead <= 16 + 4, "{}", report.max_read_ahead);
    assert!(
        summary.lines <= written + 20 + 1,
        "{} lines read",
        summary.lines
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_streams_a_large_input_and_sends_nothing() {
    let d = dir("dry");
    let input = d.join("in.jsonl");
    write_events(&input, 200_000);
    let report = send(&["-i", input.to_str().unwrap(), "--dry-run"], Stop::new())
        .await
        .unwrap();
    assert_eq!(report.exit, Exit::Success);
    assert!(report.summary.is_none());
    // With --strict, a bad line is an input error naming its line.
    std::fs::write(&input, format!("{}\n{{\"path\":1}}\n", event("a"))).unwrap();
    let e = send(
        &["-i", input.to_str().unwrap(), "--dry-run", "--strict"],
        Stop::new(),
    )
    .await
    .unwrap_err();
    assert!(e.0.starts_with("line 2:"), "{e}");
}
