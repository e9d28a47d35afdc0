//! The part of a dispatch shard that its keys and the scheduler hold: the channel of work for
//! the shard's task (keys to serve, calls to start), the shard's life (keys given to it, whether
//! its task runs), and the slab its keys' outcomes wait in. Generic over the key type, so that a
//! key can hold its shard's link without the shard's task (the driver, [`super::shard`]) and the
//! key importing each other.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::addressing::Addressing;
use super::call_journal::Unflushed;
use super::key_state::Queued;
use super::outcome_slab::OutcomeSlab;
use crate::clock::Instant;

/// The part of a shard that keys and the scheduler share: the keys to serve and the shard's life.
#[derive(Debug)]
pub(crate) struct Shard<K> {
    /// Keys to serve and calls to start. A channel rather than a locked list: submitters on other
    /// threads add work without contending for a lock, and the shard wakes on the channel itself.
    ready: mpsc::UnboundedSender<Ready<K>>,
    /// The receiving end, held by the shard's task while it runs.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Ready<K>>>>,
    life: Mutex<ShardLife>,
    /// Set when one of its keys starts handing its jobs back (shutdown, removal): the jobs of
    /// that key waiting out a backoff are handed back at the shard's next turn, not when their
    /// backoff ends.
    pub(crate) handing_back: AtomicBool,
    /// Where the outcomes of its keys' unfinished jobs wait for their tickets: one slab for all
    /// its keys, so that 10,000 quiet keys do not keep 10,000 slabs (or their cache lines) warm.
    pub(crate) outcomes: Arc<OutcomeSlab>,
    /// The shard's generator for retry jitter, kept here while its task is not running (the
    /// running task owns it: no lock is taken per decision).
    rng: Mutex<fastrand::Rng>,
    /// Its keys' call journals with records of calls started this turn, written before the
    /// turn's calls are polled.
    pub(crate) unflushed: Unflushed,
}

impl<K> Shard<K> {
    /// A shard whose jitter comes from `rng`.
    pub(crate) fn new(rng: fastrand::Rng) -> Self {
        let (ready, receiver) = mpsc::unbounded_channel();
        Self {
            ready,
            receiver: Mutex::new(Some(receiver)),
            life: Mutex::default(),
            handing_back: AtomicBool::new(false),
            outcomes: Arc::default(),
            rng: Mutex::new(rng),
            unflushed: Unflushed::default(),
        }
    }
}

impl<K> Default for Shard<K> {
    fn default() -> Self {
        Self::new(fastrand::Rng::new())
    }
}

/// Work for a shard.
// A due call is moved once through the channel; a box would cost an allocation per call instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Ready<K> {
    /// Serve this key (see `KeyQueue::wake`).
    Serve(Arc<K>),
    /// Start this call: its slot was reserved and its place on the wire counted when it was
    /// submitted to an idle key (see `Scheduler::submit`).
    Start(DueCall<K>),
}

/// A job whose slot is due, taken at submission by a key with nothing queued and room on the
/// wire: the shard only starts it.
#[derive(Debug)]
pub(crate) struct DueCall<K> {
    pub(crate) q: Arc<K>,
    pub(crate) job: Queued,
    pub(crate) to: Arc<Addressing>,
    /// Its slot, reserved at submission (when it was due).
    pub(crate) slot: Instant,
}

#[derive(Debug, Default)]
struct ShardLife {
    /// Keys given to this shard and not retired.
    live: usize,
    /// Whether the shard's task runs.
    running: bool,
}

impl<K> Shard<K> {
    /// Puts `q` on the list of keys to serve (through `KeyQueue::wake`, which makes sure a key
    /// is listed once).
    pub(crate) fn schedule(&self, q: Arc<K>) {
        // The receiver lives in the shard as long as the shard does: this cannot fail.
        let _ = self.ready.send(Ready::Serve(q));
    }

    /// Hands the shard a call to start (its key counts it on the wire already).
    pub(crate) fn start(&self, call: DueCall<K>) {
        // As in `schedule`: the receiver lives as long as the shard.
        let _ = self.ready.send(Ready::Start(call));
    }

    /// A key joins the shard. True if the shard's task is not running and must be started.
    pub(crate) fn join(&self) -> bool {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.live += 1;
        !std::mem::replace(&mut life.running, true)
    }

    pub(crate) fn retire(&self) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.live = life.live.saturating_sub(1);
    }

    /// The receiver of its work, taken by the shard's task as it starts (`None` if a task runs
    /// already), with the shard's generator.
    pub(crate) fn take_receiver(
        &self,
    ) -> Option<(mpsc::UnboundedReceiver<Ready<K>>, fastrand::Rng)> {
        let ready = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let rng = self.rng.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some((ready, rng))
    }

    /// If no key is left, the shard counts as stopped and takes its receiver back from `ready`,
    /// and its generator from `rng` (under the same lock as `join`, so a task started next finds
    /// them): true.
    pub(crate) fn stop_if_done(
        &self,
        ready: &mut Option<mpsc::UnboundedReceiver<Ready<K>>>,
        rng: &fastrand::Rng,
    ) -> bool {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        if life.live == 0 {
            life.running = false;
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = rng.clone();
            *self.receiver.lock().unwrap_or_else(|p| p.into_inner()) = ready.take();
            true
        } else {
            false
        }
    }
}
