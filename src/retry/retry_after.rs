//! How long a 429 asks the client to wait: the body's `retry_after` and the `Retry-After` header
//! (delay-seconds or an HTTP-date), sanity-checked and converted to a duration once, here.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::Value;

use super::network_time::{seconds_text_to_duration, seconds_to_duration, until_wall_time};

/// The server's wait, after the checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryAfter {
    /// A usable wait (the larger of body and header), possibly clamped.
    Wait {
        /// The wait.
        wait: Duration,
        /// `Some(asked)` if the server asked for more than the cap and was clamped.
        clamped_from: Option<Duration>,
    },
    /// No usable value: the caller falls back to backoff.
    Unusable,
}

/// Why a value was not used (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryAfterProblem {
    /// Where the value was: `body` or `header`.
    pub source: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// Reads the 429's waits. `cap` bounds an absurd value; `wall_now` converts an HTTP-date.
/// Returns the wait and the problems found with values that were present but unusable.
pub fn parse_retry_after(
    headers: &HeaderMap,
    body: &[u8],
    wall_now: SystemTime,
    cap: Duration,
) -> (RetryAfter, Vec<RetryAfterProblem>) {
    let mut problems = Vec::new();
    let mut waits = Vec::new();
    if let Some(v) = body_value(body) {
        match seconds_from_json(&v) {
            Ok(d) => waits.push(d),
            Err(reason) => problems.push(RetryAfterProblem {
                source: "body",
                reason,
            }),
        }
    }
    if let Some(h) = headers.get(http::header::RETRY_AFTER) {
        match h.to_str() {
            Ok(text) => match seconds_from_header(text, wall_now) {
                Ok(d) => waits.push(d),
                Err(reason) => problems.push(RetryAfterProblem {
                    source: "header",
                    reason,
                }),
            },
            Err(_) => problems.push(RetryAfterProblem {
                source: "header",
                reason: "Retry-After is not ASCII".into(),
            }),
        }
    }
    let Some(wait) = waits.into_iter().max() else {
        return (RetryAfter::Unusable, problems);
    };
    if wait > cap {
        return (
            RetryAfter::Wait {
                wait: cap,
                clamped_from: Some(wait),
            },
            problems,
        );
    }
    (
        RetryAfter::Wait {
            wait,
            clamped_from: None,
        },
        problems,
    )
}

fn body_value(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")
        .and_then(|e| e.get("retry_after"))
        .or_else(|| v.get("retry_after"))
        .cloned()
}

/// The longest `Retry-After` header value read, in bytes: a longer one is neither a number nor a
/// date.
const MAX_HEADER_LEN: usize = 256;

fn seconds_from_json(v: &Value) -> Result<Duration, String> {
    let checked = |r: Result<Duration, String>| r.map_err(|why| format!("retry_after {why}"));
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(secs) => checked(seconds_to_duration(secs)),
            None => Err(format!("retry_after {n} is not a number")),
        },
        Value::String(s) => checked(seconds_text_to_duration(s)),
        Value::Null => Err("retry_after is null".into()),
        Value::Array(_) | Value::Object(_) | Value::Bool(_) => {
            Err("retry_after is not a number".into())
        }
    }
}

fn seconds_from_header(text: &str, wall_now: SystemTime) -> Result<Duration, String> {
    if text.len() > MAX_HEADER_LEN {
        return Err(format!("Retry-After is {} bytes long", text.len()));
    }
    let text = text.trim();
    if text.parse::<f64>().is_ok() {
        return seconds_text_to_duration(text).map_err(|r| format!("Retry-After {r}"));
    }
    match httpdate::parse_http_date(text) {
        Ok(at) => Ok(until_wall_time(at, wall_now)),
        Err(_) => Err(format!(
            "Retry-After {text:?} is neither delay-seconds nor an HTTP-date"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const CAP: Duration = Duration::from_secs(3700);

    fn run(body: &str, header: Option<&str>) -> (RetryAfter, Vec<RetryAfterProblem>) {
        let mut h = HeaderMap::new();
        if let Some(v) = header {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        parse_retry_after(&h, body.as_bytes(), now, CAP)
    }

    fn wait(r: RetryAfter) -> Duration {
        match r {
            RetryAfter::Wait { wait, .. } => wait,
            RetryAfter::Unusable => panic!("unusable"),
        }
    }

    #[test]
    fn larger_of_body_and_header_wins() {
        let body = r#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","retry_after":30}}"#;
        assert_eq!(wait(run(body, None).0), Duration::from_secs(30));
        assert_eq!(wait(run(body, Some("45")).0), Duration::from_secs(45));
        assert_eq!(wait(run(body, Some("5")).0), Duration::from_secs(30));
        assert_eq!(
            wait(run(r#"{"retry_after":"2.5"}"#, None).0),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn http_date_is_converted_with_the_injected_wall_clock() {
        // 1_700_000_000 = Tue, 14 Nov 2023 22:13:20 GMT
        let (r, _) = run("", Some("Tue, 14 Nov 2023 22:14:00 GMT"));
        assert_eq!(wait(r), Duration::from_secs(40));
        let (r, _) = run("", Some("Tue, 14 Nov 2023 22:00:00 GMT"));
        assert_eq!(wait(r), Duration::ZERO);
    }

    #[test]
    fn bad_values_fall_back_and_are_reported() {
        for bad in [
            r#"{"error":{"retry_after":-5}}"#,
            r#"{"error":{"retry_after":"abc"}}"#,
            r#"{"error":{"retry_after":"NaN"}}"#,
            r#"{"error":{"retry_after":null}}"#,
            r#"{"error":{"retry_after":[1]}}"#,
        ] {
            let (r, problems) = run(bad, None);
            assert_eq!(r, RetryAfter::Unusable, "{bad}");
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].source, "body");
        }
        let (r, problems) = run("", Some("soon"));
        assert_eq!(r, RetryAfter::Unusable);
        assert!(problems[0].reason.contains("neither"));
        assert_eq!(run("<html>", None).0, RetryAfter::Unusable);
    }

    #[test]
    fn absurd_values_are_clamped() {
        let (r, _) = run(r#"{"error":{"retry_after":1e12}}"#, None);
        match r {
            RetryAfter::Wait { wait, clamped_from } => {
                assert_eq!(wait, CAP);
                assert!(clamped_from.unwrap() > CAP);
            }
            RetryAfter::Unusable => panic!(),
        }
    }
}
