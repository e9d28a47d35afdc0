//! Helpers shared by the integration tests: a mock server on loopback, temp files, an in-process
//! `send` with the key passed explicitly (no environment variables: tests run in parallel).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fabraix_sched::send::{send_report, SendReport};
use fabraix_sched::{CliError, Command, Context, KeySource, Opts, Stop, StopReason};
use fabraix_scheduler::mock::{KeyProfile, MockServer};
use fabraix_scheduler::{ApiKey, Quota};
use serde_json::Value;

pub const KEY: &str = "fbx-cli-test-key";
pub const LABEL: &str = "cli";

pub async fn server(quota: &str) -> MockServer {
    MockServer::builder()
        .key(
            KEY,
            KeyProfile::new(quota.parse::<Quota>().unwrap()).label(LABEL),
        )
        .start()
        .await
        .unwrap()
}

pub fn event(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","path":"/event","body":{{"event_type":"user","trace_id":"t","timestamp":0,"content":"x","schema":"{{}}"}}}}"#
    )
}

/// A fresh directory for one test.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fbx-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write_events(path: &PathBuf, n: usize) {
    let text: String = (1..=n).map(|i| event(&format!("e{i}")) + "\n").collect();
    std::fs::write(path, text).unwrap();
}

pub fn lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn context(stop: Stop) -> Context {
    Context {
        key: KeySource::Key(ApiKey::new(KEY).unwrap()),
        stop,
    }
}

/// `fabraix-sched send --no-progress ARGS...`, in-process.
pub async fn send(args: &[&str], stop: Stop) -> Result<SendReport, CliError> {
    let mut full = vec!["fabraix-sched", "send", "--no-progress"];
    full.extend_from_slice(args);
    let Command::Send(opts) = Opts::parse_from(full).command else {
        panic!("not send")
    };
    send_report(&opts, &context(stop)).await
}

/// A stop handle triggered (as Ctrl-C would) after `after` on tokio's (paused) clock.
pub fn ctrl_c_after(after: Duration) -> Stop {
    let stop = Stop::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        s.trigger(StopReason::Interrupted);
    });
    stop
}
