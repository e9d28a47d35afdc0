//! The visible backlog: where events are, how many were sent and dropped, when the backlog will
//! have drained at the key's quota, and a warning when events arrive faster than the key can ever
//! carry them.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, SystemTime};

use super::metrics::DropCounts;
use crate::clock::Instant;

/// A snapshot of a sender's backlog (from [`TelemetrySender::backlog`](super::TelemetrySender::backlog)).
/// Its `Debug` shows the drain ETA as `drain_in` and `drain_wall`, not as an instant.
#[derive(Clone, PartialEq)]
pub struct Backlog {
    /// Events waiting in memory (bounded by the memory capacity).
    pub in_memory: u64,
    /// Records in the disk spool not sent yet.
    pub on_disk: u64,
    /// Events submitted to the scheduler and not answered yet (at most the window).
    pub in_flight: u64,
    /// Events recorded since the sender started (memory or spool; refused and dropped ones not
    /// included).
    pub recorded: u64,
    /// Events the server acknowledged.
    pub sent: u64,
    /// Events the server refused for good (kept in the spool's `failed.log`).
    pub failed: u64,
    /// Events dropped by the full-spool policy, by reason.
    pub dropped: DropCounts,
    /// Events handed back to the producer because the spool was full ([`FullPolicy::Block`](super::FullPolicy::Block)).
    pub refused: u64,
    /// When everything waiting now would have been sent at the key's quota (the ledger's plan);
    /// `None` when nothing waits.
    pub drain_eta: Option<Instant>,
    /// The same as a duration from now.
    pub drain_in: Option<Duration>,
    /// The same as a wall-clock time (on the scheduler's clock).
    pub drain_wall: Option<SystemTime>,
    /// Events recorded per second, over the last minute (or since the start).
    pub arrival_rate: f64,
    /// The most the key carries in the long run, calls per second (its tightest limit).
    pub key_rate: f64,
    /// Set when events arrive faster than the key can ever carry.
    pub warning: Option<RateWarning>,
}

impl Backlog {
    /// Everything not sent yet: memory + disk + in flight.
    pub fn waiting(&self) -> u64 {
        self.in_memory + self.on_disk + self.in_flight
    }
}

impl fmt::Debug for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backlog")
            .field("in_memory", &self.in_memory)
            .field("on_disk", &self.on_disk)
            .field("in_flight", &self.in_flight)
            .field("recorded", &self.recorded)
            .field("sent", &self.sent)
            .field("failed", &self.failed)
            .field("dropped", &self.dropped)
            .field("refused", &self.refused)
            .field("drain_in", &self.drain_in)
            .field(
                "drain_wall",
                &self.drain_wall.map(crate::fabraix::httpdate_to_rfc3339),
            )
            .field("arrival_rate", &self.arrival_rate)
            .field("key_rate", &self.key_rate)
            .field("warning", &self.warning)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backlog {} (memory {}, disk {}, in flight {}); sent {}, failed {}, dropped {}",
            self.waiting(),
            self.in_memory,
            self.on_disk,
            self.in_flight,
            self.sent,
            self.failed,
            self.dropped.total()
        )?;
        if let Some(d) = self.drain_in {
            write!(f, "; drained in {}", human_duration(d))?;
        }
        Ok(())
    }
}

/// Events arrive faster than the key can carry: the backlog grows without bound.
#[derive(Clone, Debug, PartialEq)]
pub struct RateWarning {
    /// Events recorded per second.
    pub arrival_rate: f64,
    /// Calls per second the key carries at most.
    pub key_rate: f64,
    /// How much the backlog grows per hour at these rates.
    pub growth_per_hour: f64,
    /// When the spool would be full at this growth (`None` if it never fills).
    pub spool_full_in: Option<Duration>,
}

impl fmt::Display for RateWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events arrive at {}/s; this key carries at most {}/s; the backlog grows {}/hour",
            rate(self.arrival_rate),
            rate(self.key_rate),
            thousands(round_3(self.growth_per_hour))
        )?;
        if let Some(d) = self.spool_full_in {
            write!(f, " and the spool is full in {}", human_duration(d))?;
        }
        write!(
            f,
            ". Choices: a higher tier (Production carries 10× Development), sampling \
             (FullPolicy::SampleByEventType), or a larger spool (TelemetryConfig::spool_capacity)"
        )
    }
}

fn rate(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.2}")
    }
}

/// Rounds to 3 significant digits (179,000 rather than 179,006.4).
fn round_3(x: f64) -> u64 {
    if x <= 0.0 || !x.is_finite() {
        return 0;
    }
    let digits = x.log10().floor() as i32;
    let scale = 10f64.powi((digits - 2).max(0));
    ((x / scale).round() * scale) as u64
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1h 23m`, `4m 05s`, `12.3s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The warning, if `arrival_rate` exceeds `key_rate` (with 5 % slack against noise).
pub(crate) fn rate_warning(
    arrival_rate: f64,
    key_rate: f64,
    spool_free: u64,
) -> Option<RateWarning> {
    if arrival_rate.is_nan() || arrival_rate <= key_rate * 1.05 || arrival_rate <= 0.0 {
        return None;
    }
    let growth_per_hour = (arrival_rate - key_rate) * 3600.0;
    let spool_full_in = (growth_per_hour > 0.0)
        .then(|| Duration::from_secs_f64(spool_free as f64 / growth_per_hour * 3600.0));
    Some(RateWarning {
        arrival_rate,
        key_rate,
        growth_per_hour,
        spool_full_in,
    })
}

/// Recorded-event counts sampled over time, for the arrival rate.
#[derive(Debug)]
pub(crate) struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
    window: Duration,
}

impl RateMeter {
    pub(crate) fn new(start: Instant, window: Duration) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((start, 0));
        Self { samples, window }
    }

    /// Adds a sample and returns events per second over the last window (or since the start).
    pub(crate) fn rate(&mut self, now: Instant, total: u64) -> f64 {
        if self.samples.back().is_none_or(|&(t, _)| now > t) {
            self.samples.push_back((now, total));
        }
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= self.window)
        {
            self.samples.pop_front();
        }
        let Some(&(t0, n0)) = self.samples.front() else {
            return 0.0;
        };
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        total.saturating_sub(n0) as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_drain_as_a_wait_and_a_wall_time_not_an_instant() {
        let backlog = Backlog {
            in_memory: 1,
            on_disk: 2,
            in_flight: 0,
            recorded: 3,
            sent: 0,
            failed: 0,
            dropped: DropCounts::default(),
            refused: 0,
            drain_eta: Some(tokio::time::Instant::now()),
            drain_in: Some(Duration::from_secs(3)),
            drain_wall: Some(std::time::UNIX_EPOCH),
            arrival_rate: 0.5,
            key_rate: 1.0,
            warning: None,
        };
        let shown = format!("{backlog:?}");
        assert!(!shown.contains("tv_sec"), "{shown}");
        assert!(shown.contains("drain_in: Some(3s)"), "{shown}");
        assert!(
            shown.contains(r#"drain_wall: Some("1970-01-01T00:00:00Z")"#),
            "{shown}"
        );
    }

    #[test]
    fn warning_text() {
        let w = rate_warning(50.0, 1000.0 / 3600.0, 1_000_000).unwrap();
        let text = w.to_string();
        assert!(
            text.starts_with(
                "events arrive at 50/s; this key carries at most 0.28/s; the backlog grows 179,000/hour"
            ),
            "{text}"
        );
        assert!(rate_warning(0.2, 1000.0 / 3600.0, 10).is_none());
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(round_3(179_006.4), 179_000);
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 120)),
            "3h 02m"
        );
    }
}
