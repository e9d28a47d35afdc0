//! [`RedisLedgerStore`]: one key's ledger in Redis, shared by every process that uses the key.

mod connection;
mod fleet_block;
mod own_calls;
mod reply;
mod subscriber;
mod watch;

use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::Script;

use self::connection::Connection;
use self::fleet_block::FleetBlock;
use self::own_calls::OwnCalls;
use self::reply::{Done, Reply};
use super::{Ledger, LedgerConfig, LedgerStore, SharedBlock, StoreError, WindowSemantics};
use crate::clock::{Clock, Instant, TokioClock};
use crate::key_id::{KeyId, KeyMap};
use crate::quota::{Limit, Quota};

const SCRIPT: &str = include_str!("ledger.lua");

/// How long before an outage a slot may have been handed to the dispatch task and still not
/// sent when the outage began (see `catch_up`).
const LATE_MARGIN: Duration = Duration::from_secs(1);

/// How long one read of a key's state answers [`nth_slot`](LedgerStore::nth_slot) (ETAs) before
/// it is read again, unless this process writes to the state first: within it, the k-th slot
/// costs O(1) amortised for a growing k (the plan of [`Ledger::forecast`] is followed), not a
/// round trip and an O(k) replay each. Other processes' writes show in ETAs up to this late.
const FORECAST_FRESH: Duration = Duration::from_millis(200);

/// What a [`RedisLedgerStore`] does while Redis cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreachable {
    /// Wait for Redis (retrying every 50 to 500 ms), up to `deadline`; then the operation fails
    /// with [`StoreError::Unavailable`] (a reservation: the job fails with
    /// [`JobError::Store`](crate::JobError::Store)). The default, with 30 s.
    Wait {
        /// How long one operation waits for Redis.
        deadline: Duration,
    },
    /// Wait up to `after`, then reserve from a ledger in this process holding `1 / fleet_size`
    /// of each limit (at least 1) and this process's own recent calls, until Redis answers again.
    /// Right only if at most `fleet_size` processes share the key.
    LocalShare {
        /// How many processes share the key, at most.
        fleet_size: NonZeroU32,
        /// How long to wait for Redis before using the local share.
        after: Duration,
    },
}

impl Default for Unreachable {
    fn default() -> Self {
        Unreachable::Wait {
            deadline: Duration::from_secs(30),
        }
    }
}

/// How a [`RedisLedgerStore`] behaves.
///
/// # Default
/// [`Unreachable::Wait`] for 30 s, a re-seed settle of 1 s watched every 250 ms, a response
/// timeout of 500 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStoreConfig {
    /// What to do while Redis is unreachable.
    pub unreachable: Unreachable,
    /// After Redis lost a key's state (restarted empty, rolled back), how long the new state
    /// hands out no slot, so that every process of the fleet tells it its own recent calls
    /// first: a reservation in that time waits for its end and is then computed from them all.
    pub reseed_settle: Duration,
    /// How often this process checks that Redis still holds the state of each key whose calls
    /// still count (one small script call per key, skipped for a key that had an answer more
    /// recently), so that it re-seeds a lost state within the settle even while it makes no
    /// call (idle, or holding a slot far ahead). At most a quarter of
    /// [`reseed_settle`](Self::reseed_settle) is used, at least 10 ms. `None`: only calls check
    /// (then a process that is idle when Redis loses the state is not heard by the new one).
    pub reseed_watch: Option<Duration>,
    /// How long one answer from Redis may take before the attempt counts as failed.
    pub response_timeout: Duration,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        Self {
            unreachable: Unreachable::default(),
            reseed_settle: Duration::from_secs(1),
            reseed_watch: Some(Duration::from_millis(250)),
            response_timeout: Duration::from_millis(500),
        }
    }
}

/// Chained setters named after the fields (each takes and returns the configuration): the
/// configuration is `#[non_exhaustive]`, so outside this crate it is built from
/// [`default`](Self::default) and these.
///
/// ```
/// use fabraix_scheduler::RedisStoreConfig;
/// use std::time::Duration;
/// let config = RedisStoreConfig::default()
///     .response_timeout(Duration::from_secs(1))
///     .reseed_watch(None);
/// assert_eq!(config.response_timeout, Duration::from_secs(1));
/// assert_eq!(config.reseed_settle, Duration::from_secs(1));
/// ```
impl RedisStoreConfig {
    /// Sets the field `unreachable`.
    pub fn unreachable(mut self, unreachable: Unreachable) -> Self {
        self.unreachable = unreachable;
        self
    }

    /// Sets the field `reseed_settle`.
    pub fn reseed_settle(mut self, settle: Duration) -> Self {
        self.reseed_settle = settle;
        self
    }

    /// Sets the field `reseed_watch`.
    pub fn reseed_watch(mut self, every: Option<Duration>) -> Self {
        self.reseed_watch = every;
        self
    }

    /// Sets the field `response_timeout`.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
}

/// Ledgers kept in Redis and shared by every process that uses the same API key: the invariant
/// (never more than N calls in any window of length W, for every limit) holds for the fleet.
/// Cheap to clone (one multiplexed, self-reconnecting connection).
///
/// Each reservation is one round trip: a Lua script (`ledger.lua`, loaded once, loaded again on
/// `NOSCRIPT`) reads Redis's clock (`TIME`), finds the earliest instant at which every window of
/// the quota allows one more call (the same arithmetic as the in-process [`Ledger`]: sliding logs
/// by default, token buckets as an option, plus blocks, pace and server caps), commits it to
/// every window and returns it as a delay from Redis's own now. The fleet's clocks never meet:
/// the delay is added to the local clock when the answer arrives, so a slot is never early and at
/// most one round trip late. Plans ([`nth_slot`](LedgerStore::nth_slot),
/// [`plan`](LedgerStore::plan)) read the state once and rebuild a local [`Ledger`] from it.
///
/// # Redis keys and memory
/// `fx:v1:{FP}:h` (a small hash: the quota's signature, the state's epoch and origin, and each
/// writer's latest sequence number) and `fx:v1:{FP}:w<i>` (one ring of `(tick, calls)` entries of
/// 8 bytes per limit; ring 1 starts with the state's scalars, packed: a reservation reads and
/// writes them with one command each), where `FP` is the API key's fingerprint
/// ([`ApiKey::fingerprint`](crate::ApiKey::fingerprint): 32 bits of its SHA-256, never the key)
/// — or, for a ledger registered without one, a hash of its [`KeyId`]. The braces put all of one
/// key's state in one Redis Cluster slot
/// ([`connect_cluster`](Self::connect_cluster)). A limit of count N ≤ 1,024 keeps at most N + 2 entries,
/// a larger one at most 1,033 (calls rounded up to W / 1,024: released up to 0.1 % of the window
/// late, never early): a Production key (600/1m + 10,000/1h) takes at most 16 KB in Redis
/// (`MEMORY USAGE` of its three keys), plus about 30 bytes in the hash per process that wrote to
/// the state (the sequence number of its latest write), for at most 64 processes: past 64, the
/// fields of the 32 that wrote longest ago are dropped. Every key expires the
/// quota's longest window plus the guard (and one second) after the latest instant it holds.
///
/// # Faults
/// * **Redis unreachable:** see [`Unreachable`]. By default a call waits for Redis (retrying,
///   with a `tracing` warning) up to a deadline, then fails with
///   [`StoreError::Unavailable`]; never a silent fall back to the whole quota per process.
/// * **Redis restarted empty, or rolled back** (a failover to a replica that had not seen the
///   latest writes: the state's sequence number goes back, or this process's latest write is
///   missing from it even though others wrote since): each process tells the new state its
///   own slots that still count, and the new state computes no slot for
///   [`RedisStoreConfig::reseed_settle`] (reservations wait for its end), so that every other
///   process does the same first: each checks its keys' states every
///   [`RedisStoreConfig::reseed_watch`] even while it makes no call. A slot of this process
///   that may go out only after its next reservation returns is told as sent at the settle's
///   end.
/// * **A pause raised by another process** (its 429's `retry_after`, a server window with
///   nothing left): the script publishes it on the key's channel, `fx:v1:{FP}:blocks` (in the
///   same hash tag), as the state's epoch and the pause's end as a delay from Redis's now; each
///   store holds one subscriber connection for its keys' channels, made again (backing off up
///   to 2 s) when lost, and every answer of the script carries the pause too. A message is
///   checked (at most 64 bytes, an epoch and a delay in ns; anything else, or another epoch, is
///   ignored) and its delay capped at the quota's longest window plus a minute. The scheduler
///   reads it through [`LedgerStore::shared_block`] before it sends a slot it held. A Redis
///   ACL that refuses the channel (`&fx:v1:*`) leaves only the answers to carry the pause:
///   the script's `PUBLISH` is skipped, the refused subscription warned of once and tried
///   again.
/// * **`SCRIPT FLUSH` / a new server:** the script is loaded again on `NOSCRIPT`.
/// * **A state 52 days old** (2^52 ns since its origin, a key never idle for a window in all
///   that time) is replaced as if Redis had lost it, and seeded again as above: its times stay
///   exact integers in the script's doubles.
/// * **Processes with different quotas for one key** are refused:
///   [`StoreError::QuotaConflict`]. So is a process of version 0.2 or earlier once a process of
///   this version has used the key: the state such a process wrote (its scalars as text fields
///   of the hash) is converted in place by this version's first call.
#[derive(Clone)]
pub struct RedisLedgerStore {
    conn: Connection,
    script: Arc<Script>,
    clock: Arc<dyn Clock>,
    config: RedisStoreConfig,
    keys: Arc<KeyMap<Arc<Mutex<KeyState>>>>,
    fingerprints: Arc<KeyMap<String>>,
    /// Tests only: the script's now is the local clock's (from this base) instead of `TIME`.
    local_time: Option<Instant>,
    outage: Arc<Mutex<Option<Instant>>>,
    /// Whether the task that checks the keys' states ([`RedisStoreConfig::reseed_watch`]) runs.
    watching: Arc<AtomicBool>,
    /// The clients the subscriber connection is made from, tried in turn (see `subscriber`):
    /// the server, or each node of the cluster.
    subscribe_via: Arc<[redis::Client]>,
    /// The subscriber task's feed of channels, once it runs.
    feed: subscriber::Feed,
}

impl std::fmt::Debug for RedisLedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedgerStore")
            .field("keys", &self.keys.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What this process knows of one key's shared ledger.
#[derive(Debug)]
struct KeyState {
    names: Vec<String>,
    /// ARGV[4..] of every call: signature, epoch placeholder, semantics, guard, horizon, limits.
    args: Vec<String>,
    quota: Quota,
    config: LedgerConfig,
    horizon: Duration,
    epoch: String,
    seq: u64,
    /// This process's name among the state's writers (random, per registration).
    writer: String,
    /// The state's sequence number after this process's latest write to it (0: none known):
    /// a rollback that lost the write is seen even when others wrote since.
    wrote_seq: u64,
    own: OwnCalls,
    last_reply: Option<Instant>,
    /// The local share of the quota ([`Unreachable::LocalShare`]), while Redis is unreachable.
    share: Option<Ledger>,
    /// After an outage: this key's slots from this instant on may have gone out as late as
    /// now; they are re-seeded as sent now.
    late_from: Option<Instant>,
    /// The state as last read for forecasts, and when (see [`FORECAST_FRESH`]).
    forecast: Option<(Instant, Ledger)>,
    /// The channel the script tells the state's blocks on (`fx:v1:{FP}:blocks`).
    channel: String,
    /// The state's block as last told (by a message or an answer).
    block: FleetBlock,
}

impl RedisLedgerStore {
    /// Connects to Redis at `url` (`redis://host:port/db`, `redis://:password@host`), with the
    /// [default config](RedisStoreConfig). Fails if the URL does not parse or Redis does not
    /// answer.
    ///
    /// # TLS
    /// `rediss://host:port/db` speaks TLS (rustls; OpenSSL is not used), checking the server's
    /// certificate against the system's trusted roots; for a server whose certificate a private
    /// CA signed, see [`connect_with_ca`](Self::connect_with_ca). `rediss://…/#insecure` is
    /// refused (redis-rs is built without its insecure feature): a certificate is always
    /// checked.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fabraix_scheduler::{RedisLedgerStore, Scheduler};
    /// let store = RedisLedgerStore::connect("redis://127.0.0.1:6379").await?;
    /// let scheduler = Scheduler::builder().store(store).build()?;
    /// # let _ = scheduler; Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisStoreConfig::default()).await
    }

    /// [`connect`](Self::connect) with `config`.
    pub async fn connect_with(url: &str, config: RedisStoreConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(invalid_url)?;
        Self::from_client(client, config).await
    }

    /// [`connect_with`](Self::connect_with) to a `rediss://` URL whose server's certificate
    /// chains to the CA certificate `ca_pem` (PEM, one or more certificates) instead of the
    /// system's roots. Fails if the URL is not `rediss://`, the PEM holds no certificate, or the
    /// server does not answer (or its certificate does not match the URL's host).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fabraix_scheduler::{RedisLedgerStore, RedisStoreConfig};
    /// let ca = std::fs::read("/etc/redis/ca.pem")?;
    /// let store = RedisLedgerStore::connect_with_ca(
    ///     "rediss://redis.internal:6380/0",
    ///     &ca,
    ///     RedisStoreConfig::default(),
    /// )
    /// .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect_with_ca(
        url: &str,
        ca_pem: &[u8],
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        if !url.starts_with("rediss://") {
            return Err(StoreError::InvalidConfig(
                "a CA certificate is for a rediss:// URL (TLS)".into(),
            ));
        }
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = redis::Client::build_with_tls(url, certificates).map_err(invalid_url)?;
        Self::from_client(client, config).await
    }

    /// Connects to Redis Cluster through `nodes` (URLs of some of its nodes, `redis://` or
    /// `rediss://`: the others are found from them), with `config`. Each key's state lives in one
    /// slot (its Redis keys share a hash tag), so each reservation is still one script call, to
    /// the node that holds the slot; the cluster's redirections (`MOVED`, `ASK`) are followed.
    /// Pauses are heard through one of `nodes` (the next one when it is lost): a cluster
    /// carries every node's messages to each. Fails if a URL does not parse, there is none, or
    /// no node answers.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fabraix_scheduler::{RedisLedgerStore, RedisStoreConfig};
    /// let nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"];
    /// let store = RedisLedgerStore::connect_cluster(&nodes, RedisStoreConfig::default()).await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect_cluster(
        nodes: &[&str],
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        Self::cluster(nodes, None, config).await
    }

    /// [`connect_cluster`](Self::connect_cluster) to `rediss://` nodes whose certificates chain
    /// to the CA certificate `ca_pem` (PEM) instead of the system's roots.
    pub async fn connect_cluster_with_ca(
        nodes: &[&str],
        ca_pem: &[u8],
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        if nodes.iter().any(|url| !url.starts_with("rediss://")) {
            return Err(StoreError::InvalidConfig(
                "a CA certificate is for rediss:// node URLs (TLS)".into(),
            ));
        }
        Self::cluster(nodes, Some(ca_pem), config).await
    }

    async fn cluster(
        nodes: &[&str],
        ca_pem: Option<&[u8]>,
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::InvalidConfig(
                "no Redis Cluster node given".into(),
            ));
        }
        let certificates = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca_pem.map(<[u8]>::to_vec),
        };
        let mut subscribe_via = Vec::with_capacity(nodes.len());
        for url in nodes {
            let client = match ca_pem {
                Some(_) => redis::Client::build_with_tls(*url, certificates()),
                None => redis::Client::open(*url),
            };
            subscribe_via.push(client.map_err(invalid_url)?);
        }
        let mut builder = ClusterClientBuilder::new(nodes.to_vec())
            .response_timeout(config.response_timeout)
            .connection_timeout(config.response_timeout.max(Duration::from_secs(1)))
            .retries(1)
            .max_retry_wait(200);
        if ca_pem.is_some() {
            builder = builder.certs(certificates());
        }
        let client = builder.build().map_err(invalid_url)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| cannot_connect(&e))?;
        Ok(Self::with_connection(
            Connection::Cluster(conn),
            subscribe_via,
            config,
        ))
    }

    async fn from_client(
        client: redis::Client,
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.response_timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(|e| cannot_connect(&e))?;
        Ok(Self::with_connection(
            Connection::Single(conn),
            vec![client],
            config,
        ))
    }

    fn with_connection(
        conn: Connection,
        subscribe_via: Vec<redis::Client>,
        config: RedisStoreConfig,
    ) -> Self {
        Self {
            conn,
            script: Arc::new(Script::new(SCRIPT)),
            clock: Arc::new(TokioClock::new()),
            config,
            keys: Arc::default(),
            fingerprints: Arc::default(),
            local_time: None,
            outage: Arc::default(),
            watching: Arc::default(),
            subscribe_via: subscribe_via.into(),
            feed: Arc::default(),
        }
    }

    /// The clock slots are converted to (default: [`TokioClock`]); give the scheduler's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// [`Unreachable::LocalShare`] for a fleet of at most `n` processes, used after Redis was
    /// unreachable for 2 s.
    pub fn fleet_size(mut self, n: NonZeroU32) -> Self {
        self.config.unreachable = Unreachable::LocalShare {
            fleet_size: n,
            after: Duration::from_secs(2),
        };
        self
    }

    /// Tests only: the script reads the time from this store's clock instead of Redis's `TIME`,
    /// so that a test on tokio's paused clock drives Redis's time too. Every store sharing a key
    /// must then share the clock.
    #[doc(hidden)]
    pub fn with_local_time_for_tests(mut self) -> Self {
        self.local_time = Some(self.clock.now());
        self
    }

    /// Since when Redis has been unreachable (none: it answers).
    pub fn unreachable_since(&self) -> Option<Instant> {
        *self.outage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Redis key prefix of `key` (`fx:v1:{FP}`), for inspection (never holds the API key).
    pub fn redis_prefix(&self, key: &KeyId) -> String {
        let fp = self
            .fingerprints
            .get(key)
            .map(|e| e.value().clone())
            .unwrap_or_else(|| id_fingerprint(key));
        format!("fx:v1:{{{fp}}}")
    }

    fn state(&self, key: &KeyId) -> Result<Arc<Mutex<KeyState>>, StoreError> {
        self.keys
            .get(key)
            .map(|e| Arc::clone(e.value()))
            .ok_or_else(|| StoreError::UnknownKey(key.clone()))
    }

    /// The script's now: `TIME` (empty arguments), or the local clock in tests.
    fn time_args(&self, at: Instant) -> [String; 2] {
        match self.local_time {
            None => [String::new(), String::new()],
            Some(base) => {
                let d = at.saturating_duration_since(base);
                [d.as_secs().to_string(), d.subsec_micros().to_string()]
            }
        }
    }

    /// A slot `delay_ns` after the script's now, on the local clock: after `at` (the time the
    /// request was made) in tests; else after the answer arrived (never early).
    fn local_slot(&self, at: Instant, received: Instant, delay_ns: u64) -> Instant {
        let delay = Duration::from_nanos(delay_ns);
        if self.local_time.is_some() || delay_ns == 0 {
            at + delay
        } else {
            received + delay
        }
    }

    /// The instant on the local clock taken as the script's now, for an answer to a request made
    /// at `at` that arrived at `received`: `at` in tests (the script read this clock), else
    /// `received` (a delay from it ends no earlier than it does in Redis).
    fn redis_now_at(&self, at: Instant, received: Instant) -> Instant {
        if self.local_time.is_some() {
            at
        } else {
            received
        }
    }

    /// Runs `op` on `key`'s state at `at`: one round trip, plus a re-seed when the state was
    /// lost or rolled back, and a wait while a new state settles (then `at` moves on to the
    /// clock's now). Waits for Redis as [`Unreachable`] says. The answer, and the `at` it is for.
    async fn run(
        &self,
        ks: &Arc<Mutex<KeyState>>,
        op: &str,
        mut at: Instant,
        extra: &[String],
    ) -> Result<(Done, Instant), StoreError> {
        loop {
            let (names, args, known) = {
                let s = lock(ks);
                (s.names.clone(), s.args.clone(), s.known())
            };
            match self.invoke(&names, op, at, &args, &known, extra).await? {
                Reply::Seed => self.reseed(ks, false).await?,
                Reply::RolledBack => {
                    tracing::warn!(
                        "the shared quota state went back (a Redis failover?): re-seeding it"
                    );
                    self.reseed(ks, true).await?;
                }
                Reply::Settle(ns) => {
                    // Bounded: a settle ends, and a state is new again only if Redis lost it.
                    let now = self.clock.now();
                    self.clock.sleep_until(now + Duration::from_nanos(ns)).await;
                    at = at.max(self.clock.now());
                }
                Reply::Ok(ok) => {
                    let received = self.clock.now();
                    let mut s = lock(ks);
                    s.last_reply = Some(received);
                    if ok.epoch == s.epoch {
                        s.block.learn(self.redis_now_at(at, received), ok.block_ns);
                    }
                    s.seq = s.seq.max(ok.seq);
                    // The highest: answers of this process's concurrent calls may come in any
                    // order (and one from an epoch since replaced tells nothing of this one).
                    if writes(op) && ok.epoch == s.epoch {
                        s.wrote_seq = s.wrote_seq.max(ok.seq);
                    }
                    if writes(op) {
                        s.forecast = None;
                    }
                    drop(s);
                    return Ok((ok, at));
                }
            }
        }
    }

    /// Tells a lost (or rolled back) state this process's slots that still count.
    async fn reseed(&self, ks: &Arc<Mutex<KeyState>>, rolled_back: bool) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (names, args, known, mut extra) = {
            let s = lock(ks);
            let had_state = s.last_reply.is_some_and(|t| t + s.horizon > now);
            let settle = if had_state || s.own.any_counting(now) {
                self.config.reseed_settle
            } else {
                Duration::ZERO
            };
            let extra = vec![
                new_epoch(),
                duration_ns(settle).to_string(),
                if rolled_back { "1" } else { "0" }.to_string(),
            ];
            (s.names.clone(), s.args.clone(), s.known(), extra)
        };
        let offsets = {
            let mut s = lock(ks);
            let late_from = s.late_from.take();
            s.own.seed_args(now, late_from)
        };
        extra.extend(offsets.iter().cloned());
        match self
            .invoke(&names, "seed", now, &args, &known, &extra)
            .await?
        {
            Reply::Ok(ok) => {
                let mut s = lock(ks);
                if s.epoch != ok.epoch {
                    tracing::warn!(calls = offsets.len(), "the shared quota state was lost (Redis restarted empty?): told it this process's recent calls");
                }
                s.epoch = ok.epoch;
                s.seq = ok.seq;
                s.wrote_seq = 0;
                let received = self.clock.now();
                s.block.learn(self.redis_now_at(now, received), ok.block_ns);
                s.own.rescale(now, ok.now_ns);
                Ok(())
            }
            Reply::Seed | Reply::RolledBack | Reply::Settle(_) => Err(StoreError::Unavailable(
                "Redis refused to re-seed the shared quota state".into(),
            )),
        }
    }

    /// One attempt of a script call.
    async fn invoke_once(
        &self,
        names: &[String],
        op: &str,
        at: Instant,
        args: &[String],
        epoch: &str,
        extra: &[String],
    ) -> redis::RedisResult<redis::Value> {
        let [sec, usec] = self.time_args(at);
        let mut call = self.script.prepare_invoke();
        for name in names {
            call.key(name);
        }
        call.arg(op).arg(sec).arg(usec).arg(&args[0]).arg(epoch);
        for a in &args[1..] {
            call.arg(a);
        }
        for a in extra {
            call.arg(a);
        }
        let mut conn = self.conn.clone();
        call.invoke_async(&mut conn).await
    }

    /// One script call, retried while Redis is unreachable (see [`Unreachable`]). After an
    /// outage, every key's slots that fell due during it are recorded again as sent now
    /// ([`catch_up`](Self::catch_up)) before the call is made.
    async fn invoke(
        &self,
        names: &[String],
        op: &str,
        at: Instant,
        args: &[String],
        epoch: &str,
        extra: &[String],
    ) -> Result<Reply, StoreError> {
        let started = self.clock.now();
        let mut pause = Duration::from_millis(50);
        loop {
            let result = match self.catch_up().await {
                Ok(()) => self.invoke_once(names, op, at, args, epoch, extra).await,
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(value) => {
                    self.end_outage();
                    return Reply::parse(value);
                }
                Err(e) => e,
            };
            if is_quota_conflict(&e) {
                return Err(StoreError::QuotaConflict(describe(&e)));
            }
            if !is_unreachable(&e) {
                return Err(StoreError::Unavailable(format!("Redis: {}", describe(&e))));
            }
            let now = self.clock.now();
            // Counted from the start of the outage: once Redis has been gone longer than the
            // deadline, each operation tries once.
            let since = self.begin_outage(now, &e).min(started);
            let waited = now.saturating_duration_since(since);
            let limit = match self.config.unreachable {
                Unreachable::Wait { deadline } => deadline,
                Unreachable::LocalShare { after, .. } => after,
            };
            if waited >= limit {
                return Err(StoreError::Unavailable(format!(
                    "Redis unreachable for {} ms: {}",
                    waited.as_millis(),
                    describe(&e)
                )));
            }
            self.clock
                .sleep_until(now + pause.min(limit - waited))
                .await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// After an outage: a call whose slot fell due while the scheduler waited for Redis may have
    /// gone out as late as Redis's answer (the dispatch task that sends it was waiting too). So
    /// every key's slots from shortly before the outage ([`LATE_MARGIN`]) to now are recorded
    /// again as sent now (later than they were: the safe side); a key whose state is gone keeps
    /// them as sent now for its re-seed. Nothing to do without an outage.
    async fn catch_up(&self) -> redis::RedisResult<()> {
        let Some(since) = self.unreachable_since() else {
            return Ok(());
        };
        let from = since.checked_sub(LATE_MARGIN).unwrap_or(since);
        let states: Vec<Arc<Mutex<KeyState>>> =
            self.keys.iter().map(|e| Arc::clone(e.value())).collect();
        for ks in states {
            let now = self.clock.now();
            let (names, args, known, late) = {
                let mut s = lock(&ks);
                s.late_from = Some(s.late_from.map_or(from, |f| f.min(from)));
                let late = s.own.shared_between(from, now);
                (s.names.clone(), s.args.clone(), s.known(), late)
            };
            if late.is_empty() {
                lock(&ks).late_from = None;
                continue;
            }
            let mut extra = vec![late.len().to_string()];
            extra.extend(late.iter().map(u64::to_string));
            let value = self
                .invoke_once(&names, "late", now, &args, &known, &extra)
                .await?;
            // A state that is gone (or rolled back) is re-seeded by the key's next call, with
            // these slots as sent now (`late_from` stays).
            if let Ok(Reply::Ok(ok)) = Reply::parse(value) {
                let mut s = lock(&ks);
                s.own.move_shared_between(from, now, ok.now_ns);
                s.late_from = None;
            }
        }
        Ok(())
    }

    /// Marks Redis unreachable (warning once per outage); returns since when.
    fn begin_outage(&self, now: Instant, e: &redis::RedisError) -> Instant {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = *outage {
            return since;
        }
        *outage = Some(now);
        tracing::warn!(error = %describe(e), "Redis unreachable: calls of shared keys wait for it");
        now
    }

    fn end_outage(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if outage.take().is_some() {
            tracing::warn!("Redis reachable again");
        }
    }

    /// The local share's slot when Redis is unreachable and the config allows one.
    fn share_slot(
        &self,
        ks: &Arc<Mutex<KeyState>>,
        now: Instant,
        error: StoreError,
    ) -> Result<Instant, StoreError> {
        let Unreachable::LocalShare { fleet_size, .. } = self.config.unreachable else {
            return Err(error);
        };
        let mut s = lock(ks);
        let s = &mut *s;
        let ledger = s.share.get_or_insert_with(|| {
            let share = share_of(&s.quota, fleet_size);
            let ages: Vec<Duration> = s
                .own
                .offsets(now, None)
                .iter()
                .map(|&o| Duration::from_nanos(u64::try_from(o.max(0)).unwrap_or(0)))
                .collect();
            tracing::warn!(fleet_size = fleet_size.get(), quota = %share, "Redis unreachable: reserving from this process's share of the quota");
            Ledger::with_earlier_calls(&share, s.config, now, &ages)
        });
        Ok(ledger.reserve(now))
    }

    /// Commits the next `k` slots (1 ..= 1,000) of `key` not before `now`, one after another,
    /// in one round trip: what `k` calls of [`reserve`](LedgerStore::reserve) would give, for a
    /// queue that holds many jobs. Does not use the local share ([`Unreachable::LocalShare`]).
    pub async fn reserve_many(
        &self,
        key: &KeyId,
        now: Instant,
        k: usize,
    ) -> Result<Vec<Instant>, StoreError> {
        let ks = self.state(key)?;
        self.reserve_k(&ks, now, k.clamp(1, 1_000)).await
    }

    async fn reserve_k(
        &self,
        ks: &Arc<Mutex<KeyState>>,
        now: Instant,
        k: usize,
    ) -> Result<Vec<Instant>, StoreError> {
        let (ok, now) = self.run(ks, "reserve", now, &[k.to_string()]).await?;
        let received = self.clock.now();
        let mut s = lock(ks);
        s.share = None;
        let slots = ok
            .slots
            .iter()
            .map(|&shared| {
                let slot = self.local_slot(now, received, shared.saturating_sub(ok.now_ns));
                s.own.push(slot, shared, received);
                slot
            })
            .collect();
        Ok(slots)
    }

    /// A read of `key`'s state, rebuilt into a local [`Ledger`] on this clock.
    async fn snapshot(&self, key: &KeyId, now: Instant) -> Result<Ledger, StoreError> {
        let ks = self.state(key)?;
        let (ok, now) = self.run(&ks, "read", now, &[]).await?;
        let received = self.clock.now();
        let s = lock(&ks);
        let state = reply::shared_ledger(&ok, s.quota.limits().len())?;
        let origin = if self.local_time.is_some() {
            now
        } else {
            received.max(now)
        };
        Ok(Ledger::from_shared(
            &s.quota, s.config, origin, ok.now_ns, &state,
        ))
    }

    async fn mutate(&self, key: &KeyId, op: &str, extra: &[String]) -> Result<(), StoreError> {
        let ks = self.state(key)?;
        let now = self.clock.now();
        self.run(&ks, op, now, extra).await.map(drop)
    }

    fn delay_arg(&self, until: Instant) -> String {
        let now = self.clock.now();
        duration_ns(until.saturating_duration_since(now)).to_string()
    }
}

impl LedgerStore for RedisLedgerStore {
    /// The shared state's block as this process knows it (and since when): from the message
    /// the script publishes on the key's channel when any process raises the block (a 429's
    /// `retry_after`, a server window with nothing left), or from the latest answer of the
    /// script, which carries it too. At most the quota's longest window plus one minute ahead.
    fn shared_block(&self, key: &KeyId) -> Option<SharedBlock> {
        let ks = self.keys.get(key)?;
        let known = lock(ks.value()).block.known();
        known
    }

    fn bind_fingerprint(&self, key: &KeyId, fingerprint: &str) {
        let fp = fingerprint.trim_start_matches("key#").to_string();
        self.fingerprints.insert(key.clone(), fp);
    }

    async fn register(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.register_with_earlier_calls(key, quota, config, now, &[])
            .await
    }

    /// The earlier calls count only if this process creates the shared state (Redis had none
    /// for the key); a state that exists recorded them when they were made.
    async fn register_with_earlier_calls(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
        ages: &[Duration],
    ) -> Result<(), StoreError> {
        let prefix = self.redis_prefix(key);
        let state = KeyState::new(&prefix, quota, config);
        let ks = Arc::new(Mutex::new(state));
        let mut extra = vec![new_epoch(), "0".to_string()];
        extra.extend(ages.iter().map(|a| duration_ns(*a).to_string()));
        let (names, args, known) = {
            let s = lock(&ks);
            (s.names.clone(), s.args.clone(), s.known())
        };
        match self
            .invoke(&names, "register", now, &args, &known, &extra)
            .await?
        {
            Reply::Ok(ok) => {
                let received = self.clock.now();
                let mut s = lock(&ks);
                s.epoch = ok.epoch;
                s.seq = ok.seq;
                s.last_reply = Some(received);
                s.block.learn(self.redis_now_at(now, received), ok.block_ns);
            }
            Reply::Seed | Reply::RolledBack | Reply::Settle(_) => {
                return Err(StoreError::Unavailable(
                    "Redis did not register the key".into(),
                ))
            }
        }
        let channel = lock(&ks).channel.clone();
        self.keys.insert(key.clone(), ks);
        self.start_watch();
        self.subscribe(&channel);
        Ok(())
    }

    async fn reserve(&self, key: &KeyId, now: Instant) -> Result<Instant, StoreError> {
        let ks = self.state(key)?;
        match self.reserve_k(&ks, now, 1).await {
            Ok(slots) => slots
                .first()
                .copied()
                .ok_or_else(|| StoreError::Unavailable("no slot in the answer".into())),
            Err(e @ StoreError::Unavailable(_)) => self.share_slot(&ks, now, e),
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, key: &KeyId, slot: Instant) -> Result<(), StoreError> {
        let ks = self.state(key)?;
        let shared = lock(&ks).own.take(slot);
        match shared {
            Some(t) => self
                .run(&ks, "refund", self.clock.now(), &[t.to_string()])
                .await
                .map(drop),
            // Not one of this process's recent slots: it stays counted (the safe side).
            None => Ok(()),
        }
    }

    /// From a read of the state at most 200 ms old and made since this process
    /// last wrote to it: O(1) amortised for a growing `k`, one round trip per 200 ms at most.
    async fn nth_slot(&self, key: &KeyId, now: Instant, k: usize) -> Result<Instant, StoreError> {
        let ks = self.state(key)?;
        {
            let mut s = lock(&ks);
            if let Some((read_at, ledger)) = &mut s.forecast {
                if *read_at <= now && now < *read_at + FORECAST_FRESH {
                    return Ok(ledger.forecast(now, k).at);
                }
            }
        }
        let mut ledger = self.snapshot(key, now).await?;
        let at = ledger.forecast(now, k).at;
        lock(&ks).forecast = Some((now, ledger));
        Ok(at)
    }

    async fn plan(&self, key: &KeyId, now: Instant, k: usize) -> Result<Vec<Instant>, StoreError> {
        Ok(self.snapshot(key, now).await?.plan(now, k))
    }

    async fn block_until(&self, key: &KeyId, until: Instant) -> Result<(), StoreError> {
        self.mutate(key, "block", &[self.delay_arg(until)]).await
    }

    async fn apply_server_window(
        &self,
        key: &KeyId,
        remaining: u32,
        reset_at: Instant,
    ) -> Result<(), StoreError> {
        self.mutate(
            key,
            "cap",
            &[remaining.to_string(), self.delay_arg(reset_at)],
        )
        .await
    }

    async fn set_pace(&self, key: &KeyId, spacing: Option<Duration>) -> Result<(), StoreError> {
        let ns = spacing.map_or(0, duration_ns);
        self.mutate(key, "pace", &[ns.to_string()]).await
    }

    async fn recent_utilisation(&self, key: &KeyId, now: Instant) -> Result<Vec<f64>, StoreError> {
        Ok(self.snapshot(key, now).await?.recent_utilisation(now))
    }
}

impl KeyState {
    /// ARGV[5]: the epoch known, the highest sequence number seen of it, this writer and the
    /// sequence number of its latest write.
    fn known(&self) -> String {
        format!(
            "{} {} {} {}",
            self.epoch, self.seq, self.writer, self.wrote_seq
        )
    }

    fn new(prefix: &str, quota: &Quota, config: LedgerConfig) -> Self {
        let limits = quota.limits();
        let mut names = vec![format!("{prefix}:h")];
        names.extend((1..=limits.len()).map(|i| format!("{prefix}:w{i}")));
        let guard = config.guard_for(quota);
        let horizon = config.counted_for(quota);
        let semantics = match config.semantics {
            // (The shared store keeps window logs: a counter key is planned as a sliding one.)
            WindowSemantics::Sliding | WindowSemantics::SlidingWindowCounter => "s",
            WindowSemantics::TokenBucket => "b",
        };
        let signature = format!("{quota} {semantics} guard={}ns", duration_ns(guard));
        let mut args = vec![
            signature,
            semantics.to_string(),
            duration_ns(guard).to_string(),
            duration_ns(horizon).to_string(),
            limits.len().to_string(),
        ];
        for l in limits {
            args.push(l.count().to_string());
            args.push(duration_ns(l.window()).to_string());
        }
        let most = limits.iter().map(|l| l.count()).max().unwrap_or(0);
        Self {
            names,
            args,
            quota: quota.clone(),
            config,
            horizon,
            epoch: String::new(),
            seq: 0,
            writer: new_epoch(),
            wrote_seq: 0,
            own: OwnCalls::new(usize::try_from(most).unwrap_or(usize::MAX), horizon),
            last_reply: None,
            share: None,
            late_from: None,
            forecast: None,
            channel: format!("{prefix}:blocks"),
            block: FleetBlock::new(quota),
        }
    }
}

/// Whether `op` writes to the state (its sequence number after it is this process's write).
fn writes(op: &str) -> bool {
    !matches!(op, "read" | "check")
}

/// One process's share of `quota` in a fleet of `n`: N / n calls per window W, or, where that is
/// less than one, one call per W × ⌈n / N⌉ (so the fleet together never exceeds N per W). A
/// window that would pass [`MAX_WINDOW`](crate::MAX_WINDOW) is that longest window, one call in
/// it: the least a process can be given.
fn share_of(quota: &Quota, n: NonZeroU32) -> Quota {
    let share = |l: &Limit| {
        let count = l.count() / n.get();
        if count > 0 {
            return Limit::new(count, l.window());
        }
        let stretch = n.get().div_ceil(l.count().max(1));
        let window = l
            .window()
            .checked_mul(stretch)
            .unwrap_or(crate::MAX_WINDOW)
            .min(crate::MAX_WINDOW);
        Limit::new(1, window)
    };
    let limits: Vec<Limit> = quota
        .limits()
        .iter()
        .filter_map(|l| share(l).ok())
        .collect();
    let least = || Quota::new(Limit::new(1, crate::MAX_WINDOW).ok()).ok();
    Quota::new(limits)
        .ok()
        .or_else(least)
        .unwrap_or_else(|| quota.clone())
}

fn lock(ks: &Mutex<KeyState>) -> std::sync::MutexGuard<'_, KeyState> {
    ks.lock().unwrap_or_else(|p| p.into_inner())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A key id's stand-in fingerprint (a ledger registered without an API key): 8 hex digits of
/// the SHA-256 of its label.
fn id_fingerprint(key: &KeyId) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_str().as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("id{hex}")
}

/// A URL (or CA certificate) redis-rs refused. The URL may hold a password: it is never
/// repeated.
fn invalid_url(e: redis::RedisError) -> StoreError {
    invalid_config(&e)
}

fn invalid_config(e: &redis::RedisError) -> StoreError {
    StoreError::InvalidConfig(format!(
        "invalid Redis URL or TLS certificate ({:?})",
        e.kind()
    ))
}

/// The first connection failed: a configuration the client refuses is the caller's to fix,
/// anything else an outage.
fn cannot_connect(e: &redis::RedisError) -> StoreError {
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        invalid_config(e)
    } else {
        StoreError::Unavailable(format!("cannot connect to Redis: {}", describe(e)))
    }
}

fn is_quota_conflict(e: &redis::RedisError) -> bool {
    e.code() == Some("FABRAIX_QUOTA_MISMATCH")
}

/// Whether `e` means Redis could not be reached (or did not answer in time), as opposed to an
/// answer that is an error.
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN")
        )
}

/// A Redis error without anything from the URL.
fn describe(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod share_tests {
    use super::*;

    fn share(spec: &str, n: u32) -> Vec<(u32, Duration)> {
        let quota: Quota = spec.parse().unwrap();
        share_of(&quota, NonZeroU32::new(n).unwrap())
            .limits()
            .iter()
            .map(|l| (l.count(), l.window()))
            .collect()
    }

    #[test]
    fn a_fleet_of_shares_never_exceeds_the_quota() {
        let s = Duration::from_secs;
        assert_eq!(share("60/1m,1000/1h", 4), vec![(15, s(60)), (250, s(3600))]);
        // 16 processes on 10/1s: one call per 2 s each, 8 per second together (not 16).
        assert_eq!(share("10/1s", 16), vec![(1, s(2))]);
        assert_eq!(share("10/1s", 10), vec![(1, s(1))]);
        // Beyond the longest window: one call in it.
        assert_eq!(share("1/300d", 3), vec![(1, crate::MAX_WINDOW)]);
    }
}
