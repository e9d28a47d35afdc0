//! The slots this process took of one shared key: what it tells Redis again when Redis lost
//! them (restarted empty, failed over to a replica that had not seen them).

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Instant;

/// This process's slots of one key, oldest first: each as the local instant it was handed out
/// at, and the time Redis recorded it at (ns on the state's scale, to refund it by).
///
/// Memory: at most `most` entries of 24 bytes, where `most` is the largest count among the key's
/// limits (calls beyond the N most recent of every limit decide nothing); entries older than the
/// quota's longest window plus the guard are dropped as new ones come. A Production key
/// (10,000/1h) used by this process alone at its full rate holds at most 240 KB; a process
/// sharing the key with others holds only its own share.
#[derive(Debug)]
pub(super) struct OwnCalls {
    slots: VecDeque<(Instant, u64)>,
    most: usize,
    horizon: Duration,
}

impl OwnCalls {
    pub(super) fn new(most: usize, horizon: Duration) -> Self {
        Self {
            slots: VecDeque::new(),
            most: most.max(1),
            horizon,
        }
    }

    /// A slot handed out: at `local`, recorded by Redis at `shared_ns`.
    pub(super) fn push(&mut self, local: Instant, shared_ns: u64, now: Instant) {
        self.slots.push_back((local, shared_ns));
        while self.slots.len() > self.most {
            self.slots.pop_front();
        }
        while let Some(&(t, _)) = self.slots.front() {
            if t + self.horizon <= now {
                self.slots.pop_front();
            } else {
                break;
            }
        }
    }

    /// Takes the slot handed out at `local` back (the latest such); its time on the state's
    /// scale, or `None` if it is not held (too old: then it stays counted, the safe side).
    pub(super) fn take(&mut self, local: Instant) -> Option<u64> {
        let index = self.slots.iter().rposition(|&(t, _)| t == local)?;
        self.slots.remove(index).map(|(_, shared)| shared)
    }

    /// Whether any slot may still count at `now`.
    pub(super) fn any_counting(&self, now: Instant) -> bool {
        self.slots
            .back()
            .is_some_and(|&(t, _)| t + self.horizon > now)
    }

    /// How long before `now` each slot that still counts was (ns; negative: still ahead), for
    /// Redis to record them again; those from `late_from` to `now` as sent now.
    pub(super) fn offsets(&self, now: Instant, late_from: Option<Instant>) -> Vec<i64> {
        self.slots
            .iter()
            .filter(|&&(t, _)| t + self.horizon > now)
            .map(|&(t, _)| {
                if late_from.is_some_and(|from| from <= t && t <= now) {
                    0
                } else if t <= now {
                    i64::try_from((now - t).as_nanos()).unwrap_or(i64::MAX)
                } else {
                    -i64::try_from((t - now).as_nanos()).unwrap_or(i64::MAX)
                }
            })
            .collect()
    }

    /// The slots that still count, as the script's `seed` takes them: each slot's offset before
    /// `now` (ns; negative: still ahead), marked `L` where the call may go out only when this
    /// process's next reservation returns, so as late as a new state's settle ends (a slot
    /// still ahead, or one that fell due from `late_from` on, while Redis could not be
    /// reached: given as sent now). The script records a marked call at that end if it is
    /// later.
    pub(super) fn seed_args(&self, now: Instant, late_from: Option<Instant>) -> Vec<String> {
        self.slots
            .iter()
            .filter(|&&(t, _)| t + self.horizon > now)
            .map(|&(t, _)| {
                if late_from.is_some_and(|from| from <= t && t <= now) {
                    "L0".to_string()
                } else if t <= now {
                    i64::try_from((now - t).as_nanos())
                        .unwrap_or(i64::MAX)
                        .to_string()
                } else {
                    format!("L-{}", (t - now).as_nanos())
                }
            })
            .collect()
    }

    /// The times on the state's scale of the slots handed out from `from` to `now`.
    pub(super) fn shared_between(&self, from: Instant, now: Instant) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|&&(t, _)| from <= t && t <= now)
            .map(|&(_, shared)| shared)
            .collect()
    }

    /// Those slots recorded again at `now_ns` on the state's scale.
    pub(super) fn move_shared_between(&mut self, from: Instant, now: Instant, now_ns: u64) {
        for (t, shared) in &mut self.slots {
            if from <= *t && *t <= now {
                *shared = now_ns;
            }
        }
    }

    /// The slots' times on a new state's scale are unknown until it is read again: each is
    /// given a time of `now_ns` less its offset (as the script recorded it).
    pub(super) fn rescale(&mut self, now: Instant, now_ns: u64) {
        for (t, shared) in &mut self.slots {
            let shifted = if *t <= now {
                now_ns.saturating_sub(u64::try_from((now - *t).as_nanos()).unwrap_or(u64::MAX))
            } else {
                now_ns.saturating_add(u64::try_from((*t - now).as_nanos()).unwrap_or(u64::MAX))
            };
            *shared = shifted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_and_gives_back_by_instant() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let mut own = OwnCalls::new(2, ms(1_000));
        own.push(t0, 10, t0);
        own.push(t0 + ms(1), 11, t0);
        own.push(t0 + ms(2), 12, t0);
        assert_eq!(own.take(t0), None, "only the 2 most recent are kept");
        assert_eq!(own.offsets(t0 + ms(1), None), vec![0, -1_000_000]);
        assert_eq!(own.offsets(t0 + ms(2), Some(t0 + ms(1))), vec![0, 0]);
        assert_eq!(own.seed_args(t0 + ms(1), None), vec!["0", "L-1000000"]);
        assert_eq!(
            own.seed_args(t0 + ms(3), Some(t0 + ms(2))),
            vec!["2000000", "L0"]
        );
        assert_eq!(own.take(t0 + ms(1)), Some(11));
        assert!(own.any_counting(t0 + ms(500)));
        assert!(!own.any_counting(t0 + ms(1_002)));
    }
}
