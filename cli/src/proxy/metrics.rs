//! The proxy's counters and `/metrics` in the Prometheus text format (version 0.0.4), rendered
//! from them and from the scheduler's [`KeyStats`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fabraix_scheduler::{KeyStats, Priority};

/// Why the proxy answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full (429).
    QueueFull,
    /// No or a wrong client token (401).
    Token,
    /// The request was malformed, too large or too slow (4xx).
    BadRequest,
    /// The proxy is stopping (503).
    Stopping,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::QueueFull,
        Refusal::Token,
        Refusal::BadRequest,
        Refusal::Stopping,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::Token => "token",
            Refusal::BadRequest => "bad_request",
            Refusal::Stopping => "stopping",
        }
    }
}

/// Counters of the proxy's requests (atomics: one set shared by every connection).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests forwarded (taken into the scheduler), per lane.
    forwarded: [AtomicU64; 3],
    /// Requests forwarded whose answer has not come yet, per lane.
    waiting: [AtomicU64; 3],
    refused: [AtomicU64; 4],
    /// Clients gone before their answer.
    abandoned: AtomicU64,
    /// Microseconds from taking a request to having its answer, summed.
    wait_micros: AtomicU64,
    /// Answers counted in `wait_micros`.
    answered: AtomicU64,
}

impl ProxyCounters {
    /// A request of `lane` taken into the scheduler.
    pub fn forwarded(&self, lane: Priority) {
        self.forwarded[lane as usize].fetch_add(1, Ordering::Relaxed);
        self.waiting[lane as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A forwarded request of `lane` answered after `waited`, or abandoned by its client.
    pub fn done(&self, lane: Priority, waited: Option<Duration>) {
        self.waiting[lane as usize].fetch_sub(1, Ordering::Relaxed);
        match waited {
            Some(w) => {
                let micros = u64::try_from(w.as_micros()).unwrap_or(u64::MAX);
                self.wait_micros.fetch_add(micros, Ordering::Relaxed);
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A request answered by the proxy itself.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests forwarded whose answer has not come yet, all lanes.
    pub fn waiting_total(&self) -> u64 {
        self.waiting.iter().map(|w| w.load(Ordering::Relaxed)).sum()
    }
}

/// What `/metrics` shows besides the counters.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The key's counters.
    pub stats: KeyStats,
    /// Until everything queued now would have been sent, at the quota.
    pub queue_eta: Duration,
}

/// The Prometheus text of `counters` and `snapshot`.
pub fn render(counters: &ProxyCounters, snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(2048);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let lanes = |out: &mut String, name: &str, kind: &str, help: &str, of: &[AtomicU64; 3]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for lane in Priority::ALL_HIGHEST_FIRST {
            let label = format!("{lane:?}").to_lowercase();
            let _ = writeln!(
                out,
                "{name}{{lane=\"{label}\"}} {}",
                get(&of[lane as usize])
            );
        }
    };
    lanes(
        &mut out,
        "fabraix_proxy_requests_total",
        "counter",
        "Requests forwarded through the scheduler.",
        &counters.forwarded,
    );
    lanes(
        &mut out,
        "fabraix_proxy_queue_depth",
        "gauge",
        "Requests forwarded and waiting for their answer (queued or on the wire).",
        &counters.waiting,
    );
    let _ = writeln!(out, "# HELP fabraix_proxy_refused_total Requests answered by the proxy itself.\n# TYPE fabraix_proxy_refused_total counter");
    for (i, why) in Refusal::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "fabraix_proxy_refused_total{{reason=\"{}\"}} {}",
            why.label(),
            get(&counters.refused[i])
        );
    }
    let s = &snapshot.stats;
    let wait_s = get(&counters.wait_micros) as f64 / 1e6;
    let plain: [(&str, &str, &str, String); 10] = [
        (
            "fabraix_proxy_abandoned_total",
            "counter",
            "Clients gone before their answer (their job cancelled or its answer dropped).",
            get(&counters.abandoned).to_string(),
        ),
        (
            "fabraix_proxy_wait_seconds_sum",
            "counter",
            "Seconds from taking a request to its answer, summed.",
            format!("{wait_s:.6}"),
        ),
        (
            "fabraix_proxy_wait_seconds_count",
            "counter",
            "Answers counted in fabraix_proxy_wait_seconds_sum.",
            get(&counters.answered).to_string(),
        ),
        (
            "fabraix_proxy_queue_eta_seconds",
            "gauge",
            "Until everything queued now would have been sent, at the quota.",
            format!("{:.3}", snapshot.queue_eta.as_secs_f64()),
        ),
        (
            "fabraix_scheduler_queued",
            "gauge",
            "Jobs waiting in the key's queue.",
            s.queued.to_string(),
        ),
        (
            "fabraix_scheduler_in_flight",
            "gauge",
            "Calls on the wire.",
            s.in_flight.to_string(),
        ),
        (
            "fabraix_scheduler_calls_sent_total",
            "counter",
            "Calls put on the wire (every attempt).",
            s.sent.to_string(),
        ),
        (
            "fabraix_scheduler_rate_limited_total",
            "counter",
            "429 answers received (and waited out).",
            s.rate_limited.to_string(),
        ),
        (
            "fabraix_scheduler_retries_total",
            "counter",
            "Retries after transient failures.",
            s.retries.to_string(),
        ),
        (
            "fabraix_scheduler_failed_total",
            "counter",
            "Jobs that ended in failure.",
            s.failed.to_string(),
        ),
    ];
    for (name, kind, help, value) in plain {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_per_lane_and_in_total() {
        let c = ProxyCounters::default();
        c.forwarded(Priority::Interactive);
        c.forwarded(Priority::Bulk);
        c.forwarded(Priority::Bulk);
        c.done(Priority::Bulk, Some(Duration::from_millis(1_500)));
        c.done(Priority::Bulk, None);
        c.refused(Refusal::QueueFull);
        let snapshot = Snapshot {
            stats: KeyStats {
                sent: 7,
                rate_limited: 2,
                ..KeyStats::default()
            },
            queue_eta: Duration::from_millis(250),
        };
        let text = render(&c, &snapshot);
        for line in [
            "fabraix_proxy_requests_total{lane=\"bulk\"} 2",
            "fabraix_proxy_queue_depth{lane=\"interactive\"} 1",
            "fabraix_proxy_queue_depth{lane=\"bulk\"} 0",
            "fabraix_proxy_refused_total{reason=\"queue_full\"} 1",
            "fabraix_proxy_abandoned_total 1",
            "fabraix_proxy_wait_seconds_sum 1.500000",
            "fabraix_proxy_wait_seconds_count 1",
            "fabraix_proxy_queue_eta_seconds 0.250",
            "fabraix_scheduler_calls_sent_total 7",
            "fabraix_scheduler_rate_limited_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(c.waiting_total(), 1);
    }
}
