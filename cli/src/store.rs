//! Where the CLI keeps the key's ledger: in this process, or in Redis (`--redis URL`, or
//! `FABRAIX_REDIS_URL`) when several processes or machines share the key; `--redis-ca FILE` (or
//! `FABRAIX_REDIS_CA`) for a `rediss://` server whose certificate a private CA signed;
//! `--redis-cluster` (or `FABRAIX_REDIS_CLUSTER=1`) when `--redis` lists nodes of a Redis Cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fabraix_scheduler::{
    Instant, KeyId, Ledger, LedgerConfig, LedgerStore, LocalLedger, MemoryLedgerStore, Quota,
    RedisLedgerStore, RedisStoreConfig, SharedBlock, StoreError,
};

use crate::exit::CliError;

/// The key's ledger store.
#[derive(Clone, Debug)]
pub enum CliStore {
    /// In this process (the default).
    Memory(MemoryLedgerStore),
    /// Shared through Redis with every process that uses the key.
    Redis(RedisLedgerStore),
}

impl CliStore {
    /// The store `--redis` asks for: Redis at `url` (its server's certificate checked against
    /// the CA certificate in the file `ca`, if given), else in memory.
    /// With `cluster`, `url` lists nodes of a Redis Cluster (see [`RedisAt`]).
    pub async fn open(
        url: Option<&str>,
        ca: Option<&Path>,
        cluster: bool,
    ) -> Result<Self, CliError> {
        match url {
            None => Ok(CliStore::Memory(MemoryLedgerStore::new())),
            Some(url) => connect(RedisAt::new(url, ca, cluster))
                .await
                .map(CliStore::Redis),
        }
    }

    /// A copy of the key's ledger if it is in this process (the progress display's ETA).
    pub fn snapshot(&self, key: &KeyId) -> Option<Ledger> {
        match self {
            CliStore::Memory(s) => s.snapshot(key),
            CliStore::Redis(_) => None,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            CliStore::Memory($s) => $e,
            CliStore::Redis($s) => $e,
        }
    };
}

impl LedgerStore for CliStore {
    fn local_ledger(&self, key: &KeyId) -> Option<LocalLedger> {
        each!(self, s => s.local_ledger(key))
    }

    fn shared_block(&self, key: &KeyId) -> Option<SharedBlock> {
        each!(self, s => s.shared_block(key))
    }

    fn bind_fingerprint(&self, key: &KeyId, fingerprint: &str) {
        each!(self, s => s.bind_fingerprint(key, fingerprint))
    }

    async fn register(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
    ) -> Result<(), StoreError> {
        each!(self, s => s.register(key, quota, config, now).await)
    }

    async fn register_with_earlier_calls(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
        ages: &[Duration],
    ) -> Result<(), StoreError> {
        each!(self, s => s.register_with_earlier_calls(key, quota, config, now, ages).await)
    }

    async fn reserve(&self, key: &KeyId, now: Instant) -> Result<Instant, StoreError> {
        each!(self, s => s.reserve(key, now).await)
    }

    async fn refund(&self, key: &KeyId, slot: Instant) -> Result<(), StoreError> {
        each!(self, s => s.refund(key, slot).await)
    }

    async fn nth_slot(&self, key: &KeyId, now: Instant, k: usize) -> Result<Instant, StoreError> {
        each!(self, s => s.nth_slot(key, now, k).await)
    }

    async fn plan(&self, key: &KeyId, now: Instant, k: usize) -> Result<Vec<Instant>, StoreError> {
        each!(self, s => s.plan(key, now, k).await)
    }

    async fn block_until(&self, key: &KeyId, until: Instant) -> Result<(), StoreError> {
        each!(self, s => s.block_until(key, until).await)
    }

    async fn apply_server_window(
        &self,
        key: &KeyId,
        remaining: u32,
        reset_at: Instant,
    ) -> Result<(), StoreError> {
        each!(self, s => s.apply_server_window(key, remaining, reset_at).await)
    }

    async fn set_pace(&self, key: &KeyId, spacing: Option<Duration>) -> Result<(), StoreError> {
        each!(self, s => s.set_pace(key, spacing).await)
    }

    async fn recent_utilisation(&self, key: &KeyId, now: Instant) -> Result<Vec<f64>, StoreError> {
        each!(self, s => s.recent_utilisation(key, now).await)
    }
}

/// The environment variable that gives `--redis-ca` when the flag is not given.
pub const REDIS_CA_ENV: &str = "FABRAIX_REDIS_CA";

/// Largest CA file read (bytes): a bundle of a few hundred certificates fits.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The file at `path`, if it is a regular file of at most [`MAX_CA_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem)?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    Ok(pem)
}

/// The environment variable that says `--redis` lists nodes of a Redis Cluster (`1`, `true` or
/// `yes`) when `--redis-cluster` is not given; read only where Redis is used.
pub const REDIS_CLUSTER_ENV: &str = "FABRAIX_REDIS_CLUSTER";

/// Where the flags say Redis is: `--redis` (a URL; with `--redis-cluster`, nodes of a cluster
/// separated by commas) and `--redis-ca`.
#[derive(Clone, Copy, Debug)]
pub struct RedisAt<'a> {
    url: &'a str,
    ca: Option<&'a Path>,
    cluster: bool,
}

impl<'a> RedisAt<'a> {
    /// `--redis`, `--redis-ca` and `--redis-cluster` as given (the environment's CA and cluster
    /// switch are read when connecting).
    pub fn new(url: &'a str, ca: Option<&'a Path>, cluster: bool) -> Self {
        Self { url, ca, cluster }
    }

    fn cluster(&self) -> bool {
        self.cluster
            || std::env::var(REDIS_CLUSTER_ENV).is_ok_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
            })
    }

    /// The cluster's node URLs (checked: at least one, none empty).
    fn nodes(&self) -> Result<Vec<&'a str>, CliError> {
        let nodes: Vec<&str> = self.url.split(',').map(str::trim).collect();
        if nodes.iter().any(|n| n.is_empty()) {
            return Err(CliError::new(
                "--redis with --redis-cluster: an empty node URL in the comma-separated list",
            ));
        }
        Ok(nodes)
    }
}

/// Redis where `at` says, checking its certificate against the CA certificate in the file
/// `--redis-ca` if given. Errors name the flag (and the file, never the URL: it may hold a
/// password).
async fn connect(at: RedisAt<'_>) -> Result<RedisLedgerStore, CliError> {
    // The environment's CA counts only where Redis is used (so that exporting it does not make
    // every other run ask for --redis).
    let from_env = std::env::var_os(REDIS_CA_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let cluster = at.cluster();
    let nodes = if cluster { at.nodes()? } else { vec![at.url] };
    let config = RedisStoreConfig::default();
    let Some(path) = at.ca.or(from_env.as_deref()) else {
        let store = if cluster {
            RedisLedgerStore::connect_cluster(&nodes, config).await
        } else {
            RedisLedgerStore::connect(at.url).await
        };
        return store.map_err(|e| CliError::new(format!("--redis: {e}")));
    };
    let flag = |what: String| CliError::new(format!("--redis-ca {}: {what}", path.display()));
    let pem = read_bounded(path).map_err(|e| flag(format!("cannot read it: {e}")))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(flag("holds no PEM certificate".into()));
    }
    if nodes.iter().any(|url| !url.starts_with("rediss://")) {
        return Err(flag("is for a rediss:// --redis URL (TLS)".into()));
    }
    let store = if cluster {
        RedisLedgerStore::connect_cluster_with_ca(&nodes, &pem, config).await
    } else {
        RedisLedgerStore::connect_with_ca(at.url, &pem, config).await
    };
    store.map_err(|e| CliError::new(format!("--redis (with --redis-ca {}): {e}", path.display())))
}

/// `plan --redis`: the fleet's shared windows for the key (its API key from the environment),
/// as Redis holds them now: when the next call and the `n`-th could go.
pub async fn describe_shared(
    at: RedisAt<'_>,
    api_key: &fabraix_scheduler::ApiKey,
    quota: &Quota,
    n: u64,
) -> Result<String, CliError> {
    let store = connect(at).await?;
    let key = KeyId::new("default");
    let clock = fabraix_scheduler::TokioClock::new();
    let now = fabraix_scheduler::Clock::now(&clock);
    store.bind_fingerprint(&key, api_key.fingerprint());
    store
        .register(&key, quota, LedgerConfig::default(), now)
        .await
        .map_err(|e| CliError::new(format!("--redis: {e}")))?;
    let k = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
    let next = store.nth_slot(&key, now, 1).await;
    let nth = store.nth_slot(&key, now, k).await;
    let used = store.recent_utilisation(&key, now).await;
    let (Ok(next), Ok(nth), Ok(used)) = (next, nth, used) else {
        return Err(CliError::new("--redis: cannot read the shared windows"));
    };
    let busy: Vec<String> = quota
        .limits()
        .iter()
        .zip(&used)
        .map(|(l, u)| {
            let calls = (u * 2.0 * f64::from(l.count())).round();
            format!("{l}: {calls} calls in its last two windows")
        })
        .collect();
    Ok(format!(
        "shared windows of key {} in Redis ({}): {}\n  the fleet's next call could go in {}; call {} of {n} in {}\n",
        api_key.fingerprint(),
        store.redis_prefix(&key),
        busy.join(", "),
        crate::human::duration(next.saturating_duration_since(now)),
        crate::human::count(n),
        crate::human::duration(nth.saturating_duration_since(now)),
    ))
}
