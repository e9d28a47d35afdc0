//! A stop request shared by the parts of a run: Ctrl-C in the binary, a handle in tests, the
//! first bad line under `--strict`.

use tokio::sync::watch;

/// Why a run was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The user pressed Ctrl-C (or a test simulated it): exit 130.
    Interrupted,
    /// `--strict` met a bad input line: exit 2.
    BadInput,
    /// The output could not be written: exit 2.
    OutputError,
}

/// A cloneable stop handle. The first [`trigger`](Stop::trigger) wins; later ones are ignored.
#[derive(Clone, Debug)]
pub struct Stop {
    tx: watch::Sender<Option<StopReason>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(None),
        }
    }

    /// Asks the run to stop (a no-op if it was already asked).
    pub fn trigger(&self, reason: StopReason) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        *self.tx.borrow()
    }

    /// Completes when the run is asked to stop.
    pub async fn wait(&self) -> StopReason {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                // Unreachable: `self` holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_waiters_wake() {
        let stop = Stop::new();
        assert_eq!(stop.reason(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        stop.trigger(StopReason::BadInput);
        stop.trigger(StopReason::Interrupted);
        assert_eq!(waiter.await.unwrap(), StopReason::BadInput);
        assert_eq!(stop.reason(), Some(StopReason::BadInput));
        assert_eq!(stop.wait().await, StopReason::BadInput);
    }
}
