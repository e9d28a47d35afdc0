//! A submitted job's handle: its ETA, a way to cancel it, and the future of its one outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use super::key_queue::KeyQueue;
use super::outcome_slab::OutcomeReceiver;
use crate::clock::Instant;
use crate::job_error::Outcome;
use crate::key_id::KeyId;

/// The handle of a submitted job. Await it for the job's outcome. Dropping it does not cancel
/// the job (fire and forget is allowed); [`cancel`](Ticket::cancel) does.
///
/// A ticket holds its key's queue (one reference count): the queue outlives the scheduler until
/// the last of its tickets is dropped.
pub struct Ticket {
    pub(crate) id: u64,
    pub(crate) eta: Instant,
    pub(crate) queue: Arc<KeyQueue>,
    pub(crate) outcome: OutcomeReceiver,
}

impl Ticket {
    /// The job's id, unique within the scheduler.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The key the job was submitted to.
    pub fn key(&self) -> &KeyId {
        &self.queue.id
    }

    /// When the job was planned to be sent, as of its submission: the ledger's slot for its place
    /// in the queue. Later higher-priority jobs, 429s and retries can move it.
    pub fn eta(&self) -> Instant {
        self.eta
    }

    /// How long from now (on the scheduler's clock) until [`eta`](Self::eta); zero once it has
    /// passed. For showing a person: "sent in about 3 s".
    pub fn eta_in(&self) -> Duration {
        self.eta.saturating_duration_since(self.queue.clock.now())
    }

    /// [`eta`](Self::eta) as a wall-clock time, on the scheduler's clock (its
    /// [`wall_now`](crate::Clock::wall_now) plus [`eta_in`](Self::eta_in)): for logs and
    /// displays.
    pub fn eta_wall(&self) -> SystemTime {
        let wall = self.queue.clock.wall_now();
        wall.checked_add(self.eta_in()).unwrap_or(wall)
    }

    /// Cancels the job if it has not been sent yet: it is never sent, its slot (if one was held for
    /// it) is refunded, and its outcome becomes [`JobError::Cancelled`](crate::JobError::Cancelled).
    /// Returns false if the job was already sent or finished.
    pub fn cancel(&self) -> bool {
        self.queue.cancel(self.id)
    }
}

impl Future for Ticket {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.outcome.poll(&this.queue.shard.outcomes, cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.outcome.abandon(&self.queue.shard.outcomes);
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("key", &self.queue.id)
            .field("eta_in", &self.eta_in())
            .field(
                "eta_wall",
                &crate::fabraix::httpdate_to_rfc3339(self.eta_wall()),
            )
            .finish_non_exhaustive()
    }
}
