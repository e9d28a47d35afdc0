//! Makespan study, in virtual time (tokio's paused clock): how long N calls submitted at once take
//! from the first submit to the last success, and how many 429s they draw, for every server model
//! of the mock, Development and Production quotas, N ∈ {100, 1,000, 10,000}:
//!
//! - **minimum**: the theoretical minimum for that server model: an oracle client that sends each
//!   call at the earliest instant the server model accepts it (a brute-force greedy over the model;
//!   it never refuses and shares no code with the ledger);
//! - **scheduler**: this crate's scheduler, defaults (guard, retry policy, adaptive pacing);
//! - **scheduler, token-bucket semantics**: the same with
//!   `KeyConfig::semantics(WindowSemantics::TokenBucket)` (a GCRA reading per limit, for servers
//!   known to use token buckets), for every model;
//! - **scheduler, refusals not counted / counted**: the same with
//!   `KeyConfig::refused_calls(RefusedCalls::DoNotCount)` (a refused call's slot is refunded) and
//!   with `RefusedCalls::Count` (the default before refusals were learned), for the counter model
//!   only; a further table runs the counter model on a server that counts refused calls;
//! - **scheduler, counter semantics** (a table of its own): the same with
//!   `KeyConfig::semantics(WindowSemantics::SlidingWindowCounter)`, for the counter model, on a
//!   server that counts refused calls and on one that does not;
//! - **fire-all + backoff**: every call sent at once, each retried on 429 after an exponential
//!   backoff with full jitter (1 s, ×2, capped at 60 s; `Retry-After` ignored);
//! - **governor stacked**: one governor limiter per window (`Quota::per_minute(60)` and
//!   `Quota::per_hour(1000)` for Development), `until_ready` on each in turn, then send; a 429 goes
//!   back through the limiters;
//! - **governor 1 bucket**: one token bucket of the shortest window (rate N/W, burst N), the one-line
//!   recipe; a 429 goes back through the bucket.
//!
//! Every strategy talks to the same in-process server: [`SimServer`] below implements the four
//! server models exactly as `src/mock/model.rs` documents them (that module is crate-private).
//! A second table runs the default scheduler against the real [`MockServer`] over loopback HTTP,
//! for N up to `--loopback-max` (default 1,000), to check that the in-process server agrees with it.
//!
//! ```text
//! cargo run --release --example makespan                  # everything (1–2 minutes)
//! cargo run --release --example makespan -- --n 100,1000  # a subset of N
//! cargo run --release --example makespan -- --loopback-max 10000
//! ```

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fabraix_scheduler::mock::{key_fingerprint, MockServer, ServerModel, TEST_DEV_KEY};
use fabraix_scheduler::{
    ApiKey, HttpResponse, Instant, Job, KeyConfig, KeyId, Limit, OutgoingRequest, Quota,
    RefusedCalls, Scheduler, ShutdownMode, Transport, TransportConfig, TransportFuture,
    WindowSemantics,
};

// ---------------------------------------------------------------------------------------------
// The four server models, from their documented semantics. Times: nanoseconds since the server
// started.

#[derive(Debug)]
enum Kind {
    Fixed {
        index: u64,
        count: u64,
    },
    Log {
        arrivals: VecDeque<u64>,
    },
    /// GCRA theoretical arrival time, in units of 1/N ns (emission interval W/N = W units).
    Bucket {
        tat: u128,
    },
    /// Windows laid from the first call counted (`anchor`), and again after two idle windows.
    Counter {
        anchor: Option<u64>,
        index: u64,
        prev: u64,
        curr: u64,
    },
}

#[derive(Debug)]
struct LimitSim {
    n: u64,
    w: u64,
    kind: Kind,
}

impl LimitSim {
    fn new(model: ServerModel, limit: &Limit) -> Self {
        let kind = match model {
            ServerModel::FixedWindow => Kind::Fixed { index: 0, count: 0 },
            ServerModel::SlidingLog => Kind::Log {
                arrivals: VecDeque::new(),
            },
            ServerModel::TokenBucket => Kind::Bucket { tat: 0 },
            ServerModel::SlidingWindowCounter => Kind::Counter {
                anchor: None,
                index: 0,
                prev: 0,
                curr: 0,
            },
        };
        Self {
            n: u64::from(limit.count()),
            w: limit.window().as_nanos() as u64,
            kind,
        }
    }

    fn advance(&mut self, t: u64) {
        let w = self.w;
        match &mut self.kind {
            Kind::Fixed { index, count } => {
                if t / w != *index {
                    *index = t / w;
                    *count = 0;
                }
            }
            Kind::Log { arrivals } => {
                while arrivals.front().is_some_and(|&a| a + w <= t) {
                    arrivals.pop_front();
                }
            }
            Kind::Bucket { .. } => {}
            Kind::Counter {
                anchor,
                index,
                prev,
                curr,
            } => {
                let Some(a) = *anchor else { return };
                let k = (t - a) / w;
                if k == *index + 1 {
                    *prev = *curr;
                    *curr = 0;
                    *index = k;
                } else if k > *index + 1 {
                    (*anchor, *index, *prev, *curr) = (None, 0, 0, 0);
                }
            }
        }
    }

    /// The earliest time `>= t` (state advanced to `t`) at which one more call is accepted.
    fn earliest(&self, t: u64) -> u64 {
        let (n, w) = (self.n, self.w);
        match &self.kind {
            Kind::Fixed { index, count } => {
                if *count < n {
                    t
                } else {
                    (index + 1) * w
                }
            }
            Kind::Log { arrivals } => {
                let len = arrivals.len() as u64;
                if len < n {
                    t
                } else {
                    (arrivals[(len - n) as usize] + w).max(t)
                }
            }
            Kind::Bucket { tat } => {
                // Accepted at t' iff tat − t'·N <= (N − 1)·W.
                let bound = tat.saturating_sub(u128::from(n - 1) * u128::from(w));
                (bound.div_ceil(u128::from(n)) as u64).max(t)
            }
            Kind::Counter { anchor: None, .. } => t,
            Kind::Counter {
                anchor: Some(a),
                index,
                prev,
                curr,
            } => {
                // Accepted at elapsed e iff prev·(W − e) <= (N − curr − 1)·W.
                let start = a + index * w;
                let first_e = |p: u64, free: u64| -> u64 {
                    if p == 0 {
                        0
                    } else {
                        w.saturating_sub((u128::from(free) * u128::from(w) / u128::from(p)) as u64)
                    }
                };
                if *curr < n {
                    let e = first_e(*prev, n - curr - 1);
                    if e < w {
                        return (start + e).max(t);
                    }
                }
                let e = first_e(*curr, n - 1);
                if e < w {
                    start + w + e
                } else {
                    start + 2 * w
                }
            }
        }
    }

    /// For a counter (state advanced to `t`): the calls it accepts at `t` one after another, and
    /// how long until it accepts one more than that at once, as the mock's `X-RateLimit-*`
    /// headers say. `None` for the other models (the study sends headers for the counter only).
    fn rate_info(&self, t: u64) -> Option<(u64, u64)> {
        let (n, w) = (self.n, self.w);
        let Kind::Counter {
            anchor,
            index,
            prev,
            curr,
        } = &self.kind
        else {
            return None;
        };
        let Some(a) = *anchor else {
            return Some((n, 0));
        };
        let (ni, wi) = (i128::from(n), i128::from(w));
        let start = i128::from(a) + i128::from(*index) * wi;
        let elapsed = i128::from(t) - start;
        let free = ni * wi - i128::from(*curr) * wi - i128::from(*prev) * (wi - elapsed);
        let remaining = (free.max(0) / wi) as u64;
        if remaining >= n {
            return Some((remaining, 0));
        }
        // The earliest elapsed e in a window with previous count p where p·(W − e) <= x·W.
        let first_e = |p: u64, x: i128| -> Option<i128> {
            if x < 0 {
                return None;
            }
            if p == 0 {
                return Some(0);
            }
            let e = (wi - x * wi / i128::from(p)).max(0);
            (e < wi).then_some(e)
        };
        let r = i128::from(remaining + 1);
        let at = if let Some(e) = first_e(*prev, ni - i128::from(*curr) - r) {
            (start + e).max(i128::from(t))
        } else if let Some(e) = first_e(*curr, ni - r) {
            start + wi + e
        } else {
            start + 2 * wi
        };
        Some((remaining, (at - i128::from(t)).max(0) as u64))
    }

    fn commit(&mut self, t: u64) {
        let (n, w) = (self.n, self.w);
        match &mut self.kind {
            Kind::Fixed { count, .. } => *count += 1,
            Kind::Log { arrivals } => arrivals.push_back(t),
            Kind::Bucket { tat } => {
                *tat = (*tat).max(u128::from(t) * u128::from(n)) + u128::from(w)
            }
            Kind::Counter { anchor, curr, .. } => {
                if anchor.is_none() {
                    *anchor = Some(t);
                }
                *curr += 1;
            }
        }
    }
}

/// One key's limits under one model, decided together (a refused call counts in none, or in
/// all if `count_refused`).
#[derive(Debug)]
struct SimServer {
    limits: Vec<LimitSim>,
    count_refused: bool,
    accepted: u64,
    refused: u64,
    last_accept: u64,
}

impl SimServer {
    fn new(model: ServerModel, quota: &Quota) -> Self {
        Self {
            limits: quota
                .limits()
                .iter()
                .map(|l| LimitSim::new(model, l))
                .collect(),
            count_refused: false,
            accepted: 0,
            refused: 0,
            last_accept: 0,
        }
    }

    /// The earliest time `>= t` at which every limit accepts one more call. Advances the state to
    /// that time: only for the oracle, which then sends at exactly that time.
    fn earliest(&mut self, mut t: u64) -> u64 {
        loop {
            for l in &mut self.limits {
                l.advance(t);
            }
            let e = self.limits.iter().map(|l| l.earliest(t)).max().unwrap_or(t);
            if e == t {
                return t;
            }
            t = e;
        }
    }

    /// Accepts (and counts) a call at `t`, or refuses it with the wait until it would be accepted.
    /// Like the mock: the wait is the latest of the refusing limits' earliest times.
    fn decide(&mut self, t: u64) -> Result<(), u64> {
        for l in &mut self.limits {
            l.advance(t);
        }
        let refusing: Vec<usize> = (0..self.limits.len())
            .filter(|&i| self.limits[i].earliest(t) > t)
            .collect();
        if refusing.is_empty() {
            for l in &mut self.limits {
                l.commit(t);
            }
            self.accepted += 1;
            self.last_accept = self.last_accept.max(t);
            Ok(())
        } else {
            // A counted refusal is counted before the wait is worked out, as the mock does.
            if self.count_refused {
                for l in &mut self.limits {
                    l.commit(t);
                }
            }
            self.refused += 1;
            let at = refusing
                .iter()
                .map(|&i| self.limits[i].earliest(t))
                .max()
                .unwrap_or(t);
            Err(at - t)
        }
    }

    /// The tightest limit at `t` (state advanced to `t`), as the mock's `X-RateLimit-*` headers
    /// give it: (N, remaining, whole seconds rounded up until one more is accepted).
    fn rate_headers(&self, t: u64) -> Option<(u64, u64, u64)> {
        self.limits
            .iter()
            .filter_map(|l| l.rate_info(t).map(|(rem, reset)| (l.n, rem, reset)))
            .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(n, rem, reset)| (n, rem, reset.div_ceil(1_000_000_000)))
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies. Each returns (makespan, 429s received, calls that did not succeed).

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    makespan: Duration,
    refused: u64,
    failed: u64,
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn nanos_since(origin: Instant) -> u64 {
    (Instant::now() - origin).as_nanos() as u64
}

/// The oracle: each call at the earliest instant the model accepts it.
fn minimum(model: ServerModel, quota: &Quota, n: usize) -> Run {
    let mut server = SimServer::new(model, quota);
    let mut t = 0;
    for _ in 0..n {
        t = server.earliest(t);
        server.decide(t).expect("the oracle is never refused");
    }
    Run {
        makespan: Duration::from_nanos(t),
        ..Run::default()
    }
}

/// The in-process server as a [`Transport`]: 200, or 429 with the mock's body
/// (`retry_after` in whole seconds, rounded up, at least 1; no `Retry-After` header).
struct SimTransport {
    server: Mutex<SimServer>,
    origin: Instant,
    /// Whether every answer carries `X-RateLimit-Limit/-Remaining/-Reset` (counter model only).
    headers: bool,
}

impl Transport for SimTransport {
    fn send(&self, _request: OutgoingRequest<'_>) -> TransportFuture {
        let t = nanos_since(self.origin);
        let mut server = self.server.lock().expect("not poisoned");
        let decision = server.decide(t);
        let rate = self.headers.then(|| server.rate_headers(t)).flatten();
        drop(server);
        let response = match decision {
            Ok(()) => http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Bytes::from_static(b"{\"status\":\"ok\"}")),
            Err(wait) => {
                let secs = wait.div_ceil(1_000_000_000).max(1);
                let body = format!(
                    "{{\"error\":{{\"message\":\"Rate limit exceeded\",\"type\":\"rate_limit_error\",\"retry_after\":{secs}}}}}"
                );
                http::Response::builder()
                    .status(429)
                    .header("content-type", "application/json")
                    .body(Bytes::from(body))
            }
        };
        let mut response: HttpResponse = response.expect("valid response");
        if let Some((limit, remaining, reset)) = rate {
            let h = response.headers_mut();
            h.insert("x-ratelimit-limit", limit.into());
            h.insert("x-ratelimit-remaining", remaining.into());
            h.insert("x-ratelimit-reset", reset.into());
        }
        Box::pin(async move { Ok(response) })
    }
}

fn event(i: usize) -> Job {
    Job::post_json(
        "/event",
        &serde_json::json!({
            "event_type": "user",
            "trace_id": "00000000-0000-4000-8000-000000000000",
            "timestamp": 1.0,
            "content": format!("{{\"n\":{i}}}"),
            "schema": "{}",
        }),
    )
    .expect("serializable")
}

/// Submits `n` jobs to one key of `scheduler` and awaits them all; returns the failures.
async fn submit_all(scheduler: &Scheduler, key: &KeyId, n: usize) -> u64 {
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        tickets.push(scheduler.submit(key, event(i)).await.expect("submitted"));
    }
    let mut failed = 0;
    for t in tickets {
        if t.await.is_err() {
            failed += 1;
        }
    }
    failed
}

/// Which scheduler configuration a run uses (everything else default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// All defaults.
    Default,
    /// `KeyConfig::semantics(WindowSemantics::TokenBucket)`.
    TokenBucket,
    /// `KeyConfig::refused_calls(RefusedCalls::DoNotCount)`.
    RefusalsNotCounted,
    /// `KeyConfig::refused_calls(RefusedCalls::Count)` (the default before refusals were learned).
    RefusalsCounted,
    /// `KeyConfig::semantics(WindowSemantics::SlidingWindowCounter)`.
    CounterSemantics,
}

impl Variant {
    fn apply(self, config: KeyConfig) -> KeyConfig {
        match self {
            Self::Default => config,
            Self::TokenBucket => config.semantics(WindowSemantics::TokenBucket),
            Self::RefusalsNotCounted => config.refused_calls(RefusedCalls::DoNotCount),
            Self::RefusalsCounted => config.refused_calls(RefusedCalls::Count),
            Self::CounterSemantics => config.semantics(WindowSemantics::SlidingWindowCounter),
        }
    }
}

fn scheduler_in_process(model: ServerModel, quota: &Quota, n: usize, variant: Variant) -> Run {
    scheduler_in_process_on(model, false, quota, n, variant)
}

/// [`scheduler_in_process`] against a server that counts refused calls if `count_refused`.
fn scheduler_in_process_on(
    model: ServerModel,
    count_refused: bool,
    quota: &Quota,
    n: usize,
    variant: Variant,
) -> Run {
    scheduler_in_process_with(model, count_refused, false, quota, n, variant)
}

/// [`scheduler_in_process_on`] against a server that sends `X-RateLimit-*` headers if `headers`.
fn scheduler_in_process_with(
    model: ServerModel,
    count_refused: bool,
    headers: bool,
    quota: &Quota,
    n: usize,
    variant: Variant,
) -> Run {
    paused_runtime().block_on(async {
        let origin = Instant::now();
        let mut server = SimServer::new(model, quota);
        server.count_refused = count_refused;
        let transport = Arc::new(SimTransport {
            server: Mutex::new(server),
            origin,
            headers,
        });
        let scheduler = Scheduler::builder()
            .transport(transport.clone())
            .seed(42)
            .build()
            .expect("scheduler");
        let key = KeyId::new("k");
        let config = KeyConfig::new(
            key.clone(),
            ApiKey::new("k").expect("key"),
            "http://127.0.0.1:9/v1",
            quota.clone(),
        )
        .expect("config")
        .queue_capacity(n);
        scheduler
            .add_key(variant.apply(config))
            .await
            .expect("key added");
        let failed = submit_all(&scheduler, &key, n).await;
        scheduler.shutdown(ShutdownMode::Drain).await;
        let server = transport.server.lock().expect("not poisoned");
        Run {
            makespan: Duration::from_nanos(server.last_accept),
            refused: server.refused,
            failed,
        }
    })
}

/// The scheduler against the real mock server over loopback HTTP.
fn scheduler_loopback(model: ServerModel, quota: &Quota, n: usize) -> Run {
    paused_runtime().block_on(async {
        let server = MockServer::builder()
            .key(TEST_DEV_KEY, quota.clone())
            .model(model)
            .start()
            .await
            .expect("mock server");
        let scheduler = Scheduler::builder()
            .transport_config(
                TransportConfig::default()
                    .connect_timeout(Duration::from_secs(24 * 3600))
                    .request_timeout(Duration::from_secs(24 * 3600))
                    .read_timeout(Duration::from_secs(24 * 3600)),
            )
            .seed(42)
            .build()
            .expect("scheduler");
        let key = KeyId::new("k");
        let config = KeyConfig::new(
            key.clone(),
            ApiKey::new(TEST_DEV_KEY).expect("key"),
            &server.base_url(),
            quota.clone(),
        )
        .expect("config")
        .queue_capacity(n);
        scheduler.add_key(config).await.expect("key added");
        let start = Instant::now();
        let failed = submit_all(&scheduler, &key, n).await;
        scheduler.shutdown(ShutdownMode::Drain).await;
        let last = server
            .record()
            .iter()
            .map(|c| c.arrival)
            .max()
            .unwrap_or(start);
        let refused = server
            .key_stats(&key_fingerprint(TEST_DEV_KEY))
            .map_or(0, |s| s.refused);
        server.shutdown().await;
        Run {
            makespan: last.saturating_duration_since(start),
            refused,
            failed,
        }
    })
}

fn fire_all_backoff(model: ServerModel, quota: &Quota, n: usize) -> Run {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(60);
    paused_runtime().block_on(async {
        let origin = Instant::now();
        let server = Arc::new(Mutex::new(SimServer::new(model, quota)));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(i as u64);
                    let mut attempt = 0u32;
                    loop {
                        let t = nanos_since(origin);
                        if server.lock().expect("not poisoned").decide(t).is_ok() {
                            return;
                        }
                        let ceiling = BASE.saturating_mul(1 << attempt.min(16)).min(CAP);
                        tokio::time::sleep(ceiling.mul_f64(rng.f64())).await;
                        attempt += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let server = server.lock().expect("not poisoned");
        Run {
            makespan: Duration::from_nanos(server.last_accept),
            refused: server.refused,
            failed: 0,
        }
    })
}

/// governor on tokio's (paused) clock.
#[derive(Clone, Debug)]
struct VirtualClock {
    origin: Instant,
}

impl governor::clock::Clock for VirtualClock {
    type Instant = governor::nanos::Nanos;
    fn now(&self) -> Self::Instant {
        governor::nanos::Nanos::from(Instant::now() - self.origin)
    }
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    VirtualClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

/// `until_ready`, on the virtual clock: check, and sleep until the limiter says.
async fn until_ready(limiter: &Limiter, clock: &VirtualClock) {
    use governor::clock::Clock;
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
    }
}

fn governor_quota(limit: &Limit) -> governor::Quota {
    governor::Quota::with_period(limit.window() / limit.count())
        .expect("nonzero period")
        .allow_burst(NonZeroU32::new(limit.count()).expect("nonzero"))
}

/// Sends `n` calls one after another through `limits` (one governor limiter each).
fn governor_limiters(model: ServerModel, quota: &Quota, limits: &[Limit], n: usize) -> Run {
    paused_runtime().block_on(async {
        let clock = VirtualClock {
            origin: Instant::now(),
        };
        let limiters: Vec<Limiter> = limits
            .iter()
            .map(|l| governor::RateLimiter::direct_with_clock(governor_quota(l), clock.clone()))
            .collect();
        let mut server = SimServer::new(model, quota);
        let mut done = 0;
        while done < n {
            for l in &limiters {
                until_ready(l, &clock).await;
            }
            if server.decide(nanos_since(clock.origin)).is_ok() {
                done += 1;
            }
        }
        Run {
            makespan: Duration::from_nanos(server.last_accept),
            refused: server.refused,
            failed: 0,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The tables.

fn cell(run: Run, min: Duration) -> String {
    let over = if min.is_zero() {
        0.0
    } else {
        (run.makespan.as_secs_f64() / min.as_secs_f64() - 1.0) * 100.0
    };
    let failed = if run.failed > 0 {
        format!(", {} failed", run.failed)
    } else {
        String::new()
    };
    format!(
        "{:.1} s (+{over:.2}%) / {}{failed}",
        run.makespan.as_secs_f64(),
        run.refused
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let ns: Vec<usize> = arg("--n")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().expect("--n 100,1000"))
                .collect()
        })
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    let loopback_max: usize = arg("--loopback-max")
        .map(|s| s.parse().expect("--loopback-max N"))
        .unwrap_or(1_000);
    let quotas = [
        ("Development", Quota::development()),
        ("Production", Quota::production()),
    ];

    println!("Makespan (first submit → last success, virtual time) and 429s received.");
    println!("Each cell: makespan (over the model's minimum) / 429s.\n");
    let mut checks = Vec::new();
    for (qname, quota) in &quotas {
        println!("### {qname} ({quota})\n");
        println!(
            "| server model | N | minimum | scheduler | scheduler, token-bucket semantics \
             | scheduler, refusals not counted | scheduler, refusals counted | fire-all + backoff \
             | governor stacked | governor 1 bucket |"
        );
        println!("|---|---:|---:|---|---|---|---|---|---|---|");
        for model in ServerModel::ALL {
            for &n in &ns {
                let wall = std::time::Instant::now();
                let min = minimum(model, quota, n).makespan;
                let ours = scheduler_in_process(model, quota, n, Variant::Default);
                let bucket = scheduler_in_process(model, quota, n, Variant::TokenBucket);
                // Refunding refused slots only matters where refusals happen by design.
                let counter = model == ServerModel::SlidingWindowCounter;
                let refunded = counter
                    .then(|| scheduler_in_process(model, quota, n, Variant::RefusalsNotCounted));
                let counted = counter
                    .then(|| scheduler_in_process(model, quota, n, Variant::RefusalsCounted));
                let fire = fire_all_backoff(model, quota, n);
                let stacked = governor_limiters(model, quota, quota.limits(), n);
                let single = governor_limiters(model, quota, &quota.limits()[..1], n);
                println!(
                    "| {model} | {n} | {:.1} s | {} | {} | {} | {} | {} | {} | {} |",
                    min.as_secs_f64(),
                    cell(ours, min),
                    cell(bucket, min),
                    refunded.map_or_else(|| "—".to_owned(), |r| cell(r, min)),
                    counted.map_or_else(|| "—".to_owned(), |r| cell(r, min)),
                    cell(fire, min),
                    cell(stacked, min),
                    cell(single, min),
                );
                eprintln!(
                    "  ({qname} {model} {n}: {:.1} s wall)",
                    wall.elapsed().as_secs_f64()
                );
                if n <= loopback_max {
                    checks.push((*qname, quota.clone(), model, n, ours));
                }
            }
        }
        println!();
    }

    println!("### Counter model, server that counts refused calls\n");
    println!(
        "What learning costs where refusals do count: the default (learn) against counting \
         from the start and never counting.\n"
    );
    println!(
        "| quota | N | minimum | scheduler (learns) | scheduler, refusals counted \
         | scheduler, refusals not counted |"
    );
    println!("|---|---:|---:|---|---|---|");
    for (qname, quota) in &quotas {
        for &n in &ns {
            let model = ServerModel::SlidingWindowCounter;
            let min = minimum(model, quota, n).makespan;
            let run = |v| scheduler_in_process_on(model, true, quota, n, v);
            println!(
                "| {qname} | {n} | {:.1} s | {} | {} | {} |",
                min.as_secs_f64(),
                cell(run(Variant::Default), min),
                cell(run(Variant::RefusalsCounted), min),
                cell(run(Variant::RefusalsNotCounted), min),
            );
        }
    }
    println!();

    println!("### Counter model, counter semantics\n");
    println!(
        "The scheduler told that the server is a sliding-window counter \
         (`KeyConfig::semantics(WindowSemantics::SlidingWindowCounter)`), on a counter server that \
         does not count refused calls and on one that does.\n"
    );
    println!("| quota | N | minimum | refusals not counted | refusals counted |");
    println!("|---|---:|---:|---|---|");
    for (qname, quota) in &quotas {
        for &n in &ns {
            let model = ServerModel::SlidingWindowCounter;
            let min = minimum(model, quota, n).makespan;
            let run = |counted| {
                scheduler_in_process_on(model, counted, quota, n, Variant::CounterSemantics)
            };
            println!(
                "| {qname} | {n} | {:.1} s | {} | {} |",
                min.as_secs_f64(),
                cell(run(false), min),
                cell(run(true), min),
            );
        }
    }
    println!();

    println!("### Counter model, server sends X-RateLimit-*\n");
    println!(
        "The default scheduler on a counter server whose every answer carries \
         `X-RateLimit-Limit`, `-Remaining` and `-Reset` (the tightest limit, as the mock sends \
         them), on a server that does not count refused calls and on one that does.\n"
    );
    println!("| quota | N | minimum | refusals not counted | refusals counted |");
    println!("|---|---:|---:|---|---|");
    for (qname, quota) in &quotas {
        for &n in &ns {
            let model = ServerModel::SlidingWindowCounter;
            let min = minimum(model, quota, n).makespan;
            let run = |counted| {
                scheduler_in_process_with(model, counted, true, quota, n, Variant::Default)
            };
            println!(
                "| {qname} | {n} | {:.1} s | {} | {} |",
                min.as_secs_f64(),
                cell(run(false), min),
                cell(run(true), min),
            );
        }
    }
    println!();

    println!("### The scheduler against the real MockServer over loopback HTTP (cross-check)\n");
    println!("| quota | server model | N | in-process server | MockServer over HTTP |");
    println!("|---|---|---:|---|---|");
    for (qname, quota, model, n, ours) in checks {
        let wall = std::time::Instant::now();
        let http = scheduler_loopback(model, &quota, n);
        let fmt = |r: Run| {
            format!(
                "{:.1} s / {} × 429 / {} failed",
                r.makespan.as_secs_f64(),
                r.refused,
                r.failed
            )
        };
        println!(
            "| {qname} | {model} | {n} | {} | {} |",
            fmt(ours),
            fmt(http)
        );
        eprintln!(
            "  (loopback {qname} {model} {n}: {:.1} s wall)",
            wall.elapsed().as_secs_f64()
        );
    }
}
