//! The engine shared by `send` and `demo`: read jobs, submit them with backpressure, write each
//! result as it completes, and stop gracefully.
//!
//! ```text
//! reader ──(permit)──▶ scheduler.submit (bounded queue, Overflow::Wait) ──ticket──▶ collector
//!                                                          results, a group at a time ──▶ writer
//! ```
//! The collector awaits every ticket itself and writes the results ready together in one group
//! (see [`ResultWriter`] for what a kill can lose).
//! A line holds one of `read_ahead` permits from the moment it is read until its result is
//! written (or it is skipped, or left unsent by a stop): the reader is never more than
//! `read_ahead` lines ahead of the output, whatever the input's size.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fabraix_scheduler::{
    JobError, KeyId, Outcome, Quota, Scheduler, ShutdownMode, SubmitError, Ticket,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::counters::RunCounters;
use crate::exit::CliError;
use crate::ids::IdRegistry;
use crate::input::{InputLine, InputReader};
use crate::output::{invalid_input_line, ResultWriter, INVALID_INPUT};
use crate::plan::planned_duration_after;
use crate::progress::{Progress, ProgressMode, Watched};
use crate::stop::{Stop, StopReason};
use crate::store::CliStore;
use crate::summary::Summary;

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
    let collect_task = tokio::spawn(collect_into(
        rx,
        writer,
        Arc::clone(&counters),
        stop.clone(),
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
        server_limits_look_like: stats.server_limits.as_ref().map(ToString::to_string),
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

/// Answers handled and written as one group at most, before the output is flushed.
const GROUP: usize = crate::output::GROUP_LINES;

async fn collect_into(
    mut rx: mpsc::Receiver<Item>,
    mut writer: Option<ResultWriter>,
    counters: Arc<RunCounters>,
    stop: Stop,
) -> Result<(), CliError> {
    // The tickets are awaited here, in this task: an answer costs no task of its own.
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    let result = loop {
        let step = tokio::select! {
            item = rx.recv(), if open => match item {
                Some(Item::Ticket { id, ticket, permit }) => {
                    pending.push(async move { (id, ticket.await, permit) });
                    Ok(())
                }
                Some(Item::Invalid { id, message, permit }) => {
                    let written = write(&mut writer, |w| w.write(&invalid_input_line(&id, &message)));
                    counters.fail(INVALID_INPUT);
                    drop(permit);
                    written
                }
                None => {
                    open = false;
                    Ok(())
                }
            },
            Some(answer) = pending.next(), if !pending.is_empty() => {
                // This answer and those ready with it, as one group.
                let mut answer = Some(answer);
                let mut written = Ok(());
                for _ in 0..GROUP {
                    let Some((id, outcome, permit)) = answer.take() else { break };
                    written = written.and(finish(&mut writer, &counters, &id, &outcome));
                    drop(permit);
                    answer = pending.next().now_or_never().flatten();
                }
                if let Some((id, outcome, permit)) = answer {
                    written = written.and(finish(&mut writer, &counters, &id, &outcome));
                    drop(permit);
                }
                written
            }
            else => break Ok(()),
        };
        if let Err(e) = step {
            break Err(e);
        }
        // Written once nothing more is ready: a group of lines in one write.
        let more_ready = open && !rx.is_empty();
        if !more_ready || writer.as_ref().is_some_and(|w| w.kept() >= GROUP) {
            if let Err(e) = write(&mut writer, ResultWriter::flush) {
                break Err(e);
            }
        }
    };
    // Whatever ends the collection, the lines kept are written (a clean stop loses none).
    let flushed = write(&mut writer, ResultWriter::flush);
    result
        .and(flushed)
        .inspect_err(|_| stop.trigger(StopReason::OutputError))
}

/// `f` on the writer, if there is one.
fn write(
    writer: &mut Option<ResultWriter>,
    f: impl FnOnce(&mut ResultWriter) -> Result<(), CliError>,
) -> Result<(), CliError> {
    writer.as_mut().map_or(Ok(()), f)
}

/// Counts an answered job and keeps its result line (a job handed back unsent by a stop is
/// neither written nor counted done, so `--resume` sends it).
fn finish(
    writer: &mut Option<ResultWriter>,
    counters: &RunCounters,
    id: &str,
    outcome: &Outcome,
) -> Result<(), CliError> {
    match outcome {
        Err(JobError::ShutDown) => {
            RunCounters::bump(&counters.unsent);
            Ok(())
        }
        Ok(_) => {
            RunCounters::bump(&counters.succeeded);
            write(writer, |w| w.write_result(id, outcome, SystemTime::now()))
        }
        Err(e) => {
            counters.fail(e.kind());
            write(writer, |w| w.write_result(id, outcome, SystemTime::now()))
        }
    }
}
