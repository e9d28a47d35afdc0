//! The batch path at high rates, on tokio's paused clock against the mock server: results
//! written in groups lose nothing on a clean stop, and a 5000/1s batch ends at its plan without a
//! 429 from the strict (sliding-log) mock at time scales up to ×100.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use fabraix_sched::Exit;
use fabraix_scheduler::mock::{KeyProfile, MockServer, ServerModel};
use fabraix_scheduler::Quota;

#[tokio::test(start_paused = true)]
async fn a_stop_mid_batch_writes_the_result_of_every_answered_call_though_lines_go_in_groups() {
    // Each second starts with a burst of 1,000 calls, 64 at once: their answers come together
    // and are written in groups.
    let server = server("1000/1s").await;
    let d = dir("groups-stop");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 10_000);
    let base = server.base_url();
    let args = [
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--base-url",
        &base,
        "--quota",
        "1000/1s",
        "--concurrency",
        "64",
    ];
    let report = send(&args, ctrl_c_after(Duration::from_millis(3_500)))
        .await
        .unwrap();
    assert_eq!(report.exit, Exit::Interrupted);
    let first = lines(&output);
    assert!(
        (3_000..10_000).contains(&first.len()),
        "{} lines",
        first.len()
    );
    // Every call the server accepted has its line, though they were kept and written in groups.
    let accepted = server.key_stats(LABEL).unwrap().accepted;
    assert_eq!(accepted, first.len() as u64);
    let summary = report.summary.unwrap();
    let journal = std::fs::metadata(d.join("out.jsonl.calls")).unwrap().len();
    assert_eq!(journal, 8 * summary.calls_sent);
    // Resumed: the rest, each id once, nothing sent twice.
    let mut resume = args.to_vec();
    resume.push("--resume");
    let report = send(&resume, stop()).await.unwrap();
    assert_eq!(report.exit, Exit::Success);
    let all = lines(&output);
    assert_eq!(all.len(), 10_000);
    let ids: HashSet<&str> = all.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    let stats = server.key_stats(LABEL).unwrap();
    assert_eq!((stats.accepted, stats.refused), (10_000, 0));
    server.shutdown().await;
}

fn stop() -> fabraix_sched::Stop {
    fabraix_sched::Stop::new()
}

/// `send --quota 5000/1s` of `n` calls against the sliding-log mock whose windows pass `scale`
/// times faster than its quota says (5000 per `scale` seconds: 5000/1s on its clock).
async fn at_5000_per_second(n: usize, scale: u32) -> (f64, f64, u64) {
    let quota: Quota = format!("5000/{scale}s").parse().unwrap();
    let server = MockServer::builder()
        .model(ServerModel::SlidingLog)
        .time_scale(f64::from(scale))
        .key(KEY, KeyProfile::new(quota).label(LABEL))
        .start()
        .await
        .unwrap();
    let d = dir(&format!("rate-5000-x{scale}"));
    let (input, output, summary) = (d.join("in.jsonl"), d.join("out.jsonl"), d.join("s.json"));
    write_events(&input, n);
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
            "5000/1s",
            "--concurrency",
            "64",
            "--summary",
            summary.to_str().unwrap(),
        ],
        stop(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit, Exit::Success, "×{scale}");
    assert!(server.verify().is_ok(), "×{scale}: a window over the quota");
    let s = report.summary.unwrap();
    assert_eq!(s.succeeded, n as u64, "×{scale}");
    let refused = server.refused();
    server.shutdown().await;
    (s.elapsed_secs, s.planned_minimum_secs, refused)
}

#[tokio::test(start_paused = true)]
async fn at_5000_per_second_a_batch_ends_within_2_percent_of_its_plan_without_a_429_up_to_x100() {
    for scale in [1, 10, 100] {
        let (elapsed, planned, refused) = at_5000_per_second(12_000, scale).await;
        assert_eq!(refused, 0, "×{scale}");
        // 12,000 calls: two full windows and a part; the plan's minimum is the ledger's.
        assert!(planned >= 2.0, "×{scale}: planned {planned}");
        let ratio = elapsed / planned;
        assert!(
            (1.0 - 1e-9..=1.02).contains(&ratio),
            "×{scale}: {elapsed} s against a planned {planned} s ({ratio:.4}×)"
        );
    }
}
