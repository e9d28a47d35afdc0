//! A job whose attempts are sent by the request waiting for it: the job's transport hands each
//! attempt back to that request (which sends it through the user's own stack) and waits for its
//! answer, so the scheduler decides when each attempt goes and what its answer means, and the
//! request sends it.
//!
//! ```text
//! request ─ submit(job via relay) ─▶ scheduler ─ slot due ─▶ relay.send ─▶ (attempt) ─▶ request
//!    ▲                                                                        │ sends it itself
//!    └──────── ticket's outcome ◀── classify (429: pause, retry …) ◀── answer ┘
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::job_error::{JobError, Outcome};
use crate::scheduler::Ticket;
use crate::transport::{
    HttpRequest, HttpResponse, OutgoingRequest, Transport, TransportError, TransportErrorKind,
    TransportFuture,
};

/// One attempt, as the request that waits for the job receives it.
pub(crate) struct Attempt {
    /// The attempt as the scheduler made it: the key's URI for the job's path, the job's headers
    /// with the key's, the body.
    pub(crate) request: HttpRequest,
    reply: oneshot::Sender<Result<HttpResponse, TransportError>>,
}

/// The job's transport: hands each attempt to the waiting request.
struct RelayTransport {
    attempts: mpsc::Sender<Attempt>,
}

fn abandoned() -> TransportError {
    TransportError::new(
        TransportErrorKind::Abandoned,
        "the request waiting for this call was dropped",
    )
}

impl Transport for RelayTransport {
    fn send(&self, request: OutgoingRequest<'_>) -> TransportFuture {
        let (reply, answer) = oneshot::channel();
        let attempt = Attempt {
            request: request.to_http(),
            reply,
        };
        // One attempt of a job is out at a time, so the one place is free unless the request
        // is gone.
        let handed = self.attempts.try_send(attempt).is_ok();
        Box::pin(async move {
            if !handed {
                return Err(abandoned());
            }
            answer.await.unwrap_or_else(|_| Err(abandoned()))
        })
    }
}

/// The two ends of a relay: the transport for the job, and where its attempts arrive.
pub(crate) fn relay() -> (Arc<dyn Transport>, mpsc::Receiver<Attempt>) {
    let (attempts, arrive) = mpsc::channel(1);
    (Arc::new(RelayTransport { attempts }), arrive)
}

/// Cancels the job if the request is dropped before its outcome (not sent yet: never sent).
struct CancelOnDrop(Ticket);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What came of a relayed job: its outcome, and the last attempt's answer as the caller's stack
/// gave it (`E`: the stack's own error).
pub(crate) struct Relayed<E> {
    pub(crate) outcome: Outcome,
    pub(crate) last: Option<Result<HttpResponse, E>>,
}

impl<E> Relayed<E> {
    /// The server's last response if the outcome is its verdict on it (a success, or a failure
    /// with that response's status); else the outcome's error, with the stack's own error when
    /// the job failed on it (its last attempt failed on the way).
    pub(crate) fn into_answer(self) -> Result<HttpResponse, (JobError, Option<E>)> {
        match (self.outcome, self.last) {
            (Ok(response), _) => {
                let mut out = http::Response::new(response.body);
                *out.status_mut() = response.status;
                *out.headers_mut() = response.headers;
                Ok(out)
            }
            (Err(e), Some(Ok(last))) if e.status() == Some(last.status().as_u16()) => Ok(last),
            (Err(e), Some(Err(stack)))
                if e.status().is_none() && e.attempts().is_some_and(|n| n > 0) =>
            {
                Err((e, Some(stack)))
            }
            (Err(e), _) => Err((e, None)),
        }
    }
}

/// Waits for the job of `ticket`, sending each of its attempts (arriving on `attempts`) with
/// `send`, which answers with the response, or with the error for the scheduler and the stack's
/// own. Dropped before the outcome, the job is cancelled if it was not sent yet, and an attempt
/// being sent is answered [`TransportErrorKind::Abandoned`] (not retried).
pub(crate) async fn run<E, F, Fut>(
    ticket: Ticket,
    mut attempts: mpsc::Receiver<Attempt>,
    mut send: F,
) -> Relayed<E>
where
    F: FnMut(HttpRequest) -> Fut,
    Fut: Future<Output = Result<HttpResponse, (TransportError, E)>>,
{
    let mut ticket = CancelOnDrop(ticket);
    let mut last = None;
    loop {
        tokio::select! {
            biased;
            outcome = &mut ticket.0 => return Relayed { outcome, last },
            Some(attempt) = attempts.recv() => {
                let Attempt { request, reply } = attempt;
                let (to_scheduler, kept) = match send(request).await {
                    Ok(response) => (Ok(response.clone()), Ok(response)),
                    Err((error, stack)) => (Err(error), Err(stack)),
                };
                // The scheduler may have let the call go meanwhile (shut down): nothing to tell.
                let _ = reply.send(to_scheduler);
                last = Some(kept);
            }
        }
    }
}
