//! The command line: a clap derive struct, parsed in `main` and in tests with `Opts::parse_from`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fabraix_scheduler::mock::ServerModel;
use fabraix_scheduler::{Quota, RefusedCalls, Tier, FABRAIX_BASE_URL};

/// `fabraix-sched`: send JSONL batches to the Fabraix API as fast as the key's quota allows and
/// never faster.
#[derive(Debug, Parser)]
#[command(name = "fabraix-sched", version, about, long_about = None)]
pub struct Opts {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a JSONL batch (one call a line) and write one JSONL result per input id.
    Send(SendOpts),
    /// Print when a batch of N calls would finish and how the quota windows shape it; sends nothing.
    Plan(PlanOpts),
    /// Run a realistic agent workload against the embedded mock server (time-scaled, < 1 min).
    Demo(DemoOpts),
    /// Run the Fabraix-compatible mock server on loopback until Ctrl-C.
    Mock(MockOpts),
}

/// The key's quota: `--quota` overrides `--tier`; without either, Development.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// The key's tier: development (60/1m,1000/1h) or production (600/1m,10000/1h).
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    pub tier: Option<Tier>,
    /// The key's quota as COUNT/WINDOW items, e.g. `20/2s,100/20s` or `60/1m,1000/1h`
    /// (units ms, s, m, h, d; `unlimited` for none). Overrides --tier.
    #[arg(long, value_name = "SPEC", value_parser = parse_quota)]
    pub quota: Option<Quota>,
}

impl QuotaArgs {
    /// The quota these flags name: `--quota`, else `--tier`, else Development.
    pub fn quota(&self) -> Quota {
        match (&self.quota, self.tier) {
            (Some(q), _) => q.clone(),
            (None, Some(t)) => t.quota(),
            (None, None) => Quota::development(),
        }
    }
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse::<Tier>().map_err(|e| e.to_string())
}

fn parse_quota(s: &str) -> Result<Quota, String> {
    s.parse::<Quota>().map_err(|e| e.to_string())
}

fn parse_refused_calls(s: &str) -> Result<RefusedCalls, String> {
    s.parse::<RefusedCalls>()
}

fn parse_model(s: &str) -> Result<ServerModel, String> {
    s.parse::<ServerModel>().map_err(|e| e.to_string())
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// `send`: the batch sender.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = SEND_HELP)]
pub struct SendOpts {
    /// The input: a JSONL file, or `-` for stdin. One call a line:
    /// `{"id": "...", "method": "POST", "path": "/event", "body": {...}, "priority": "interactive|normal|bulk"}`
    /// (`method` defaults to POST, `id` to the line number, `priority` to normal). Streamed.
    #[arg(long, short, value_name = "FILE|-")]
    pub input: PathBuf,
    /// The output: one JSON line per input id, appended and flushed as each call completes.
    /// Must not exist yet (or be empty) unless --resume is given.
    #[arg(long, short, value_name = "FILE", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// The API's base URL.
    #[arg(long, value_name = "URL", default_value = FABRAIX_BASE_URL)]
    pub base_url: String,
    /// Allow a plain `http://` base URL to a host other than loopback (the key then travels
    /// unencrypted).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// The key's quota.
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Calls on the wire at once, at most. Also the bound on calls sent twice after a `kill -9`.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Whether a call the server refuses (429) counts against the key's quota: learn (find out with
    /// one probe call once counting them is all that holds the key back), count, or do-not-count.
    #[arg(long, value_name = "RULE", default_value = "learn", value_parser = parse_refused_calls)]
    pub refused_calls: RefusedCalls,
    /// Jobs read ahead of the sender, at most (the scheduler's bounded queue; backpressure).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// Skip the ids already in the output file and append to it (a truncated last line, left by
    /// a crash, is cut off first).
    #[arg(long)]
    pub resume: bool,
    /// Stop at the first bad input line (exit 2) instead of writing it as an error result.
    #[arg(long)]
    pub strict: bool,
    /// Print the plan for this input (as `plan` does) and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Serve the scheduler's metrics for Prometheus at `http://ADDR/metrics` while sending
    /// (`127.0.0.1:9464`, say).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

const SEND_HELP: &str = "\
The key is read from FABRAIX_API_KEY (or a FABRAIX_API_KEY= line in ./.env), never from a flag;
it is never printed: messages name its fingerprint (key#xxxxxxxx).

Output lines:
  {\"id\":\"...\",\"status\":200,\"attempts\":1,\"body\":{...},\"finished_at_ms\":1764115200000}
  {\"id\":\"...\",\"error\":{\"kind\":\"rejected\",\"status\":422,\"code\":null,\"message\":\"...\"},\"attempts\":1,\"finished_at_ms\":...}
\"attempts\" counts every time the call was sent (retries included); it is null for an error that
does not record it (a quota-store or internal error). \"finished_at_ms\": when the result came
(Unix time, milliseconds).

Crash safety: each result line is written and flushed as its call completes. After a crash or
`kill -9`, rerun the same command with --resume: ids already in the output are skipped, a cut-off
last line is removed, and the output ends with exactly one line per input id. Calls sent twice are
at most those in flight at the kill (--concurrency, default 16): they were on the wire (or their
result line not yet written) when the process died. Each call's time is recorded before it goes
in a journal next to the output (OUTPUT.calls); every run starts with the calls recorded there
that still count in the quota's windows, so it does not send into windows the server still holds
part-used and get refused. (For an output without a journal: each result line's attempts at its
finished_at_ms, and --concurrency calls that may have been on the wire, as sent at the restart.)

Ctrl-C stops gracefully: no new call starts, calls on the wire finish and their results are
written, unsent jobs are not written (so --resume sends them), exit code 130. A second Ctrl-C
exits at once.

Exit codes: 0 all succeeded; 1 some failed; 2 usage or input error; 130 interrupted.";

/// `plan`: the plan of a batch of N calls.
#[derive(Debug, Clone, Args)]
pub struct PlanOpts {
    /// How many calls.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: u64,
    /// The key's quota.
    #[command(flatten)]
    pub quota: QuotaArgs,
}

/// `demo`: the embedded mock server and a realistic agent workload.
#[derive(Debug, Clone, Args)]
pub struct DemoOpts {
    /// How many calls (agent runs, events and checks); more than 1,000 shows the hour window.
    #[arg(long, value_name = "N", default_value_t = 1_200)]
    pub calls: u32,
    /// How much faster than real time quota windows pass (default 120: the hour window passes
    /// in 30 s, so a batch of more than 1,000 calls shows it and still ends in about 35 s).
    #[arg(long, value_name = "X", default_value_t = 120.0, value_parser = parse_scale)]
    pub time_scale: f64,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
}

/// `mock`: the mock server, for testing an integration locally.
#[derive(Debug, Clone, Args)]
pub struct MockOpts {
    /// The port on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "P", default_value_t = 8787)]
    pub port: u16,
    /// How the server counts calls: fixed, sliding-log, token-bucket or counter.
    #[arg(long, value_name = "MODEL", default_value = "sliding-log", value_parser = parse_model)]
    pub model: ServerModel,
    /// How much faster than real time quota windows pass (1: real time).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_overrides_tier_and_defaults_to_development() {
        let o = Opts::parse_from(["x", "plan", "--count", "5", "--tier", "production"]);
        let Command::Plan(p) = o.command else {
            panic!("not plan")
        };
        assert_eq!(p.quota.quota(), Quota::production());
        let o = Opts::parse_from([
            "x",
            "plan",
            "-n",
            "5",
            "--tier",
            "production",
            "--quota",
            "2/1s",
        ]);
        let Command::Plan(p) = o.command else {
            panic!("not plan")
        };
        assert_eq!(p.quota.quota().to_string(), "2/1s");
        let o = Opts::parse_from(["x", "plan", "-n", "5"]);
        let Command::Plan(p) = o.command else {
            panic!("not plan")
        };
        assert_eq!(p.quota.quota(), Quota::development());
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let e = Opts::try_parse_from(["x", "plan", "-n", "5", "--quota", "5/0s"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--quota"), "{e}");
        let e = Opts::try_parse_from(["x", "send", "--input", "a"]).unwrap_err();
        assert!(e.to_string().contains("--output"), "{e}");
        assert!(Opts::try_parse_from(["x", "send", "--input", "a", "--dry-run"]).is_ok());
        let e = Opts::try_parse_from(["x", "mock", "--model", "leaky"]).unwrap_err();
        assert!(e.to_string().contains("--model"), "{e}");
        assert!(Opts::try_parse_from(["x", "demo", "--time-scale", "0"]).is_err());
        let e = Opts::try_parse_from(["x", "send", "-i", "a", "--dry-run", "--refused-calls", "x"])
            .unwrap_err();
        assert!(e.to_string().contains("--refused-calls"), "{e}");
    }

    #[test]
    fn refused_calls_are_learned_unless_told() {
        let rule = |extra: &[&str]| {
            let args = ["x", "send", "-i", "a", "--dry-run"].iter().chain(extra);
            let Command::Send(s) = Opts::parse_from(args).command else {
                panic!("not send")
            };
            s.refused_calls
        };
        assert_eq!(rule(&[]), RefusedCalls::Learn);
        assert_eq!(rule(&["--refused-calls", "count"]), RefusedCalls::Count);
        assert_eq!(
            rule(&["--refused-calls", "do-not-count"]),
            RefusedCalls::DoNotCount
        );
    }

    #[test]
    fn command_definition_is_valid() {
        use clap::CommandFactory;
        Opts::command().debug_assert();
    }
}
