//! What a sender carries: an `/event` or a `/register-agent-run`, and what `record` did with it.

use crate::fabraix::{Event, EventType, RegisterAgentRun};

use super::frame::Kind;

/// One telemetry record, as the producer hands it over.
#[derive(Clone, Debug, PartialEq)]
pub enum Telemetry {
    /// `POST /event`.
    Event(Event),
    /// `POST /register-agent-run`.
    RegisterAgentRun(RegisterAgentRun),
}

impl Telemetry {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Telemetry::Event(_) => Kind::Event,
            Telemetry::RegisterAgentRun(_) => Kind::RegisterAgentRun,
        }
    }

    pub(crate) fn event_type(&self) -> Option<EventType> {
        match self {
            Telemetry::Event(e) => Some(e.event_type),
            Telemetry::RegisterAgentRun(_) => None,
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Telemetry::Event(e) => serde_json::to_vec(e),
            Telemetry::RegisterAgentRun(r) => serde_json::to_vec(r),
        }
    }
}

impl From<Event> for Telemetry {
    fn from(e: Event) -> Self {
        Telemetry::Event(e)
    }
}

impl From<RegisterAgentRun> for Telemetry {
    fn from(r: RegisterAgentRun) -> Self {
        Telemetry::RegisterAgentRun(r)
    }
}

/// Why `record` dropped an event (each also counted in [`DropCounts`](super::DropCounts)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The spool was full ([`FullPolicy::DropNewest`](super::FullPolicy::DropNewest), or a full
    /// spool under sampling).
    SpoolFull,
    /// Sampled out ([`FullPolicy::SampleByEventType`](super::FullPolicy::SampleByEventType)).
    Sampled,
    /// The spool could not be written (logged with the error).
    Io,
}

/// What [`record`](super::TelemetrySender::record) did with an event. Never an error to handle
/// in the hot path: every branch is also counted.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// Queued in memory (not crash-safe until sent or spooled).
    Queued,
    /// Accepted into the disk spool with this sequence number (strictly increasing). It survives
    /// the process being killed once it is durable: when
    /// [`durable_through`](super::TelemetrySender::durable_through) `>= seq`, which the spool's
    /// writer ensures within [`commit_delay`](super::TelemetryConfig::commit_delay) (default
    /// 5 ms); [`wait_durable`](super::TelemetrySender::wait_durable), `flush` and `shutdown`
    /// make it durable at once. Until then a crash loses it.
    Spooled(u64),
    /// Dropped by the full-spool policy (counted).
    Dropped(DropReason),
    /// The spool is full and the policy is [`FullPolicy::Block`](super::FullPolicy::Block): the
    /// event is handed back (use [`record_wait`](super::TelemetrySender::record_wait) to wait for room).
    Full(Telemetry),
    /// The sender was shut down: the event is handed back.
    Closed(Telemetry),
    /// The event could not be encoded as JSON (not counted as recorded).
    Invalid(String),
}

impl Recorded {
    /// Whether the event was taken (queued or spooled).
    pub fn is_taken(&self) -> bool {
        matches!(self, Recorded::Queued | Recorded::Spooled(_))
    }
}
