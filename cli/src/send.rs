//! `send`: a JSONL batch to the API, one JSONL result per input id, resumable; and `--dry-run`.

use std::io::{self, BufRead};
use std::path::Path;
use std::time::{Duration, SystemTime};

use fabraix_scheduler::{
    read_call_journal, Clock, Endpoint, KeyConfig, KeyId, LedgerConfig, Quota, Scheduler,
    StoreError, TokioClock,
};

use crate::batch::{self, Batch, Source};
use crate::exit::{CliError, Exit};
use crate::input::InputReader;
use crate::options::SendOpts;
use crate::output::ResultWriter;
use crate::plan;
use crate::progress::ProgressMode;
use crate::stop::StopReason;
use crate::{human, Context};

/// What a `send` did (for tests: the summary and the reader's largest lead over the output).
#[derive(Debug)]
pub struct SendReport {
    /// How the run ended.
    pub exit: Exit,
    /// The summary (also printed, and written with `--summary`).
    pub summary: Option<crate::summary::Summary>,
    /// The most input lines read but not yet finished at any time: at most
    /// `--queue-capacity + --concurrency`, whatever the input's size.
    pub max_read_ahead: u64,
}

/// Runs `send` and returns its exit code.
pub async fn send(opts: &SendOpts, ctx: &Context) -> Result<Exit, CliError> {
    send_report(opts, ctx).await.map(|r| r.exit)
}

/// Runs `send` and returns what it did.
pub async fn send_report(opts: &SendOpts, ctx: &Context) -> Result<SendReport, CliError> {
    let quota = opts.quota.quota();
    if opts.dry_run {
        return dry_run(opts, ctx).await.map(|exit| SendReport {
            exit,
            summary: None,
            max_read_ahead: 0,
        });
    }
    // Everything a dry run checks too, before anything is written.
    let reader = InputReader::open(&opts.input, opts.max_line_bytes).await?;
    let endpoint = endpoint(opts)?;
    if let Some(output) = &opts.output {
        crate::output::check_output(output, opts.resume)?;
    }
    let resolved = crate::key_args::ResolvedKey::read(&opts.key, &ctx.key).await?;
    let api_key = resolved.key.clone();
    let fingerprint = api_key.fingerprint().to_string();
    let key = KeyId::new("default");
    let config = KeyConfig::with_endpoint(key.clone(), api_key, endpoint, quota.clone())
        .map_err(|e| CliError::new(format!("--base-url {}: {e}", opts.base_url)))?
        .max_in_flight(opts.concurrency as usize)
        .queue_capacity(opts.queue_capacity as usize)
        .refused_calls(opts.refused_calls.into());
    let output = opts
        .output
        .as_deref()
        .ok_or_else(|| CliError::new("--output FILE is required (or use --dry-run)"))?;
    let (writer, resumed) = ResultWriter::open(output, opts.resume, quota.longest_window())?;
    let writer = writer.redacting(resolved.key.clone());
    if resumed.truncated_bytes > 0 {
        eprintln!(
            "resume: cut off a truncated last line ({}) of {}",
            human::count_of(resumed.truncated_bytes, "byte", "bytes"),
            output.display()
        );
    }
    // Every call is recorded here before it goes: a resumed run starts the key's windows with the
    // calls that still count, whether the run before ended, was stopped or was killed.
    let journal = journal_path(output);
    let journal_existed = journal.exists();
    if opts.resume {
        let done = resumed.done.len() as u64;
        eprintln!(
            "resume: {} already in {} {} skipped",
            human::count_of(done, "id", "ids"),
            output.display(),
            if done == 1 { "is" } else { "are" }
        );
    }
    // An output written without a journal (by an older version, or by a run that could not write
    // one): its result lines tell when its calls finished, and up to --concurrency may have been
    // on the wire at a kill.
    let from_results = |config: KeyConfig| {
        if !opts.resume {
            return config;
        }
        let most = quota.limits().iter().map(|l| l.count()).max().unwrap_or(0);
        let earlier = resumed.earlier_calls(SystemTime::now(), opts.concurrency, most);
        eprintln!(
            "resume: the key's windows start with {} of the earlier run (its results within the quota's longest window, and up to {} that may have been on the wire when it stopped)",
            human::count_of(earlier.len() as u64, "call", "calls"),
            opts.concurrency
        );
        config.sent_earlier(earlier)
    };
    // Without a journal to read, the result lines stand in for it (and go into the new journal).
    let config = if journal_existed {
        config
    } else {
        from_results(config)
    };
    let progress = ProgressMode::detect(!opts.no_progress);
    let total = match progress {
        ProgressMode::Off => None,
        _ => count_lines(&opts.input).await,
    };
    if let Some(addr) = opts.metrics {
        // Before the key is added: the key takes its metric handles from the recorder then.
        crate::metrics_endpoint::serve_metrics(addr)?;
    }
    let store = crate::store::CliStore::open(
        opts.redis.as_deref(),
        opts.redis_ca.as_deref(),
        opts.redis_cluster,
    )
    .await?;
    let scheduler = Scheduler::builder()
        .store(store)
        .transport_config(opts.transport_config())
        .build()
        .map_err(|e| CliError::new(format!("cannot build the HTTP client: {e}")))?;
    let config = resolved.configure(config, std::sync::Arc::clone(scheduler.clock()));
    let with_journal = config.clone().call_journal(&journal);
    // The calls the key starts with, for the summary's plan: read before the key is added (which
    // writes the calls told of into the journal), on the scheduler's clock.
    let wall = scheduler.clock().wall_now();
    let read = with_journal.calls_that_count(wall);
    let mut earlier = read.as_ref().map_or_else(|_| Vec::new(), Clone::clone);
    match scheduler.add_key(with_journal).await {
        Ok(()) if journal_existed => eprintln!(
            "the key's windows start with the calls recorded in {} that still count",
            journal.display()
        ),
        Ok(()) => {}
        Err(StoreError::Journal { kind, message, .. }) if kind != io::ErrorKind::WouldBlock => {
            // A journal that cannot be opened or written (the output a pipe, a directory in its
            // place, no permission): sent without one; a later --resume counts this run from
            // its result lines. The runs before count from the journal if it can still be read
            // (its calls without a result too), else from the result lines.
            tracing::warn!("no call journal: {message}");
            let config = match (journal_existed, read) {
                (true, Ok(calls)) => {
                    eprintln!(
                        "the key's windows start with the {} recorded in {} that still count",
                        human::count_of(calls.len() as u64, "call", "calls"),
                        journal.display()
                    );
                    config.sent_earlier(calls)
                }
                (true, Err(_)) => from_results(config),
                (false, _) => config,
            };
            earlier = config.calls_that_count(wall).unwrap_or_default();
            scheduler
                .add_key(config)
                .await
                .map_err(|e| CliError::new(format!("cannot add the key: {e}")))?;
        }
        Err(StoreError::Journal { message, .. }) => {
            return Err(CliError::new(format!(
                "{message}: is another fabraix-sched writing {}?",
                output.display()
            )));
        }
        Err(e) => return Err(CliError::new(format!("cannot add the key: {e}"))),
    }
    let _watch = resolved.watch(&scheduler, &key);
    eprintln!(
        "sending {} to {} with key {fingerprint} under {quota} ({} at once at most)",
        if opts.input.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            opts.input.display().to_string()
        },
        opts.base_url,
        opts.concurrency
    );
    let report = batch::run(Batch {
        scheduler,
        key,
        key_fingerprint: fingerprint,
        quota,
        source: Source::Reader(reader),
        writer: Some(writer),
        done: resumed.done,
        strict: opts.strict,
        stop: ctx.stop.clone(),
        read_ahead: opts.queue_capacity as usize + opts.concurrency as usize,
        progress,
        total,
        earlier,
    })
    .await;
    // The journal let go of at the scheduler's shutdown: its lock file goes too.
    remove_unheld_lock(&journal);
    eprint!("{}", report.summary.text());
    if let Some(path) = &opts.summary {
        report.summary.write_json(path)?;
    }
    if let Some(e) = report.error {
        return Err(e);
    }
    let exit = match report.stopped {
        Some(StopReason::Interrupted) => {
            eprintln!(
                "interrupted: calls on the wire finished and were written; rerun with --resume to send the rest"
            );
            Exit::Interrupted
        }
        Some(StopReason::BadInput | StopReason::OutputError) => Exit::Usage,
        None if report.summary.failed > 0 || report.summary.duplicate_ids > 0 => Exit::SomeFailed,
        None => Exit::Success,
    };
    Ok(SendReport {
        exit,
        summary: Some(report.summary),
        max_read_ahead: report.max_read_ahead,
    })
}

/// The base URL as `send` takes it; the plain-http hint only on the plain-http rule's error.
fn endpoint(opts: &SendOpts) -> Result<Endpoint, CliError> {
    Endpoint::new(&opts.base_url, opts.allow_insecure_http).map_err(|e| {
        let plain_http_rule =
            !opts.allow_insecure_http && Endpoint::new(&opts.base_url, true).is_ok();
        let hint = if plain_http_rule {
            " (plain http is allowed to loopback only, or with --allow-insecure-http)"
        } else {
            ""
        };
        CliError::new(format!("--base-url {}: {e}{hint}", opts.base_url))
    })
}

/// Removes `journal`'s lock file (`JOURNAL.lock`) if no one holds it: this run let go of it at
/// the scheduler's shutdown, and an unheld lock file means nothing. One that another process
/// holds is left alone.
fn remove_unheld_lock(journal: &Path) {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock = journal.with_file_name(name);
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock) else {
        return;
    };
    if file.try_lock().is_ok() {
        if let Err(e) = std::fs::remove_file(&lock) {
            tracing::warn!(path = %lock.display(), error = %e, "could not remove the call journal's lock file");
        }
    }
}

/// The call journal of the run writing `output`: the same name with `.calls` added.
pub fn journal_path(output: &Path) -> std::path::PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".calls");
    output.with_file_name(name)
}

/// Counts the non-blank lines of a regular file (for the progress bar); `None` for stdin.
async fn count_lines(path: &Path) -> Option<u64> {
    if path.as_os_str() == "-" {
        return None;
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path).ok()?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return Some(n),
                Ok(_) => n += u64::from(!line.iter().all(u8::is_ascii_whitespace)),
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// `--dry-run`: reads the whole input (streamed), reports bad lines, prints the plan.
async fn dry_run(opts: &SendOpts, ctx: &Context) -> Result<Exit, CliError> {
    let quota = opts.quota.quota();
    // What a real run checks before it sends (the key aside: a dry run does not need it).
    let mut reader = InputReader::open(&opts.input, opts.max_line_bytes).await?;
    endpoint(opts)?;
    if let Some(output) = &opts.output {
        crate::output::check_output(output, opts.resume)?;
    }
    // What a resumed run would skip.
    let resumed = match (&opts.output, opts.resume) {
        (Some(out), true) if out.exists() => {
            Some(crate::output::scan_read_only(out, quota.longest_window())?)
        }
        _ => None,
    };
    // The calls of the runs before that the key would start with (as `send` counts them).
    let earlier = match &opts.output {
        Some(out) => earlier_calls_to_plan(out, &quota, resumed.as_ref(), opts.concurrency),
        None => Vec::new(),
    };
    let done = resumed.map(|r| r.done).unwrap_or_default();
    let (mut jobs, mut bad, mut skipped, mut repeated) = (0u64, 0u64, 0u64, 0u64);
    let mut ids = crate::ids::IdRegistry::new();
    while let Some(line) = tokio::select! {
        biased;
        _ = ctx.stop.wait() => return Ok(Exit::Interrupted),
        l = reader.next() => l?,
    } {
        if let Err(collision) = ids.claim(&line.id, line.line) {
            if opts.strict {
                return Err(CliError::new(collision.to_string()));
            }
            repeated += 1;
            if repeated <= 20 {
                eprintln!("repeated id: {collision}");
            }
            continue;
        }
        if done.contains(&line.id) {
            skipped += 1;
            continue;
        }
        match line.job {
            Ok(_) => jobs += 1,
            Err(message) if opts.strict => return Err(CliError::new(message)),
            Err(message) => {
                bad += 1;
                if bad <= 20 {
                    eprintln!("bad input: {message}");
                }
            }
        }
    }
    let clock = TokioClock::new();
    let (now, wall) = (clock.now(), clock.wall_now());
    let ages: Vec<Duration> = earlier
        .iter()
        .map(|&t| wall.duration_since(t).unwrap_or(Duration::ZERO))
        .collect();
    print!(
        "{}",
        plan::PlanSummary::build(&quota, now, jobs, &ages)?.text()
    );
    if skipped > 0 {
        println!(
            "{} skipped (already in the output).",
            human::count_of(skipped, "line", "lines")
        );
    }
    if bad > 0 {
        println!(
            "{} would be written as error results (a real run exits 1; --strict: stops at the first).",
            human::count_of(bad, "bad line", "bad lines")
        );
    }
    if repeated > 0 {
        println!(
            "{} would not be sent: {} an id an earlier line has (a real run exits 1).",
            human::count_of(repeated, "line", "lines"),
            if repeated == 1 {
                "it repeats"
            } else {
                "each repeats"
            }
        );
    }
    println!("Dry run: nothing was sent.");
    // As the real run would end: bad lines and repeated ids make it exit 1.
    Ok(if bad > 0 || repeated > 0 {
        Exit::SomeFailed
    } else {
        Exit::Success
    })
}

/// The calls of the runs before that a `send` to `output` would start the key's windows with,
/// read without changing anything: those in its call journal (read by every run, resumed or not),
/// or, for a resumed run (`resumed`) without one that can be read, its result lines and the
/// `--concurrency` allowance, as `send --resume` counts them.
fn earlier_calls_to_plan(
    output: &Path,
    quota: &Quota,
    resumed: Option<&crate::output::Resumed>,
    concurrency: u32,
) -> Vec<SystemTime> {
    let journal = journal_path(output);
    let now = TokioClock::new().wall_now();
    if journal.exists() {
        let counted_for = LedgerConfig::default().counted_for(quota);
        match read_call_journal(&journal, counted_for, now) {
            Ok(calls) => return calls,
            Err(e) => tracing::warn!("cannot read {}: {e}", journal.display()),
        }
    }
    let most = quota.limits().iter().map(|l| l.count()).max().unwrap_or(0);
    resumed.map_or_else(Vec::new, |r| r.earlier_calls(now, concurrency, most))
}
