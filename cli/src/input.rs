//! The input: JSONL read line by line (never the whole file), each line parsed into a job or a
//! bad-line error that names its line number.

use std::path::Path;
use std::pin::Pin;

use fabraix_scheduler::{Job, Priority};
use http::{header, HeaderValue, Method};
use serde_json::value::RawValue;
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

/// Reads an input one line at a time; memory is one line of at most `max_line_bytes`, whatever
/// the input's size (a longer line is read past, not held).
pub struct InputReader {
    source: Source,
    line: u64,
    buf: Vec<u8>,
    max_line_bytes: usize,
}

/// The fields an input line may have.
pub const FIELDS: [&str; 5] = ["id", "method", "path", "body", "priority"];

impl std::fmt::Debug for InputReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputReader")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl InputReader {
    /// Opens `path`, or stdin for `-`, for lines of at most `max_line_bytes`. A directory is
    /// refused here, before anything is written.
    pub async fn open(path: &Path, max_line_bytes: u64) -> Result<Self, CliError> {
        let max = usize::try_from(max_line_bytes).unwrap_or(usize::MAX);
        if path.as_os_str() == "-" {
            return Ok(Self::new(BufReader::new(tokio::io::stdin())).max_line_bytes(max));
        }
        let shown = path.display();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| CliError::new(format!("cannot open --input {shown}: {e}")))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| CliError::new(format!("cannot open --input {shown}: {e}")))?;
        if meta.is_dir() {
            return Err(CliError::new(format!(
                "--input {shown} is a directory: give a JSONL file (or - for stdin)"
            )));
        }
        Ok(Self::new(BufReader::with_capacity(64 * 1024, file)).max_line_bytes(max))
    }

    /// Reads from any buffered reader (lines of at most 1 MiB; see
    /// [`max_line_bytes`](Self::max_line_bytes)).
    pub fn new(source: impl AsyncBufRead + Send + 'static) -> Self {
        Self {
            source: Box::pin(source),
            line: 0,
            buf: Vec::new(),
            max_line_bytes: 1 << 20,
        }
    }

    /// The longest line kept, in bytes (its newline not counted); a longer one is a bad line.
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max;
        self
    }

    /// The next non-blank line, or `None` at the end. Errors only if the input cannot be read.
    pub async fn next(&mut self) -> Result<Option<InputLine>, CliError> {
        loop {
            let Some(length) = self.read_line().await.map_err(|e| {
                CliError::new(format!(
                    "cannot read the input after line {}: {e}",
                    self.line
                ))
            })?
            else {
                return Ok(None);
            };
            self.line += 1;
            if length > self.max_line_bytes {
                return Ok(Some(InputLine {
                    line: self.line,
                    id: self.line.to_string(),
                    job: Err(format!(
                        "line {}: {} bytes, longer than --max-line-bytes ({}); not read",
                        self.line,
                        crate::human::count(length as u64),
                        crate::human::count(self.max_line_bytes as u64)
                    )),
                }));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(parse_line(self.line, &self.buf)));
        }
    }

    /// Reads one line into `buf` (without its newline) if it is at most `max_line_bytes` long;
    /// a longer one is consumed and dropped as it comes. Returns the line's length, `None` at the
    /// end of the input.
    async fn read_line(&mut self) -> std::io::Result<Option<usize>> {
        self.buf.clear();
        let mut length = 0usize;
        let mut any = false;
        loop {
            let chunk = AsyncBufReadExt::fill_buf(&mut self.source).await?;
            if chunk.is_empty() {
                return Ok(any.then_some(length));
            }
            any = true;
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            length = length.saturating_add(take);
            if length <= self.max_line_bytes {
                self.buf.extend_from_slice(&chunk[..take]);
            } else {
                self.buf = Vec::new(); // too long: let go of what was kept
            }
            AsyncBufReadExt::consume(&mut self.source, take + usize::from(end));
            if end {
                return Ok(Some(length));
            }
        }
    }
}

/// The places of the fields in [`FIELDS`].
const ID: usize = 0;
const METHOD: usize = 1;
const PATH: usize = 2;
const BODY: usize = 3;
const PRIORITY: usize = 4;

/// A line's fields as it has them (the last of a repeated one), unparsed, and the first field it
/// should not have. Borrowed from the line: a line costs no map and no copy of its body.
struct Fields<'a> {
    raw: [Option<&'a RawValue>; FIELDS.len()],
    unknown: Option<String>,
}

impl Fields<'_> {
    /// Field `i` parsed (small: an id, a path, a method or a priority); `None` if absent.
    fn get(&self, i: usize) -> Option<Value> {
        self.raw[i].map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut fields = Fields {
                    raw: [None; FIELDS.len()],
                    unknown: None,
                };
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    let value: &'de RawValue = m.next_value()?;
                    match FIELDS.iter().position(|f| *f == key) {
                        Some(i) => fields.raw[i] = Some(value),
                        None if fields.unknown.is_none() => fields.unknown = Some(key.into_owned()),
                        None => {}
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Parses one line: `{"id", "method", "path", "body", "priority"}`; only `path` is required, any
/// other field is an error. The id: a non-empty string as it is, an integer as its decimal
/// digits (`7` and `"7"` are one id), else the line number (see [`crate::ids`]).
pub fn parse_line(line: u64, bytes: &[u8]) -> InputLine {
    let bad = |id: String, why: String| InputLine {
        line,
        id,
        job: Err(format!("line {line}: {why}")),
    };
    let default_id = line.to_string();
    let map = match serde_json::from_slice::<Fields<'_>>(bytes) {
        Ok(fields) => fields,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return bad(default_id, "not a JSON object".into())
        }
        Err(e) => return bad(default_id, format!("not JSON ({e})")),
    };
    let id = match map.get(ID) {
        None | Some(Value::Null) => default_id,
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => {
            return bad(
                default_id,
                "\"id\" must be a non-empty string or an integer".into(),
            )
        }
    };
    if let Some(field) = &map.unknown {
        let hint = FIELDS
            .iter()
            .map(|f| (edit_distance(f, field), f))
            .filter(|&(d, _)| d <= 2)
            .min()
            .map(|(_, f)| f)
            .map_or_else(String::new, |f| format!("did you mean {f:?}? "));
        return bad(
            id,
            format!(
                "unknown field {field:?} ({hint}the fields are {})",
                FIELDS.join(", ")
            ),
        );
    }
    let path = match map.get(PATH) {
        Some(Value::String(p)) if !p.is_empty() => p,
        None | Some(Value::Null) => return bad(id, "missing \"path\"".into()),
        Some(_) => return bad(id, "\"path\" must be a non-empty string".into()),
    };
    let method = match map.get(METHOD) {
        None | Some(Value::Null) => Method::POST,
        Some(Value::String(m)) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return bad(id, format!("invalid \"method\" {m:?}")),
        },
        Some(_) => return bad(id, "\"method\" must be a string".into()),
    };
    let priority = match map.get(PRIORITY) {
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
    // The body as the line has it: passed through, not parsed and written again.
    if let Some(body) = map.raw[BODY].filter(|b| b.get() != "null") {
        let bytes = bytes::Bytes::copy_from_slice(body.get().as_bytes());
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

/// The Levenshtein distance of two short strings (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
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
        assert_eq!(
            err(r#"{"path":"/e","bdy":{}}"#),
            "line 7: unknown field \"bdy\" (did you mean \"body\"? the fields are id, method, path, body, priority)"
        );
        assert!(err(r#"{"path":"/e","id":7.5}"#).contains("integer"));
        assert_eq!(parse_line(9, br#"{"id":7,"path":"/e"}"#).id, "7");
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_a_bad_line_not_held() {
        let long = format!("{{\"path\":\"/a\",\"body\":\"{}\"}}", "x".repeat(100));
        let text = format!("{long}\n{{\"path\":\"/b\"}}\n{long}");
        let mut r = InputReader::new(BufReader::with_capacity(16, std::io::Cursor::new(text)))
            .max_line_bytes(50);
        let a = r.next().await.unwrap().unwrap();
        assert!(a
            .job
            .unwrap_err()
            .contains("longer than --max-line-bytes (50)"));
        assert!(r.buf.capacity() <= 64, "{}", r.buf.capacity());
        let b = r.next().await.unwrap().unwrap();
        assert_eq!(b.job.unwrap().path(), "/b");
        let c = r.next().await.unwrap().unwrap();
        assert_eq!(c.line, 3);
        assert!(c.job.is_err());
        assert!(r.next().await.unwrap().is_none());
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
