//! A key looked up once: a handle that submits to it without finding it by its id each time.

use std::fmt;
use std::sync::Arc;

use super::key_queue::KeyQueue;
use super::submit::Attempt;
use super::{Scheduler, Ticket};
use crate::job::Job;
use crate::job_error::SubmitError;
use crate::key_id::KeyId;
use crate::ledger::{LedgerStore, MemoryLedgerStore};

/// One key of a [`Scheduler`], looked up once ([`Scheduler::key`]).
///
/// [`submit`](KeyHandle::submit) does exactly what [`Scheduler::submit`] does for this key (same
/// queue, quota, priorities, overflow policy, outcomes), but never looks the key up by its id:
/// with thousands of keys that lookup is a hash-map probe whose memory is rarely in cache, a
/// large part of a submit's cost. Keep one handle per key you submit to often.
///
/// A key rotated ([`Scheduler::rotate_key`]) sends with its new API key through every handle. A
/// key removed ([`Scheduler::remove_key`]) refuses the submits of its handles with
/// [`SubmitError::ShuttingDown`], even once its id is added again (take a new handle then). A handle
/// is also a handle of the scheduler: like a [`Scheduler`] clone, it keeps the scheduler open
/// (dropping the last of them closes every key). After [`Scheduler::shutdown`] its submits are
/// refused with [`SubmitError::ShuttingDown`], as the scheduler's are. Cheap to clone.
pub struct KeyHandle<S: LedgerStore = MemoryLedgerStore> {
    scheduler: Scheduler<S>,
    queue: Arc<KeyQueue>,
}

impl<S: LedgerStore> KeyHandle<S> {
    pub(crate) fn new(scheduler: Scheduler<S>, queue: Arc<KeyQueue>) -> Self {
        Self { scheduler, queue }
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.queue.id
    }

    // [adapters] Read by the tower / reqwest-middleware adapters (a request's path under the
    // key's base URL; their back-pressure bound).

    /// The key's base URL (normalised), which every job's path is joined to.
    pub fn base_url(&self) -> &str {
        self.queue.endpoint.base_url()
    }

    /// Jobs the key's queue holds at most ([`KeyConfig::queue_capacity`](crate::KeyConfig::queue_capacity)).
    pub fn capacity(&self) -> usize {
        self.queue.capacity
    }

    /// Queues a job for this key and returns its ticket: [`Scheduler::submit`] without the
    /// lookup (and never [`SubmitError::UnknownKey`]).
    pub async fn submit(&self, job: Job) -> Result<Ticket, SubmitError> {
        // The same yield point as `Scheduler::submit`'s, before anything is queued.
        tokio::task::consume_budget().await;
        // As `Scheduler::submit` does once it has found the key.
        let wait = match self.scheduler.try_submit(Arc::clone(&self.queue), job) {
            Attempt::Done(result) => return result,
            Attempt::Wait(wait) => wait,
        };
        Box::pin(self.scheduler.submit_waiting(wait)).await
    }
}

impl<S: LedgerStore> Clone for KeyHandle<S> {
    fn clone(&self) -> Self {
        Self {
            scheduler: self.scheduler.clone(),
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<S: LedgerStore> fmt::Debug for KeyHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id only: the key's state holds its API key.
        f.debug_struct("KeyHandle")
            .field("key", &self.queue.id)
            .finish_non_exhaustive()
    }
}
