//! Where a job's outcome waits for its ticket: one slot per unfinished job in a slab that each
//! dispatch shard keeps for its keys, reused by the jobs that come after it.
//!
//! A tokio `oneshot` per job cost an allocation (about 200 bytes with an [`Outcome`] in it, past
//! the allocator's fast bins) and its free, the largest single item of a call's cost in the
//! scheduler-overhead profile. Here a job takes a vacant slot of its shard's slab when it is queued
//! and gives it back when its ticket has taken the outcome, so steady traffic allocates nothing.
//! The slab grows in chunks of [`CHUNK`] slots (one allocation per chunk, never moved or doubled)
//! to the most tickets unfinished at once, and keeps them.
//!
//! The guarantee a `oneshot` gave is kept: an [`OutcomeSender`] dropped without sending (a job
//! lost to a bug or a runtime shut down under it) delivers [`JobError::Internal`], so a ticket
//! never waits forever. A slot is vacant again only once both its sender and its receiver are
//! done with it, so an index is never shared by two jobs.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::job_error::{JobError, Outcome};

/// Slots added at a time when none is vacant.
const CHUNK: usize = 64;

/// The slab where the outcomes of a shard's unfinished jobs wait for their tickets (see the module
/// documentation).
#[derive(Debug, Default)]
pub(crate) struct OutcomeSlab {
    slab: Mutex<Slab>,
}

#[derive(Debug, Default)]
struct Slab {
    /// Slot `i` is `chunks[i / CHUNK][i % CHUNK]`.
    chunks: Vec<Box<[Slot]>>,
    /// Indices of vacant slots.
    vacant: Vec<u32>,
}

#[derive(Debug)]
enum Slot {
    Vacant,
    /// The outcome is not in yet; the waker is the ticket's, once polled.
    Waiting(Option<Waker>),
    /// The outcome, not taken yet.
    Ready(Outcome),
    /// The ticket was dropped first: the outcome, when sent, is dropped and the slot freed.
    Abandoned,
}

impl Slab {
    fn slot(&mut self, index: u32) -> &mut Slot {
        let i = index as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    /// Lists slot `index` as vacant (it must be `Slot::Vacant` already).
    fn free(&mut self, index: u32) {
        debug_assert!(matches!(self.slot(index), Slot::Vacant));
        self.vacant.push(index);
    }

    /// A vacant slot's index, adding a chunk if none is left.
    fn take_vacant(&mut self) -> u32 {
        if let Some(index) = self.vacant.pop() {
            return index;
        }
        let first = self.chunks.len() * CHUNK;
        let end = u32::try_from(first + CHUNK).expect("fewer than 2^32 unfinished jobs");
        self.chunks
            .push((0..CHUNK).map(|_| Slot::Vacant).collect::<Box<[Slot]>>());
        // Handed out lowest first.
        self.vacant.extend((first as u32 + 1..end).rev());
        first as u32
    }
}

impl OutcomeSlab {
    fn lock(&self) -> MutexGuard<'_, Slab> {
        self.slab.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new job's two ends: the sender goes with the job, the receiver into its ticket.
    pub(crate) fn pair(self: &Arc<Self>) -> (OutcomeSender, OutcomeReceiver) {
        let index = {
            let mut slab = self.lock();
            let index = slab.take_vacant();
            *slab.slot(index) = Slot::Waiting(None);
            index
        };
        (
            OutcomeSender {
                slots: Arc::clone(self),
                index,
                sent: false,
            },
            OutcomeReceiver { index, done: false },
        )
    }

    /// Slots in the slab (vacant or not): what the shard's outcomes hold on to.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.lock().chunks.len() * CHUNK
    }
}

/// The end of a job's outcome that goes with the job. Send once; dropped unsent, it delivers
/// [`JobError::Internal`].
pub(crate) struct OutcomeSender {
    slots: Arc<OutcomeSlab>,
    index: u32,
    sent: bool,
}

impl OutcomeSender {
    /// Delivers the job's outcome to its ticket (dropped if the ticket is gone).
    pub(crate) fn send(mut self, outcome: Outcome) {
        self.deliver(outcome);
    }

    fn deliver(&mut self, outcome: Outcome) {
        self.sent = true;
        let mut slab = self.slots.lock();
        let slot = slab.slot(self.index);
        match slot {
            Slot::Waiting(waker) => {
                let waker = waker.take();
                // The outcome is moved once, into the slot (the enum is large: no `replace`).
                *slot = Slot::Ready(outcome);
                drop(slab);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Slot::Abandoned => {
                // Nobody will take it: dropped outside the lock.
                *slot = Slot::Vacant;
                slab.free(self.index);
                drop(slab);
                drop(outcome);
            }
            // A slot with a live sender is neither vacant nor ready: the sender sends once.
            Slot::Vacant | Slot::Ready(_) => {
                debug_assert!(false, "outcome slot in use by another job");
            }
        }
    }
}

impl Drop for OutcomeSender {
    fn drop(&mut self) {
        if !self.sent {
            let why = if std::thread::panicking() {
                "a panic in the scheduler ended the job (the panic is in the log)"
            } else {
                "the job was dropped without an outcome"
            };
            self.deliver(Err(JobError::Internal(why.into())));
        }
    }
}

impl fmt::Debug for OutcomeSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeSender")
            .field("index", &self.index)
            .field("sent", &self.sent)
            .finish()
    }
}

/// The end of a job's outcome that its ticket holds: an index into the slots its key's queue
/// holds (the ticket holds the queue, so this needs no reference count of its own). Ready once,
/// with the outcome; [`abandon`](Self::abandon) it if it is dropped before that.
pub(crate) struct OutcomeReceiver {
    index: u32,
    done: bool,
}

impl OutcomeReceiver {
    /// The outcome, if it is in; otherwise the task of `cx` is woken when it is.
    pub(crate) fn poll(&mut self, slots: &OutcomeSlab, cx: &mut Context<'_>) -> Poll<Outcome> {
        if self.done {
            return Poll::Ready(Err(JobError::Internal(
                "the ticket was awaited after it gave its outcome".into(),
            )));
        }
        let index = self.index;
        let mut slab = slots.lock();
        let slot = slab.slot(index);
        match slot {
            Slot::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Ready(_) => {
                let Slot::Ready(outcome) = std::mem::replace(slot, Slot::Vacant) else {
                    unreachable!("matched as ready");
                };
                slab.free(index);
                drop(slab);
                self.done = true;
                Poll::Ready(outcome)
            }
            Slot::Vacant | Slot::Abandoned => {
                drop(slab);
                self.done = true;
                Poll::Ready(Err(JobError::Internal(
                    "the job's outcome slot was lost".into(),
                )))
            }
        }
    }

    /// The ticket is dropped: an outcome already in is dropped and the slot freed; otherwise the
    /// sender frees it when it sends.
    pub(crate) fn abandon(&mut self, slots: &OutcomeSlab) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut slab = slots.lock();
        let slot = slab.slot(self.index);
        match slot {
            Slot::Ready(_) => {
                let unwanted = std::mem::replace(slot, Slot::Vacant);
                slab.free(self.index);
                drop(slab);
                drop(unwanted);
            }
            Slot::Waiting(_) => *slot = Slot::Abandoned,
            Slot::Vacant | Slot::Abandoned => {}
        }
    }
}

impl fmt::Debug for OutcomeReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeReceiver")
            .field("index", &self.index)
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use std::future::Future;
    use std::pin::Pin;

    use futures_util::FutureExt;

    use super::*;
    use crate::api_error::ApiError;

    /// A receiver with the slots it reads from, as a ticket holds it: a future of the outcome,
    /// abandoned when dropped.
    struct Held {
        slots: Arc<OutcomeSlab>,
        rx: OutcomeReceiver,
    }

    impl Future for Held {
        type Output = Outcome;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
            let this = self.get_mut();
            this.rx.poll(&this.slots, cx)
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            self.rx.abandon(&self.slots);
        }
    }

    fn pair(slots: &Arc<OutcomeSlab>) -> (OutcomeSender, Held) {
        let (tx, rx) = slots.pair();
        let slots = Arc::clone(slots);
        (tx, Held { slots, rx })
    }

    fn failed(n: u16) -> Outcome {
        Err(JobError::Rejected {
            api: ApiError::from_body(n, b""),
            attempts: 1,
        })
    }

    fn status_of(outcome: Outcome) -> Option<u16> {
        match outcome {
            Err(JobError::Rejected { api, .. }) => Some(api.status),
            _ => None,
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_outcome_sent_before_or_after_the_poll_reaches_its_own_ticket() {
        let slots = Arc::new(OutcomeSlab::default());
        let (tx1, rx1) = pair(&slots);
        let (tx2, mut rx2) = pair(&slots);
        let counting = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counting));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut rx2).poll(&mut cx).is_pending());
        tx2.send(failed(402));
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the waiting ticket is woken"
        );
        tx1.send(failed(401));
        assert_eq!(status_of(rx1.now_or_never().unwrap()), Some(401));
        match Pin::new(&mut rx2).poll(&mut cx) {
            Poll::Ready(outcome) => assert_eq!(status_of(outcome), Some(402)),
            Poll::Pending => panic!("sent, so ready"),
        }
        assert!(matches!(
            Pin::new(&mut rx2).poll(&mut cx),
            Poll::Ready(Err(JobError::Internal(_)))
        ));
    }

    #[test]
    fn a_sender_dropped_unsent_delivers_an_internal_error() {
        let slots = Arc::new(OutcomeSlab::default());
        let (tx, rx) = pair(&slots);
        drop(tx);
        assert!(matches!(
            rx.now_or_never(),
            Some(Err(JobError::Internal(_)))
        ));
    }

    /// The slab's (slots, vacant slots).
    fn counts(slots: &OutcomeSlab) -> (usize, usize) {
        (slots.capacity(), slots.lock().vacant.len())
    }

    #[test]
    fn slots_are_reused_once_both_ends_are_done_whichever_goes_first() {
        let slots = Arc::new(OutcomeSlab::default());
        for round in 0..3 {
            let pairs: Vec<_> = (0..CHUNK).map(|_| pair(&slots)).collect();
            assert_eq!(
                counts(&slots),
                (CHUNK, 0),
                "round {round}: one chunk, all in use"
            );
            for (i, (tx, rx)) in pairs.into_iter().enumerate() {
                match (round + i) % 3 {
                    // Ticket dropped first, outcome sent to nobody.
                    0 => {
                        drop(rx);
                        tx.send(failed(400));
                    }
                    // Outcome sent, ticket dropped without taking it.
                    1 => {
                        tx.send(failed(400));
                        drop(rx);
                    }
                    // Outcome sent and taken.
                    _ => {
                        tx.send(failed(400));
                        assert_eq!(status_of(rx.now_or_never().unwrap()), Some(400));
                    }
                }
            }
            assert_eq!(
                counts(&slots),
                (CHUNK, CHUNK),
                "round {round}: all vacant again"
            );
        }
    }

    #[test]
    fn a_slot_held_by_either_end_is_not_handed_out_again() {
        let slots = Arc::new(OutcomeSlab::default());
        let (tx_a, rx_a) = pair(&slots);
        let (tx_b, rx_b) = pair(&slots);
        // Only the sender of `a` and only the receiver of `b` are left.
        drop(rx_a);
        tx_b.send(failed(409));
        let more: Vec<_> = (0..2 * CHUNK).map(|_| pair(&slots)).collect();
        let mut indices: Vec<u32> = more.iter().map(|(tx, _)| tx.index).collect();
        indices.extend([tx_a.index, rx_b.rx.index]);
        let n = indices.len();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), n, "no index is shared");
        assert_eq!(status_of(rx_b.now_or_never().unwrap()), Some(409));
        drop((tx_a, more));
        assert_eq!(counts(&slots), (3 * CHUNK, 3 * CHUNK));
    }

    #[test]
    fn ends_on_two_threads_deliver_every_outcome_once_to_its_own_ticket() {
        let slots = Arc::new(OutcomeSlab::default());
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..2_000).map(|_| pair(&slots)).unzip();
        let sending = std::thread::spawn(move || {
            for (i, tx) in senders.into_iter().enumerate() {
                tx.send(failed(400 + (i % 100) as u16));
            }
        });
        let got = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(futures_util::future::join_all(receivers));
        sending.join().unwrap();
        for (i, outcome) in got.into_iter().enumerate() {
            assert_eq!(
                status_of(outcome),
                Some(400 + (i % 100) as u16),
                "ticket {i}"
            );
        }
        assert_eq!(counts(&slots), (2_048, 2_048), "every slot is vacant again");
    }
}
