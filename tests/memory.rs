//! Memory bounds, measured with a counting global allocator: bytes of ledger state per key after a
//! saturating workload (Development, Production, 1,000,000/1h), and bytes per queued job in the
//! scheduler. The bounds asserted here are generous documented ceilings, not timings.
//!
//! `cargo test --release --test memory -- --nocapture` prints the figures.
//!
//! Everything runs in one test function: the allocator counts every thread of the process, and
//! the test harness runs test functions on parallel threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::pending;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fabraix_scheduler::{
    ApiKey, HttpResponse, Instant, Job, KeyConfig, KeyId, Ledger, LedgerConfig, OutgoingRequest,
    Quota, Scheduler, Transport, TransportFuture,
};
use http::Method;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter is
// a side effect that does not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Ledger state of one key after 3× its largest count of calls at full rate: (heap_bytes() as the
/// ledger reports it, live heap bytes as the allocator counts them, size_of::<Ledger>()).
fn ledger_bytes(quota: &Quota) -> (usize, isize, usize) {
    let origin = Instant::now();
    let before = live();
    let mut ledger = Ledger::new(quota, LedgerConfig::default(), origin);
    let step = Duration::from_secs_f64(1.0 / quota.rate_per_second());
    let largest = quota.limits().iter().map(|l| l.count()).max().unwrap_or(1);
    let mut now = origin;
    for _ in 0..3 * u64::from(largest) {
        let slot = ledger.reserve(now);
        now = (now + step).max(slot);
    }
    let counted = live() - before;
    let reported = ledger.heap_bytes();
    drop(ledger);
    (reported, counted, std::mem::size_of::<Ledger>())
}

/// A transport whose calls never end: jobs stay queued or in flight for ever.
struct Silent;

impl Transport for Silent {
    fn send(&self, _request: OutgoingRequest<'_>) -> TransportFuture {
        Box::pin(async {
            pending::<()>().await;
            Ok(HttpResponse::new(Bytes::new()))
        })
    }
}

/// Live bytes per job queued behind a quota that lets one call through per hour, each job with a
/// `body_len`-byte body, its ticket kept by the caller (what a user holds).
async fn bytes_per_queued_job(jobs: usize, body_len: usize) -> f64 {
    let scheduler = Scheduler::builder()
        .transport(Arc::new(Silent))
        .seed(1)
        .build()
        .expect("scheduler");
    let key = KeyId::new("k");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new("secret").expect("key"),
        "http://127.0.0.1:9/v1",
        "1/1h".parse().expect("quota"),
    )
    .expect("config")
    .queue_capacity(jobs + 16);
    scheduler.add_key(config).await.expect("key");
    // Warm up: the first job goes on the wire (and stays there); let the shard settle.
    let first = scheduler
        .submit(&key, Job::new(Method::POST, "/event"))
        .await
        .expect("submitted");
    tokio::task::yield_now().await;
    let mut bodies: Vec<Bytes> = (0..jobs)
        .map(|_| Bytes::from(vec![b'x'; body_len]))
        .collect();
    let mut tickets = Vec::with_capacity(jobs);
    let before = live();
    for body in bodies.drain(..) {
        let job = Job::new(Method::POST, "/event").with_body(body);
        tickets.push(scheduler.submit(&key, job).await.expect("submitted"));
    }
    tokio::task::yield_now().await;
    // The bodies were allocated before `before`; the tickets' Vec was preallocated too.
    let per_job = (live() - before) as f64 / jobs as f64;
    // No shutdown: it would wait for the call on the wire, which never ends. The key's shard
    // stays parked on the runtime, which is dropped at the end of the test.
    assert_eq!(
        scheduler.stats(&key).map(|s| s.submitted),
        Some(jobs as u64 + 1)
    );
    drop((first, tickets));
    per_job
}

#[test]
fn memory_bounds() {
    println!("| quota | Ledger::heap_bytes | live heap (allocator) | size_of::<Ledger> |");
    println!("|---|---:|---:|---:|");
    let cases: [(&str, Quota, usize); 3] = [
        ("Development", Quota::development(), 16 * 1024),
        ("Production", Quota::production(), 16 * 1024),
        (
            "1000000/1h",
            "1000000/1h".parse().expect("quota"),
            16 * 1024,
        ),
    ];
    for (name, quota, bound) in cases {
        let (reported, counted, inline) = ledger_bytes(&quota);
        println!("| {name} | {reported} | {counted} | {inline} |");
        assert!(reported <= bound, "{name}: heap_bytes {reported} > {bound}");
        assert!(
            counted <= bound as isize,
            "{name}: {counted} live bytes > {bound}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "\n| queued jobs | body bytes | live bytes per queued job (job + queue entry + ticket) |"
    );
    println!("|---:|---:|---:|");
    for (jobs, body) in [(10_000, 0), (10_000, 256)] {
        let per_job = rt.block_on(bytes_per_queued_job(jobs, body));
        println!("| {jobs} | {body} | {per_job:.0} |");
        // Bodies are allocated before counting; the rest is the job's own bookkeeping.
        assert!(per_job <= 1024.0, "{per_job:.0} bytes per queued job");
    }
}
