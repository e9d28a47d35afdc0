//! `demo`: the embedded mock server with Development quotas, time-scaled, a realistic agent
//! workload sent through the same engine as `send`, live progress, the summary, and the
//! server-side proof that no window ever held more calls than the quota.

use fabraix_scheduler::mock::{max_in_any_window, MockServer, TEST_DEV_KEY};
use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, Scheduler};

use crate::batch::{self, Batch, Source};
use crate::exit::{CliError, Exit};
use crate::human;
use crate::options::DemoOpts;
use crate::plan;
use crate::progress::ProgressMode;
use crate::stop::{Stop, StopReason};
use crate::workload::agent_workload;

/// The label the mock server gives [`TEST_DEV_KEY`].
const DEV_LABEL: &str = "test-dev";

/// What the demo showed.
#[derive(Debug)]
pub struct DemoReport {
    /// How it ended: 0 if every call succeeded and the server's record keeps the quota.
    pub exit: Exit,
    /// The summary of the client side.
    pub summary: crate::summary::Summary,
    /// Calls the server accepted.
    pub accepted: u64,
    /// 429s the server sent.
    pub refused: u64,
    /// For each limit of the (scaled) quota: its count, its window, and the most calls the server
    /// accepted in any window of that length.
    pub windows: Vec<(u32, std::time::Duration, usize)>,
}

/// Runs the demo and returns its exit code.
pub async fn demo(opts: &DemoOpts, stop: Stop) -> Result<Exit, CliError> {
    demo_report(opts, stop).await.map(|r| r.exit)
}

/// Runs the demo and returns what it showed.
pub async fn demo_report(opts: &DemoOpts, stop: Stop) -> Result<DemoReport, CliError> {
    let scale = opts.time_scale;
    let server = MockServer::builder()
        .with_test_keys()
        .time_scale(scale)
        .start()
        .await
        .map_err(|e| CliError::new(format!("cannot start the mock server on loopback: {e}")))?;
    let quota = Quota::development().time_scaled(scale);
    let api_key = ApiKey::new(TEST_DEV_KEY).map_err(|e| CliError::new(e.to_string()))?;
    let fingerprint = api_key.fingerprint().to_string();
    let key = KeyId::new("demo");
    let config = KeyConfig::new(key.clone(), api_key, &server.base_url(), quota.clone())
        .map_err(|e| CliError::new(e.to_string()))?
        .max_in_flight(8)
        .queue_capacity(64);
    let scheduler = Scheduler::builder()
        .store(crate::store::CliStore::Memory(Default::default()))
        .build()
        .map_err(|e| CliError::new(format!("cannot build the HTTP client: {e}")))?;
    scheduler
        .add_key(config)
        .await
        .map_err(|e| CliError::new(e.to_string()))?;
    let now = scheduler.clock().now();
    eprintln!(
        "fabraix-sched demo: a mock Fabraix API at {} enforcing the Development quota (60/1m,1000/1h), \
         time-scaled ×{scale}: {quota}.",
        server.base_url()
    );
    eprintln!(
        "Sending {} calls of a fleet of agents: register-agent-run, telemetry events (bulk) and \
         action checks (interactive, they overtake queued events).",
        human::count(u64::from(opts.calls))
    );
    let calls = u64::from(opts.calls);
    eprint!(
        "Plan (scaled): {}",
        plan::PlanSummary::build(&quota, now, calls, &[])?.text()
    );
    eprint!(
        "At the real quota the same batch: {}",
        plan::PlanSummary::build(&Quota::development(), now, calls, &[])?
            .text()
            .lines()
            .next()
            .unwrap_or_default()
    );
    eprintln!();
    let report = batch::run(Batch {
        scheduler,
        key,
        key_fingerprint: fingerprint,
        quota: quota.clone(),
        source: Source::Lines(Box::new(agent_workload(opts.calls))),
        writer: None,
        done: Default::default(),
        strict: false,
        stop,
        read_ahead: 72,
        progress: ProgressMode::detect(!opts.no_progress),
        total: Some(u64::from(opts.calls)),
        earlier: Vec::new(),
    })
    .await;
    if let Some(e) = report.error {
        server.shutdown().await;
        return Err(e);
    }
    eprint!("{}", report.summary.text());
    let stats = server.key_stats(DEV_LABEL).unwrap_or_default();
    let arrivals = server.arrivals(DEV_LABEL);
    let verified = server.verify();
    let mut windows = Vec::new();
    eprintln!(
        "Server-side proof (the mock's own record of {} accepted calls, {} refused with 429):",
        human::count(stats.accepted),
        human::count(stats.refused)
    );
    for (scaled, real) in stats
        .quota
        .limits()
        .iter()
        .zip(Quota::development().limits())
    {
        let most = max_in_any_window(&arrivals, scaled.window());
        windows.push((scaled.count(), scaled.window(), most));
        eprintln!(
            "  {} window ({} here): at most {} calls accepted in any window; quota {} {}",
            human::window(real.window()),
            human::duration(scaled.window()),
            human::count(most as u64),
            human::count(u64::from(scaled.count())),
            if most <= scaled.count() as usize {
                "✓"
            } else {
                "✗"
            }
        );
    }
    match &verified {
        Ok(()) => {
            eprintln!("  verify(): no sliding window of any limit held more than its count ✓")
        }
        Err(v) => eprintln!("  verify() FAILED: {v}"),
    }
    server.shutdown().await;
    let exit = match report.stopped {
        Some(StopReason::Interrupted) => Exit::Interrupted,
        Some(_) => Exit::Usage,
        None if report.summary.failed > 0 || verified.is_err() => Exit::SomeFailed,
        None => Exit::Success,
    };
    Ok(DemoReport {
        exit,
        summary: report.summary,
        accepted: stats.accepted,
        refused: stats.refused,
        windows,
    })
}
