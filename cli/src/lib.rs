//! `fabraix-sched`: the command line of [`fabraix_scheduler`].
//!
//! - `send`: a JSONL batch in, one JSONL result per input id out, written as each call completes;
//!   resumable after a crash (`--resume`); Ctrl-C stops gracefully.
//! - `plan`: when a batch of N calls would finish under a quota, and which window shapes it.
//! - `demo`: a realistic agent workload against the embedded, time-scaled mock server, with the
//!   server's proof that no window ever held more calls than the quota.
//! - `mock`: the mock server, for testing an integration locally.
//! - `proxy`: a local sidecar that adds the key to every call of any program and schedules it.
//! - `completions`: a shell completion script.
//!
//! The JSON it writes (`plan --json`, `send --summary`) follows the schemas in `cli/SCHEMA.md`.
//!
//! `main` parses [`Opts`] and calls [`run`]; tests call [`run_with`] in-process with a key and a
//! [`Stop`] handle of their own.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod batch;
mod counters;
pub mod demo;
pub mod exit;
pub mod human;
pub mod ids;
pub mod input;
pub mod key_args;
pub mod logging;
pub mod metrics_endpoint;
pub mod mock_cmd;
pub mod options;
pub mod output;
pub mod plan;
pub mod progress;
pub mod proxy;
pub mod send;
pub mod stop;
pub mod store;
pub mod summary;
pub mod svg;
pub mod workload;

use fabraix_scheduler::{ApiKey, Clock, TokioClock};

pub use exit::{CliError, Exit};
pub use options::{Command, Opts};
pub use stop::{Stop, StopReason};

/// Where `send` gets the API key.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `FABRAIX_API_KEY`, else a `FABRAIX_API_KEY=` line of `./.env` (the binary).
    Env,
    /// This key (tests, embedding).
    Key(ApiKey),
}

impl KeySource {
    /// The key. The error never contains the key.
    pub fn resolve(&self) -> Result<ApiKey, CliError> {
        match self {
            KeySource::Env => ApiKey::from_env().map_err(|e| CliError::new(e.to_string())),
            KeySource::Key(k) => Ok(k.clone()),
        }
    }
}

/// What a run needs from outside its options.
#[derive(Clone, Debug)]
pub struct Context {
    /// Where the key comes from.
    pub key: KeySource,
    /// Triggered on Ctrl-C (or by a test) to stop gracefully.
    pub stop: Stop,
}

impl Context {
    /// The binary's context: the key from the environment, a fresh stop handle.
    pub fn from_env() -> Self {
        Self {
            key: KeySource::Env,
            stop: Stop::new(),
        }
    }
}

/// Runs the command with the key from the environment; Ctrl-C stops gracefully (a second Ctrl-C
/// exits at once with 130). Prints an error, if any, to stderr and returns the exit code.
pub async fn run(opts: Opts) -> Exit {
    let ctx = Context::from_env();
    let stop = ctx.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nCtrl-C: stopping (calls on the wire finish and are written; Ctrl-C again to quit now)");
            stop.trigger(StopReason::Interrupted);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(Exit::Interrupted.code()));
            }
        }
    });
    match run_with(opts, ctx).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit()
        }
    }
}

/// Runs the command with this context.
pub async fn run_with(opts: Opts, ctx: Context) -> Result<Exit, CliError> {
    match opts.command {
        Command::Send(o) => send::send(&o, &ctx).await,
        Command::Plan(o) => plan_cmd(&o, &ctx).await,
        Command::Demo(o) => demo::demo(&o, ctx.stop).await,
        Command::Mock(o) => mock_cmd::mock(&o, ctx.stop, &mut std::io::stdout()).await,
        Command::Proxy(o) => proxy::proxy(&o, &ctx, &mut std::io::stdout()).await,
        Command::Completions(o) => {
            use clap::CommandFactory;
            let mut cmd = Opts::command();
            clap_complete::generate(o.shell, &mut cmd, "fabraix-sched", &mut std::io::stdout());
            Ok(Exit::Success)
        }
    }
}

/// `plan`: the ledger's plan as text or JSON, and the SVG if asked.
async fn plan_cmd(o: &options::PlanOpts, ctx: &Context) -> Result<Exit, CliError> {
    let quota = o.quota.quota();
    let now = TokioClock::new().now();
    let summary = plan::PlanSummary::build(&quota, now, o.count, &[])?;
    if let Some(path) = &o.svg {
        svg::write_plan(path, &quota, now, o.count)?;
    }
    if o.json {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| CliError::new(format!("cannot encode the plan: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", summary.text());
    }
    if let Some(url) = &o.redis {
        let api_key = ctx.key.resolve()?;
        let shared = store::describe_shared(
            store::RedisAt::new(url, o.redis_ca.as_deref(), o.redis_cluster),
            &api_key,
            &quota,
            o.count,
        )
        .await?;
        // Kept out of the JSON on stdout.
        if o.json {
            eprint!("{shared}");
        } else {
            print!("{shared}");
        }
    }
    Ok(Exit::Success)
}
