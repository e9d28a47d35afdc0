//! The engine shared by `send` and `demo`: read jobs, submit them with backpressure, write each
//! result as it completes, and stop gracefully.
//!
//! ```text
//! reader ──(permit)──▶ scheduler.submit (bounded queue, Overflow::Wait) ──ticket──▶ collector
//!                                                                        result ──▶ writer (flush)
//! ```
//! A line holds one of `read_ahead` permits from the moment it is read until its result is
//! written (or it is skipped, or left unsent by a stop): the reader is never more than
//! `read_ahead` lines ahead of the output, whatever the input's size.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fabraix_scheduler::{
    JobError, KeyId, Outcome, Quota, Scheduler, ShutdownMode, SubmitError, Ticket,
};
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::counters::RunCounters;
use crate::exit::CliError;
use crate::ids::IdRegistry;
use crate::input::{InputLine, InputReader};
use crate::output::{invalid_input_line, result_line, ResultWriter, INVALID_INPUT};
use crate::plan::planned_duration_after;
use crate::progress::{Progress, ProgressMode, Watched};
use crate::stop::{Stop, StopReason};
use crate::store::CliStore;
use crate::summary::Summary;
use crate::tier_check::AcceptedPerWindow;

/// Bad lines reported on stderr one by one; later ones only in the output and the summary.
const BAD_LINES_SHOWN: u64 = 20;

/// Where a run's jobs come from.
pub(crate) enum Source {
    /// A JSONL input, read line by line.
    Reader(InputReader),
    /// Jobs made in memory (the demo).
    Lines(Box<dyn Iterator<Item = InputLine> + Send>),
}

impl Source {
    async fn next(&mut self) -> Result<Option<InputLine>, CliError> {
        match self {
            Source::Reader(r) => r.next().await,
            Source::Lines(it) => Ok(it.next()),
        }
    }
}

/// One run of the engine.
pub(crate) struct Batch {
    pub(crate) scheduler: Scheduler<CliStore>,
    pub(crate) key: KeyId,
    pub(crate) key_fingerprint: String,
    pub(crate) quota: Quota,
    pub(crate) source: Source,
    pub(crate) writer: Option<ResultWriter>,
    pub(crate) done: HashSet<String>,
    pub(crate) strict: bool,
    pub(crate) stop: Stop,
    pub(crate) read_ahead: usize,
    pub(crate) progress: ProgressMode,
    pub(crate) total: Option<u64>,
    /// The calls made before this run that the key's windows started with (wall clock): the
    /// summary's planned minimum counts them.
    pub(crate) earlier: Vec<SystemTime>,
}

/// What a run did, and why it ended early if it did.
#[derive(Debug)]
pub(crate) struct BatchReport {
    pub(crate) summary: Summary,
    pub(crate) stopped: Option<StopReason>,
    pub(crate) max_read_ahead: u64,
    pub(crate) error: Option<CliError>,
}

enum Item {
    Ticket {
        id: String,
        ticket: Ticket,
        permit: OwnedSemaphorePermit,
    },
    Invalid {
        id: String,
        message: String,
        permit: OwnedSemaphorePermit,
    },
}

pub(crate) async fn run(batch: Batch) -> BatchReport {
    let Batch {
        scheduler,
        key,
        key_fingerprint,
        quota,
        source,
        writer,
        done,
        strict,
        stop,
        read_ahead,
        progress,
        total,
        earlier,
    } = batch;
    let clock = Arc::clone(scheduler.clock());
    let start = clock.now();
    let wall = clock.wall_now();
    let earlier: Vec<Duration> = earlier
        .iter()
        .map(|&t| wall.duration_since(t).unwrap_or(Duration::ZERO))
        .collect();
    let counters = Arc::new(RunCounters::default());
    let permits = Arc::new(Semaphore::new(read_ahead.max(1)));
    let (tx, rx) = mpsc::channel(256);
    let display = Progress::start(
        progress,
        Watched {
            scheduler: scheduler.clone(),
            key: key.clone(),
            counters: Arc::clone(&counters),
            total,
            rate: quota.rate_per_second(),
        },
    );
    let intake_task = tokio::spawn(intake(Intake {
        source,
        scheduler: scheduler.clone(),
        key: key.clone(),
        done,
        strict,
        stop: stop.clone(),
        permits,
        tx,
        counters: Arc::clone(&counters),
    }));
    let collect_task = tokio::spawn(collect(
        rx,
        writer,
        Arc::clone(&counters),
        stop.clone(),
        Watch {
            accepted: AcceptedPerWindow::new(&quota),
            clock: Arc::clone(&clock),
        },
    ));
    let work = async { (intake_task.await, collect_task.await) };
    tokio::pin!(work);
    let (intake_result, collect_result) = tokio::select! {
        r = &mut work => r,
        _ = stop.wait() => {
            // Graceful stop: no new call starts; calls on the wire finish and their results are
            // written; queued jobs are handed back unsent (and not written).
            scheduler.shutdown(ShutdownMode::ReturnUnsent).await;
            work.await
        }
    };
    scheduler.shutdown(ShutdownMode::ReturnUnsent).await;
    display.finish().await;
    let (collect_result, accepted) = match collect_result {
        Ok((r, accepted)) => (Ok(r), Some(accepted)),
        Err(e) => (Err(e), None),
    };
    let error = match (intake_result, collect_result) {
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => Some(e),
        (Err(e), _) | (_, Err(e)) => Some(CliError::new(format!("internal error: {e}"))),
        _ => None,
    };
    let stats = scheduler.stats(&key).unwrap_or_default();
    let submitted = RunCounters::get(&counters.submitted);
    let stopped = stop.reason();
    let summary = Summary {
        lines: RunCounters::get(&counters.read),
        skipped: RunCounters::get(&counters.skipped),
        submitted,
        succeeded: RunCounters::get(&counters.succeeded),
        failed: RunCounters::get(&counters.failed),
        failed_by_kind: counters.failed_by_kind(),
        unsent: RunCounters::get(&counters.unsent),
        duplicate_ids: RunCounters::get(&counters.duplicate_ids),
        calls_sent: stats.sent,
        rate_limited_429: stats.rate_limited,
        retries: stats.retries,
        elapsed_secs: clock.now().saturating_duration_since(start).as_secs_f64(),
        planned_minimum_secs: planned_duration_after(&quota, start, submitted, &earlier)
            .as_secs_f64(),
        server_limits_look_like: accepted
            .and_then(|a| a.server_limits_look_like(stats.rate_limited, stats.sent))
            .map(|q| q.to_string()),
        quota: quota.to_string(),
        key: key_fingerprint,
        interrupted: stopped.is_some(),
    };
    BatchReport {
        summary,
        stopped,
        max_read_ahead: RunCounters::get(&counters.max_read_ahead),
        error,
    }
}

struct Intake {
    source: Source,
    scheduler: Scheduler<CliStore>,
    key: KeyId,
    done: HashSet<String>,
    strict: bool,
    stop: Stop,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Item>,
    counters: Arc<RunCounters>,
}

async fn intake(mut it: Intake) -> Result<(), CliError> {
    let mut bad_lines = 0u64;
    let mut ids = IdRegistry::new();
    loop {
        if it.stop.reason().is_some() {
            return Ok(());
        }
        let permit = tokio::select! {
            biased;
            _ = it.stop.wait() => return Ok(()),
            p = Arc::clone(&it.permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        let line = tokio::select! {
            biased;
            _ = it.stop.wait() => return Ok(()),
            l = it.source.next() => l?,
        };
        let Some(line) = line else {
            return Ok(());
        };
        it.counters.line_read();
        // Before the resume check: a repeated id is reported in every run, never taken for done.
        if let Err(collision) = ids.claim(&line.id, line.line) {
            RunCounters::bump(&it.counters.duplicate_ids);
            if it.strict {
                crate::logging::note(&format!(
                    "error: {collision} (--strict: stopping at the first repeated id)"
                ));
                it.stop.trigger(StopReason::BadInput);
                return Ok(());
            }
            let repeated = RunCounters::get(&it.counters.duplicate_ids);
            if repeated <= BAD_LINES_SHOWN {
                crate::logging::note(&format!("repeated id: {collision}"));
            } else if repeated == BAD_LINES_SHOWN + 1 {
                crate::logging::note("repeated id: more lines repeat an id; see the summary");
            }
            continue;
        }
        if it.done.contains(&line.id) {
            RunCounters::bump(&it.counters.skipped);
            continue;
        }
        let message = match line.job {
            Ok(job) => match it.scheduler.submit(&it.key, job).await {
                Ok(ticket) => {
                    RunCounters::bump(&it.counters.submitted);
                    let item = Item::Ticket {
                        id: line.id,
                        ticket,
                        permit,
                    };
                    if it.tx.send(item).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Err(SubmitError::ShuttingDown { .. }) => {
                    RunCounters::bump(&it.counters.unsent);
                    return Ok(());
                }
                Err(SubmitError::InvalidJob { reason, .. }) => {
                    format!("line {}: {reason}", line.line)
                }
                Err(e) => return Err(CliError::new(e.to_string())),
            },
            Err(message) => message,
        };
        bad_lines += 1;
        if it.strict {
            crate::logging::note(&format!(
                "error: {message} (--strict: stopping at the first bad line)"
            ));
            it.stop.trigger(StopReason::BadInput);
            return Ok(());
        }
        if bad_lines <= BAD_LINES_SHOWN {
            crate::logging::note(&format!("bad input: {message}; written as an error result"));
        } else if bad_lines == BAD_LINES_SHOWN + 1 {
            crate::logging::note("bad input: more bad lines; see the output and the summary");
        }
        let item = Item::Invalid {
            id: line.id,
            message,
            permit,
        };
        if it.tx.send(item).await.is_err() {
            return Ok(());
        }
    }
}

/// What the collector watches besides the results: when the successes came, on this clock.
struct Watch {
    accepted: AcceptedPerWindow,
    clock: Arc<dyn fabraix_scheduler::Clock>,
}

async fn collect(
    rx: mpsc::Receiver<Item>,
    writer: Option<ResultWriter>,
    counters: Arc<RunCounters>,
    stop: Stop,
    mut watch: Watch,
) -> (Result<(), CliError>, AcceptedPerWindow) {
    let result = collect_into(rx, writer, counters, stop, &mut watch).await;
    (result, watch.accepted)
}

async fn collect_into(
    mut rx: mpsc::Receiver<Item>,
    mut writer: Option<ResultWriter>,
    counters: Arc<RunCounters>,
    stop: Stop,
    watch: &mut Watch,
) -> Result<(), CliError> {
    let mut pending: JoinSet<(String, Outcome, OwnedSemaphorePermit)> = JoinSet::new();
    let mut open = true;
    let mut write = |line: &Value| -> Result<(), CliError> {
        match writer.as_mut() {
            Some(w) => w
                .write(line)
                .inspect_err(|_| stop.trigger(StopReason::OutputError)),
            None => Ok(()),
        }
    };
    loop {
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(Item::Ticket { id, ticket, permit }) => {
                    pending.spawn(async move {
                        let outcome = ticket.await;
                        (id, outcome, permit)
                    });
                }
                Some(Item::Invalid { id, message, permit }) => {
                    write(&invalid_input_line(&id, &message))?;
                    counters.fail(INVALID_INPUT);
                    drop(permit);
                }
                None => open = false,
            },
            Some(joined) = pending.join_next(), if !pending.is_empty() => {
                let (id, outcome, permit) = joined
                    .map_err(|e| CliError::new(format!("internal error: {e}")))?;
                match &outcome {
                    // Handed back unsent by a stop: not written, so --resume sends it.
                    Err(JobError::ShutDown) => RunCounters::bump(&counters.unsent),
                    Ok(_) => {
                        watch.accepted.record(watch.clock.now());
                        write(&result_line(&id, &outcome, SystemTime::now()))?;
                        RunCounters::bump(&counters.succeeded);
                    }
                    Err(e) => {
                        write(&result_line(&id, &outcome, SystemTime::now()))?;
                        counters.fail(e.kind());
                    }
                }
                drop(permit);
            }
            else => return Ok(()),
        }
    }
}
