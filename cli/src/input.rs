//! The input: JSONL read line by line (never the whole file), each line parsed into a job or a
//! bad-line error that names its line number.

use std::path::Path;
use std::pin::Pin;

use fabraix_scheduler::{Job, Priority};
use http::{header, HeaderValue, Method};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::exit::CliError;

/// One non-blank input line.
#[derive(Debug)]
pub struct InputLine {
    /// 1-based line number in the input.
    pub line: u64,
    /// The job's id: the line's `"id"`, else its line number. A line too broken to have an id
    /// gets its line number.
    pub id: String,
    /// The job, or why the line is bad (the message starts with `line N:`).
    pub job: Result<Job, String>,
}

type Source = Pin<Box<dyn AsyncBufRead + Send>>;

/// Reads an input one line at a time; memory is one line, whatever the input's size.
pub struct InputReader {
    source: Source,
    line: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for InputReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputReader")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl InputReader {
    /// Opens `path`, or stdin for `-`.
    pub async fn open(path: &Path) -> Result<Self, CliError> {
        if path.as_os_str() == "-" {
            return Ok(Self::new(BufReader::new(tokio::io::stdin())));
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| CliError::new(format!("cannot open --input {}: {e}", path.display())))?;
        Ok(Self::new(BufReader::with_capacity(64 * 1024, file)))
    }

    /// Reads from any buffered reader.
    pub fn new(source: impl AsyncBufRead + Send + 'static) -> Self {
        Self {
            source: Box::pin(source),
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The next non-blank line, or `None` at the end. Errors only if the input cannot be read.
    pub async fn next(&mut self) -> Result<Option<InputLine>, CliError> {
        loop {
            self.buf.clear();
            let n = self
                .source
                .read_until(b'\n', &mut self.buf)
                .await
                .map_err(|e| {
                    CliError::new(format!(
                        "cannot read the input after line {}: {e}",
                        self.line
                    ))
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(parse_line(self.line, &self.buf)));
        }
    }
}

/// Parses one line: `{"id", "method", "path", "body", "priority"}`; only `path` is required.
pub fn parse_line(line: u64, bytes: &[u8]) -> InputLine {
    let bad = |id: String, why: String| InputLine {
        line,
        id,
        job: Err(format!("line {line}: {why}")),
    };
    let default_id = line.to_string();
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return bad(default_id, format!("not JSON ({e})")),
    };
    let Value::Object(map) = value else {
        return bad(default_id, "not a JSON object".into());
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => default_id,
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return bad(
                default_id,
                "\"id\" must be a non-empty string or a number".into(),
            )
        }
    };
    let path = match map.get("path") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        None | Some(Value::Null) => return bad(id, "missing \"path\"".into()),
        Some(_) => return bad(id, "\"path\" must be a non-empty string".into()),
    };
    let method = match map.get("method") {
        None | Some(Value::Null) => Method::POST,
        Some(Value::String(m)) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return bad(id, format!("invalid \"method\" {m:?}")),
        },
        Some(_) => return bad(id, "\"method\" must be a string".into()),
    };
    let priority = match map.get("priority") {
        None | Some(Value::Null) => Priority::Normal,
        Some(Value::String(p)) => match p.parse::<Priority>() {
            Ok(p) => p,
            Err(e) => return bad(id, e),
        },
        Some(_) => {
            return bad(
                id,
                "\"priority\" must be \"interactive\", \"normal\" or \"bulk\"".into(),
            )
        }
    };
    let mut job = Job::new(method, path).with_priority(priority);
    if let Some(body) = map.get("body").filter(|b| !b.is_null()) {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        job = job.with_body(bytes).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    InputLine {
        line,
        id,
        job: Ok(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_line(7, line.as_bytes()).job.unwrap_err()
    }

    #[test]
    fn defaults_and_fields() {
        let l = parse_line(3, br#"{"path":"/event","body":{"a":1}}"#);
        assert_eq!(l.id, "3");
        let job = l.job.unwrap();
        assert_eq!(job.method(), &Method::POST);
        assert_eq!(job.priority(), Priority::Normal);
        assert_eq!(&job.body()[..], br#"{"a":1}"#);
        let l = parse_line(
            4,
            br#"{"id":"run-1","method":"get","path":"/x","priority":"interactive"}"#,
        );
        assert_eq!(l.id, "run-1");
        let job = l.job.unwrap();
        assert_eq!(job.method(), &Method::GET);
        assert_eq!(job.priority(), Priority::Interactive);
        assert!(job.body().is_empty());
        assert_eq!(parse_line(5, br#"{"id":42,"path":"/x"}"#).id, "42");
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        assert!(err("{not json").starts_with("line 7: not JSON"));
        assert_eq!(err("[1,2]"), "line 7: not a JSON object");
        assert_eq!(err(r#"{"id":"a"}"#), "line 7: missing \"path\"");
        assert!(err(r#"{"path":"/e","priority":"urgent"}"#)
            .starts_with("line 7: unknown priority \"urgent\""));
        assert_eq!(
            err(r#"{"path":3}"#),
            "line 7: \"path\" must be a non-empty string"
        );
        assert!(err(r#"{"path":"/e","method":"B AD"}"#).starts_with("line 7: invalid \"method\""));
        // A bad line keeps its id when it has one.
        assert_eq!(
            parse_line(9, br#"{"id":"x","path":"/e","priority":"no"}"#).id,
            "x"
        );
        assert_eq!(parse_line(9, b"nope").id, "9");
    }

    #[tokio::test]
    async fn reads_line_by_line_counting_blank_lines() {
        let text = "{\"path\":\"/a\"}\n\n   \n{\"path\":\"/b\"}\n{bad";
        let mut r = InputReader::new(BufReader::new(text.as_bytes()));
        let a = r.next().await.unwrap().unwrap();
        assert_eq!((a.line, a.id.as_str()), (1, "1"));
        let b = r.next().await.unwrap().unwrap();
        assert_eq!((b.line, b.id.as_str()), (4, "4"));
        let c = r.next().await.unwrap().unwrap();
        assert_eq!(c.line, 5);
        assert!(c.job.is_err());
        assert!(r.next().await.unwrap().is_none());
    }
}
