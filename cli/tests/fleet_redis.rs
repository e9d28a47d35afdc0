//! A fleet of real `fabraix-sched send --redis` processes sharing one API key against the mock
//! server in its strict sliding-log model (refused calls counted): together no 429, at the
//! quota's rate; and `plan --redis` shows the fleet's shared windows.

mod common;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Stdio;
use std::time::Duration;

use common::{dir, lines, write_events, KEY, LABEL};
use fabraix_scheduler::mock::{KeyProfile, MockServer, ServerModel};
use fabraix_scheduler::{Ledger, LedgerConfig, Quota};
use redis_support::RedisServer;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");
// Few window boundaries (each is where a loaded machine's delays could matter): 90 calls in
// three bursts.
const QUOTA: &str = "30/3s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_send_processes_share_one_key_through_redis_without_a_429() {
    let redis = RedisServer::start();
    let quota: Quota = QUOTA.parse().unwrap();
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(quota.clone()).label(LABEL))
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let d = dir("fleet-redis");
    let (members, per_member) = (3, 30);
    let mut children = Vec::new();
    for i in 0..members {
        let input = d.join(format!("in-{i}.jsonl"));
        let output = d.join(format!("out-{i}.jsonl"));
        write_events(&input, per_member);
        let child = Command::new(BIN)
            .current_dir(&d)
            .env("FABRAIX_API_KEY", KEY)
            .env("FABRAIX_REDIS_URL", redis.url())
            .args(["send", "--no-progress", "--quota", QUOTA, "--base-url"])
            .arg(server.base_url())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((child, output));
    }
    for (child, output) in children {
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains(KEY), "{stderr}");
        let results = lines(&output);
        assert_eq!(results.len(), per_member);
        assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
    }
    let n = members * per_member;
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    let record = server.record();
    assert_eq!(record.len(), n);
    // Together at the quota's rate: the span of their arrivals against a lone ledger's plan.
    let first = record.iter().map(|c| c.arrival).min().unwrap();
    let last = record.iter().map(|c| c.arrival).max().unwrap();
    let now = tokio::time::Instant::now();
    let plan = Ledger::new(&quota, LedgerConfig::default(), now).plan(now, n);
    let ideal = plan[n - 1] - plan[0];
    let ratio = ideal.as_secs_f64() / (last - first).as_secs_f64();
    eprintln!("{members} processes: {n} calls in {:?}, a lone ledger plans {ideal:?}: {ratio:.4}x the quota's rate", last - first);
    assert!(ratio >= 0.98, "{ratio:.4}");

    // `plan --redis`: the fleet's windows, full of its calls.
    let out = Command::new(BIN)
        .current_dir(&d)
        .env("FABRAIX_API_KEY", KEY)
        .args(["plan", "--count", "10", "--quota", QUOTA, "--redis"])
        .arg(redis.url())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("shared windows of key key#"), "{text}");
    assert!(text.contains("30/3s: "), "{text}");
    assert!(!text.contains(KEY), "{text}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// `send --redis` shows the ETA of the calls left from the fleet's shared windows, as it does
/// from a ledger in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_line_of_a_send_through_redis_has_an_eta() {
    let redis = RedisServer::start();
    let quota: Quota = "5/1s".parse().unwrap();
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(quota).label(LABEL))
        .start()
        .await
        .unwrap();
    let d = dir("fleet-redis-eta");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    // 40 calls at 5 a second: past the first plain progress line (after 5 s), with calls left.
    write_events(&input, 40);
    let out = Command::new(BIN)
        .current_dir(&d)
        .env("FABRAIX_API_KEY", KEY)
        .args(["send", "--quota", "5/1s", "--redis"])
        .arg(redis.url())
        .arg("--base-url")
        .arg(server.base_url())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .collect();
    assert!(!progress.is_empty(), "a plain progress line: {stderr}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains("ETA ") && !l.contains("ETA -")),
        "{progress:?}"
    );
}

/// `send --redis-cluster`: two processes, each given one node of a Redis Cluster (one by the
/// flag, one by `FABRAIX_REDIS_CLUSTER`), share the key without a 429; `plan` reads the fleet's
/// windows through the cluster; an empty node in the list is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_processes_share_one_key_through_a_redis_cluster() {
    let cluster = redis_support::cluster::RedisCluster::start();
    let urls = cluster.urls();
    let quota: Quota = QUOTA.parse().unwrap();
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(quota).label(LABEL))
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let d = dir("fleet-redis-cluster");
    let per_member = 35;
    let mut children = Vec::new();
    for (i, seed) in urls.iter().take(2).enumerate() {
        let input = d.join(format!("in-{i}.jsonl"));
        let output = d.join(format!("out-{i}.jsonl"));
        write_events(&input, per_member);
        let mut command = Command::new(BIN);
        command
            .current_dir(&d)
            .env("FABRAIX_API_KEY", KEY)
            .env("FABRAIX_REDIS_URL", seed)
            .args(["send", "--no-progress", "--quota", QUOTA, "--base-url"])
            .arg(server.base_url())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if i == 0 {
            command.arg("--redis-cluster");
        } else {
            command.env("FABRAIX_REDIS_CLUSTER", "1");
        }
        children.push((command.spawn().unwrap(), output));
    }
    for (child, output) in children {
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let results = lines(&output);
        assert_eq!(results.len(), per_member);
        assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
    }
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
    assert_eq!(server.record().len(), 2 * per_member);

    let plan = |redis: String| {
        let mut command = Command::new(BIN);
        command
            .current_dir(&d)
            .env("FABRAIX_API_KEY", KEY)
            .args([
                "plan",
                "--count",
                "10",
                "--quota",
                QUOTA,
                "--redis-cluster",
                "--redis",
            ])
            .arg(redis);
        command
    };
    let out = plan(urls.join(",")).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("shared windows of key key#"), "{text}");
    assert!(text.contains("30/3s: "), "{text}");
    let out = plan(format!("{},", urls[0])).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("an empty node URL"), "{stderr}");
}
