//! A wrong tier or quota, seen from the results: when the server refused calls (429) while it had
//! accepted far fewer in a window than the configured quota allows there, its limits are not the
//! configured ones. `send` says so at the end: "the server's limits look like 60/1m, not the
//! configured 600/1m,10000/1h".

use std::collections::VecDeque;
use std::time::Duration;

use fabraix_scheduler::{Instant, Limit, Quota};

/// Successes kept per window, at most: the check needs to know only whether a window held
/// (about) the configured count.
const KEPT_MAX: usize = 65_536;

/// The server accepted less than this share of what the quota allows in a window: "far earlier".
const FAR_BELOW: f64 = 0.9;

/// For each limit of the configured quota, the most successes that finished within one window of
/// its length. Memory: at most min(count, 65,536) instants per limit.
#[derive(Debug)]
pub struct AcceptedPerWindow {
    windows: Vec<Window>,
}

#[derive(Debug)]
struct Window {
    limit: Limit,
    kept: usize,
    times: VecDeque<Instant>,
    most: usize,
}

impl AcceptedPerWindow {
    /// Nothing accepted yet, for the limits of `quota`.
    pub fn new(quota: &Quota) -> Self {
        let windows = quota
            .limits()
            .iter()
            .map(|&limit| Window {
                limit,
                kept: usize::try_from(limit.count()).map_or(KEPT_MAX, |c| c.min(KEPT_MAX)),
                times: VecDeque::new(),
                most: 0,
            })
            .collect();
        Self { windows }
    }

    /// One success, finished `at` (successes come in time order).
    pub fn record(&mut self, at: Instant) {
        for w in &mut self.windows {
            let window = w.limit.window();
            while w
                .times
                .front()
                .is_some_and(|&t| at.saturating_duration_since(t) >= window)
            {
                w.times.pop_front();
            }
            w.times.push_back(at);
            if w.times.len() > w.kept {
                w.times.pop_front();
            }
            w.most = w.most.max(w.times.len());
        }
    }

    /// The most successes seen in one window of each limit: (count, window, most).
    pub fn most_per_window(&self) -> Vec<(u32, Duration, usize)> {
        self.windows
            .iter()
            .map(|w| (w.limit.count(), w.limit.window(), w.most))
            .collect()
    }

    /// What the server's limits look like, if it refused (`refused` 429s among `sent` calls)
    /// far earlier than the configured quota allows: for each limit whose window never held 90 %
    /// of what the run offered it (its count, or every call sent if fewer), the most it held
    /// (a longer window only if it held more than the shorter ones so flagged).
    /// `None` if nothing was refused, or every window held about its share.
    ///
    /// ```
    /// use fabraix_sched::tier_check::AcceptedPerWindow;
    /// use fabraix_scheduler::{Clock, Quota, TokioClock};
    /// let mut seen = AcceptedPerWindow::new(&Quota::production());
    /// let now = TokioClock::new().now();
    /// for _ in 0..60 { seen.record(now); } // a Development key: 60 accepted, then 429s
    /// let looks = seen.server_limits_look_like(40, 100).unwrap();
    /// assert_eq!(looks.to_string(), "60/1m");
    /// assert!(seen.server_limits_look_like(0, 100).is_none());
    /// ```
    pub fn server_limits_look_like(&self, refused: u64, sent: u64) -> Option<Quota> {
        if refused == 0 {
            return None;
        }
        let mut flagged: Vec<Limit> = Vec::new();
        for w in &self.windows {
            let offered = u64::from(w.limit.count()).min(sent);
            let far_below =
                w.most > 0 && w.most < w.kept && (w.most as f64) < FAR_BELOW * offered as f64;
            // A longer window that held no more than a shorter flagged one shows nothing new.
            let new = flagged.last().is_none_or(|l| (l.count() as usize) < w.most);
            if let (true, true, Ok(most)) = (far_below, new, u32::try_from(w.most)) {
                flagged.extend(Limit::new(most, w.limit.window()).ok());
            }
        }
        if flagged.is_empty() {
            return None;
        }
        Quota::new(flagged).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_kept_is_not_flagged_and_old_successes_leave_the_window() {
        let q: Quota = "5/1s".parse().unwrap();
        let mut seen = AcceptedPerWindow::new(&q);
        let t0 = tokio::time::Instant::now();
        for i in 0..20u64 {
            // Five a second, as the quota allows.
            seen.record(t0 + Duration::from_millis(200 * i));
        }
        assert_eq!(seen.most_per_window(), [(5, Duration::from_secs(1), 5)]);
        assert!(seen.server_limits_look_like(2, 22).is_none());
        // Two a second accepted under a 5/1s quota, with 429s: the server's limit is lower.
        let mut low = AcceptedPerWindow::new(&q);
        for i in 0..10u64 {
            low.record(t0 + Duration::from_millis(500 * i));
        }
        let looks = low.server_limits_look_like(8, 18).unwrap();
        assert_eq!(looks.to_string(), "2/1s");
    }
}
