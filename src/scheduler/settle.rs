//! What an answer leaves to wait for before its key reserves again: what it tells the key's
//! ledger in the store (a refused call's refund, the server's window, the pause, the pace), or the
//! key's refresh after a 401.
//!
//! [`super::answers`] decides it without waiting ([`Settle`]); the shard ([`super::shard`]) waits
//! for it beside its other work ([`carry`], its future) and hands the result back ([`settled`]).
//! Until it is in, the key reserves no slot and does not retire ([`KeyState::settle_started`]): a
//! pause is in the store before the key asks the store for its next slot, so no slot is reserved
//! under the plan the answer changed, while the other keys of the shard go on. A store in this
//! process answers at once, and the shard takes its answer in the same turn.
//!
//! [`KeyState::settle_started`]: super::key_state::KeyState::settle_started

use std::sync::Arc;
use std::time::Duration;

use super::answers::refreshed;
use super::key_queue::KeyQueue;
use super::key_state::Queued;
use super::Inner;
use crate::api_key::ApiKey;
use crate::clock::Instant;
use crate::key_provider::KeyRefresh;
use crate::ledger::LedgerStore;
use crate::transport::HttpResponse;

/// What an answer of `q` leaves to wait for; the key is marked as settling while it is out.
pub(crate) struct Settle {
    pub(crate) q: Arc<KeyQueue>,
    work: Work,
}

enum Work {
    Writes(Writes),
    /// A 401 for the key in force: its source is asked for another ([`refreshed`] carries on).
    /// (Boxed: a rare answer, and a large one.)
    Refresh(Box<Refresh>),
}

struct Refresh {
    refresh: Arc<dyn KeyRefresh>,
    refused: ApiKey,
    response: HttpResponse,
    /// The refused job; taken out by the shard ([`Settle::take_job`]) so that it is never held
    /// by a future alone.
    job: Option<Queued>,
}

/// What an answer tells the key's ledger in the store, in this order.
#[derive(Default)]
pub(crate) struct Writes {
    /// The slot of a refused call to give back (refused calls do not count).
    pub(crate) refund: Option<Instant>,
    /// The server's window: at most `.0` more calls before `.1`.
    pub(crate) window: Option<(u32, Instant)>,
    /// No slot before this (a 429's pause).
    pub(crate) block: Option<Instant>,
    pub(crate) pace: PaceWrite,
}

/// What an answer does to the key's pace in the store.
#[derive(Default)]
pub(crate) enum PaceWrite {
    /// Nothing.
    #[default]
    Keep,
    /// No pace (the counter's estimate plans the calls).
    Drop,
    /// This spacing (errors are not reported: the next answer sets it again).
    Set(Duration),
    /// A 429 the quota allowed at this instant: the key's recent utilisation is read, and the key
    /// decides its pace from it ([`settled`]).
    Adapt(Instant),
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.refund.is_none()
            && self.window.is_none()
            && self.block.is_none()
            && matches!(self.pace, PaceWrite::Keep)
    }
}

impl Settle {
    /// `writes` for `q`, if there are any: the key settles until they are in.
    pub(crate) fn writes(q: &Arc<KeyQueue>, writes: Writes) -> Option<Settle> {
        if writes.is_empty() {
            return None;
        }
        q.lock().settle_started();
        Some(Settle {
            q: Arc::clone(q),
            work: Work::Writes(writes),
        })
    }

    /// The refresh of `q`'s key `refused` after a 401 (`response`) for `job`. The caller marked
    /// the key as settling, under the lock in which it found the key still in force.
    pub(crate) fn refresh(
        q: &Arc<KeyQueue>,
        refresh: Arc<dyn KeyRefresh>,
        refused: ApiKey,
        response: HttpResponse,
        job: Queued,
    ) -> Settle {
        Settle {
            q: Arc::clone(q),
            work: Work::Refresh(Box::new(Refresh {
                refresh,
                refused,
                response,
                job: Some(job),
            })),
        }
    }

    /// The job this holds (a 401's, while the key is refreshed), for the shard to keep.
    pub(crate) fn take_job(&mut self) -> Option<Queued> {
        match &mut self.work {
            Work::Refresh(refresh) => refresh.job.take(),
            Work::Writes(_) => None,
        }
    }
}

/// What came of a [`Settle`], for [`settled`].
pub(crate) struct Settled {
    q: Arc<KeyQueue>,
    done: Done,
}

enum Done {
    /// The writes are in; with the key's utilisation if its pace is to be adapted.
    Written { adapt: Option<(Instant, Vec<f64>)> },
    /// The key's source answered the refresh with `new`.
    Refreshed {
        refused: ApiKey,
        response: HttpResponse,
        new: Option<ApiKey>,
    },
}

/// Waits for `settle` (the store's writes, one after another, or the key's refresh). A store's
/// error is logged and the rest goes on, as the key does: the answer has been acted on already.
pub(crate) async fn carry<S: LedgerStore>(inner: &Inner<S>, settle: Settle) -> Settled {
    let Settle { q, work } = settle;
    let done = match work {
        Work::Writes(writes) => Done::Written {
            adapt: write(inner, &q, writes).await,
        },
        Work::Refresh(work) => {
            let Refresh {
                refresh,
                refused,
                response,
                job: _,
            } = *work;
            let new = refresh.refresh(&refused).await;
            Done::Refreshed {
                refused,
                response,
                new,
            }
        }
    };
    Settled { q, done }
}

async fn write<S: LedgerStore>(
    inner: &Inner<S>,
    q: &KeyQueue,
    writes: Writes,
) -> Option<(Instant, Vec<f64>)> {
    let Writes {
        refund,
        window,
        block,
        pace,
    } = writes;
    let store = &inner.store;
    // The pause first: a store shared with other processes tells them at once, and the refund
    // that follows frees no slot for them before it. (The refund before the server's window:
    // the window's remaining already leaves out the refused call.)
    if let Some(until) = block {
        if let Err(e) = store.block_until(&q.id, until).await {
            tracing::warn!(key = %q.id, error = %e, "could not pause the key in the store");
        }
    }
    if let Some(slot) = refund {
        if let Err(e) = store.refund(&q.id, slot).await {
            tracing::warn!(key = %q.id, error = %e, "could not refund a refused call");
        }
    }
    if let Some((remaining, reset_at)) = window {
        if let Err(e) = store.apply_server_window(&q.id, remaining, reset_at).await {
            tracing::warn!(key = %q.id, error = %e, "could not apply the server's rate-limit headers");
        }
    }
    match pace {
        PaceWrite::Keep => None,
        PaceWrite::Drop => {
            if let Err(e) = store.set_pace(&q.id, None).await {
                tracing::warn!(key = %q.id, error = %e, "could not drop the key's pace");
            }
            None
        }
        PaceWrite::Set(spacing) => {
            let _ = store.set_pace(&q.id, Some(spacing)).await;
            None
        }
        PaceWrite::Adapt(now) => {
            let utilisation = store
                .recent_utilisation(&q.id, now)
                .await
                .unwrap_or_default();
            Some((now, utilisation))
        }
    }
}

/// Carries on from what came of a [`Settle`] (`job`: the one it held): the key decides its pace
/// from its utilisation, or takes its refreshed key. Returns what is left to wait for (the pace
/// decided, still settling the same answer), or `None` when the key is done settling it.
pub(crate) fn settled(settled: Settled, job: Option<Queued>) -> Option<Settle> {
    let Settled { q, done } = settled;
    match done {
        Done::Written { adapt: None } => {}
        Done::Written {
            adapt: Some((now, utilisation)),
        } => {
            let spacing = q.lock().pace_after_refusal(now, &q.quota, &utilisation);
            if let Some(spacing) = spacing {
                tracing::info!(key = %q.id, spacing_ms = spacing.as_millis() as u64, "server counts more strictly than the quota: pacing evenly");
                let work = Work::Writes(Writes {
                    pace: PaceWrite::Set(spacing),
                    ..Writes::default()
                });
                return Some(Settle { q, work });
            }
        }
        Done::Refreshed {
            refused,
            response,
            new,
        } => {
            q.lock().refresh_done();
            if let Some(job) = job {
                refreshed(&q, job, &refused, response, new);
            }
        }
    }
    q.lock().settle_done();
    None
}
