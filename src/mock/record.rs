//! What the mock server accepted, and a pure checker that a set of arrivals kept a quota in every
//! sliding window.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::clock::Instant;
use crate::quota::{Limit, Quota};

/// One call the server accepted under the quota (it passed authentication and every limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedCall {
    /// The key's label (given at registration, else its fingerprint); never the secret.
    pub key: String,
    /// The request path, e.g. `/v1/event`.
    pub path: String,
    /// When the server decided the call, on the server's clock.
    pub arrival: Instant,
    /// The status it answered: 200, or 400/422 for a bad body (these count against the quota),
    /// or 500 for an injected server error. `None`: the connection was dropped without a response.
    pub status: Option<u16>,
}

/// What the mock server counted for one key (the scheduler's own counts of a key are
/// [`KeyStats`](crate::KeyStats)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockKeyStats {
    /// The key's label.
    pub label: String,
    /// The quota the server enforces for the key (after time scaling).
    pub quota: Quota,
    /// Calls that passed the quota (whatever their final status).
    pub accepted: u64,
    /// Calls refused with 429.
    pub refused: u64,
    /// Calls refused with 403 (restricted key).
    pub forbidden: u64,
    /// Calls refused with 401 because the key was revoked.
    pub revoked: u64,
}

/// A sliding window in which more calls arrived than a limit allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowViolation {
    /// The key whose calls broke the limit (empty when checking bare arrivals).
    pub key: String,
    /// The limit broken.
    pub limit: Limit,
    /// How many calls arrived in the worst window (more than `limit.count()`).
    pub count: usize,
    /// The start of the worst window, `[start, start + W)`: the arrival of its first call.
    pub start: Instant,
}

impl fmt::Display for WindowViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!("key {}: ", self.key)
        };
        write!(
            f,
            "{key}{} calls in one window of {:?} (limit {})",
            self.count,
            self.limit.window(),
            self.limit
        )
    }
}

impl std::error::Error for WindowViolation {}

/// The most arrivals in any half-open window `[t, t + window)`, over all `t`. The arrivals need
/// not be sorted.
///
/// ```
/// use fabraix_scheduler::mock::max_in_any_window;
/// use std::time::Duration;
/// let t0 = tokio::time::Instant::now();
/// let ms = |n| t0 + Duration::from_millis(n);
/// let arrivals = [ms(0), ms(400), ms(999), ms(1000), ms(1500)];
/// assert_eq!(max_in_any_window(&arrivals, Duration::from_secs(1)), 3);
/// ```
pub fn max_in_any_window(arrivals: &[Instant], window: Duration) -> usize {
    worst_window(arrivals, window).map_or(0, |(count, _)| count)
}

/// The worst window: its count and start, or `None` if there are no arrivals.
fn worst_window(arrivals: &[Instant], window: Duration) -> Option<(usize, Instant)> {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let mut best: Option<(usize, Instant)> = None;
    let mut end = 0;
    for (i, &start) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < start + window {
            end += 1;
        }
        let count = end - i;
        if best.is_none_or(|(c, _)| count > c) {
            best = Some((count, start));
        }
    }
    best
}

/// Checks bare arrivals (one key's) against every limit of `quota`: `Err` with the worst window
/// (the largest excess over its limit) if any limit was exceeded in any sliding window.
///
/// ```
/// use fabraix_scheduler::mock::verify_arrivals;
/// use std::time::Duration;
/// let t0 = tokio::time::Instant::now();
/// let arrivals: Vec<_> = (0..4).map(|i| t0 + Duration::from_millis(300 * i)).collect();
/// assert!(verify_arrivals(&arrivals, &"4/1s".parse().unwrap()).is_ok());
/// let err = verify_arrivals(&arrivals, &"3/1s".parse().unwrap()).unwrap_err();
/// assert_eq!((err.count, err.start), (4, t0));
/// ```
pub fn verify_arrivals(arrivals: &[Instant], quota: &Quota) -> Result<(), WindowViolation> {
    let mut worst: Option<WindowViolation> = None;
    for limit in quota.limits() {
        let Some((count, start)) = worst_window(arrivals, limit.window()) else {
            continue;
        };
        let over = count.saturating_sub(limit.count() as usize);
        let worse = worst
            .as_ref()
            .is_none_or(|w| over > w.count.saturating_sub(w.limit.count() as usize));
        if over > 0 && worse {
            worst = Some(WindowViolation {
                key: String::new(),
                limit: *limit,
                count,
                start,
            });
        }
    }
    worst.map_or(Ok(()), Err)
}

/// Checks a server record against `quota`, key by key (each key has its own quota): `Err` with
/// the worst window if any key exceeded any limit in any sliding window. Pass the quota the server
/// enforced, i.e. already [`time_scaled`](Quota::time_scaled) if the server was.
pub fn verify_quota(record: &[AcceptedCall], quota: &Quota) -> Result<(), WindowViolation> {
    let mut by_key: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for call in record {
        by_key.entry(&call.key).or_default().push(call.arrival);
    }
    let mut worst: Option<WindowViolation> = None;
    for (key, arrivals) in by_key {
        if let Err(mut v) = verify_arrivals(&arrivals, quota) {
            let excess = |v: &WindowViolation| v.count.saturating_sub(v.limit.count() as usize);
            if worst.as_ref().is_none_or(|w| excess(&v) > excess(w)) {
                v.key = key.to_string();
                worst = Some(v);
            }
        }
    }
    worst.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_half_open() {
        let t0 = tokio::time::Instant::now();
        let a = [t0, t0 + Duration::from_secs(1)];
        assert_eq!(max_in_any_window(&a, Duration::from_secs(1)), 1);
        assert_eq!(max_in_any_window(&a, Duration::from_millis(1001)), 2);
        assert_eq!(max_in_any_window(&[], Duration::from_secs(1)), 0);
    }

    #[test]
    fn verify_quota_names_the_key_and_limit() {
        let t0 = tokio::time::Instant::now();
        let call = |key: &str, ms: u64| AcceptedCall {
            key: key.into(),
            path: "/v1/event".into(),
            arrival: t0 + Duration::from_millis(ms),
            status: Some(200),
        };
        let quota: Quota = "2/1s,3/10s".parse().unwrap();
        let ok = [call("a", 0), call("b", 0), call("a", 1000), call("b", 1000)];
        assert!(verify_quota(&ok, &quota).is_ok());
        let bad = [
            call("a", 0),
            call("b", 0),
            call("b", 1000),
            call("b", 2000),
            call("b", 3000),
        ];
        let v = verify_quota(&bad, &quota).unwrap_err();
        assert_eq!(v.key, "b");
        assert_eq!(v.limit.count(), 3);
        assert_eq!(v.count, 4);
        assert!(v.to_string().contains("key b"));
    }
}
