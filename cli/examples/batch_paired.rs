//! The batch path against a raw reqwest loop, side by side in one run, on an in-process static
//! server (hyper on loopback, `200 {"status":"ok"}` to everything).
//!
//! Three ways of making the same N POSTs, each at concurrency C, each on a fresh multi-thread
//! runtime like the binary's (one worker per core):
//! - `raw`: `buffer_unordered(C)` over reqwest (the same reqwest + rustls build as the crate);
//! - `library`: a `Scheduler` with one key (`max_in_flight(C)`), jobs submitted and awaited
//!   under `buffer_unordered`;
//! - `send`: `fabraix-sched send` through its library entry, from a JSONL input file to a
//!   results file (its call journal included), `--no-progress`.
//!
//! For each it prints the wall time, the CPU per call of the sending side (`getrusage` of the
//! process less that of the server's thread) and the ratios to the raw loop of the same size and
//! concurrency: medians over `--rounds` rounds (default 3), each round running the three back to
//! back in a rotated order and taking its ratios against its own raw loop. Then, at 10,000 calls and concurrency 16, the CPU per call of `send` under
//! quotas from 60/1m to 1,000,000/1s on tokio's paused clock (server, sender and raw baseline on
//! one current-thread runtime, so the CPU is of both sides: a 60/1m batch takes 166 virtual
//! minutes), with the raw loop paced at each quota's long-run rate (a timer per call and nothing
//! else) beside it. With `--strict`, the quota test: 100,000 calls at `--quota 5000/1s` against the
//! strict mock (sliding log) in real time, at time scales 1, 10 and 100, against the planned
//! minimum.
//!
//! ```text
//! cargo run --release -p fabraix-sched --example batch_paired
//! cargo run --release -p fabraix-sched --example batch_paired -- --million      # adds 1,000,000
//! cargo run --release -p fabraix-sched --example batch_paired -- --rounds 5
//! cargo run --release -p fabraix-sched --example batch_paired -- --sizes 10000 --concurrency 64
//! cargo run --release -p fabraix-sched --example batch_paired -- --only quotas
//! cargo run --release -p fabraix-sched --example batch_paired -- --only quotas --quotas '60/1m;5000/1s'
//! cargo run --release -p fabraix-sched --example batch_paired -- --only strict --strict-calls 100000
//! ```

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use fabraix_sched::send::send_report;
use fabraix_sched::{Command, Context, KeySource, Opts, Stop};
use fabraix_scheduler::mock::{KeyProfile, MockServer, ServerModel};
use fabraix_scheduler::{ApiKey, Endpoint, Job, KeyConfig, KeyId, Quota, Scheduler, ShutdownMode};
use futures_util::stream::{self, StreamExt};
use http_body_util::Full;

const KEY: &str = "fbx-bench-batch-key";
const BODY: &str = r#"{"event_type":"user","trace_id":"00000000-0000-4000-8000-000000000000","timestamp":1.0,"content":"{\"n\":1}","schema":"{}"}"#;

/// CPU time (user + system) of this process, or of the calling thread.
fn cpu(thread: bool) -> Duration {
    let who = if thread {
        libc::RUSAGE_THREAD
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: `getrusage` writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The static server, on a current-thread runtime of its own thread.
struct StaticServer {
    addr: SocketAddr,
    handle: tokio::runtime::Handle,
}

impl StaticServer {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send((
                    listener.local_addr().expect("addr"),
                    tokio::runtime::Handle::current(),
                ))
                .expect("started");
                serve(listener).await;
            });
        });
        let (addr, handle) = rx.recv().expect("the server starts");
        Self { addr, handle }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The CPU time of the server's thread so far.
    fn cpu(&self) -> Duration {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(cpu(true));
        });
        rx.recv().expect("the server answers")
    }
}

async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from_static(br#"{"status":"ok"}"#)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// `--name V` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(name: &str, default: &[u64]) -> Vec<u64> {
    arg(name).map_or_else(
        || default.to_vec(),
        |v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("a list of numbers"))
                .collect()
        },
    )
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path3 {
    Raw,
    Library,
    Send,
}

impl Path3 {
    fn name(self) -> &'static str {
        match self {
            Path3::Raw => "raw reqwest",
            Path3::Library => "library (Scheduler)",
            Path3::Send => "fabraix-sched send",
        }
    }
}

/// One measured run.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
}

impl Run {
    fn per_call_us(&self, n: u64) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / n as f64
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("client")
}

/// One raw POST of the event body, its answer read whole.
async fn post_event(client: &reqwest::Client, url: &str) {
    let r = client
        .post(url)
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("read");
}

async fn raw_loop(url: &str, n: u64, c: usize) {
    let client = client();
    let url = format!("{url}/event");
    stream::iter(0..n)
        .map(|_| {
            let (client, url) = (&client, &url);
            async move {
                post_event(client, url).await;
            }
        })
        .buffer_unordered(c)
        .for_each(|()| async {})
        .await;
}

/// The raw loop paced at `rate` calls a second (call i leaves at i / rate): what a timer per
/// call costs without any scheduler.
async fn raw_paced(url: &str, n: u64, c: usize, rate: f64) {
    let client = client();
    let url = format!("{url}/event");
    let start = tokio::time::Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (client, url) = (&client, &url);
            async move {
                if rate.is_finite() {
                    let at = Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(start + at).await;
                }
                post_event(client, url).await;
            }
        })
        .buffer_unordered(c)
        .for_each(|()| async {})
        .await;
}

async fn library(url: &str, n: u64, c: usize, quota: &str) {
    let scheduler = Scheduler::builder().build().expect("scheduler");
    let key = KeyId::new("bench");
    let endpoint = Endpoint::new(url, true).expect("endpoint");
    let config = KeyConfig::with_endpoint(
        key.clone(),
        ApiKey::new(KEY).expect("key"),
        endpoint,
        quota.parse::<Quota>().expect("quota"),
    )
    .expect("config")
    .max_in_flight(c)
    .queue_capacity(10_000);
    scheduler.add_key(config).await.expect("added");
    let body = Bytes::from_static(BODY.as_bytes());
    stream::iter(0..n)
        .map(|_| {
            let (scheduler, key, body) = (&scheduler, &key, body.clone());
            async move {
                let job = Job::new(http::Method::POST, "/event").with_body(body);
                let ticket = scheduler.submit(key, job).await.expect("submitted");
                let response = ticket.await.expect("answered");
                assert_eq!(response.status, 200);
            }
        })
        .buffer_unordered(10_000 + c)
        .for_each(|()| async {})
        .await;
    scheduler.shutdown(ShutdownMode::Drain).await;
}

/// Writes an input of `n` lines (once per size).
fn input(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join(format!("in-{n}.jsonl"));
    if !path.exists() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("input"));
        for i in 0..n {
            writeln!(w, r#"{{"id":"e{i}","path":"/event","body":{BODY}}}"#).expect("written");
        }
        w.flush().expect("flushed");
    }
    path
}

async fn send(url: &str, input: &Path, dir: &Path, c: usize, quota: &str) -> serde_json::Value {
    let output = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    for p in [&output, &dir.join("out.jsonl.calls"), &summary] {
        let _ = std::fs::remove_file(p);
    }
    let c = c.to_string();
    let Command::Send(opts) = Opts::parse_from([
        "fabraix-sched",
        "send",
        "--no-progress",
        "-i",
        input.to_str().expect("utf-8"),
        "-o",
        output.to_str().expect("utf-8"),
        "--summary",
        summary.to_str().expect("utf-8"),
        "--base-url",
        url,
        "--quota",
        quota,
        "--concurrency",
        &c,
    ])
    .command
    else {
        unreachable!("parsed as send")
    };
    let ctx = Context {
        key: KeySource::Key(ApiKey::new(KEY).expect("key")),
        stop: Stop::new(),
    };
    let report = send_report(&opts, &ctx).await.expect("sent");
    assert_eq!(report.exit, fabraix_sched::Exit::Success);
    let text = std::fs::read_to_string(&summary).expect("summary");
    serde_json::from_str(&text).expect("summary JSON")
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One path's run on a fresh runtime like the binary's; CPU less the server's.
fn measure(server: &StaticServer, path: Path3, n: u64, c: usize, input: &Path, dir: &Path) -> Run {
    let rt = multi_thread();
    let url = server.url();
    let (cpu0, server0) = (cpu(false), server.cpu());
    let start = Instant::now();
    rt.block_on(async {
        match path {
            Path3::Raw => raw_loop(&url, n, c).await,
            Path3::Library => library(&url, n, c, "unlimited").await,
            Path3::Send => {
                send(&url, input, dir, c, "unlimited").await;
            }
        }
    });
    let wall = start.elapsed();
    let (cpu1, server1) = (cpu(false), server.cpu());
    drop(rt);
    Run {
        wall,
        cpu: (cpu1 - cpu0).saturating_sub(server1 - server0),
    }
}

fn paired(dir: &Path) {
    let server = StaticServer::start();
    let mut sizes = list("--sizes", &[10_000, 100_000]);
    if flag("--million") {
        sizes.push(1_000_000);
    }
    let concurrency = list("--concurrency", &[16, 64]);
    // Warm-up: connections, page cache, allocator.
    let warm = input(dir, 2_000);
    for path in [Path3::Raw, Path3::Library, Path3::Send] {
        measure(&server, path, 2_000, 16, &warm, dir);
    }
    println!(
        "unlimited quota, static hyper server on loopback (its thread's CPU left out); medians of {} rounds:",
        list("--rounds", &[3])[0].max(1)
    );
    println!(
        "{:<22} {:>4} {:>9} {:>9} {:>10} {:>12} {:>7} {:>7}",
        "path", "C", "calls", "wall s", "calls/s", "CPU µs/call", "wall×", "CPU×"
    );
    let rounds = list("--rounds", &[3])[0].max(1) as usize;
    const PATHS: [Path3; 3] = [Path3::Raw, Path3::Library, Path3::Send];
    for &c in &concurrency {
        for &n in &sizes {
            let file = input(dir, n);
            // Each round runs the three paths back to back, in a rotated order; the ratios are
            // taken per round, against that round's raw loop, and their medians printed.
            let mut runs: Vec<[Run; 3]> = Vec::new();
            for round in 0..rounds {
                let mut got = [Run {
                    wall: Duration::ZERO,
                    cpu: Duration::ZERO,
                }; 3];
                for k in 0..3 {
                    let i = (round + k) % 3;
                    got[i] = measure(&server, PATHS[i], n, c as usize, &file, dir);
                }
                runs.push(got);
            }
            for (i, path) in PATHS.iter().enumerate() {
                let wall = median(runs.iter().map(|r| r[i].wall.as_secs_f64()));
                let us = median(runs.iter().map(|r| r[i].per_call_us(n)));
                let wall_ratio = median(
                    runs.iter()
                        .map(|r| r[i].wall.as_secs_f64() / r[0].wall.as_secs_f64()),
                );
                let cpu_ratio = median(
                    runs.iter()
                        .map(|r| r[i].per_call_us(n) / r[0].per_call_us(n)),
                );
                println!(
                    "{:<22} {:>4} {:>9} {:>9.2} {:>10.0} {:>12.1} {:>7.2} {:>7.2}",
                    path.name(),
                    c,
                    n,
                    wall,
                    n as f64 / wall,
                    us,
                    wall_ratio,
                    cpu_ratio,
                );
            }
        }
    }
}

/// The median of some numbers.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `send`'s CPU per call under each quota, on the paused clock (virtual time).
fn quotas(dir: &Path) {
    let n = list("--quota-calls", &[10_000])[0];
    let c = 16usize;
    let given = arg("--quotas");
    let quotas: Vec<&str> = match &given {
        Some(q) => q.split(';').collect(),
        None => vec![
            "60/1m",
            "600/1m,10000/1h",
            "5000/1s",
            "100000/1s",
            "1000000/1s",
        ],
    };
    let file = input(dir, n);
    println!(
        "\nCPU per call by quota: {n} calls at concurrency {c} on tokio's paused clock (sender and server on one thread):"
    );
    println!(
        "{:<22} {:>10} {:>12} {:>7} {:>18} {:>7}",
        "quota", "virtual s", "CPU µs/call", "CPU×", "raw paced µs/call", "×paced"
    );
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    };
    // `paced`: the raw loop at the quota's long-run rate instead of `send`.
    let run = |quota: Option<&str>, paced: bool| {
        let rt = paused();
        let cpu0 = cpu(false);
        let virtual_secs = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let server = tokio::spawn(serve(listener));
            let start = tokio::time::Instant::now();
            match quota {
                None => raw_loop(&url, n, c).await,
                Some(q) if paced => {
                    let rate = q.parse::<Quota>().expect("quota").rate_per_second();
                    raw_paced(&url, n, c, rate).await;
                }
                Some(q) => {
                    send(&url, &file, dir, c, q).await;
                }
            }
            server.abort();
            start.elapsed().as_secs_f64()
        });
        (virtual_secs, cpu(false) - cpu0)
    };
    run(Some("unlimited"), false); // warm-up
    let (_, raw) = run(None, false);
    let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / n as f64;
    let raw_us = per_call(raw);
    println!(
        "{:<22} {:>10} {:>12.1} {:>7.2}",
        "raw reqwest", "-", raw_us, 1.0
    );
    for q in quotas {
        let (secs, cpu) = run(Some(q), false);
        let (_, paced) = run(Some(q), true);
        let (us, paced_us) = (per_call(cpu), per_call(paced));
        println!(
            "{q:<22} {secs:>10.1} {us:>12.1} {:>7.2} {paced_us:>18.1} {:>7.2}",
            us / raw_us,
            us / paced_us
        );
    }
}

/// 100,000 calls at 5000/1s against the strict mock in real time, at several time scales.
fn strict(dir: &Path) {
    let n = list("--strict-calls", &[100_000])[0];
    let scales = list("--scales", &[1, 10, 100]);
    let file = input(dir, n);
    println!("\n--quota 5000/1s, {n} calls, concurrency 64, strict mock (sliding log), real time:");
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>6} {:>12}",
        "scale", "planned s", "elapsed s", "ratio", "429", "CPU µs/call"
    );
    for scale in scales {
        let rt = multi_thread();
        let cpu0 = cpu(false);
        let (summary, refused, verified) = rt.block_on(async {
            // The key's quota before scaling: 5000 per `scale` seconds is 5000/1s on the server.
            let quota: Quota = format!("5000/{scale}s").parse().expect("quota");
            let server = MockServer::builder()
                .model(ServerModel::SlidingLog)
                .time_scale(scale as f64)
                .key(KEY, KeyProfile::new(quota).label("bench"))
                .start()
                .await
                .expect("mock");
            let summary = send(&server.base_url(), &file, dir, 64, "5000/1s").await;
            let refused = server.refused();
            let verified = server.verify().is_ok();
            server.shutdown().await;
            (summary, refused, verified)
        });
        let cpu = cpu(false) - cpu0;
        let planned = summary["planned_minimum_secs"].as_f64().unwrap_or(f64::NAN);
        let elapsed = summary["elapsed_secs"].as_f64().unwrap_or(f64::NAN);
        println!(
            "×{scale:<7} {planned:>10.2} {elapsed:>10.2} {:>8.4} {refused:>6} {:>12.1}{}",
            elapsed / planned,
            cpu.as_secs_f64() * 1e6 / n as f64,
            if verified {
                ""
            } else {
                "  (the server's record shows a window over the quota)"
            }
        );
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("fbx-batch-paired-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let only = arg("--only");
    let all = only.is_none();
    let wants = |part: &str| all || only.as_deref() == Some(part);
    if wants("paired") {
        paired(&dir);
    }
    if wants("quotas") {
        quotas(&dir);
    }
    if (all && flag("--strict")) || only.as_deref() == Some("strict") {
        strict(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
