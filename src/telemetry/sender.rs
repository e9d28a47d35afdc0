//! The sender: `record` puts an event in a bounded memory queue or, beyond it, in the disk spool's
//! write buffer, and returns at once; a background writer writes that buffer to the spool files,
//! one `write` per batch (group commit); a background feeder hands a small window of events at a
//! time to the [`Scheduler`](crate::Scheduler), in order, and acknowledges each once the server
//! accepted it.
//!
//! ```text
//! record(e) ──▶ memory (≤ memory_capacity) ──────────────────────────┐
//!          └──▶ spool write buffer ──writer: 1 write / batch──▶ segment files
//!               (≤ spool_capacity, FullPolicy)                        │ feeder: ≤ window jobs
//!                                                                     ▼
//!                                  scheduler key queue (lane Bulk) ◀── check(): lane Interactive
//! ```

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::backlog::{self, Backlog, RateMeter};
use super::config::TelemetryConfig;
use super::frame::Kind;
use super::item::{DropReason, Recorded, Telemetry};
use super::metrics::{Counters, DropCounts};
use super::policy::Decision;
use super::spool::{RecoveryReport, Spool};
use crate::clock::Instant;
use crate::fabraix::{ActionCheck, CheckVerdict, ClientError, EventType, FabraixClient};
use crate::job::Job;
use crate::job_error::{JobError, Outcome, SubmitError};
use crate::ledger::{LedgerStore, MemoryLedgerStore};
use crate::quota::Quota;

/// Beyond this many waiting calls the drain ETA extrapolates at the key's rate instead of asking
/// the ledger for every slot.
const PLAN_LIMIT: usize = 10_000;
/// The longest pause after a failure that is not the event's fault (key revoked, retries spent).
const MAX_STALL: Duration = Duration::from_secs(60);
/// The first pause before a failed spool write is retried; it doubles up to `MAX_RETRY_PAUSE`.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// One event on its way: its body, and its spool sequence number if it came from disk.
#[derive(Clone, Debug)]
struct Item {
    kind: Kind,
    body: Bytes,
    seq: Option<u64>,
}

/// The sender's state as seen in logs (`state` field of the `telemetry: state` events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Idle = 0,
    Sending = 1,
    Spooling = 2,
    Stalled = 3,
    Draining = 4,
    Stopped = 5,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Sending => "sending",
            Phase::Spooling => "spooling",
            Phase::Stalled => "stalled",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

struct State {
    memory: VecDeque<Item>,
    spool: Spool,
    closed: bool,
    /// Set by `shutdown`: feed until then, then cancel and persist.
    deadline: Option<Instant>,
}

struct Shared<S: LedgerStore> {
    client: FabraixClient<S>,
    quota: Quota,
    config: TelemetryConfig,
    state: Mutex<State>,
    counters: Counters,
    /// Held by the feeder: submitted and not answered, or waiting to be retried.
    held: AtomicU64,
    phase: AtomicU8,
    per_type: [AtomicU64; 8],
    /// New work or a stop for the feeder.
    wake: Notify,
    /// Room in the spool, or progress (for `record_wait` and `flush`).
    progress: Notify,
    rate: Mutex<RateMeter>,
    /// Set (under the state lock) when the feeder found nothing to send: the next record or
    /// commit wakes it. Spares a wake-up per recorded event while the feeder is busy.
    hungry: AtomicBool,
    /// Serializes the spool's writers (the writer task and `flush`/`shutdown`); taken before the
    /// state lock, never the other way round.
    commit: Mutex<()>,
    /// Work for the writer task: a first record in its buffer, a full batch, or a stop.
    commit_wake: Notify,
    /// Somebody waits for durability: commit without waiting for `commit_delay`.
    urgent: AtomicBool,
    /// The writer task is to write what is buffered and stop.
    writer_stop: AtomicBool,
    /// The spool's durable watermark (mirrored for a lock-free `durable_through`).
    durable: AtomicU64,
    /// The durable watermark moved.
    durable_changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: LedgerStore> Shared<S> {
    fn set_phase(&self, phase: Phase) {
        let old = self.phase.swap(phase as u8, Ordering::Relaxed);
        if old != phase as u8 {
            tracing::info!(key = %self.client.key(), state = phase.name(), "telemetry: state");
        }
    }

    /// The next event to send: memory first (it is older than anything unread on disk), then the
    /// spool in order (committing its write buffer when the reader has caught up with it).
    fn take_next(&self) -> Option<Item> {
        let mut st = lock(&self.state);
        if let Some(item) = st.memory.pop_front() {
            return Some(item);
        }
        let read = st.spool.next_unread();
        self.publish_durable(&st);
        match read {
            Ok(Some(frame)) => Some(Item {
                kind: frame.kind,
                body: Bytes::from(frame.body),
                seq: Some(frame.seq),
            }),
            Ok(None) => {
                self.hungry.store(true, Ordering::Release);
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "telemetry: cannot read the spool");
                None
            }
        }
    }

    /// Mirrors the spool's durable watermark and wakes who waits on it (the feeder too: the
    /// newly written records can be read).
    fn publish_durable(&self, st: &State) {
        let now = st.spool.durable_through();
        if self.durable.swap(now, Ordering::AcqRel) != now {
            self.durable_changed.notify_waiters();
            if self.hungry.swap(false, Ordering::AcqRel) {
                self.wake.notify_one();
            }
        }
    }

    /// Writes the spool's write buffer as one batch, without holding the state lock during the
    /// `write` (so `record` never waits for the disk).
    fn commit_once(&self) -> io::Result<()> {
        let _writing = lock(&self.commit);
        let batch = lock(&self.state).spool.take_batch()?;
        let Some(batch) = batch else {
            return Ok(());
        };
        let result = batch.write();
        let records = batch.records();
        let mut st = lock(&self.state);
        let finished = st.spool.finish_batch(batch, result);
        self.publish_durable(&st);
        drop(st);
        if finished.is_ok() {
            tracing::trace!(records, "telemetry: spool batch written");
        }
        finished
    }

    fn resolve(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            if let Err(e) = lock(&self.state).spool.resolve(seq) {
                tracing::error!(error = %e, seq, "telemetry: cannot update the spool");
            }
        }
        self.progress.notify_waiters();
    }

    /// Appends unsent in-memory items (and `extra`) to the spool and syncs it. Returns how many
    /// were written.
    fn persist(&self, extra: Vec<Item>) -> u64 {
        let _writing = lock(&self.commit);
        let mut st = lock(&self.state);
        let mut items: Vec<Item> = extra;
        items.extend(st.memory.drain(..));
        let mut written = 0;
        for item in items {
            if item.seq.is_some() {
                continue; // already on disk, unresolved: replayed on the next start
            }
            match st.spool.append(item.kind, &item.body) {
                Ok(_) => written += 1,
                Err(e) => {
                    self.counters.dropped("io_error");
                    tracing::error!(error = %e, "telemetry: event lost, cannot write the spool");
                }
            }
        }
        if let Err(e) = st.spool.sync() {
            tracing::error!(error = %e, "telemetry: cannot sync the spool");
        }
        self.publish_durable(&st);
        written
    }
}

/// Sends agent telemetry (`/event`, `/register-agent-run`) through a [`Scheduler`](crate::Scheduler)
/// key without ever blocking the agent, and carries `/check` calls ahead of it. See the
/// [module docs](crate::telemetry).
pub struct TelemetrySender<S: LedgerStore = MemoryLedgerStore> {
    shared: Arc<Shared<S>>,
    feeder: Mutex<Option<JoinHandle<FeederEnd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl<S: LedgerStore> std::fmt::Debug for TelemetrySender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySender")
            .field("key", self.shared.client.key())
            .finish_non_exhaustive()
    }
}

/// What [`TelemetrySender::shutdown`] and [`TelemetrySender::flush`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryReport {
    /// Events the server acknowledged, since the sender started.
    pub sent: u64,
    /// Events the server refused for good (in the spool's `failed.log`).
    pub failed: u64,
    /// Events dropped by the full-spool policy, by reason.
    pub dropped: DropCounts,
    /// Events handed back to the producer by a full spool (Block policy).
    pub refused: u64,
    /// Events now in the spool, to be sent by this sender or replayed on the next start.
    pub persisted: u64,
    /// Events still in memory (only after `flush`, which leaves the sender running).
    pub in_memory: u64,
}

/// How the feeder ended.
#[derive(Debug, Default)]
struct FeederEnd;

impl<S: LedgerStore> TelemetrySender<S> {
    /// Opens the spool in `config`'s directory (recovering what a previous process left: it is
    /// replayed first, in order) and starts feeding `client`'s key, whose quota is `quota`. Must be
    /// called inside a tokio runtime.
    ///
    /// ```no_run
    /// use fabraix_scheduler::telemetry::{TelemetryConfig, TelemetrySender};
    /// use fabraix_scheduler::{ApiKey, FabraixClient, KeyConfig, Quota};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = KeyConfig::new("agent", ApiKey::from_env()?, "https://api.fabraix.com/v1", Quota::development())?
    ///     // A restarted agent is not refused for the calls its last run made.
    ///     .call_journal("./agent-calls");
    /// let client = FabraixClient::new(config).await?;
    /// let (sender, recovered) = TelemetrySender::open(client, Quota::development(), TelemetryConfig::new("./spool"))?;
    /// println!("replaying {} events from the last run", recovered.replay);
    /// # let _ = sender; Ok(()) }
    /// ```
    pub fn open(
        client: FabraixClient<S>,
        quota: Quota,
        config: TelemetryConfig,
    ) -> io::Result<(Self, RecoveryReport)> {
        let (spool, report) = Spool::open(&config.spool_dir, config.segment_bytes)?;
        let durable = spool.durable_through();
        let now = client.scheduler().clock().now();
        let shared = Arc::new(Shared {
            rate: Mutex::new(RateMeter::new(now, config.rate_window)),
            client,
            quota,
            config,
            state: Mutex::new(State {
                memory: VecDeque::new(),
                spool,
                closed: false,
                deadline: None,
            }),
            counters: Counters::default(),
            held: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Idle as u8),
            per_type: Default::default(),
            wake: Notify::new(),
            progress: Notify::new(),
            hungry: AtomicBool::new(false),
            commit: Mutex::new(()),
            commit_wake: Notify::new(),
            urgent: AtomicBool::new(false),
            writer_stop: AtomicBool::new(false),
            durable: AtomicU64::new(durable),
            durable_changed: Notify::new(),
        });
        let feeder = tokio::spawn(feed(Arc::clone(&shared)));
        let writer = tokio::spawn(write_loop(Arc::clone(&shared)));
        Ok((
            Self {
                shared,
                feeder: Mutex::new(Some(feeder)),
                writer: Mutex::new(Some(writer)),
            },
            report,
        ))
    }

    /// Takes an event (or a registration) and returns at once: never waits for the network, the
    /// quota or the disk, never panics. It goes to memory while there is room and nothing waits
    /// on disk ([`Recorded::Queued`]), else into the spool's write buffer
    /// ([`Recorded::Spooled`]`(seq)`: no system call; the writer task writes it within
    /// [`commit_delay`](super::TelemetryConfig::commit_delay), see
    /// [`durable_through`](Self::durable_through)), else the [`FullPolicy`](super::FullPolicy)
    /// decides. Every outcome is counted. Cost: the JSON encoding plus a short lock, about 1-2 µs.
    pub fn record(&self, telemetry: impl Into<Telemetry>) -> Recorded {
        let telemetry = telemetry.into();
        let body = match telemetry.encode() {
            Ok(b) => b,
            Err(e) => return Recorded::Invalid(e.to_string()),
        };
        let kind = telemetry.kind();
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        if st.closed {
            return Recorded::Closed(telemetry);
        }
        if st.memory.len() < shared.config.memory_capacity && st.spool.unread() == 0 {
            st.memory.push_back(Item {
                kind,
                body: Bytes::from(body),
                seq: None,
            });
            drop(st);
            shared.counters.recorded(false);
            if shared.hungry.swap(false, Ordering::AcqRel) {
                shared.wake.notify_one();
            }
            return Recorded::Queued;
        }
        let event_type = telemetry.event_type();
        if let Err(no_room) = make_room(shared, &mut st, event_type) {
            drop(st);
            return match no_room {
                Some(reason) => Recorded::Dropped(reason),
                None => Recorded::Full(telemetry),
            };
        }
        spool_append(shared, st, kind, &body)
    }

    /// Like [`record`](Self::record), but under [`FullPolicy::Block`](super::FullPolicy::Block) waits
    /// for room in the spool instead of handing the event back.
    pub async fn record_wait(&self, telemetry: impl Into<Telemetry>) -> Recorded {
        let mut telemetry = telemetry.into();
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            match self.record(telemetry) {
                Recorded::Full(t) => telemetry = t,
                other => return other,
            }
            progress.await;
        }
    }

    /// The durable watermark: every event [`Recorded::Spooled`] with a sequence number up to this
    /// one is written to a spool file, so it survives the process being killed (and is delivered
    /// after a restart). Events above it are lost if the process dies now; the writer task moves
    /// it at least every [`commit_delay`](super::TelemetryConfig::commit_delay). Lock-free.
    /// ([`flush`](Self::flush) and [`shutdown`](Self::shutdown) also `fsync` for power loss.)
    pub fn durable_through(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Waits until the spooled event `seq` is durable (see
    /// [`durable_through`](Self::durable_through)), asking the writer to commit now rather than
    /// after `commit_delay`. `false` if `seq` was never returned by [`record`](Self::record), or
    /// the sender shut down without writing it (a disk error, logged). While the disk refuses
    /// writes (logged, retried) it keeps waiting.
    pub async fn wait_durable(&self, seq: u64) -> bool {
        let shared = &*self.shared;
        loop {
            let changed = shared.durable_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.durable_through() >= seq {
                return true;
            }
            if seq >= lock(&shared.state).spool.next_seq()
                || shared.writer_stop.load(Ordering::Acquire)
            {
                return self.durable_through() >= seq;
            }
            shared.urgent.store(true, Ordering::Release);
            shared.commit_wake.notify_one();
            changed.await;
        }
    }

    /// `POST /check` on the same key at interactive priority: it takes the key's next free slot,
    /// ahead of any telemetry backlog (the sender keeps at most `window` events in the
    /// scheduler's queue). Returns the server's verdict.
    pub async fn check(&self, check: &ActionCheck) -> Result<CheckVerdict, ClientError> {
        self.shared.client.check(check).await
    }

    /// The client (and through it the scheduler and key) the sender feeds.
    pub fn client(&self) -> &FabraixClient<S> {
        &self.shared.client
    }

    /// A snapshot of the backlog, its drain ETA (from the ledger's plan) and the arrival-rate
    /// warning. Takes the state lock briefly and asks the ledger for at most 10,000 slots.
    pub async fn backlog(&self) -> Backlog {
        let shared = &*self.shared;
        let (in_memory, on_disk, spool_unresolved) = {
            let st = lock(&shared.state);
            (
                st.memory.len() as u64,
                st.spool.unread(),
                st.spool.unresolved(),
            )
        };
        let held = shared.held.load(Ordering::Relaxed);
        let key = shared.client.key();
        let scheduler = shared.client.scheduler();
        let queued_in_scheduler = scheduler.stats(key).map_or(0, |s| s.queued);
        let clock = scheduler.clock();
        let now = clock.now();
        let key_rate = shared.quota.rate_per_second();
        let waiting = (in_memory + on_disk + held.max(queued_in_scheduler)) as usize;
        let drain_eta = if waiting == 0 {
            None
        } else {
            let k = waiting.min(PLAN_LIMIT);
            match scheduler.plan(key, k).await {
                Ok(plan) => plan.last().map(|&last| {
                    let rest = (waiting - k) as f64;
                    if rest > 0.0 && key_rate > 0.0 && key_rate.is_finite() {
                        last + Duration::from_secs_f64(rest / key_rate)
                    } else {
                        last
                    }
                }),
                Err(_) => None,
            }
        };
        let recorded = shared.counters.recorded.load(Ordering::Relaxed);
        let arrival_rate = lock(&shared.rate).rate(now, recorded);
        let warning = backlog::rate_warning(
            arrival_rate,
            key_rate,
            shared
                .config
                .spool_capacity
                .saturating_sub(spool_unresolved),
        );
        if let Some(w) = &warning {
            tracing::warn!(key = %key, "telemetry: {w}");
        }
        Counters::gauges(in_memory, on_disk, held);
        Backlog {
            in_memory,
            on_disk,
            in_flight: held,
            recorded,
            sent: shared.counters.delivered.load(Ordering::Relaxed),
            failed: shared.counters.failed.load(Ordering::Relaxed),
            dropped: shared.counters.drops(),
            refused: shared.counters.refused.load(Ordering::Relaxed),
            drain_eta,
            drain_in: drain_eta.map(|t| t.saturating_duration_since(now)),
            drain_wall: drain_eta.map(|t| clock.wall_at(t)),
            arrival_rate,
            key_rate,
            warning,
        }
    }

    fn report(&self) -> TelemetryReport {
        let shared = &*self.shared;
        let st = lock(&shared.state);
        TelemetryReport {
            sent: shared.counters.delivered.load(Ordering::Relaxed),
            failed: shared.counters.failed.load(Ordering::Relaxed),
            dropped: shared.counters.drops(),
            refused: shared.counters.refused.load(Ordering::Relaxed),
            persisted: st.spool.unresolved(),
            in_memory: st.memory.len() as u64,
        }
    }

    /// Sends what the quota allows until everything recorded so far is sent or `deadline` passes,
    /// then writes what is still in memory and the spool's write buffer to the spool and syncs
    /// it (everything recorded is then durable, even against a power loss). The sender keeps
    /// running.
    /// (Events moved from memory to the spool here are replayed after the ones already there.)
    pub async fn flush(&self, deadline: Instant) -> TelemetryReport {
        let clock = Arc::clone(self.shared.client.scheduler().clock());
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let waiting = {
                let st = lock(&self.shared.state);
                st.memory.len() as u64 + st.spool.unread()
            } + self.shared.held.load(Ordering::Relaxed);
            if waiting == 0 || clock.now() >= deadline {
                break;
            }
            tokio::select! {
                () = progress => {}
                () = clock.sleep_until(deadline) => break,
            }
        }
        self.shared.persist(Vec::new());
        self.report()
    }

    /// Stops taking events, sends what the quota allows before `deadline`, then cancels what is
    /// still queued in the scheduler, waits for calls already bound to a slot, writes everything
    /// unsent to the spool (committed and synced: all durable) and reports the counts. Other users of the scheduler are not
    /// affected. Later calls return the same counts at once.
    pub async fn shutdown(&self, deadline: Instant) -> TelemetryReport {
        {
            let mut st = lock(&self.shared.state);
            st.closed = true;
            st.deadline = Some(deadline);
        }
        self.shared.wake.notify_one();
        let handle = lock(&self.feeder).take();
        if let Some(h) = handle {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "telemetry: the feeder task failed");
                self.shared.persist(Vec::new());
            }
        }
        self.shared.writer_stop.store(true, Ordering::Release);
        self.shared.commit_wake.notify_one();
        let writer = lock(&self.writer).take();
        if let Some(h) = writer {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "telemetry: the spool writer task failed");
            }
        }
        let report = self.report();
        tracing::info!(
            sent = report.sent,
            persisted = report.persisted,
            failed = report.failed,
            dropped = report.dropped.total(),
            "telemetry: shut down"
        );
        report
    }
}

impl<S: LedgerStore> Drop for TelemetrySender<S> {
    fn drop(&mut self) {
        // Without a shutdown: stop the feeder; the spool keeps what it holds (memory is lost,
        // as documented: call `shutdown` to persist it).
        if let Some(h) = lock(&self.feeder).take() {
            h.abort();
        }
        // The spool's write buffer is written now (spooled events are not lost).
        self.shared.writer_stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.commit_once() {
            tracing::error!(error = %e, "telemetry: spooled events not written at drop");
        }
        if let Some(h) = lock(&self.writer).take() {
            h.abort();
        }
    }
}

/// The spool's background writer (group commit): writes the write buffer once `commit_records`
/// records wait in it or its first record is `commit_delay` old, whichever comes first, or at
/// once when someone waits for durability; one `write` per batch, outside the state lock. A
/// failed write keeps the records buffered and is retried after a pause (100 ms, doubling to 5 s).
async fn write_loop<S: LedgerStore>(shared: Arc<Shared<S>>) {
    let clock = Arc::clone(shared.client.scheduler().clock());
    let mut due: Option<Instant> = None;
    let mut pause = RETRY_PAUSE;
    loop {
        let wake = shared.commit_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let stop = shared.writer_stop.load(Ordering::Acquire);
        let buffered = lock(&shared.state).spool.pending_records();
        if buffered == 0 {
            if stop {
                break;
            }
            due = None;
            wake.await;
            continue;
        }
        let urgent = stop
            || shared.urgent.swap(false, Ordering::AcqRel)
            || buffered >= shared.config.commit_records;
        let now = clock.now();
        let due_at = *due.get_or_insert(now + shared.config.commit_delay);
        if !urgent && now < due_at {
            tokio::select! {
                () = &mut wake => {}
                () = clock.sleep_until(due_at) => {}
            }
            continue;
        }
        due = None;
        match shared.commit_once() {
            Ok(()) => pause = RETRY_PAUSE,
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "telemetry: spool write failed; retrying");
                if stop {
                    break;
                }
                clock.sleep_until(clock.now() + pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Makes room in the spool for an event of `event_type`, as the overflow policy decides: `Ok`
/// to append it; `Err(Some(reason))` if it is dropped; `Err(None)` if it is refused (handed back
/// to the caller).
fn make_room<S: LedgerStore>(
    shared: &Shared<S>,
    st: &mut State,
    event_type: Option<EventType>,
) -> Result<(), Option<DropReason>> {
    let counter = event_type.map_or(0, |t| {
        shared.per_type[t as usize % 8].fetch_add(1, Ordering::Relaxed)
    });
    let decision = shared.config.policy.decide(
        st.spool.unresolved(),
        shared.config.spool_capacity,
        event_type,
        counter,
    );
    match decision {
        Decision::Keep => Ok(()),
        Decision::EvictOldest => match st.spool.next_unread() {
            Ok(Some(old)) => {
                let _ = st.spool.resolve(old.seq);
                shared.counters.dropped("oldest");
                tracing::debug!(seq = old.seq, "telemetry: oldest spooled event dropped");
                Ok(())
            }
            _ => {
                shared.counters.dropped("newest");
                Err(Some(DropReason::SpoolFull))
            }
        },
        Decision::DropNewest => {
            shared.counters.dropped("newest");
            Err(Some(DropReason::SpoolFull))
        }
        Decision::SampledOut => {
            shared.counters.dropped("sampled");
            Err(Some(DropReason::Sampled))
        }
        Decision::Refuse => {
            shared.counters.refused();
            Err(None)
        }
    }
}

/// Appends an event (`kind`, `body`) to the spool and wakes its writer when a batch starts or
/// fills.
fn spool_append<S: LedgerStore>(
    shared: &Shared<S>,
    mut st: MutexGuard<'_, State>,
    kind: Kind,
    body: &[u8],
) -> Recorded {
    match st.spool.append(kind, body) {
        Ok(seq) => {
            let buffered = st.spool.pending_records();
            drop(st);
            shared.counters.recorded(true);
            if shared.phase.load(Ordering::Relaxed) != Phase::Spooling as u8 {
                shared.set_phase(Phase::Spooling);
            }
            // The writer starts its `commit_delay` timer at the first record of a batch and
            // writes at once at `commit_records`: two wake-ups per batch, not one per record.
            // (The feeder is woken by the commit: it cannot read the record before.)
            if buffered == 1 || buffered == shared.config.commit_records {
                shared.commit_wake.notify_one();
            }
            Recorded::Spooled(seq)
        }
        Err(e) => {
            drop(st);
            shared.counters.dropped("io_error");
            tracing::error!(error = %e, "telemetry: event lost, cannot write the spool");
            Recorded::Dropped(DropReason::Io)
        }
    }
}

/// How one submitted event ended, with the event.
type Done = (Item, Outcome);

/// What the feeder does with one event's outcome (a pure decision, see [`verdict`]).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Sent: resolved, and the stall backoff starts over.
    Delivered,
    /// Refused for good (the event's fault): kept in `failed.log` under this kind.
    Failed(&'static str),
    /// Not sent, and nothing was wrong (cancelled at the deadline, shut down): sent again later.
    Again,
    /// Not the event's fault (retries spent, key revoked...): kept, and the feeder pauses.
    Stall,
}

/// The feeder's decision on an event's outcome.
fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Ok(_) => Verdict::Delivered,
        Err(
            e @ (JobError::Rejected { .. }
            | JobError::Forbidden { .. }
            | JobError::InvalidRequest { .. }),
        ) => Verdict::Failed(e.kind()),
        Err(JobError::Cancelled | JobError::ShutDown) => Verdict::Again,
        Err(_) => Verdict::Stall,
    }
}

/// What a refused submission means: `None` if the scheduler is shutting down (the event stays,
/// and the feeder stops submitting), else the kind the event fails with.
fn refusal(e: &SubmitError) -> Option<&'static str> {
    match e {
        SubmitError::ShuttingDown { .. } => None,
        SubmitError::UnknownKey { .. } => Some("unknown_key"),
        SubmitError::InvalidJob { .. } => Some("invalid_request"),
        _ => Some("queue_full"),
    }
}

/// When the feeder must look again without being woken: the end of its stall or the deadline
/// (one not passed yet), whichever is first.
fn wake_at(stall_until: Option<Instant>, deadline: Option<Instant>) -> Option<Instant> {
    match (stall_until, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the feeder saw at the start of a turn.
#[derive(Clone, Copy, Debug)]
struct Turn {
    /// The sender was closed (drain, then stop).
    closed: bool,
    deadline: Option<Instant>,
    past_deadline: bool,
}

/// The feeder's loop state: the events it has submitted (until their outcome), those to send
/// again, and its stall after failures that were not the events' fault.
struct Feeder<S: LedgerStore> {
    shared: Arc<Shared<S>>,
    clock: Arc<dyn crate::clock::Clock>,
    key: crate::key_id::KeyId,
    cancel_tx: watch::Sender<bool>,
    cancel_rx: watch::Receiver<bool>,
    inflight: FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>>,
    retry: VecDeque<Item>,
    stall_until: Option<Instant>,
    stall: Duration,
    scheduler_closed: bool,
}

async fn feed<S: LedgerStore>(shared: Arc<Shared<S>>) -> FeederEnd {
    let mut feeder = Feeder::new(Arc::clone(&shared));
    loop {
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let turn = feeder.look();
        let feeding =
            !turn.past_deadline && feeder.stall_until.is_none() && !feeder.scheduler_closed;
        if feeding {
            feeder.fill().await;
        }
        if feeder.settle_phase(turn) {
            break;
        }
        let timer = wake_at(
            feeder.stall_until,
            turn.deadline.filter(|_| !turn.past_deadline),
        );
        let clock = Arc::clone(&feeder.clock);
        tokio::select! {
            Some((item, outcome)) = feeder.inflight.next(), if !feeder.inflight.is_empty() => {
                feeder.ended(item, outcome);
            }
            () = &mut wake => {}
            () = async {
                match timer {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    feeder.stop()
}

impl<S: LedgerStore> Feeder<S> {
    fn new(shared: Arc<Shared<S>>) -> Self {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        Self {
            clock: Arc::clone(shared.client.scheduler().clock()),
            key: shared.client.key().clone(),
            shared,
            cancel_tx,
            cancel_rx,
            inflight: FuturesUnordered::new(),
            retry: VecDeque::new(),
            stall_until: None,
            stall: Duration::from_secs(1),
            scheduler_closed: false,
        }
    }

    /// The start of a turn: past the deadline, the events in flight are cancelled; a stall that
    /// has ended is over; a closed sender drains.
    fn look(&mut self) -> Turn {
        let (closed, deadline) = {
            let st = lock(&self.shared.state);
            (st.closed, st.deadline)
        };
        let now = self.clock.now();
        let past_deadline = deadline.is_some_and(|d| now >= d);
        if past_deadline && !*self.cancel_tx.borrow() {
            let _ = self.cancel_tx.send(true);
        }
        if self.stall_until.is_some_and(|t| now >= t) {
            self.stall_until = None;
        }
        if closed && self.shared.phase.load(Ordering::Relaxed) != Phase::Draining as u8 {
            self.shared.set_phase(Phase::Draining);
        }
        Turn {
            closed,
            deadline,
            past_deadline,
        }
    }

    /// Submits events (to send again first, then the backlog's) until the window is full.
    async fn fill(&mut self) {
        while self.inflight.len() < self.shared.config.window && !self.scheduler_closed {
            let Some(item) = self.retry.pop_front().or_else(|| self.shared.take_next()) else {
                break;
            };
            let job = Job::new(http::Method::POST, item.kind.path())
                .with_body(item.body.clone())
                .with_header(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                )
                .with_priority(self.shared.config.priority);
            match self.shared.client.scheduler().submit(&self.key, job).await {
                Ok(ticket) => {
                    let watched = watch_ticket(ticket, item, self.cancel_rx.clone());
                    self.inflight.push(Box::pin(watched));
                }
                Err(e) => match refusal(&e) {
                    None => {
                        tracing::warn!(key = %self.key, "telemetry: the scheduler is shutting down; keeping the backlog on disk");
                        self.retry.push_front(item);
                        self.scheduler_closed = true;
                    }
                    Some(kind) => fail(&self.shared, item, kind, &e.to_string()),
                },
            }
        }
    }

    /// Publishes what the feeder holds and its phase; true if it is to stop (closed, and nothing
    /// left to send, or the deadline passed, or the scheduler shut down).
    fn settle_phase(&mut self, turn: Turn) -> bool {
        let shared = &self.shared;
        shared.held.store(
            (self.inflight.len() + self.retry.len()) as u64,
            Ordering::Relaxed,
        );
        if !self.inflight.is_empty() {
            if shared.phase.load(Ordering::Relaxed) == Phase::Idle as u8 {
                shared.set_phase(Phase::Sending);
            }
            return false;
        }
        let nothing_left = self.retry.is_empty() && {
            let st = lock(&shared.state);
            st.memory.is_empty() && st.spool.unread() == 0
        };
        if turn.closed && (nothing_left || turn.past_deadline || self.scheduler_closed) {
            return true;
        }
        if nothing_left && self.stall_until.is_none() {
            let p = shared.phase.load(Ordering::Relaxed);
            if p != Phase::Idle as u8 && p != Phase::Draining as u8 {
                shared.set_phase(Phase::Idle);
            }
        }
        false
    }

    /// An event's outcome came in: carries out the [`verdict`].
    fn ended(&mut self, item: Item, outcome: Outcome) {
        match verdict(&outcome) {
            Verdict::Delivered => {
                self.shared.counters.delivered();
                self.shared.resolve(item.seq);
                self.stall = Duration::from_secs(1);
            }
            Verdict::Failed(kind) => {
                let why = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                fail(&self.shared, item, kind, &why);
            }
            Verdict::Again => self.retry.push_front(item),
            Verdict::Stall => {
                let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(key = %self.key, error = %error, pause_s = self.stall.as_secs(), "telemetry: send failed; pausing, the event is kept");
                self.retry.push_front(item);
                self.stall_until = Some(self.clock.now() + self.stall);
                self.stall = (self.stall * 2).min(MAX_STALL);
                self.shared.set_phase(Phase::Stalled);
            }
        }
    }

    /// Everything not sent goes to disk; the feeder stops.
    fn stop(self) -> FeederEnd {
        let unsent: Vec<Item> = self.retry.into_iter().collect();
        let written = self.shared.persist(unsent);
        self.shared.held.store(0, Ordering::Relaxed);
        self.shared.set_phase(Phase::Stopped);
        self.shared.progress.notify_waiters();
        tracing::debug!(written, "telemetry: feeder stopped");
        FeederEnd
    }
}

/// Waits for a submitted event's outcome (cancelling its ticket once `cancel` turns true: the
/// deadline passed), with the event.
async fn watch_ticket(
    ticket: crate::scheduler::Ticket,
    item: Item,
    mut cancel: watch::Receiver<bool>,
) -> Done {
    let span = tracing::debug_span!(
        "telemetry_send",
        seq = item.seq,
        ticket = ticket.id(),
        path = item.kind.path()
    );
    async move {
        let mut ticket = ticket;
        let outcome = tokio::select! {
            o = &mut ticket => o,
            _ = async { let _ = cancel.wait_for(|c| *c).await; } => {
                ticket.cancel();
                ticket.await
            }
        };
        match &outcome {
            Ok(r) => tracing::debug!(
                status = r.status.as_u16(),
                attempts = r.attempts,
                "telemetry: sent"
            ),
            Err(e) => tracing::debug!(error = %e, "telemetry: not sent"),
        }
        (item, outcome)
    }
    .instrument(span)
    .await
}

/// The server refused the event for good: keep it in `failed.log`, count it, resolve it.
fn fail<S: LedgerStore>(shared: &Shared<S>, item: Item, kind: &'static str, why: &str) {
    shared.counters.failed(kind);
    tracing::warn!(
        kind,
        error = why,
        seq = item.seq,
        "telemetry: event refused for good; kept in failed.log"
    );
    {
        let mut st = lock(&shared.state);
        if let Err(e) = st
            .spool
            .dead_letter(item.seq.unwrap_or(0), item.kind, &item.body)
        {
            tracing::error!(error = %e, "telemetry: cannot write failed.log");
        }
    }
    shared.resolve(item.seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_error::ApiError;

    #[test]
    fn an_outcome_is_delivered_failed_sent_again_or_a_stall() {
        assert_eq!(verdict(&Err(JobError::Cancelled)), Verdict::Again);
        assert_eq!(verdict(&Err(JobError::ShutDown)), Verdict::Again);
        let rejected = JobError::Rejected {
            api: ApiError::from_body_redacted(422, b"{}", &crate::ApiKey::new("k").unwrap()),
            attempts: 1,
        };
        assert_eq!(verdict(&Err(rejected)), Verdict::Failed("rejected"));
        let revoked = JobError::KeyRevoked {
            fingerprint: "fp".into(),
            attempts: 0,
        };
        assert_eq!(verdict(&Err(revoked)), Verdict::Stall);
    }

    #[test]
    fn the_feeder_wakes_for_the_first_of_its_stall_and_its_deadline() {
        let t = tokio::time::Instant::now();
        let later = t + Duration::from_secs(1);
        assert_eq!(wake_at(None, None), None);
        assert_eq!(wake_at(Some(later), None), Some(later));
        assert_eq!(wake_at(None, Some(t)), Some(t));
        assert_eq!(wake_at(Some(later), Some(t)), Some(t));
    }
}
