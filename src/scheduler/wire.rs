//! A shard's calls on the wire. Each call's transport future is driven in a `FuturesUnordered`
//! with only the index of its call; the call itself (key, job, slot, when it went) waits in a slab
//! until its answer arrives. The futures stay small, and a job is moved into the slab once and
//! out once, rather than inside its future at every step from the transport to its outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::dispatch::OnWire;
use crate::transport::{HttpResponse, TransportError, TransportFuture};

/// Slots kept in the slab once the wire is idle again (a burst on many keys may have grown it).
const KEEP_IDLE: usize = 256;

/// The calls of one shard that are on the wire.
#[derive(Default)]
pub(crate) struct Wire {
    /// The calls, by index; `None` where a call was answered and its place is free.
    calls: Vec<Option<OnWire>>,
    /// Free places in `calls`.
    free: Vec<usize>,
    /// The transport futures, each with the index of its call.
    responses: FuturesUnordered<Response>,
}

/// A call's transport future and the index of its call.
struct Response {
    index: usize,
    future: TransportFuture,
}

impl Future for Response {
    type Output = (usize, Result<HttpResponse, TransportError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.future.as_mut().poll(cx));
        Poll::Ready((self.index, result))
    }
}

impl Wire {
    /// Puts `call` on the wire, answered when `response` completes.
    pub(crate) fn push(&mut self, call: OnWire, response: TransportFuture) {
        let index = match self.free.pop() {
            Some(index) => {
                self.calls[index] = Some(call);
                index
            }
            None => {
                self.calls.push(Some(call));
                self.calls.len() - 1
            }
        };
        self.responses.push(Response {
            index,
            future: response,
        });
    }

    /// Whether no call is on the wire.
    pub(crate) fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// Waits for answers: hands each call answered, with its result, to `answered` (up to `max`
    /// of them in one go, so that the answers already in are handled without a turn of the
    /// shard's loop each), and is ready once at least one came. Never ready while no call is on
    /// the wire. Each answer is handed over where it is polled, rather than returned through the
    /// layers of futures above.
    pub(crate) fn answers<'a, F>(
        &'a mut self,
        max: usize,
        answered: F,
    ) -> impl Future<Output = ()> + 'a
    where
        F: FnMut(OnWire, Result<HttpResponse, TransportError>) + 'a,
    {
        let mut answered = answered;
        std::future::poll_fn(move |cx| {
            let mut n = 0;
            while n < max {
                let Poll::Ready(Some((index, result))) = self.responses.poll_next_unpin(cx) else {
                    break;
                };
                answered(self.take(index), result);
                n += 1;
            }
            if n > 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Takes the call at `index` out of the slab, freeing its place.
    fn take(&mut self, index: usize) -> OnWire {
        // Each index is pushed with its call and answered once.
        let Some(call) = self.calls[index].take() else {
            unreachable!("a call on the wire is answered once");
        };
        if self.responses.is_empty() {
            self.calls.clear();
            self.calls.shrink_to(KEEP_IDLE);
            self.free.clear();
            self.free.shrink_to(KEEP_IDLE);
        } else {
            self.free.push(index);
        }
        call
    }
}
