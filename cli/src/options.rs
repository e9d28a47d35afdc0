//! The command line: a clap derive struct, parsed in `main` and in tests with `Opts::parse_from`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use fabraix_scheduler::mock::ServerModel;
use fabraix_scheduler::{Quota, RefusedCalls, Tier, TransportConfig, FABRAIX_BASE_URL};

/// `fabraix-sched`: send JSONL batches to the Fabraix API as fast as the key's quota allows and
/// never faster.
#[derive(Debug, Parser)]
#[command(name = "fabraix-sched", version, about, long_about = None)]
pub struct Opts {
    /// How much goes to stderr's log.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The log on stderr: warnings and errors by default (a clamped `retry_after`, a paused key, a
/// call journal that cannot be written). Messages name a key by its fingerprint, never the key.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct LogArgs {
    /// More log on stderr: -v info, -vv debug, -vvv trace. Without -v or -q, RUST_LOG decides
    /// when set (e.g. `RUST_LOG=fabraix_scheduler=debug`), else warnings and errors are shown.
    #[arg(long, short, action = ArgAction::Count, global = true, conflicts_with = "quiet", display_order = 900)]
    pub verbose: u8,
    /// Errors only in the log (no warnings).
    #[arg(long, short, global = true, display_order = 901)]
    pub quiet: bool,
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
    /// Run a local proxy that adds the key to every call and schedules it (any language).
    Proxy(crate::proxy::ProxyOpts),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For example: `fabraix-sched completions bash > ~/.local/share/bash-completion/completions/fabraix-sched`,
    /// or `fabraix-sched completions zsh > ~/.zfunc/_fabraix-sched`.
    Completions(CompletionsOpts),
}

/// `completions`: a completion script for a shell, on stdout.
#[derive(Debug, Clone, Args)]
pub struct CompletionsOpts {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The published tiers, as `--tier` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// 60/1m,1000/1h.
    #[value(alias = "dev")]
    Development,
    /// 600/1m,10000/1h.
    #[value(alias = "prod")]
    Production,
}

impl From<TierArg> for Tier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Development => Tier::Development,
            TierArg::Production => Tier::Production,
        }
    }
}

/// `--refused-calls`, as clap takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefusedCallsArg {
    /// Find out with one probe call once counting them is all that holds the key back.
    Learn,
    /// Always count them against the quota.
    Count,
    /// Never count them.
    DoNotCount,
}

impl From<RefusedCallsArg> for RefusedCalls {
    fn from(r: RefusedCallsArg) -> Self {
        match r {
            RefusedCallsArg::Learn => RefusedCalls::Learn,
            RefusedCallsArg::Count => RefusedCalls::Count,
            RefusedCallsArg::DoNotCount => RefusedCalls::DoNotCount,
        }
    }
}

/// `mock --model`, as clap takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Fixed windows aligned to the server's start (up to 2N in a window across a boundary).
    #[value(alias = "fixed-window")]
    Fixed,
    /// An exact sliding log: the strictest.
    #[value(aliases = ["sliding", "log"])]
    SlidingLog,
    /// A token bucket of rate N/W and burst N.
    #[value(aliases = ["bucket", "gcra"])]
    TokenBucket,
    /// A sliding window counter (HAProxy/Cloudflare style).
    #[value(alias = "sliding-window-counter")]
    Counter,
}

impl From<ModelArg> for ServerModel {
    fn from(m: ModelArg) -> Self {
        match m {
            ModelArg::Fixed => ServerModel::FixedWindow,
            ModelArg::SlidingLog => ServerModel::SlidingLog,
            ModelArg::TokenBucket => ServerModel::TokenBucket,
            ModelArg::Counter => ServerModel::SlidingWindowCounter,
        }
    }
}

/// The key's quota: `--quota` overrides `--tier`.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// The key's tier (its published quota).
    #[arg(long, value_name = "TIER", value_enum, default_value_t = TierArg::Development)]
    pub tier: TierArg,
    /// The key's quota as COUNT/WINDOW items, e.g. `20/2s,100/20s` or `60/1m,1000/1h`
    /// (units ms, s, m, h, d; `unlimited` for none). Overrides --tier.
    #[arg(long, value_name = "SPEC", value_parser = parse_quota)]
    pub quota: Option<Quota>,
}

impl QuotaArgs {
    /// The quota these flags name: `--quota`, else `--tier` (Development by default).
    pub fn quota(&self) -> Quota {
        match &self.quota {
            Some(q) => q.clone(),
            None => Tier::from(self.tier).quota(),
        }
    }
}

fn parse_quota(s: &str) -> Result<Quota, String> {
    s.parse::<Quota>().map_err(|e| e.to_string())
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// `send`: the batch sender.
#[derive(Debug, Clone, Args)]
#[command(
    override_usage = "fabraix-sched send --input <FILE|-> --output <FILE> [OPTIONS]\n       fabraix-sched send --input <FILE|-> --dry-run [--output <FILE>] [OPTIONS]",
    after_long_help = SEND_HELP
)]
pub struct SendOpts {
    /// The input: a JSONL file, or `-` for stdin. One call a line:
    /// `{"id": "...", "method": "POST", "path": "/event", "body": {...}, "priority": "interactive|normal|bulk"}`
    /// (`method` defaults to POST, `id` to the line number, `priority` to normal; any other field
    /// is an error). Streamed.
    #[arg(long, short, value_name = "FILE|-")]
    pub input: PathBuf,
    /// The output: one JSON line per input id, appended as calls complete (the lines of the
    /// answers that come together in one write, at most 256).
    /// Must not exist yet (or be empty) unless --resume is given. Required unless --dry-run.
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
    /// The key's source (default FABRAIX_API_KEY or ./.env).
    #[command(flatten)]
    pub key: crate::key_args::KeyArgs,
    /// Calls on the wire at once, at most. With 256 (the most result lines kept before they are
    /// written), the bound on calls sent twice after a `kill -9` and --resume.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Whether a call the server refuses (429) counts against the key's quota (learn: find out
    /// with one probe call once counting them is all that holds the key back).
    #[arg(long, value_name = "RULE", value_enum, default_value_t = RefusedCallsArg::Learn)]
    pub refused_calls: RefusedCallsArg,
    /// Jobs read ahead of the sender, at most (the scheduler's bounded queue; backpressure).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// The longest input line, in bytes (newline not counted); a longer line is an error result
    /// (`invalid_input`), read past without being held in memory. At most 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_line_bytes: u64,
    /// Skip the ids already in the output file and append to it (a truncated last line, left by
    /// a crash, is cut off first).
    #[arg(long)]
    pub resume: bool,
    /// Stop at the first bad input line or repeated id (exit 2) instead of reporting it and going
    /// on.
    #[arg(long)]
    pub strict: bool,
    /// Check everything a real run checks (input, output, base URL), print the plan for this
    /// input (as `plan` does) and send nothing; exit as the real run would for its input (1 for
    /// bad lines or repeated ids, 2 for an input error). The key is not needed.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the summary as JSON to this file (schema `fabraix-sched.summary/1`, below).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Serve the scheduler's metrics for Prometheus at `http://ADDR/metrics` while sending
    /// (`127.0.0.1:9464`, say).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The longest one attempt of a call may take, from sending to the last byte of the answer
    /// (e.g. `30s`, `500ms`, `2m`; at most 1 day). A server silent for 15 s (or for this long, if
    /// shorter) also ends the attempt. A timed-out attempt is retried like any transient failure.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The longest opening a connection may take (e.g. `5s`, `500ms`; at most 1 day).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// Share the key's quota with every process that uses it through the Redis at this URL
    /// (`redis://host:6379`, `rediss://` for TLS): a fleet then stays within the quota together.
    #[arg(
        long,
        value_name = "URL",
        env = "FABRAIX_REDIS_URL",
        hide_env_values = true
    )]
    pub redis: Option<String>,
    /// The CA certificate (PEM) that signed the `rediss://` server's certificate, when it is not
    /// one of the system's trusted roots. Without the flag, `FABRAIX_REDIS_CA` gives it, read
    /// only when Redis is used.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca: Option<PathBuf>,
    /// The `--redis` value names nodes of a Redis Cluster: one or more URLs, separated by commas
    /// (the other nodes are found from them). Without the flag, `FABRAIX_REDIS_CLUSTER=1` says
    /// so, read only when Redis is used.
    #[arg(long, requires = "redis")]
    pub redis_cluster: bool,
}

impl SendOpts {
    /// The transport's timeouts, as `--timeout` and `--connect-timeout` say.
    pub fn transport_config(&self) -> TransportConfig {
        let defaults = TransportConfig::default();
        TransportConfig::default()
            .request_timeout(self.timeout)
            .read_timeout(defaults.read_timeout.min(self.timeout))
            .connect_timeout(self.connect_timeout)
    }
}

/// A timeout: a positive number with the unit `ms`, `s` or `m` (seconds without one), at most a
/// day.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let (number, unit_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 30s, 500ms, 2m)"))?;
    let secs = value * unit_secs;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?}: a timeout must be more than zero"));
    }
    if secs > 86_400.0 {
        return Err(format!("{s:?}: a timeout may be at most 1 day"));
    }
    // In (0, 86,400] seconds: the conversion cannot fail.
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// The default of `send --max-line-bytes`: 1 MiB, far above the API's small JSON bodies.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;

const SEND_HELP: &str = "\
The key is read from FABRAIX_API_KEY (or a FABRAIX_API_KEY= line in ./.env), or from --key-file
or --key-command, never from a flag's value;
it is never printed: messages name its fingerprint (key#xxxxxxxx).

Ids: a line's \"id\" is a non-empty string, or an integer (written as its decimal digits); a
line without one has its line number as its id. Ids are compared as these strings, exactly: 7
and \"7\" are the same id, and so are a line 3 without an id and a line with \"id\": \"3\". Each id
is sent at most once and has exactly one result line: a line whose id an earlier line already
has is not sent and gets no line of its own; it is reported on stderr with both line numbers,
counted in the summary (duplicate_ids) and makes the exit code 1 (--strict: 2, at the first).
--resume does the same: it skips an id only if the output holds its result. (The ids of the
run are held in memory: about 50 bytes plus the id's length each.)

Output lines:
  {\"id\":\"...\",\"status\":200,\"attempts\":1,\"body\":{...},\"finished_at_ms\":1764115200000}
  {\"id\":\"...\",\"error\":{\"kind\":\"rejected\",\"status\":422,\"code\":null,\"message\":\"...\"},\"attempts\":1,\"finished_at_ms\":...}
\"attempts\" counts every time the call was sent (retries included); it is null for an error that
does not record it (a quota-store or internal error). \"finished_at_ms\": when the result came
(Unix time, milliseconds).

Crash safety: result lines are written as calls complete, those of the answers that come
together in one write (at most 256 lines are kept before they are written; a stop, Ctrl-C or an
error writes every kept line first). After a crash or `kill -9`, rerun the same command with
--resume: ids already in the output are skipped, a cut-off last line is removed, and the output
ends with exactly one line per input id. Calls sent twice are at most those in flight at the kill
(--concurrency) and those answered whose lines were kept but not yet written (at most 256): they
were on the wire, or their result line not yet written, when the process died. Each call's time is recorded before it goes
in a journal next to the output (OUTPUT.calls); every run starts with the calls recorded there
that still count in the quota's windows, so it does not send into windows the server still holds
part-used and get refused. (For an output without a journal: each result line's attempts at its
finished_at_ms, and --concurrency calls that may have been on the wire, as sent at the restart.)

Ctrl-C stops gracefully: no new call starts, calls on the wire finish and their results are
written, unsent jobs are not written (so --resume sends them), exit code 130. A second Ctrl-C
exits at once.

The summary (stderr, and with --summary FILE as JSON, schema fabraix-sched.summary/1 in
cli/SCHEMA.md): results by outcome, calls sent, 429s, retries, the ledger's planned minimum, and,
when the server refused calls far earlier than the configured quota allows, what its limits
look like (server_limits_look_like).

Exit codes: 0 all succeeded; 1 some failed or some lines were not sent for a repeated id; 2
usage or input error (also under --strict); 130 interrupted.";

/// `plan`: the plan of a batch of N calls.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = PLAN_HELP)]
pub struct PlanOpts {
    /// How many calls.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: u64,
    /// The key's quota.
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Print the plan as JSON (schema `fabraix-sched.plan/1`, below) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also draw the planned calls over time against each window's limit, as an SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also show the fleet's shared windows of the key (FABRAIX_API_KEY) in the Redis at this URL.
    #[arg(
        long,
        value_name = "URL",
        env = "FABRAIX_REDIS_URL",
        hide_env_values = true
    )]
    pub redis: Option<String>,
    /// The CA certificate (PEM) that signed the `rediss://` server's certificate, when it is not
    /// one of the system's trusted roots. Without the flag, `FABRAIX_REDIS_CA` gives it, read
    /// only when Redis is used.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca: Option<PathBuf>,
    /// The `--redis` value names nodes of a Redis Cluster: one or more URLs, separated by commas
    /// (the other nodes are found from them). Without the flag, `FABRAIX_REDIS_CLUSTER=1` says
    /// so, read only when Redis is used.
    #[arg(long, requires = "redis")]
    pub redis_cluster: bool,
}

const PLAN_HELP: &str = "\
The plan is the ledger's own: the calls are reserved one by one on a fresh ledger of the quota
(with its 100 ms latency guard), as `send` would; the text and the JSON describe those slots.
Calls beyond the first 200,000 are extrapolated at the quota's long-run rate.

JSON (--json), schema fabraix-sched.plan/1 (cli/SCHEMA.md):
  {\"schema\":\"fabraix-sched.plan/1\",\"calls\":1000,\"quota\":\"60/1m,1000/1h\",
   \"limits\":[{\"count\":60,\"window_secs\":60.0},...],\"earlier_calls\":0,
   \"first_at_secs\":0.0,\"last_at_secs\":961.6,\"exact_calls\":1000,
   \"phases\":[{\"paced_by\":null,\"calls\":60,\"first_at_secs\":0.0,\"last_at_secs\":0.0},
              {\"paced_by\":{\"count\":60,\"window_secs\":60.0},\"calls\":940,...}]}
Times are seconds after now. A phase is a run of calls held back by the same window (paced_by;
null: sent at once).

--svg FILE: for each limit, the planned calls in the trailing window over time, against the
limit; plans of more than 200,000 calls are not drawn.";

/// `demo`: the embedded mock server and a realistic agent workload.
#[derive(Debug, Clone, Args)]
pub struct DemoOpts {
    /// How many calls (agent runs, events and checks); more than 1,000 shows the hour window.
    #[arg(long, value_name = "N", default_value_t = 1_200)]
    pub calls: u32,
    /// How much faster than real time quota windows pass (120: the hour window passes in 30 s,
    /// so a batch of more than 1,000 calls shows it and still ends in about 35 s).
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
    /// How the server counts calls.
    #[arg(long, value_name = "MODEL", value_enum, default_value_t = ModelArg::SlidingLog)]
    pub model: ModelArg,
    /// How much faster than real time quota windows pass (1: real time).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_units_and_reach_the_transport() {
        let o = Opts::parse_from([
            "x",
            "send",
            "-i",
            "in",
            "-o",
            "out",
            "--timeout",
            "2.5s",
            "--connect-timeout",
            "300ms",
        ]);
        let Command::Send(send) = o.command else {
            panic!("not send")
        };
        let config = send.transport_config();
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.read_timeout, Duration::from_millis(2500));
        assert_eq!(config.connect_timeout, Duration::from_millis(300));
        let o = Opts::parse_from(["x", "send", "-i", "in", "-o", "out"]);
        let Command::Send(send) = o.command else {
            panic!("not send")
        };
        assert_eq!(send.transport_config(), TransportConfig::default());
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("7"), Ok(Duration::from_secs(7)));
        for bad in ["0s", "-1s", "soon", "inf", "NaN", "2d", "1e300", "90000"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

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
        assert_eq!(RefusedCalls::from(rule(&[])), RefusedCalls::Learn);
        assert_eq!(
            RefusedCalls::from(rule(&["--refused-calls", "count"])),
            RefusedCalls::Count
        );
        assert_eq!(
            RefusedCalls::from(rule(&["--refused-calls", "do-not-count"])),
            RefusedCalls::DoNotCount
        );
    }

    #[test]
    fn value_enums_name_what_the_library_parses() {
        for m in ModelArg::value_variants() {
            let name = m.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<ServerModel>().unwrap(), ServerModel::from(*m));
        }
        for t in TierArg::value_variants() {
            let name = t.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<Tier>().unwrap(), Tier::from(*t));
        }
        for r in RefusedCallsArg::value_variants() {
            let name = r.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(
                name.parse::<RefusedCalls>().unwrap(),
                RefusedCalls::from(*r)
            );
        }
    }

    #[test]
    fn command_definition_is_valid() {
        use clap::CommandFactory;
        Opts::command().debug_assert();
    }
}
