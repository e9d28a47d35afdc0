//! How a key is added, and what the scheduler does when a queue is full or shutting down.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::api_key::ApiKey;
use crate::endpoint::{Endpoint, EndpointError};
use crate::key_id::KeyId;
use crate::key_provider::KeyRefresh;
use crate::ledger::LedgerConfig;
use crate::quota::Quota;

use super::refusals::RefusedCalls;

/// What `submit` does when a key's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait for room (backpressure). The default.
    #[default]
    Wait,
    /// Return [`SubmitError::QueueFull`](crate::SubmitError::QueueFull) with the job at once.
    Reject,
}

/// One key as the scheduler needs it: its secret, where its calls go, and its quota.
///
/// Built by [`new`](Self::new) and chained setters (`config.max_in_flight(4).queue_capacity(100)`,
/// each taking and returning the configuration); a setting is read back by the setter's name
/// with `get_` (`get_queue_capacity()`).
#[derive(Clone, Debug)]
pub struct KeyConfig {
    pub(crate) id: KeyId,
    pub(crate) api_key: ApiKey,
    pub(crate) endpoint: Endpoint,
    pub(crate) quota: Quota,
    pub(crate) ledger: LedgerConfig,
    pub(crate) max_in_flight: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) refused_calls: RefusedCalls,
    pub(crate) learn_semantics: bool,
    pub(crate) guard_from_latency: bool,
    pub(crate) sent_earlier: Vec<SystemTime>,
    pub(crate) call_journal: Option<PathBuf>,
    /// [metrics] The key's `key` label in the scheduler's metrics (default: its fingerprint).
    pub(crate) metrics_label: Option<String>,
    pub(crate) key_refresh: Option<std::sync::Arc<dyn KeyRefresh>>,
}

impl KeyConfig {
    /// A key named `id`, sending to `base_url` under `quota`. The base URL is checked here (https,
    /// or http to loopback only; see [`Endpoint::new`]).
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota};
    /// let config = KeyConfig::new("default", ApiKey::new("k").unwrap(), "https://api.fabraix.com/v1", Quota::development()).unwrap();
    /// assert_eq!(config.get_queue_capacity(), 10_000);
    /// assert!(KeyConfig::new("x", ApiKey::new("k").unwrap(), "http://api.fabraix.com/v1", Quota::development()).is_err());
    /// ```
    pub fn new(
        id: impl Into<KeyId>,
        api_key: ApiKey,
        base_url: &str,
        quota: Quota,
    ) -> Result<Self, EndpointError> {
        Self::with_endpoint(id, api_key, Endpoint::new(base_url, false)?, quota)
    }

    /// Like [`new`](Self::new) with an endpoint checked elsewhere (for example one that allows
    /// plain http to a non-loopback host).
    pub fn with_endpoint(
        id: impl Into<KeyId>,
        api_key: ApiKey,
        endpoint: Endpoint,
        quota: Quota,
    ) -> Result<Self, EndpointError> {
        Ok(Self {
            id: id.into(),
            api_key,
            endpoint,
            quota,
            ledger: LedgerConfig::default(),
            max_in_flight: 16,
            queue_capacity: 10_000,
            overflow: Overflow::Wait,
            refused_calls: RefusedCalls::Learn,
            learn_semantics: true,
            guard_from_latency: false,
            sent_earlier: Vec::new(),
            call_journal: None,
            metrics_label: None,
            key_refresh: None,
        })
    }

    /// Calls of this key on the wire at once, at most (1 ..). Default 16.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Jobs waiting in this key's queue, at most (1 ..). Default 10,000.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The queue's capacity ([`queue_capacity`](Self::queue_capacity)).
    pub fn get_queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// What `submit` does on a full queue. Default [`Overflow::Wait`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The latency guard (see [`LedgerConfig::guard`]).
    pub fn guard(mut self, guard: Duration) -> Self {
        self.ledger.guard = Some(guard);
        self
    }

    /// Makes the key's latency guard follow the spread of its send-to-answer times, measured as
    /// its calls are answered: twice the spread between their 1st and 99th percentiles over the
    /// last 512 answers, looked at every 128, at least 1 ms and at most a tenth of the quota's
    /// shortest window. It starts at the configured guard ([`guard`](Self::guard), else the
    /// default). A sender on loopback then waits about a millisecond at each window's edge
    /// instead of 100; a loaded or distant one, whose answers vary by more, waits more. The guard
    /// in force is in [`KeyStats::guard`](crate::KeyStats::guard). Only a ledger kept in this
    /// process follows (the in-memory store); one in a store elsewhere keeps its guard.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota};
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .guard_from_latency();
    /// assert!(config.get_guard_from_latency());
    /// ```
    pub fn guard_from_latency(mut self) -> Self {
        self.guard_from_latency = true;
        self
    }

    /// Whether the guard follows the latency ([`guard_from_latency`](Self::guard_from_latency)).
    pub fn get_guard_from_latency(&self) -> bool {
        self.guard_from_latency
    }

    /// Whether a call answered 429 counts against the key's windows. The Fabraix docs do not say;
    /// many servers count refused calls. Default [`RefusedCalls::Learn`]: counted until counting
    /// them is all that holds the key back, then one call tells (see [`RefusedCalls`]).
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota, RefusedCalls};
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .refused_calls(RefusedCalls::Count);
    /// assert_eq!(config.get_refused_calls(), RefusedCalls::Count);
    /// ```
    pub fn refused_calls(mut self, rule: RefusedCalls) -> Self {
        self.refused_calls = rule;
        self
    }

    /// Shorthand for [`refused_calls`](Self::refused_calls): `true` is [`RefusedCalls::Count`]
    /// (a server known to count refused calls), `false` [`RefusedCalls::DoNotCount`] (each refused
    /// call's slot is refunded: right for a server known not to count them, and it draws 429s
    /// from one that does).
    pub fn refused_calls_count(self, count: bool) -> Self {
        self.refused_calls(if count {
            RefusedCalls::Count
        } else {
            RefusedCalls::DoNotCount
        })
    }

    /// The configured rule for refused calls (what the key starts with; see
    /// [`KeyStats::refused_calls`](crate::KeyStats::refused_calls) for what it learned).
    pub fn get_refused_calls(&self) -> RefusedCalls {
        self.refused_calls
    }

    /// How each limit is read (see [`WindowSemantics`](crate::WindowSemantics)); default sliding
    /// windows, which every server model accepts.
    pub fn semantics(mut self, semantics: crate::ledger::WindowSemantics) -> Self {
        self.ledger.semantics = semantics;
        self
    }

    /// Whether a key read as sliding windows (the default [`semantics`](Self::semantics)) may
    /// learn from the server's answers that it is a sliding-window counter and read its limits
    /// as one from then on (default true; see
    /// [`KeyStats::learned_semantics`](crate::KeyStats::learned_semantics)). Off, the key keeps
    /// its reading and, after a refusal the quota allowed, paces at the counter's own rate, N − 1
    /// calls per window ([`KeyStats::paced`](crate::KeyStats::paced)).
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota};
    /// let config = KeyConfig::new("k", ApiKey::new("k").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .learn_semantics(false);
    /// # let _ = config;
    /// ```
    pub fn learn_semantics(mut self, learn: bool) -> Self {
        self.learn_semantics = learn;
        self
    }

    /// Calls this key made before the scheduler took it (by an earlier run of the program that
    /// stopped or crashed), at these wall-clock times. The server still counts them, so the key's
    /// windows start with them: each holds every window until it has aged out of it (see
    /// [`Ledger::with_earlier_calls`](crate::Ledger::with_earlier_calls)). Without them a restarted
    /// program would send a full window's worth at once into windows the server still holds
    /// part-used, and be refused. Times later than the scheduler's wall clock count as sent at
    /// once; times older than the longest window change nothing. Only the in-process ledger store
    /// needs them (a store shared between processes recorded the calls when they were made).
    /// Ignored when the key is already in the scheduler (its ledger keeps its own record).
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, Clock, KeyConfig, Quota, TokioClock};
    /// use std::time::Duration;
    /// // From an earlier run's record (here: made up, a minute ago).
    /// let a_minute_ago = TokioClock::new().wall_now() - Duration::from_secs(60);
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .sent_earlier([a_minute_ago; 3]);
    /// assert_eq!(config.get_sent_earlier().len(), 3);
    /// ```
    pub fn sent_earlier(mut self, times: impl IntoIterator<Item = SystemTime>) -> Self {
        self.sent_earlier.extend(times);
        self
    }

    /// Keeps a journal of this key's calls in the file at `path`: each call's wall-clock time is
    /// appended before the call goes out, and when the key is added again (the program restarted,
    /// even after being killed) the calls it holds that still count start the key's windows, as
    /// [`sent_earlier`](Self::sent_earlier) would. Nothing else needs to be kept: a restarted
    /// program is not refused for calls its previous run made. One program per file. The file
    /// stays small (8 bytes per call, rewritten with only the calls that still count once it holds
    /// a few thousand) and is written without `fsync` (a killed process loses nothing; a power
    /// loss may lose the last records). Off by default.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota};
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .call_journal("/var/lib/agent/calls-k");
    /// assert!(config.get_call_journal().is_some());
    /// ```
    pub fn call_journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.call_journal = Some(path.into());
        self
    }

    /// The `key` label of this key's metrics (see [`scheduler_metrics`](crate::scheduler_metrics));
    /// default: the key's fingerprint. Keys of one label add up in one series.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, Quota};
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .metrics_label("tenant-42");
    /// # let _ = config;
    /// ```
    pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
        self.metrics_label = Some(label.into());
        self
    }

    /// What a 401 of this key consults before it fails the key's queue: `refresh` is asked for a
    /// new key (a [`KeyProvider`](crate::KeyProvider) read again, say) and, if it gives one
    /// other than the key refused, the key is rotated to it and the refused job goes back to the
    /// front of its lane; otherwise the 401 fails the queue as usual. The key sends nothing while
    /// `refresh` runs (the other keys of its dispatch task go on; keep it short all the same:
    /// [`KeyProvider::refresher`](crate::KeyProvider::refresher) bounds a command's run by its
    /// timeout). A 401 of a call sent with a key rotated since is
    /// sent again with the new key, whether or not this is set. Off by default.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, KeyConfig, KeyProvider, Quota, TokioClock};
    /// use std::sync::Arc;
    /// let provider = KeyProvider::file("/run/secrets/fabraix-key");
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .on_unauthorized(provider.refresher(Arc::new(TokioClock::new())));
    /// # let _ = config;
    /// ```
    pub fn on_unauthorized(mut self, refresh: std::sync::Arc<dyn KeyRefresh>) -> Self {
        self.key_refresh = Some(refresh);
        self
    }

    /// The file given to [`call_journal`](Self::call_journal).
    pub fn get_call_journal(&self) -> Option<&Path> {
        self.call_journal.as_deref()
    }

    /// The calls given to [`sent_earlier`](Self::sent_earlier).
    pub fn get_sent_earlier(&self) -> &[SystemTime] {
        &self.sent_earlier
    }

    /// The calls this key would start its windows with if it were added at `now` (wall clock):
    /// those given to [`sent_earlier`](Self::sent_earlier) and those in its
    /// [`call_journal`](Self::call_journal) that still count (not older than the quota's longest
    /// window plus the guard, nor that far ahead), oldest first. The journal is only read, not
    /// locked or written, so this may be called while a scheduler holds it (to plan a resumed
    /// batch, say). An error is the journal's: it exists but cannot be read.
    ///
    /// ```
    /// use fabraix_scheduler::{ApiKey, Clock, KeyConfig, Quota, TokioClock};
    /// use std::time::Duration;
    /// let now = TokioClock::new().wall_now();
    /// let config = KeyConfig::new("k", ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development())
    ///     .unwrap()
    ///     .sent_earlier([now - Duration::from_secs(30), now - Duration::from_secs(7_200)]);
    /// // The call of two hours ago is out of every window of 60/1m,1000/1h.
    /// assert_eq!(config.calls_that_count(now).unwrap(), [now - Duration::from_secs(30)]);
    /// ```
    pub fn calls_that_count(&self, now: SystemTime) -> std::io::Result<Vec<SystemTime>> {
        super::call_journal::calls_that_count(
            self.call_journal.as_deref(),
            self.counted_for(),
            now,
            &self.sent_earlier,
        )
    }

    /// How long a call of this key counts: its quota's longest window plus the ledger's guard.
    pub(crate) fn counted_for(&self) -> Duration {
        self.ledger.counted_for(&self.quota)
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }
}

/// How [`Scheduler::shutdown`](crate::Scheduler::shutdown) ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Send everything queued (as the quota allows), then stop.
    Drain,
    /// Send nothing more: every queued job is handed back in the report (its ticket resolves to
    /// [`JobError::ShutDown`](crate::JobError::ShutDown)); calls already on the wire finish.
    ReturnUnsent,
    /// Drain until the deadline, then hand back what is left.
    DrainUntil(crate::clock::Instant),
}
