//! The proxy's cost, side by side in one run: the same call to the mock server (unlimited quota)
//! made directly and through `fabraix-sched proxy` (in-process, on loopback).
//!
//! - Latency: `--pairs` sequential calls of each, one direct and one proxied per pair (in
//!   alternating order), on one kept-alive connection each; prints p50 and p99 of both and of
//!   what the proxy adds (the difference of the percentiles, and the median of the per-pair
//!   differences).
//! - Throughput: `--clients` concurrent callers for `--seconds`, direct then proxied, twice;
//!   prints requests/s of each round.
//!
//! ```text
//! cargo run --release -p fabraix-sched --example proxy_paired
//! cargo run --release -p fabraix-sched --example proxy_paired -- --pairs 20000 --clients 64 --seconds 5
//! ```
//!
//! Everything (client, proxy, mock) shares one runtime (`--threads`, default 2), so the figures
//! are those of one small machine doing all three.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fabraix_sched::{Command, Context, KeySource, Opts, Stop, StopReason};
use fabraix_scheduler::mock::{KeyProfile, MockServer};
use fabraix_scheduler::ApiKey;

const KEY: &str = "fbx-bench-proxy-key";

/// `--name N` from the command line, or `default`.
fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v:?} is not a number"))
        })
}

/// Takes what the proxy prints and hands over its first line (`listening on http://…`).
struct FirstLine {
    text: Vec<u8>,
    tx: Option<tokio::sync::oneshot::Sender<String>>,
}

impl Write for FirstLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        if let Some(end) = self.text.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.text[..end]).to_string();
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(line);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn body() -> &'static str {
    r#"{"event_type":"user","trace_id":"00000000-0000-4000-8000-000000000000","timestamp":1.0,"content":"{\"n\":1}","schema":"{}"}"#
}

/// One call; panics on anything but 200 (a benchmark of failures would measure nothing).
async fn call(client: &reqwest::Client, url: &str, key: Option<&str>) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body());
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let r = req.send().await.expect("the call is answered");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("the body is read");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn latency(direct: &str, proxied: &str, pairs: usize) {
    let (a, b) = (client(), client());
    for _ in 0..500 {
        call(&a, direct, Some(KEY)).await;
        call(&b, proxied, None).await;
    }
    let (mut d, mut p, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let time = |c: &reqwest::Client, url: &str, key| {
            let (c, url) = (c.clone(), url.to_string());
            async move {
                let start = Instant::now();
                call(&c, &url, key).await;
                start.elapsed()
            }
        };
        let (td, tp) = if i % 2 == 0 {
            let td = time(&a, direct, Some(KEY)).await;
            (td, time(&b, proxied, None).await)
        } else {
            let tp = time(&b, proxied, None).await;
            (time(&a, direct, Some(KEY)).await, tp)
        };
        d.push(td);
        p.push(tp);
        diff.push(micros(tp) - micros(td));
    }
    d.sort();
    p.sort();
    diff.sort_by(f64::total_cmp);
    println!("latency, {pairs} sequential pairs (µs):");
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (pd, pp) = (percentile(&d, q), percentile(&p, q));
        println!(
            "  {name}: direct {:8.1}  proxied {:8.1}  added {:8.1}",
            micros(pd),
            micros(pp),
            micros(pp) - micros(pd)
        );
    }
    println!(
        "  median of per-pair differences: {:.1}",
        diff[diff.len() / 2]
    );
}

async fn throughput(url: &str, key: Option<&'static str>, clients: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (done, stop, url) = (Arc::clone(&done), Arc::clone(&stop), url.to_string());
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    call(&c, &url, key).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // warm up
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = done.load(Ordering::Relaxed) - before;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a caller ends");
    }
    rate
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("client")
}

fn main() {
    let pairs = arg("--pairs", 5_000) as usize;
    let clients = arg("--clients", 32) as usize;
    let seconds = arg("--seconds", 3);
    let threads = arg("--threads", 2) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = MockServer::builder()
            .key(
                KEY,
                KeyProfile::new("unlimited".parse().expect("quota")).label("bench"),
            )
            .start()
            .await
            .expect("mock");
        let base = server.base_url();
        let Command::Proxy(opts) = Opts::parse_from([
            "fabraix-sched",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--base-url",
            &base,
            "--quota",
            "unlimited",
            "--concurrency",
            "1024",
            "--queue-capacity",
            "100000",
        ])
        .command
        else {
            unreachable!("parsed as proxy")
        };
        let stop = Stop::new();
        let ctx = Context {
            key: KeySource::Key(ApiKey::new(KEY).expect("key")),
            stop: stop.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let proxy = tokio::spawn(async move {
            let mut out = FirstLine {
                text: Vec::new(),
                tx: Some(tx),
            };
            fabraix_sched::proxy::proxy(&opts, &ctx, &mut out).await
        });
        let line = rx.await.expect("the proxy listens");
        let url = line
            .strip_prefix("listening on ")
            .expect("its address")
            .to_string();
        let direct = format!("{base}/event");
        let proxied = format!("{url}/v1/event");
        latency(&direct, &proxied, pairs).await;
        println!("throughput, {clients} concurrent callers, {seconds} s a round (requests/s):");
        for round in 1..=2 {
            let d = throughput(&direct, Some(KEY), clients, seconds).await;
            let p = throughput(&proxied, None, clients, seconds).await;
            println!(
                "  round {round}: direct {d:9.0}  proxied {p:9.0}  ratio {:.2}",
                p / d
            );
        }
        stop.trigger(StopReason::Interrupted);
        let _ = proxy.await;
        let _ = std::io::stdout().flush();
    });
}
