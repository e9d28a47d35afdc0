//! Request-body validation for the three endpoints: 400 for a body that is not a JSON object or
//! misses fields, 422 (FastAPI style) for fields of the wrong type or value.

use serde_json::{json, Map, Value};

/// The endpoints the mock serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/register-agent-run`.
    RegisterAgentRun,
    /// `POST /v1/event`.
    Event,
    /// `POST /v1/check`.
    Check,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::RegisterAgentRun => "/v1/register-agent-run",
            Endpoint::Event => "/v1/event",
            Endpoint::Check => "/v1/check",
        }
    }
}

/// The `event_type` values `/event` accepts.
pub(crate) const EVENT_TYPES: [&str; 8] = [
    "user",
    "model_input",
    "model_output",
    "tool",
    "environment",
    "memory",
    "system",
    "error",
];

#[derive(Clone, Copy)]
enum Field {
    Str,
    Number,
    EventType,
    ActionCheck,
}

/// Why a body was not accepted.
#[derive(Debug, PartialEq)]
pub(crate) enum Invalid {
    /// 400 `invalid_body`, with this message.
    BadRequest(String),
    /// 422, with these FastAPI `detail` items.
    Unprocessable(Vec<Value>),
}

fn fields(endpoint: Endpoint) -> &'static [(&'static str, Field)] {
    match endpoint {
        Endpoint::RegisterAgentRun => &[
            ("agent_id", Field::Str),
            ("timestamp", Field::Str),
            ("system_prompt", Field::Str),
        ],
        Endpoint::Event => &[
            ("event_type", Field::EventType),
            ("trace_id", Field::Str),
            ("timestamp", Field::Number),
            ("content", Field::Str),
            ("schema", Field::Str),
        ],
        Endpoint::Check => &[
            ("event_type", Field::ActionCheck),
            ("trace_id", Field::Str),
            ("timestamp", Field::Number),
            ("content", Field::Str),
            ("schema", Field::Str),
        ],
    }
}

fn detail(name: &str, msg: &str, kind: &str, input: &Value) -> Value {
    json!({"loc": ["body", name], "msg": msg, "type": kind, "input": input})
}

fn check_field(name: &str, field: Field, value: &Value) -> Option<Value> {
    match (field, value) {
        (Field::Str, Value::String(_)) | (Field::Number, Value::Number(_)) => None,
        (Field::Str, _) => Some(detail(
            name,
            "Input should be a valid string",
            "string_type",
            value,
        )),
        (Field::Number, _) => Some(detail(
            name,
            "Input should be a valid number",
            "float_type",
            value,
        )),
        (Field::EventType, Value::String(s)) if EVENT_TYPES.contains(&s.as_str()) => None,
        (Field::EventType, _) => Some(detail(
            name,
            "Input should be 'user', 'model_input', 'model_output', 'tool', 'environment', \
             'memory', 'system' or 'error'",
            "enum",
            value,
        )),
        (Field::ActionCheck, Value::String(s)) if s == "action_check" => None,
        (Field::ActionCheck, _) => Some(detail(
            name,
            "Input should be 'action_check'",
            "literal_error",
            value,
        )),
    }
}

/// Validates a body for `endpoint`, returning its fields.
pub(crate) fn validate(endpoint: Endpoint, body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Invalid::BadRequest(format!("Request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Invalid::BadRequest(
            "Request body must be a JSON object".into(),
        ));
    };
    let spec = fields(endpoint);
    let missing: Vec<&str> = spec
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !map.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Err(Invalid::BadRequest(format!(
            "Missing required field(s): {}",
            missing.join(", ")
        )));
    }
    let details: Vec<Value> = spec
        .iter()
        .filter_map(|(name, field)| check_field(name, *field, &map[*name]))
        .collect();
    if details.is_empty() {
        Ok(map)
    } else {
        Err(Invalid::Unprocessable(details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified() {
        let ok =
            br#"{"event_type":"tool","trace_id":"t","timestamp":1.5,"content":"{}","schema":"{}"}"#;
        assert!(validate(Endpoint::Event, ok).is_ok());
        assert!(matches!(
            validate(Endpoint::Event, b"not json"),
            Err(Invalid::BadRequest(_))
        ));
        assert!(matches!(
            validate(Endpoint::Check, b"[1]"),
            Err(Invalid::BadRequest(_))
        ));
        match validate(Endpoint::Check, ok) {
            Err(Invalid::Unprocessable(d)) => {
                assert_eq!(d.len(), 1);
                assert_eq!(d[0]["type"], "literal_error");
            }
            other => panic!("{other:?}"),
        }
        let bad = br#"{"agent_id":1,"timestamp":null,"system_prompt":"p"}"#;
        match validate(Endpoint::RegisterAgentRun, bad) {
            Err(Invalid::Unprocessable(d)) => assert_eq!(d.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
