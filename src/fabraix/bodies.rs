//! The documented request and response bodies of the Fabraix endpoints.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `POST /register-agent-run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgentRun {
    /// The agent's id (a UUID; the docs' examples also use names such as `cs-agent-prod-v1`).
    pub agent_id: String,
    /// ISO 8601 / RFC 3339 time of the run's start.
    pub timestamp: String,
    /// The agent's system prompt.
    pub system_prompt: String,
}

impl RegisterAgentRun {
    /// A registration stamped with `at` (RFC 3339, UTC, whole seconds).
    ///
    /// ```
    /// use fabraix_scheduler::RegisterAgentRun;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let r = RegisterAgentRun::new("cs-agent-prod-v1", "You are helpful", UNIX_EPOCH + Duration::from_secs(1_704_067_200));
    /// assert_eq!(r.timestamp, "2024-01-01T00:00:00Z");
    /// ```
    pub fn new(
        agent_id: impl Into<String>,
        system_prompt: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        Self {
            agent_id: agent_id.into(),
            timestamp: httpdate_to_rfc3339(at),
            system_prompt: system_prompt.into(),
        }
    }
}

/// RFC 3339 in UTC, from a wall-clock time (civil-from-days, no date crate needed).
pub(crate) fn httpdate_to_rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The response to `/register-agent-run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// The run's trace id, for its events and checks.
    pub trace_id: String,
    /// The server's timestamp, as sent.
    #[serde(default)]
    pub timestamp: serde_json::Value,
}

/// The documented event types of `/event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A user message.
    User,
    /// What went into the model.
    ModelInput,
    /// What came out of the model.
    ModelOutput,
    /// A tool call.
    Tool,
    /// The environment.
    Environment,
    /// Memory reads and writes.
    Memory,
    /// System events.
    System,
    /// Errors.
    Error,
}

impl EventType {
    /// The wire name (`model_input`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::User => "user",
            EventType::ModelInput => "model_input",
            EventType::ModelOutput => "model_output",
            EventType::Tool => "tool",
            EventType::Environment => "environment",
            EventType::Memory => "memory",
            EventType::System => "system",
            EventType::Error => "error",
        }
    }
}

/// `POST /event`: one telemetry record. `content` and `schema` are *stringified* JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The kind of event.
    pub event_type: EventType,
    /// The run's trace id.
    pub trace_id: String,
    /// Unix time in seconds, with fractions.
    pub timestamp: f64,
    /// The event's content, as a JSON string.
    pub content: String,
    /// The content's JSON Schema, as a JSON string.
    pub schema: String,
}

impl Event {
    /// An event stamped with `at`; `content` and `schema` are serialised to strings here.
    ///
    /// ```
    /// use fabraix_scheduler::{Event, EventType};
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let e = Event::new(EventType::Tool, "trace-1", &serde_json::json!({"tool": "search"}), &serde_json::json!({"type": "object"}), UNIX_EPOCH + Duration::from_millis(1_500)).unwrap();
    /// assert_eq!(e.timestamp, 1.5);
    /// assert_eq!(e.content, r#"{"tool":"search"}"#);
    /// ```
    pub fn new<C: Serialize + ?Sized, S: Serialize + ?Sized>(
        event_type: EventType,
        trace_id: impl Into<String>,
        content: &C,
        schema: &S,
        at: SystemTime,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_type,
            trace_id: trace_id.into(),
            timestamp: unix_seconds(at),
            content: serde_json::to_string(content)?,
            schema: serde_json::to_string(schema)?,
        })
    }
}

/// Unix time in float seconds.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The response to `/event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventAck {
    /// The stored event's id.
    pub event_id: String,
    /// The server's timestamp, as sent.
    #[serde(default)]
    pub timestamp: serde_json::Value,
}

/// `POST /check`: is this action safe? A blocking call: sent at interactive priority.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionCheck {
    /// Always `"action_check"`.
    pub event_type: String,
    /// The run's trace id.
    pub trace_id: String,
    /// Unix time in seconds, with fractions.
    pub timestamp: f64,
    /// The action, as a JSON string.
    pub content: String,
    /// The action's JSON Schema, as a JSON string.
    pub schema: String,
}

impl ActionCheck {
    /// A check of `action` stamped with `at`.
    ///
    /// ```
    /// use fabraix_scheduler::ActionCheck;
    /// use std::time::UNIX_EPOCH;
    /// let c = ActionCheck::new("trace-1", &serde_json::json!({"cmd": "ls"}), &serde_json::json!({}), UNIX_EPOCH).unwrap();
    /// assert_eq!(c.event_type, "action_check");
    /// ```
    pub fn new<C: Serialize + ?Sized, S: Serialize + ?Sized>(
        trace_id: impl Into<String>,
        action: &C,
        schema: &S,
        at: SystemTime,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_type: "action_check".into(),
            trace_id: trace_id.into(),
            timestamp: unix_seconds(at),
            content: serde_json::to_string(action)?,
            schema: serde_json::to_string(schema)?,
        })
    }
}

/// The response to `/check`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckVerdict {
    /// Whether the action may go ahead.
    pub is_safe: bool,
    /// The server's reasoning.
    #[serde(default)]
    pub reasoning: String,
    /// The check's id.
    #[serde(default)]
    pub action_check_id: String,
    /// The server's timestamp, as sent.
    #[serde(default)]
    pub timestamp: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let t = |s| httpdate_to_rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn event_types_serialise_as_documented() {
        let v = serde_json::to_value(EventType::ModelOutput).unwrap();
        assert_eq!(v, "model_output");
        assert_eq!(EventType::ModelOutput.as_str(), "model_output");
    }
}
