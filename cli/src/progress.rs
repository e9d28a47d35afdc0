//! Live progress: an indicatif bar on a terminal, a plain line every few seconds otherwise. The
//! ETA is the ledger's plan for the calls still to go (not a moving average of the past rate).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use fabraix_scheduler::{Instant, KeyId, LedgerStore, Scheduler};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::counters::RunCounters;
use crate::human;

/// How often the bar is redrawn on a terminal.
const TTY_EVERY: Duration = Duration::from_millis(250);
/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Calls planned one by one for the ETA; the rest at the quota's long-run rate.
const ETA_EXACT: u64 = 20_000;

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// No progress (`--no-progress`).
    Off,
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A plain line every few seconds (stderr is not a terminal).
    Plain,
}

impl ProgressMode {
    /// `Off` if disabled, else `Bar` on a terminal and `Plain` otherwise.
    pub fn detect(enabled: bool) -> Self {
        match (enabled, std::io::stderr().is_terminal()) {
            (false, _) => ProgressMode::Off,
            (true, true) => ProgressMode::Bar,
            (true, false) => ProgressMode::Plain,
        }
    }
}

/// What the progress display watches.
#[derive(Clone)]
pub struct Watched {
    /// The scheduler sending the batch.
    pub scheduler: Scheduler<crate::store::CliStore>,
    /// The key the batch goes out on.
    pub key: KeyId,
    /// The run's counters.
    pub counters: Arc<RunCounters>,
    /// Lines in the input, if known (a file; not stdin).
    pub total: Option<u64>,
    /// The quota's long-run rate, calls per second.
    pub rate: f64,
}

/// A running progress display; [`finish`](Progress::finish) draws the last state and stops it.
#[derive(Debug)]
pub struct Progress {
    done: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the display (nothing for [`ProgressMode::Off`]).
    pub fn start(mode: ProgressMode, watched: Watched) -> Self {
        if mode == ProgressMode::Off {
            return Self {
                done: None,
                task: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run(mode, watched, rx));
        Self {
            done: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the display after one last update.
    pub async fn finish(mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn run(mode: ProgressMode, w: Watched, mut done: oneshot::Receiver<()>) {
    let clock = Arc::clone(w.scheduler.clock());
    let start = clock.now();
    let every = if mode == ProgressMode::Bar {
        TTY_EVERY
    } else {
        PLAIN_EVERY
    };
    let bar = (mode == ProgressMode::Bar).then(|| {
        let bar = match w.total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if w.total.is_some() {
            "{bar:32.cyan/blue} {pos}/{len} {msg}"
        } else {
            "{spinner} {pos} done {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
        }
        bar
    });
    crate::logging::write_above(bar.clone());
    let mut next = start + every;
    loop {
        let finished = tokio::select! {
            _ = &mut done => true,
            () = clock.sleep_until(next) => false,
        };
        let now = clock.now();
        let line = status(&w, start, now).await;
        match &bar {
            Some(bar) => {
                bar.set_position(w.counters.finished());
                bar.set_message(line.message);
            }
            None if !finished => eprintln!("progress: {}", line.plain),
            None => {}
        }
        if finished {
            crate::logging::write_above(None);
            if let Some(bar) = bar {
                bar.finish();
                // The bar leaves the cursor at the end of its line: what follows starts below it.
                if !bar.is_hidden() {
                    eprintln!();
                }
            }
            return;
        }
        next = now + every;
    }
}

struct Status {
    message: String,
    plain: String,
}

async fn status(w: &Watched, start: Instant, now: Instant) -> Status {
    let stats = w.scheduler.stats(&w.key).unwrap_or_default();
    let done = w.counters.finished();
    let elapsed = now.saturating_duration_since(start).as_secs_f64().max(1e-3);
    let rate = (RunCounters::get(&w.counters.succeeded) + RunCounters::get(&w.counters.failed))
        as f64
        / elapsed;
    let eta = match eta(w, stats.in_flight).await {
        Some(at) if at > now => format!("ETA {} (ledger plan)", human::duration(at - now)),
        Some(_) => "ETA now".to_string(),
        None => "ETA -".to_string(),
    };
    let message = format!(
        "{rate:.1}/s · {} × 429 · {eta}",
        human::count(stats.rate_limited)
    );
    let total = w
        .total
        .map_or_else(String::new, |t| format!("/{}", human::count(t)));
    Status {
        plain: format!(
            "{}{total} done, {rate:.1}/s, {} × 429, {eta}",
            human::count(done),
            human::count(stats.rate_limited)
        ),
        message,
    }
}

/// When the last call still to go could go, from the ledger: with a known total, every line not
/// finished and not on the wire; for stdin, what is queued now.
async fn eta(w: &Watched, in_flight: u64) -> Option<Instant> {
    let Some(total) = w.total else {
        return w.scheduler.drain_eta(&w.key).await.ok().flatten();
    };
    let left = total
        .saturating_sub(w.counters.finished())
        .saturating_sub(in_flight);
    if left == 0 {
        return None;
    }
    let now = w.scheduler.clock().now();
    let exact = left.min(ETA_EXACT);
    let mut last = match w.scheduler.store().snapshot(&w.key) {
        Some(mut ledger) => {
            let mut last = now;
            for _ in 0..exact {
                last = ledger.reserve(last);
            }
            last
        }
        // A ledger in Redis: the fleet's shared windows plan the calls left (the store follows
        // one read of them as a plan, so a tick costs no replay).
        None => {
            let k = usize::try_from(exact).ok()?;
            w.scheduler.store().nth_slot(&w.key, now, k).await.ok()?
        }
    };
    let rest = left.saturating_sub(ETA_EXACT);
    if rest > 0 && w.rate.is_finite() && w.rate > 0.0 {
        // Checked: an absurd backlog under a slow quota has no ETA rather than a panic.
        let extra = Duration::try_from_secs_f64(rest as f64 / w.rate).ok()?;
        last = last.checked_add(extra)?;
    }
    Some(last)
}
