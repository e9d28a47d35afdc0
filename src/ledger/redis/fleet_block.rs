//! The fleet's pause of one key, as this process knows it: the end of the shared state's block
//! (a 429's `retry_after`, a server window with nothing left, a re-seed's settle), learned from
//! the message the script publishes when it raises the block and from every answer it gives.

use std::time::Duration;

use crate::clock::Instant;
use crate::ledger::SharedBlock;
use crate::quota::Quota;
use crate::retry::network_time::instant_after;

/// How far beyond the quota's longest window a block learned from Redis may reach: the retry
/// policy's default cap on a `retry_after`
/// ([`RetryPolicy::retry_after_cap`](crate::RetryPolicy::retry_after_cap)).
const CAP_BEYOND_WINDOW: Duration = Duration::from_secs(60);

/// How much later than the block known a block learned may end and still be taken for the same
/// one (told again by a message, or by another answer, each converted at its own arrival): a
/// block raised again (a new 429) reaches further, by a `retry_after`.
const SAME_BLOCK: Duration = Duration::from_millis(20);

/// The longest message on a key's channel read (bytes): an epoch of 16 hex digits, a space and
/// at most 20 digits fit well inside it.
const MAX_MESSAGE: usize = 64;

/// The end of the shared state's block, on this process's clock.
#[derive(Debug)]
pub(super) struct FleetBlock {
    known: Option<SharedBlock>,
    /// The longest block taken from Redis: the quota's longest window plus [`CAP_BEYOND_WINDOW`].
    cap: Duration,
}

impl FleetBlock {
    pub(super) fn new(quota: &Quota) -> Self {
        Self {
            known: None,
            cap: quota.longest_window().saturating_add(CAP_BEYOND_WINDOW),
        }
    }

    /// The state's block ends `delay_ns` after `at` (the instant Redis's now is taken to be on
    /// this clock: when its answer or message arrived, never earlier). Capped at
    /// [`cap`](Self::cap); a block known to end later is kept (the state's block only grows). A
    /// block is known from `at` on unless it ends within [`SAME_BLOCK`] of the one known.
    pub(super) fn learn(&mut self, at: Instant, delay_ns: u64) {
        if delay_ns == 0 {
            return;
        }
        let delay = Duration::from_nanos(delay_ns).min(self.cap);
        let until = instant_after(at, delay);
        self.known = match self.known {
            Some(known) if until <= known.until() => Some(known),
            Some(known)
                if at < known.until() && until <= instant_after(known.until(), SAME_BLOCK) =>
            {
                Some(SharedBlock::new(known.known_since(), until))
            }
            _ => Some(SharedBlock::new(at, until)),
        };
    }

    /// The block as known (it may be over).
    pub(super) fn known(&self) -> Option<SharedBlock> {
        self.known
    }

    /// The longest block taken from Redis.
    #[cfg(test)]
    pub(super) fn cap(&self) -> Duration {
        self.cap
    }
}

/// A message of a key's channel, `<epoch> <delay_ns>`, as its epoch and delay; why not, for
/// anything else (too long, not UTF-8, not two fields, a delay that is not a `u64`).
pub(super) fn parse_message(payload: &[u8]) -> Result<(&str, u64), &'static str> {
    if payload.len() > MAX_MESSAGE {
        return Err("too long");
    }
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8")?;
    let mut fields = text.split(' ');
    let (Some(epoch), Some(delay), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err("not two fields");
    };
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not an epoch");
    }
    if delay.is_empty() || !delay.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a delay in ns");
    }
    let delay = delay.parse().map_err(|_| "a delay beyond u64")?;
    Ok((epoch, delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_with_checks() {
        assert_eq!(
            parse_message(b"00ab12cd34ef5678 2000000000"),
            Ok(("00ab12cd34ef5678", 2_000_000_000))
        );
        for bad in [
            &b""[..],
            b"00ab",
            b"00ab 12 13",
            b"00ab -12",
            b"00ab +12",
            b"00ab 1.5",
            b"00ab 1e9",
            b"zz 12",
            b" 12",
            b"00ab ",
            b"00ab 99999999999999999999999",
            b"\xff\xfe 12",
            &[b'1'; 100][..],
        ] {
            assert!(parse_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_block_is_capped_and_only_grows() {
        let quota: Quota = "10/1s".parse().unwrap();
        let mut block = FleetBlock::new(&quota);
        let at = tokio::time::Instant::now();
        let until = |b: &FleetBlock| b.known().map(|k| k.until());
        let since = |b: &FleetBlock| b.known().map(|k| k.known_since());
        block.learn(at, 0);
        assert_eq!(block.known(), None, "no block");
        block.learn(at, 2_000_000_000);
        assert_eq!(until(&block), Some(at + Duration::from_secs(2)));
        block.learn(at, 1_000_000_000);
        assert_eq!(until(&block), Some(at + Duration::from_secs(2)), "kept");
        let told_again = at + Duration::from_millis(5);
        block.learn(told_again, 2_000_000_000 - 1_000_000);
        assert_eq!(until(&block), Some(at + Duration::from_millis(2004)));
        assert_eq!(since(&block), Some(at), "the same block, told again");
        let raised = at + Duration::from_millis(100);
        block.learn(raised, 3_000_000_000);
        assert_eq!(since(&block), Some(raised), "a block raised again");
        block.learn(at, u64::MAX);
        assert_eq!(block.cap(), Duration::from_secs(61));
        assert_eq!(until(&block), Some(at + Duration::from_secs(61)), "capped");
    }
}
