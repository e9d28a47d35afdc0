//! `--redis-ca FILE` (and `FABRAIX_REDIS_CA`): `send` and `plan` reach a `rediss://` redis-server
//! whose certificate a CA made by the test signed; without the CA the server is refused, and a CA
//! file that cannot be used is a clear error naming the flag and the file.

mod common;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Stdio;
use std::time::Duration;

use common::{dir, lines, write_events, KEY, LABEL};
use fabraix_scheduler::mock::{KeyProfile, MockServer};
use fabraix_scheduler::Quota;
use redis_support::pki::TestPki;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_plan_reach_a_tls_redis_through_the_given_ca() {
    let pki = TestPki::make("cli-redis-ca");
    let redis = pki.server();
    let quota: Quota = "20/1s".parse().unwrap();
    let server = MockServer::builder()
        .key(KEY, KeyProfile::new(quota).label(LABEL))
        .start()
        .await
        .unwrap();
    let d = dir("cli-redis-ca");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 5);
    let send = |ca: Option<std::path::PathBuf>| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&d)
            .env("FABRAIX_API_KEY", KEY)
            .env_remove("FABRAIX_REDIS_CA")
            .args(["send", "--no-progress", "--quota", "20/1s", "--redis"])
            .arg(redis.tls_url())
            .arg("--base-url")
            .arg(server.base_url())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null());
        if let Some(ca) = ca {
            cmd.env("FABRAIX_REDIS_CA", ca);
        }
        cmd.output()
    };
    // The system's roots do not hold the test's CA: refused, nothing sent.
    let out = send(None).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("--redis"), "{stderr}");
    assert_eq!(server.record().len(), 0);
    // With the CA (from the environment): the calls go out, their slots taken in Redis.
    let out = send(Some(pki.dir.join("ca.pem"))).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let results = lines(&output);
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("fx:v1:*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(keys.len(), 2, "the key's hash and its ring: {keys:?}");
    // `plan --redis-ca`: the shared windows, holding the five calls.
    let out = Command::new(BIN)
        .current_dir(&d)
        .env("FABRAIX_API_KEY", KEY)
        .env_remove("FABRAIX_REDIS_CA")
        .args(["plan", "--count", "10", "--quota", "20/1s", "--redis"])
        .arg(redis.tls_url())
        .arg("--redis-ca")
        .arg(pki.dir.join("ca.pem"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(text.contains("shared windows of key key#"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_that_cannot_be_used_is_an_error_naming_the_flag_and_the_file() {
    let pki = TestPki::make("cli-redis-ca-bad");
    let redis = pki.server();
    let d = dir("cli-redis-ca-bad");
    let not_pem = d.join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = d.join("missing.pem");
    let cases = [
        (redis.tls_url(), missing.clone(), "cannot read it"),
        (redis.tls_url(), not_pem.clone(), "holds no PEM certificate"),
        // Not a regular file: refused before any byte is read (never read without end).
        (
            redis.tls_url(),
            "/dev/zero".into(),
            "cannot read it: not a regular file",
        ),
        (redis.url(), pki.dir.join("ca.pem"), "is for a rediss://"),
    ];
    for (url, ca, why) in cases {
        for command in ["plan", "proxy"] {
            let mut cmd = Command::new(BIN);
            cmd.current_dir(&d)
                .env("FABRAIX_API_KEY", KEY)
                .env_remove("FABRAIX_REDIS_CA")
                .arg(command);
            if command == "proxy" {
                cmd.args(["--listen", "127.0.0.1:0"]);
            } else {
                cmd.args(["--count", "1"]);
            }
            cmd.args(["--quota", "20/1s", "--redis"])
                .arg(&url)
                .arg("--redis-ca")
                .arg(&ca)
                .stdin(Stdio::null())
                .kill_on_drop(true);
            // Bounded: a proxy that started would serve until stopped.
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("exits at once")
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_ne!(out.status.code(), Some(0), "{command}: {stderr}");
            let named = format!("--redis-ca {}: {why}", ca.display());
            assert!(stderr.contains(&named), "{command}: {named:?} in {stderr}");
        }
    }
    // A CA without a Redis URL is refused by the argument parser.
    let out = Command::new(BIN)
        .env_remove("FABRAIX_REDIS_URL")
        .args(["plan", "--count", "1", "--quota", "20/1s", "--redis-ca"])
        .arg(pki.dir.join("ca.pem"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--redis"), "{stderr}");
    // The CA in the environment counts only where Redis is used: a plan without --redis runs.
    let out = Command::new(BIN)
        .env_remove("FABRAIX_REDIS_URL")
        .env("FABRAIX_REDIS_CA", pki.dir.join("ca.pem"))
        .args(["plan", "--count", "1", "--quota", "20/1s"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
