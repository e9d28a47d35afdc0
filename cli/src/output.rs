//! The output: one JSON line per input id, appended in groups as calls complete; and, for
//! `--resume`, the ids an earlier run already wrote (a truncated last line is cut off first).

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabraix_scheduler::Outcome;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::exit::CliError;

/// The kind written for a bad input line.
pub const INVALID_INPUT: &str = "invalid_input";

/// Result lines kept before they are written, at most: the collector flushes sooner, whenever no
/// further answer is ready.
pub const GROUP_LINES: usize = 256;

/// Appends result lines to the output file in groups: [`write`](Self::write) keeps a line in
/// memory and [`flush`](Self::flush) writes every kept line in one `write`. The run flushes
/// whenever no further answer is ready, after at most [`GROUP_LINES`] lines, and before it ends,
/// however it ends (its last input, Ctrl-C, an error): a clean stop loses no result. A `kill -9`
/// loses the lines kept since the last flush — at most [`GROUP_LINES`] results of calls whose
/// answers had arrived — and may cut the line being written, which `--resume` cuts off; `--resume`
/// sends those ids again (their calls are in the call journal, so the quota's windows count them).
#[derive(Debug)]
pub struct ResultWriter {
    path: PathBuf,
    file: File,
    /// Lines kept, not yet written.
    buf: Vec<u8>,
    /// Lines in `buf`.
    kept: usize,
    /// The key whose every occurrence in a line is written as its fingerprint.
    redact: Option<fabraix_scheduler::ApiKey>,
}

/// What `--resume` found in an existing output.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The ids already written.
    pub done: HashSet<String>,
    /// Bytes cut off the end: a last line the crash left without its newline.
    pub truncated_bytes: u64,
    /// Whether the output existed (an earlier run opened it, even if it wrote nothing).
    pub existed: bool,
    /// The earlier run's calls that may still count in the quota's windows: for each result line
    /// finished within the horizon given to [`ResultWriter::open`] of the newest one, its time
    /// (`finished_at_ms`, no earlier than any of its attempts) and its attempts (1 where the line
    /// does not say); lines written without a time count together at the file's modification time.
    pub calls: Vec<(SystemTime, u32)>,
}

impl Resumed {
    /// The calls to count as sent before this run (for
    /// [`KeyConfig::sent_earlier`](fabraix_scheduler::KeyConfig::sent_earlier)), newest first:
    /// `in_flight` calls at `now` if the output existed — the earlier run may have been killed
    /// with that many on the wire, and their results were never written — then each attempt of
    /// [`calls`](Self::calls) at its line's time; at most `most` in all (the quota's largest
    /// count: calls older than that many change no window).
    pub fn earlier_calls(&self, now: SystemTime, in_flight: u32, most: u32) -> Vec<SystemTime> {
        let mut by_time = self.calls.clone();
        by_time.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
        let phantom = if self.existed { in_flight } else { 0 };
        std::iter::once((now, phantom))
            .chain(by_time)
            .flat_map(|(at, n)| std::iter::repeat_n(at, n.min(most) as usize))
            .take(most as usize)
            .collect()
    }
}

/// Milliseconds since the Unix epoch of `t`, rounded up (a result is never dated before it came;
/// 0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    })
}

impl ResultWriter {
    /// Opens `path` for appending. Without `resume` the file must not exist or be empty (so that no
    /// earlier results are mixed in by mistake); with it, the ids already written are returned, and
    /// the calls finished within `horizon` (the quota's longest window) of the last one.
    pub fn open(path: &Path, resume: bool, horizon: Duration) -> Result<(Self, Resumed), CliError> {
        let shown = path.display();
        let existing = check_output(path, resume)?;
        let existed = path.exists();
        let mut resumed = if existing > 0 {
            scan(path, horizon, true)?
        } else {
            Resumed::default()
        };
        resumed.existed = existed;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CliError::new(format!("cannot open --output {shown}: {e}")))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                buf: Vec::with_capacity(64 * 1024),
                kept: 0,
                redact: None,
            },
            resumed,
        ))
    }

    /// Writes every occurrence of `key` in a result line as its fingerprint: a server that echoes
    /// the key in a body (a success's too) never gets it into the output.
    pub fn redacting(mut self, key: fabraix_scheduler::ApiKey) -> Self {
        self.redact = Some(key);
        self
    }

    /// Writes every occurrence of the key in the line that starts at `start` of the buffer as its
    /// fingerprint.
    fn redact_key(&mut self, start: usize) {
        let (Some(key), Ok(text)) = (&self.redact, std::str::from_utf8(&self.buf[start..])) else {
            return;
        };
        if let std::borrow::Cow::Owned(clean) = key.redact(text) {
            self.buf.truncate(start);
            self.buf.extend_from_slice(clean.as_bytes());
        }
    }

    /// Keeps one result line (see [`write_result`](Self::write_result) for a call's).
    pub fn write(&mut self, line: &Value) -> Result<(), CliError> {
        self.keep_line(line)
    }

    /// Keeps the result line of a job finished at `finished` (see [`result_line`]): encoded
    /// directly, a JSON body as the server's own bytes.
    pub fn write_result(
        &mut self,
        id: &str,
        outcome: &Outcome,
        finished: SystemTime,
    ) -> Result<(), CliError> {
        self.keep_line(&ResultLine::new(id, outcome, finished))
    }

    /// Lines kept and not yet written.
    pub fn kept(&self) -> usize {
        self.kept
    }

    fn keep_line<T: Serialize + ?Sized>(&mut self, line: &T) -> Result<(), CliError> {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, line) {
            self.buf.truncate(start);
            return Err(CliError::new(format!("cannot encode a result: {e}")));
        }
        self.redact_key(start);
        self.buf.push(b'\n');
        self.kept += 1;
        Ok(())
    }

    /// Writes the lines kept, in one `write`.
    pub fn flush(&mut self) -> Result<(), CliError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.flush());
        self.buf.clear();
        self.kept = 0;
        written.map_err(|e| {
            CliError::new(format!(
                "cannot write --output {}: {e}",
                self.path.display()
            ))
        })
    }
}

impl Drop for ResultWriter {
    /// Lines kept are written when the writer goes, whatever ends the run.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Whether `path` can take this run's results, without changing anything: not a directory, and
/// empty or missing unless `resume`. Returns its length (0 if missing).
pub fn check_output(path: &Path, resume: bool) -> Result<u64, CliError> {
    let shown = path.display();
    let existing = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(CliError::new(format!(
                "--output {shown} is a directory: give a file path for the results"
            )))
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if existing > 0 && !resume {
        return Err(CliError::new(format!(
            "--output {shown} already holds results: pass --resume to continue it, or choose another file"
        )));
    }
    Ok(existing)
}

/// What `--resume` would find in an existing output (ids, recent calls), read only: a truncated
/// last line is ignored, not cut (`send --dry-run --resume`).
pub fn scan_read_only(path: &Path, horizon: Duration) -> Result<Resumed, CliError> {
    let mut resumed = scan(path, horizon, false)?;
    resumed.existed = true;
    Ok(resumed)
}

/// Reads the ids and the recent calls of an existing output; if `cut`, cuts off a last line that
/// has no newline (otherwise the file is only read).
fn scan(path: &Path, horizon: Duration, cut: bool) -> Result<Resumed, CliError> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .read(true)
        .write(cut)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot open --output {shown} to resume: {e}")))?;
    let mut reader = BufReader::new(&mut file);
    let mut resumed = Resumed::default();
    let mut complete_end = 0u64;
    let mut line = Vec::new();
    let mut number = 0u64;
    // (finished_at_ms, attempts) of the lines with a time; written in time order, so the old
    // ones leave from the front. Lines without one are counted together.
    let mut calls: VecDeque<(u64, u32)> = VecDeque::new();
    let mut undated = 0u32;
    let horizon_ms = u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX);
    let mut newest_ms = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::new(format!("cannot read --output {shown}: {e}")))?;
        if n == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            resumed.truncated_bytes = n as u64;
            break;
        }
        complete_end += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice::<Value>(&line).ok();
        let id = value
            .as_ref()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
        match id {
            Some(id) => {
                resumed.done.insert(id);
                let v = value.as_ref().unwrap_or(&Value::Null);
                // A line without the count (an error that does not record it) sent at least once;
                // a bad input line (0) sent nothing.
                let attempts = v
                    .get("attempts")
                    .and_then(Value::as_u64)
                    .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
                if attempts > 0 {
                    match v.get("finished_at_ms").and_then(Value::as_u64) {
                        Some(ms) => {
                            newest_ms = newest_ms.max(ms);
                            while calls
                                .front()
                                .is_some_and(|&(at, _)| at.saturating_add(horizon_ms) < newest_ms)
                            {
                                calls.pop_front();
                            }
                            calls.push_back((ms, attempts));
                        }
                        None => undated = undated.saturating_add(attempts),
                    }
                }
            }
            None => {
                return Err(CliError::new(format!(
                    "--output {shown} line {number} is not a result line; cannot resume from it"
                )))
            }
        }
    }
    drop(reader);
    // Lines written before `finished_at_ms` existed: no later than the file's last change.
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    resumed.calls = calls
        .into_iter()
        .filter_map(|(ms, attempts)| {
            let at = UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .or(modified)?;
            Some((at, attempts))
        })
        .collect();
    if let (Some(at), true) = (modified, undated > 0) {
        resumed.calls.push((at, undated));
    }
    if cut && resumed.truncated_bytes > 0 {
        file.set_len(complete_end)
            .and_then(|()| file.seek(SeekFrom::End(0)).map(|_| ()))
            .map_err(|e| CliError::new(format!("cannot cut the last line of {shown}: {e}")))?;
    }
    Ok(resumed)
}

/// The result line of a job finished at `finished` (wall clock): its outcome, and when it finished
/// as `finished_at_ms` (Unix milliseconds), which `--resume` reads to count the calls that still
/// hold the quota's windows.
pub fn result_line(id: &str, outcome: &Outcome, finished: SystemTime) -> Value {
    serde_json::to_value(ResultLine::new(id, outcome, finished)).unwrap_or(Value::Null)
}

/// A call's result line, as it is written: `{"id", "status", "attempts", "body",
/// "finished_at_ms"}` for a success, `{"id", "error": {"kind", "status", "code", "message"},
/// "attempts", "finished_at_ms"}` for a failure.
#[derive(Serialize)]
#[serde(untagged)]
enum ResultLine<'a> {
    Success {
        id: &'a str,
        status: u16,
        attempts: u32,
        body: Body<'a>,
        finished_at_ms: u64,
    },
    Failure {
        id: &'a str,
        error: ErrorField<'a>,
        attempts: Option<u32>,
        finished_at_ms: u64,
    },
}

#[derive(Serialize)]
struct ErrorField<'a> {
    kind: &'a str,
    status: Option<u16>,
    code: Option<&'a str>,
    message: String,
}

/// A success's body: its JSON as the server sent it, else its text; `null` if empty.
#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Json(&'a RawValue),
    Decoded(Value),
    Text(std::borrow::Cow<'a, str>),
    Empty(Option<()>),
}

impl<'a> Body<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        if bytes.is_empty() {
            return Body::Empty(None);
        }
        // A `\u` escape may spell the key: such a body is decoded and written again, so the
        // line's redaction sees the key's characters (no server writes JSON that way for fun).
        let escaped = bytes.windows(2).any(|w| w == b"\\u");
        match serde_json::from_slice::<&RawValue>(bytes) {
            Ok(raw) if !escaped => Body::Json(raw),
            Ok(_) => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => Body::Decoded(v),
                Err(_) => Body::Text(String::from_utf8_lossy(bytes)),
            },
            Err(_) => Body::Text(String::from_utf8_lossy(bytes)),
        }
    }
}

impl<'a> ResultLine<'a> {
    fn new(id: &'a str, outcome: &'a Outcome, finished: SystemTime) -> Self {
        let finished_at_ms = unix_ms(finished);
        match outcome {
            Ok(r) => ResultLine::Success {
                id,
                status: r.status.as_u16(),
                attempts: r.attempts,
                body: Body::of(&r.body),
                finished_at_ms,
            },
            Err(e) => ResultLine::Failure {
                id,
                error: ErrorField {
                    kind: e.kind(),
                    status: e.status(),
                    code: e.code(),
                    message: e.to_string(),
                },
                attempts: e.attempts(),
                finished_at_ms,
            },
        }
    }
}

/// The result line of a bad input line.
pub fn invalid_input_line(id: &str, message: &str) -> Value {
    error_line(id, INVALID_INPUT, None, None, message, Some(0))
}

fn error_line(
    id: &str,
    kind: &str,
    status: Option<u16>,
    code: Option<&str>,
    message: &str,
    attempts: Option<u32>,
) -> Value {
    json!({
        "id": id,
        "error": {"kind": kind, "status": status, "code": code, "message": message},
        "attempts": attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabraix_scheduler::JobError;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fbx-cli-out-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("out.jsonl")
    }

    #[test]
    fn error_lines_count_every_attempt_or_say_they_do_not_know() {
        let rejected: Outcome = Err(JobError::Rejected {
            api: fabraix_scheduler::ApiError::from_body(422, b"{\"detail\": \"bad\"}"),
            attempts: 3,
        });
        let line = result_line("a", &rejected, UNIX_EPOCH + Duration::from_millis(1_234));
        assert_eq!(line["attempts"], 3);
        assert_eq!(line["error"]["kind"], "rejected");
        assert_eq!(line["error"]["status"], 422);
        let internal: Outcome = Err(JobError::Internal("lost".into()));
        assert_eq!(line["finished_at_ms"], 1_234);
        assert_eq!(
            result_line("b", &internal, UNIX_EPOCH)["attempts"],
            Value::Null
        );
        assert_eq!(invalid_input_line("c", "line 3: not JSON")["attempts"], 0);
    }

    #[test]
    fn resume_reads_the_calls_still_in_the_window_with_their_attempts() {
        let path = temp("calls");
        let lines = [
            // Older than the horizon (60 s) before the newest line: no longer counts.
            r#"{"id":"a","status":200,"attempts":1,"finished_at_ms":1000000}"#,
            r#"{"id":"b","error":{"kind":"rejected"},"attempts":3,"finished_at_ms":1050000}"#,
            r#"{"id":"c","error":{"kind":"invalid_input"},"attempts":0}"#,
            r#"{"id":"d","error":{"kind":"internal"},"attempts":null,"finished_at_ms":1070000}"#,
            // Written before lines had a time: counted at the file's last change.
            r#"{"id":"e","status":200,"attempts":2}"#,
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (_, resumed) = ResultWriter::open(&path, true, Duration::from_secs(60)).unwrap();
        assert_eq!(resumed.done.len(), 5);
        assert!(resumed.existed);
        let ms = |n: u64| UNIX_EPOCH + Duration::from_millis(n);
        assert_eq!(
            resumed.calls,
            [(ms(1_050_000), 3), (ms(1_070_000), 1), (modified, 2)]
        );
        // Newest first: 2 that may have been on the wire (at now), then by time; at most `most`.
        let now = modified + Duration::from_secs(1);
        let earlier = resumed.earlier_calls(now, 2, 100);
        let mut expected = vec![now, now, modified, modified, ms(1_070_000)];
        expected.extend([ms(1_050_000); 3]);
        assert_eq!(earlier, expected);
        assert_eq!(resumed.earlier_calls(now, 2, 3), [now, now, modified]);
        // No earlier output: nothing can have been on the wire.
        let fresh = Resumed::default();
        assert!(fresh.earlier_calls(now, 16, 100).is_empty());
    }

    #[test]
    fn absurd_counts_and_times_in_an_output_stay_bounded() {
        let path = temp("absurd");
        let lines = [
            r#"{"id":"a","status":200,"attempts":4000000000,"finished_at_ms":18446744073709551615}"#,
            r#"{"id":"b","status":200,"attempts":4000000000}"#,
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (_, resumed) = ResultWriter::open(&path, true, Duration::from_secs(60)).unwrap();
        let earlier = resumed.earlier_calls(SystemTime::now(), 16, 600);
        assert_eq!(earlier.len(), 600);
    }

    #[test]
    fn resume_reads_ids_and_cuts_a_truncated_last_line() {
        let path = temp("resume");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"status\":200}\n{\"id\":\"b\",\"status\":200}\n{\"id\":\"c\",\"sta",
        )
        .unwrap();
        let hour = Duration::from_secs(3600);
        assert!(ResultWriter::open(&path, false, hour).is_err());
        let (mut w, resumed) = ResultWriter::open(&path, true, hour).unwrap();
        assert_eq!(resumed.truncated_bytes, 14);
        assert_eq!(resumed.done.len(), 2);
        assert!(resumed.done.contains("a") && resumed.done.contains("b"));
        w.write(&invalid_input_line("c", "line 3: missing \"path\""))
            .unwrap();
        // Kept until flushed: a group of lines goes in one write.
        assert!(!std::fs::read_to_string(&path).unwrap().contains("\"c\""));
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let last: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["id"], "c");
        assert_eq!(last["error"]["kind"], INVALID_INPUT);
        assert_eq!(last["attempts"], 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_key_echoed_in_a_success_body_is_written_as_its_fingerprint() {
        let path = temp("echo");
        let key = fabraix_scheduler::ApiKey::new("fbx-echoed-secret-key-123").unwrap();
        let hour = Duration::from_secs(3600);
        let (w, _) = ResultWriter::open(&path, false, hour).unwrap();
        let mut w = w.redacting(key.clone());
        let line =
            json!({"id": "a", "status": 200, "body": {"echo": "key fbx-echoed-secret-key-123"}});
        w.write(&line).unwrap();
        // Escaped in a body the server sent: decoded, so the redaction sees it.
        let echoed = "{\"echo\": \"\\u0066bx-echoed-secret-key-123\"}";
        let outcome: Outcome = Ok(response(echoed));
        w.write_result("b", &outcome, UNIX_EPOCH).unwrap();
        drop(w); // flushes what it kept
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("fbx-echoed-secret-key-123"), "{text}");
        assert_eq!(text.matches(key.fingerprint()).count(), 2, "{text}");
        for line in text.lines() {
            let written: Value = serde_json::from_str(line).unwrap();
            assert_eq!(written["status"], 200);
        }
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    fn response(body: &str) -> fabraix_scheduler::Response {
        fabraix_scheduler::Response {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            attempts: 2,
            sent_at: fabraix_scheduler::Instant::now(),
        }
    }

    #[test]
    fn a_json_body_is_written_as_the_server_sent_it_and_others_as_text() {
        let path = temp("raw-body");
        let hour = Duration::from_secs(3600);
        let (mut w, _) = ResultWriter::open(&path, false, hour).unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(7);
        for (id, body) in [
            ("a", r#"{"z": 1, "a": [true]}"#),
            ("b", "not json"),
            ("c", ""),
        ] {
            w.write_result(id, &Ok(response(body)), at).unwrap();
        }
        assert_eq!(w.kept(), 3);
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"id":"a","status":200,"attempts":2,"body":{"z": 1, "a": [true]},"finished_at_ms":7}"#
        );
        assert_eq!(
            lines[1],
            r#"{"id":"b","status":200,"attempts":2,"body":"not json","finished_at_ms":7}"#
        );
        assert_eq!(
            lines[2],
            r#"{"id":"c","status":200,"attempts":2,"body":null,"finished_at_ms":7}"#
        );
        // The same line as a value (what tests and the summary read).
        let value = result_line("a", &Ok(response(r#"{"z": 1}"#)), at);
        assert_eq!(value["body"]["z"], 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_corrupt_complete_line_stops_the_resume() {
        let path = temp("corrupt");
        std::fs::write(&path, "{\"id\":\"a\"}\ngarbage\n").unwrap();
        let e = ResultWriter::open(&path, true, Duration::from_secs(3600)).unwrap_err();
        assert!(e.0.contains("line 2"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
