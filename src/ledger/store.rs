//! The interface between the scheduler and wherever quota state lives.

use std::future::Future;
use std::time::Duration;

use crate::cause::Cause;
use crate::clock::Instant;
use crate::key_id::KeyId;
use crate::quota::Quota;

use super::{LedgerConfig, LocalLedger, SharedBlock};

/// Where the scheduler keeps each key's [`Ledger`](super::Ledger) state. The in-process
/// [`MemoryLedgerStore`](super::MemoryLedgerStore) is the default; a shared store (Redis, for one key
/// used by many processes) implements the same trait, with its own atomic reservation, without any
/// change to the scheduler. Every method is async for that reason; the memory store's futures are
/// ready at once.
///
/// The semantics of each method are those of the same-named method of [`Ledger`](super::Ledger).
pub trait LedgerStore: Send + Sync + 'static {
    /// The ledger of `key` itself, if this store keeps it in this process (default: `None`, not
    /// in this process). The scheduler then takes and gives back slots through it directly, with
    /// no lookup and no future per call; every other operation still goes through the store. A
    /// store that returns one must keep returning the same ledger for the key (updating it in
    /// place, as [`register`](Self::register) of [`MemoryLedgerStore`](super::MemoryLedgerStore)
    /// does). A [`LocalLedger`] is opaque: a store outside this crate keeps the default, or hands
    /// on the one of a store it wraps.
    fn local_ledger(&self, key: &KeyId) -> Option<LocalLedger> {
        let _ = key;
        None
    }

    /// A pause of `key` that another process sharing its ledger raised, as far as this process
    /// knows now (default: `None`, none); it may be over. The scheduler reads it right before it
    /// sends a slot it held for later, and gives the slot back when the pause
    /// [stops](SharedBlock::stops) it: the slot's job stays first in its lane, and the key
    /// reserves again (the store places the new slot after the pause). Called on the dispatch
    /// path: it must answer at once from what the store holds (one lock or atomic read), never
    /// wait. A store in one process keeps the default: the scheduler paused the key itself.
    fn shared_block(&self, key: &KeyId) -> Option<SharedBlock> {
        let _ = key;
        None
    }

    /// Tells the store which API key the ledger of `key` counts for, by its
    /// [fingerprint](crate::ApiKey::fingerprint) (never the key), before `key` is registered and
    /// when its API key rotates. A store shared between processes names the key's state after it,
    /// so that every process using the API key shares one ledger whatever its [`KeyId`]. The
    /// default ignores it.
    fn bind_fingerprint(&self, key: &KeyId, fingerprint: &str) {
        let _ = (key, fingerprint);
    }

    /// Creates (or replaces the quota of) the ledger of `key`.
    fn register(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`register`](Self::register), with calls the key made before `now` (by an earlier run of
    /// the program), each given by its age: see [`Ledger::with_earlier_calls`](super::Ledger::with_earlier_calls).
    /// The default ignores them and registers: right for a store shared between processes, which
    /// recorded those calls when they were made. A store that lives in one process must count
    /// them, as [`MemoryLedgerStore`](super::MemoryLedgerStore) does.
    fn register_with_earlier_calls(
        &self,
        key: &KeyId,
        quota: &Quota,
        config: LedgerConfig,
        now: Instant,
        ages: &[Duration],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = ages;
        self.register(key, quota, config, now)
    }

    /// Commits the earliest slot not before `now`.
    fn reserve(
        &self,
        key: &KeyId,
        now: Instant,
    ) -> impl Future<Output = Result<Instant, StoreError>> + Send;

    /// Gives back a slot whose call was never sent.
    fn refund(
        &self,
        key: &KeyId,
        slot: Instant,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// When the `k`-th next call (1-based) could go; commits nothing.
    fn nth_slot(
        &self,
        key: &KeyId,
        now: Instant,
        k: usize,
    ) -> impl Future<Output = Result<Instant, StoreError>> + Send;

    /// When the next `k` calls could go; commits nothing.
    fn plan(
        &self,
        key: &KeyId,
        now: Instant,
        k: usize,
    ) -> impl Future<Output = Result<Vec<Instant>, StoreError>> + Send;

    /// No slot before `until`.
    fn block_until(
        &self,
        key: &KeyId,
        until: Instant,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// At most `remaining` more calls before `reset_at` (from `RateLimit-*` headers).
    fn apply_server_window(
        &self,
        key: &KeyId,
        remaining: u32,
        reset_at: Instant,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Minimum spacing between slots, or none.
    fn set_pace(
        &self,
        key: &KeyId,
        spacing: Option<Duration>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Per-limit utilisation over the two windows before `now` (see
    /// [`Ledger::recent_utilisation`](super::Ledger::recent_utilisation)).
    fn recent_utilisation(
        &self,
        key: &KeyId,
        now: Instant,
    ) -> impl Future<Output = Result<Vec<f64>, StoreError>> + Send;
}

/// A ledger store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No ledger was registered for the key.
    #[error("no quota ledger is registered for key {0}")]
    UnknownKey(KeyId),
    /// The store itself failed (a shared store's connection, say).
    #[error("quota store unavailable: {0}")]
    Unavailable(String),
    /// The store's address or settings are unusable (a URL or CA certificate the client
    /// refused): the same on every try, so nothing waits for it.
    #[error("quota store misconfigured: {0}")]
    InvalidConfig(String),
    /// Another process shares the key's ledger with another quota (or semantics, or guard): the
    /// fleet must agree on one.
    #[error("quota conflict: {0}")]
    QuotaConflict(String),
    /// The key's call journal ([`KeyConfig::call_journal`](crate::KeyConfig::call_journal))
    /// cannot be opened (`kind` is [`WouldBlock`](std::io::ErrorKind::WouldBlock) when another
    /// key or program holds it).
    #[error("call journal: {message}")]
    Journal {
        /// What kind of failure.
        kind: std::io::ErrorKind,
        /// The journal's path and what failed.
        message: String,
        /// The I/O error.
        source: Cause,
    },
}
