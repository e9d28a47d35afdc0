//! `proxy`'s flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fabraix_scheduler::FABRAIX_BASE_URL;

use crate::key_args::{parse_duration, KeyArgs};
use crate::options::{QuotaArgs, RefusedCallsArg};

/// `proxy`: a local sidecar that adds the key to every call and schedules it.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = PROXY_HELP)]
pub struct ProxyOpts {
    /// The address to listen on (`127.0.0.1:8788`; port 0 picks a free one). Loopback only
    /// unless --allow-non-loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8788")]
    pub listen: String,
    /// Listen on a non-loopback address. Requires a client token (FABRAIX_PROXY_TOKEN or
    /// --token-file): anyone who reaches the proxy could otherwise spend the key.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// A file holding the token clients must send as `Authorization: Bearer TOKEN` (instead of
    /// the FABRAIX_PROXY_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The API's base URL: `/v1/<path>` is forwarded to `URL/<path>`.
    #[arg(long, value_name = "URL", default_value = FABRAIX_BASE_URL)]
    pub base_url: String,
    /// Allow a plain `http://` base URL to a host other than loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// The key's quota.
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// The key's source.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Calls on the wire to the API at once, at most.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Whether a call the API refuses (429) counts against the quota (learn: find out with one
    /// probe call once counting them is all that holds the key back).
    #[arg(long, value_name = "RULE", value_enum, default_value_t = RefusedCallsArg::Learn)]
    pub refused_calls: RefusedCallsArg,
    /// Requests waiting for their slot, at most; more are answered 429 at once, with a
    /// Retry-After from the quota's plan.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// Client connections open at once, at most (more wait to be accepted).
    #[arg(long, value_name = "N", default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The largest request body taken, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// The largest API response passed back, in bytes (502 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub max_response_bytes: usize,
    /// Time a client has to send a request's head and body (408 beyond).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub client_timeout: Duration,
    /// Time one call to the API may take, from sending to the last byte of its answer.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// On SIGTERM or Ctrl-C: how long requests already accepted have to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Share the key's quota with every process that uses it through the Redis at this URL
    /// (`redis://host:6379`, `rediss://` for TLS): proxies on many hosts then stay within the
    /// quota together.
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
    /// Also serve the scheduler's own metrics (the `fabraix_scheduler_*` series) for Prometheus
    /// at `http://ADDR/metrics` (`127.0.0.1:9464`, say); the proxy's `/metrics` stays as it is.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

const PROXY_HELP: &str = "\
Clients send `http://ADDR/v1/<path>` without a key; the proxy forwards it to `URL/<path>` with
the key's x-api-key, each call in its slot of the quota. A client's own x-api-key,
Authorization, Proxy-Authorization and Cookie headers are dropped, never forwarded.

Lanes: /v1/check is interactive (it overtakes queued calls); other calls take the lane named by
the header `x-fabraix-priority: interactive|normal|bulk` (default normal). Headers x-fabraix-*
are the proxy's and are not forwarded.

Answers: the API's status, headers and body as they came (hop-by-hop headers excepted). A 429
of the API is waited out and retried by the proxy: the client sees the final answer. When the
queue is full: 429 at once, with Retry-After (seconds until the key's next slot) and a body in
the API's error envelope (code proxy_queue_full). Errors of the proxy itself use the same
envelope with type proxy_error.

Also: GET /healthz (200 ok), GET /metrics (Prometheus text). The key comes from
FABRAIX_API_KEY / ./.env, --key-file or --key-command; it is never logged, nor are bodies.
SIGTERM or Ctrl-C: stop accepting, finish what was accepted within --drain-timeout, exit 0.";
