//! Submitting a job: into its key's lane with an ETA from the ledger, or straight to an error;
//! the usual case without waiting, the rest (a full queue, a store elsewhere) the slower way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::addressing::Addressing;
use super::config::Overflow;
use super::key_queue::{DueCall, KeyQueue};
use super::key_state::{Admit, Queued};
use super::outcome_slab::OutcomeReceiver;
use super::{Scheduler, Ticket};
use crate::clock::Instant;
use crate::job::Job;
use crate::job_error::{JobError, SubmitError};
use crate::key_id::KeyId;
use crate::ledger::LedgerStore;

/// What one attempt of `submit` came to.
pub(crate) enum Attempt {
    Done(Result<Ticket, SubmitError>),
    Wait(Waiting),
}

/// What `submit` still waits for.
pub(crate) enum Waiting {
    /// Room in the key's queue, to queue `job`.
    Room { q: Arc<KeyQueue>, job: Job },
    /// The ETA of a queued job, the `k`-th next call, from a store not in this process. Its
    /// ticket is made already (dropped while waiting, it lets go of the job's outcome).
    Eta {
        ticket: Ticket,
        k: usize,
        now: Instant,
    },
}

/// Which of the key's next slots a new job gets (1-based): `ahead` jobs go before it, and a slot
/// already held (`pending`) goes to the first of them.
fn eta_rank(ahead: usize, pending: Option<Instant>) -> usize {
    match pending {
        Some(_) => ahead,
        None => ahead + 1,
    }
}

/// The ticket of job `id` of the key of `queue`.
fn ticket(id: u64, eta: Instant, outcome: OutcomeReceiver, queue: Arc<KeyQueue>) -> Ticket {
    Ticket {
        id,
        eta,
        queue,
        outcome,
    }
}

/// What `enqueue` did with a job.
enum Enqueued {
    Queued {
        ahead: usize,
        pending: Option<Instant>,
        /// The ETA, when the key's ledger is in this process.
        eta: Option<Instant>,
        rx: OutcomeReceiver,
    },
    /// Failed at once (the key is revoked); its outcome is in already.
    FailedFast(OutcomeReceiver),
    Refused(Box<SubmitError>),
    Full(Job),
}

impl<S: LedgerStore> Scheduler<S> {
    /// Queues a job for `key` and returns its ticket (ETA, cancel, outcome). With
    /// [`Overflow::Wait`] a full queue makes this wait for room; with [`Overflow::Reject`] it
    /// returns [`SubmitError::QueueFull`]. A job for a key answered 401 fails at once with
    /// [`JobError::KeyRevoked`] (through its ticket) until the key is rotated.
    ///
    /// Cooperative: once the calling task has used its tokio budget, `submit` yields to the
    /// runtime first, so a long loop of submits lets the dispatchers run. A `submit` dropped while
    /// it waits for that budget or for room in the queue has queued nothing. (With a ledger store
    /// outside this process the job is queued before the store is asked for its ETA; dropped
    /// during that wait, the job stays queued, as if its ticket had been dropped.)
    pub async fn submit(&self, key: &KeyId, job: Job) -> Result<Ticket, SubmitError> {
        // A yield point, taken once the task's coop budget is spent, before anything is queued
        // (so a submit dropped here has done nothing). Without it a loop of submits never
        // yields: the key's dispatcher waits until the whole loop is done, by which time the
        // first jobs' state has left the cache.
        tokio::task::consume_budget().await;
        // The usual case is decided without waiting: queued (or failed fast), with its ETA from
        // the key's in-process ledger. Waiting for room, or for a store elsewhere to give the
        // ETA, takes the slower way, boxed so that this future stays small (it is moved on every
        // call).
        let Some(q) = self.queue(key) else {
            return Err(SubmitError::UnknownKey {
                key: key.clone(),
                job,
            });
        };
        // Bound before the `.await`, so that the attempt is not kept in this future's state.
        // (`KeyHandle::submit` repeats these lines: a shared `async fn` would nest its future in
        // this one, a larger state moved on every call.)
        let wait = match self.try_submit(q, job) {
            Attempt::Done(result) => return result,
            Attempt::Wait(wait) => wait,
        };
        Box::pin(self.submit_waiting(wait)).await
    }

    /// One attempt at queuing `job`, without waiting.
    // Inlined into both of its callers (`Scheduler::submit`, `KeyHandle::submit`): with two
    // callers the compiler kept it out of line, which cost about 5 % more instructions per job.
    #[inline(always)]
    pub(crate) fn try_submit(&self, q: Arc<KeyQueue>, job: Job) -> Attempt {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        match self.enqueue(&q, job, id) {
            Enqueued::Queued {
                eta: Some(eta), rx, ..
            } => Attempt::Done(Ok(ticket(id, eta, rx, q))),
            Enqueued::Queued {
                ahead, pending, rx, ..
            } => {
                let now = self.inner.clock.now();
                let k = eta_rank(ahead, pending);
                let ticket = ticket(id, now, rx, q);
                Attempt::Wait(Waiting::Eta { ticket, k, now })
            }
            Enqueued::FailedFast(rx) => {
                Attempt::Done(Ok(ticket(id, self.inner.clock.now(), rx, q)))
            }
            Enqueued::Refused(e) => Attempt::Done(Err(*e)),
            Enqueued::Full(job) => Attempt::Wait(Waiting::Room { q, job }),
        }
    }

    /// The slower way of [`submit`](Self::submit): waits for room in a full queue (registered
    /// before each attempt, so no room is missed), or for a store elsewhere to give the ETA.
    pub(crate) async fn submit_waiting(&self, wait: Waiting) -> Result<Ticket, SubmitError> {
        let mut wait = wait;
        loop {
            match wait {
                Waiting::Eta { mut ticket, k, now } => {
                    let eta = self.inner.store.nth_slot(&ticket.queue.id, now, k).await;
                    ticket.eta = eta.unwrap_or(now);
                    return Ok(ticket);
                }
                Waiting::Room { q, job } => {
                    let space = Arc::clone(&q);
                    let room = space.space.notified();
                    tokio::pin!(room);
                    room.as_mut().enable();
                    match self.try_submit(Arc::clone(&q), job) {
                        Attempt::Done(result) => return result,
                        Attempt::Wait(Waiting::Room { job, .. }) => {
                            room.await;
                            wait = Waiting::Room { q, job };
                        }
                        Attempt::Wait(other) => wait = other,
                    }
                }
            }
        }
    }

    /// Puts a job into its lane if there is room; never waits.
    fn enqueue(&self, q: &Arc<KeyQueue>, job: Job, id: u64) -> Enqueued {
        let mut st = q.lock();
        let to = match st.admit(&job.path) {
            Admit::Queue => None,
            Admit::StartIfDue(to) => Some(to),
            Admit::Invalid(reason) => {
                return Enqueued::Refused(Box::new(SubmitError::InvalidJob { reason, job }))
            }
            Admit::Closed => return Enqueued::Refused(Box::new(SubmitError::ShuttingDown { job })),
            Admit::Revoked(fingerprint) => {
                drop(st);
                q.counters.failed.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = q.shard.outcomes.pair();
                tx.send(Err(JobError::KeyRevoked {
                    fingerprint,
                    attempts: 0,
                }));
                return Enqueued::FailedFast(rx);
            }
            Admit::Full if q.overflow == Overflow::Reject => {
                return Enqueued::Refused(Box::new(SubmitError::QueueFull {
                    key: q.id.clone(),
                    capacity: q.capacity,
                    job,
                }))
            }
            Admit::Full => return Enqueued::Full(job),
        };
        // The idle key's fast path: with its ledger in this process and its next slot due now,
        // the slot is reserved and the job counted on the wire here, and the key's shard only
        // starts the call, without touching the queue. Otherwise the job is queued, with the ETA
        // the ledger gave.
        let mut idle_eta = None;
        if let Some(to) = to {
            if let Some(mut ledger) = q.lock_ledger() {
                match st.reserve_due_in(&mut ledger, self.inner.clock.now()) {
                    Ok(slot) => {
                        drop(ledger);
                        st.started_at_submit();
                        drop(st);
                        return self.start_now(q, job, id, to, slot);
                    }
                    Err(eta) => idle_eta = Some(eta),
                }
            }
        }
        let ahead = st.ahead_of(job.priority);
        let pending = st.held_slot();
        let eta = match pending {
            Some(slot) if ahead == 0 => Some(slot),
            // Looked up already (nothing ahead, no slot held: the next slot is this job's).
            _ if idle_eta.is_some() => idle_eta,
            _ => q.lock_ledger().map(|mut ledger| {
                let now = self.inner.clock.now();
                ledger.forecast(now, eta_rank(ahead, pending)).at
            }),
        };
        // Taken only now that the job is sure to be queued (the slab's lock nests in the queue's).
        let (tx, rx) = q.shard.outcomes.pair();
        let serve = st.queue(Queued::new(id, job, tx));
        drop(st);
        if serve {
            q.wake();
        }
        Enqueued::Queued {
            ahead,
            pending,
            eta,
            rx,
        }
    }

    /// Hands the idle key's job, its due `slot` reserved and its place on the wire counted, to
    /// the key's shard to start.
    fn start_now(
        &self,
        q: &Arc<KeyQueue>,
        job: Job,
        id: u64,
        to: Arc<Addressing>,
        slot: Instant,
    ) -> Enqueued {
        q.metrics.slot_reserved(std::time::Duration::ZERO); // [metrics] Due at once.
        let (tx, rx) = q.shard.outcomes.pair();
        q.shard.start(DueCall {
            q: Arc::clone(q),
            job: Queued::new(id, job, tx),
            to,
            slot,
        });
        Enqueued::Queued {
            ahead: 0,
            pending: None,
            eta: Some(slot),
            rx,
        }
    }
}
