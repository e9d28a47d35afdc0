//! A shard's calls on the wire, and the driving of their transport futures.
//!
//! Each call has a place in a slab: the call itself (key, job, slot, when it went), its transport
//! future while it runs, and a waker of its own, made once per place and reused by every call that
//! takes the place after it. A waker woken puts its place on a ready list and wakes the shard;
//! the shard polls only the places listed (a new call's place is listed when it is pushed).
//! Compared with a `FuturesUnordered`, a call costs no task allocation and no task to free, and
//! its job is moved into the slab once and out once.
//!
//! A waker may outlive its call (a transport may keep a clone): woken late, it lists a place
//! that is empty or holds a later call, whose future is then polled once more than needed, which
//! a future allows.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use super::answers::OnWire;
use super::panics::panic_message;
use crate::transport::{HttpResponse, TransportError, TransportErrorKind, TransportFuture};

/// Places kept in the slab once the wire is idle again (a burst on many keys may have grown it).
const KEEP_IDLE: usize = 256;

/// The calls of one shard that are on the wire (`C`: what a call's answer needs, [`OnWire`]).
pub(crate) struct Wire<C = OnWire> {
    places: Vec<Place<C>>,
    /// Places without a call.
    free: Vec<usize>,
    /// Calls on the wire.
    len: usize,
    /// Places to poll: the new calls' and those taken from the woken list.
    to_poll: Vec<usize>,
    woken: Arc<Woken>,
}

impl<C> Default for Wire<C> {
    fn default() -> Self {
        Self {
            places: Vec::new(),
            free: Vec::new(),
            len: 0,
            to_poll: Vec::new(),
            woken: Arc::default(),
        }
    }
}

/// One place of the slab.
struct Place<C> {
    call: Option<C>,
    response: Option<TransportFuture>,
    /// This place's waker, and its state (whether it is listed already).
    waker: Waker,
    listed: Arc<PlaceWaker>,
}

/// The places woken since the shard last looked, and the shard's waker.
#[derive(Default)]
struct Woken {
    places: Mutex<Vec<usize>>,
    shard: AtomicWaker,
}

/// The waker of one place: lists the place (once until it is polled) and wakes the shard.
struct PlaceWaker {
    index: usize,
    listed: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for PlaceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            self.woken
                .places
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.index);
            self.woken.shard.wake();
        }
    }
}

impl<C> Wire<C> {
    /// Puts `call` on the wire, answered when `response` completes (it is first polled by the
    /// next [`answers`](Self::answers)).
    pub(crate) fn push(&mut self, call: C, response: TransportFuture) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.places.len();
                let listed = Arc::new(PlaceWaker {
                    index,
                    listed: AtomicBool::new(false),
                    woken: Arc::clone(&self.woken),
                });
                self.places.push(Place {
                    call: None,
                    response: None,
                    waker: Waker::from(Arc::clone(&listed)),
                    listed,
                });
                index
            }
        };
        let place = &mut self.places[index];
        place.call = Some(call);
        place.response = Some(response);
        self.len += 1;
        if !place.listed.listed.swap(true, Ordering::AcqRel) {
            self.to_poll.push(index);
        }
    }

    /// Takes every call off the wire (their futures are dropped): after a panic in the shard,
    /// whose calls then fail.
    pub(crate) fn take_all(&mut self) -> Vec<C> {
        let calls: Vec<C> = self
            .places
            .iter_mut()
            .filter_map(|place| {
                place.response = None;
                place.call.take()
            })
            .collect();
        *self = Self::default();
        calls
    }

    /// Whether no call is on the wire.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waits for answers: polls the calls that were woken (and the new ones), hands each call
    /// answered, with its result, to `answered` (up to `max` in one go, so that the answers
    /// already in are handled without a turn of the shard's loop each), and is ready once at
    /// least one came. Never ready while no call is on the wire.
    pub(crate) fn answers<'a, F>(
        &'a mut self,
        max: usize,
        answered: F,
    ) -> impl Future<Output = ()> + 'a
    where
        F: FnMut(C, Result<HttpResponse, TransportError>) + 'a,
        C: 'a,
    {
        let mut answered = answered;
        std::future::poll_fn(move |cx| self.poll_answers(cx, max, &mut answered))
    }

    fn poll_answers(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        answered: &mut dyn FnMut(C, Result<HttpResponse, TransportError>),
    ) -> Poll<()> {
        // Registered before the list is read, so that a place woken after the read wakes us.
        self.woken.shard.register(cx.waker());
        self.take_woken();
        let mut n = 0;
        // Polled in the order listed; what is left past `max` stays listed for the next call.
        let mut i = 0;
        while i < self.to_poll.len() && n < max {
            let index = self.to_poll[i];
            i += 1;
            let Some(place) = self.places.get_mut(index) else {
                // The waker of a place trimmed away, woken late.
                continue;
            };
            // Unlisted before the poll: a wake during or after it lists the place again.
            place.listed.listed.store(false, Ordering::Release);
            let Some(response) = place.response.as_mut() else {
                // Woken after its call was answered.
                continue;
            };
            // A panic in the transport's future ends this call (its job fails naming the panic),
            // not the shard and every call and key it serves.
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                response
                    .as_mut()
                    .poll(&mut Context::from_waker(&place.waker))
            }));
            let result = match polled {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(result)) => result,
                Err(payload) => Err(TransportError::new(
                    TransportErrorKind::Panicked,
                    panic_message(payload.as_ref()),
                )),
            };
            place.response = None;
            // A place with a future holds its call.
            let Some(call) = place.call.take() else {
                unreachable!("a call on the wire has its place");
            };
            self.len -= 1;
            self.free.push(index);
            answered(call, result);
            n += 1;
        }
        self.to_poll.drain(..i);
        if self.len == 0 && self.to_poll.is_empty() {
            self.trim();
        }
        if n > 0 {
            return Poll::Ready(());
        }
        if !self.to_poll.is_empty() {
            // Not expected (`max` is never 0), but never leave listed places without a wake.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Moves the places woken elsewhere onto `to_poll`.
    fn take_woken(&mut self) {
        let mut woken = self.woken.places.lock().unwrap_or_else(|p| p.into_inner());
        self.to_poll.append(&mut woken);
    }

    /// With no call on the wire, keeps at most [`KEEP_IDLE`] places.
    fn trim(&mut self) {
        if self.places.len() <= KEEP_IDLE {
            return;
        }
        self.places.truncate(KEEP_IDLE);
        self.places.shrink_to_fit();
        self.free.clear();
        self.free.extend((0..KEEP_IDLE).rev());
        self.free.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::task::Poll;

    use bytes::Bytes;
    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    use super::*;

    /// A transport future answered (200) when its sender fires.
    fn answered_by(rx: oneshot::Receiver<()>) -> TransportFuture {
        Box::pin(async move {
            rx.await.expect("sender kept");
            Ok(HttpResponse::new(Bytes::new()))
        })
    }

    /// Drains the answers ready now, in the order handed over.
    fn ready_now(wire: &mut Wire<u32>, max: usize) -> Vec<u32> {
        let mut got = Vec::new();
        let _ = wire
            .answers(max, |call, result| {
                assert!(result.is_ok());
                got.push(call);
            })
            .now_or_never();
        got
    }

    #[test]
    fn each_call_is_answered_once_up_to_max_at_a_time() {
        let mut wire = Wire::<u32>::default();
        let mut senders = Vec::new();
        for call in 0..5 {
            let (tx, rx) = oneshot::channel();
            wire.push(call, answered_by(rx));
            senders.push(Some(tx));
        }
        assert!(ready_now(&mut wire, 64).is_empty());
        for i in [3, 1, 4] {
            senders[i].take().unwrap().send(()).unwrap();
        }
        let mut first = ready_now(&mut wire, 2);
        assert_eq!(first.len(), 2);
        first.extend(ready_now(&mut wire, 2));
        first.sort_unstable();
        assert_eq!(first, [1, 3, 4]);
        assert!(ready_now(&mut wire, 64).is_empty());
        assert!(!wire.is_empty());
        for tx in senders.iter_mut().filter_map(Option::take) {
            tx.send(()).unwrap();
        }
        let mut rest = ready_now(&mut wire, 64);
        rest.sort_unstable();
        assert_eq!(rest, [0, 2]);
        assert!(wire.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_from_other_threads_are_not_lost() {
        let mut wire = Wire::<u32>::default();
        let mut senders = Vec::new();
        for call in 0..500 {
            let (tx, rx) = oneshot::channel();
            wire.push(call, answered_by(rx));
            senders.push(tx);
        }
        let answering = std::thread::spawn(move || {
            for (i, tx) in senders.into_iter().enumerate() {
                tx.send(()).unwrap();
                if i % 50 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while !wire.is_empty() {
            wire.answers(7, |call, _| got.push(call)).await;
        }
        answering.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
    }

    /// Completes when `go` fires, keeping a clone of every waker it is polled with.
    fn keeping_wakers(
        go: oneshot::Receiver<()>,
        kept: Arc<StdMutex<Vec<Waker>>>,
    ) -> TransportFuture {
        let mut go = go;
        Box::pin(std::future::poll_fn(move |cx| {
            kept.lock().unwrap().push(cx.waker().clone());
            match go.poll_unpin(cx) {
                Poll::Ready(_) => Poll::Ready(Ok(HttpResponse::new(Bytes::new()))),
                Poll::Pending => Poll::Pending,
            }
        }))
    }

    #[test]
    fn a_panicking_future_is_answered_with_its_panic_and_the_others_go_on() {
        let mut wire = Wire::<u32>::default();
        wire.push(1, Box::pin(async { panic!("transport bug") }));
        let (tx, rx) = oneshot::channel();
        wire.push(2, answered_by(rx));
        let mut got = Vec::new();
        let _ = wire
            .answers(64, |call, result| got.push((call, result)))
            .now_or_never();
        assert_eq!(got.len(), 1);
        let (call, result) = got.pop().unwrap();
        assert_eq!(call, 1);
        let error = result.unwrap_err();
        assert_eq!(error.kind, TransportErrorKind::Panicked);
        assert_eq!(error.message, "transport bug");
        tx.send(()).unwrap();
        assert_eq!(ready_now(&mut wire, 64), [2]);
        assert!(wire.is_empty());
    }

    #[test]
    fn an_idle_wire_is_trimmed_and_late_wakers_of_trimmed_places_are_harmless() {
        let mut wire = Wire::<u32>::default();
        let kept = Arc::new(StdMutex::new(Vec::new()));
        let n = KEEP_IDLE as u32 + 40;
        let mut senders = Vec::new();
        for call in 0..n {
            let (tx, rx) = oneshot::channel();
            wire.push(call, keeping_wakers(rx, Arc::clone(&kept)));
            senders.push(tx);
        }
        assert!(ready_now(&mut wire, usize::MAX).is_empty());
        for tx in senders {
            tx.send(()).unwrap();
        }
        assert_eq!(ready_now(&mut wire, usize::MAX).len(), n as usize);
        assert!(wire.is_empty());
        assert_eq!(wire.places.len(), KEEP_IDLE);
        assert_eq!(wire.free.len(), KEEP_IDLE);
        // Wakers of answered calls, of places kept and trimmed, woken late.
        for waker in kept.lock().unwrap().drain(..) {
            waker.wake();
        }
        let (tx, rx) = oneshot::channel();
        wire.push(7, answered_by(rx));
        assert!(ready_now(&mut wire, 64).is_empty());
        tx.send(()).unwrap();
        assert_eq!(ready_now(&mut wire, 64), [7]);
        assert!(wire.is_empty());
    }
}
