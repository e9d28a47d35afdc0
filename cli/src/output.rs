//! The output: one JSON line per input id, appended and flushed as each call completes; and, for
//! `--resume`, the ids an earlier run already wrote (a truncated last line is cut off first).

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabraix_scheduler::Outcome;
use serde_json::{json, Value};

use crate::exit::CliError;

/// The kind written for a bad input line.
pub const INVALID_INPUT: &str = "invalid_input";

/// Appends result lines to the output file, one `write` and one flush per line, so a crash loses
/// at most the line being written (and `--resume` cuts that one off).
#[derive(Debug)]
pub struct ResultWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
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
                buf: Vec::with_capacity(512),
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

    fn redact_key(&mut self) {
        let (Some(key), Ok(text)) = (&self.redact, std::str::from_utf8(&self.buf)) else {
            return;
        };
        if let std::borrow::Cow::Owned(clean) = key.redact(text) {
            self.buf = clean.into_bytes();
        }
    }

    /// Writes one result line and flushes it.
    pub fn write(&mut self, line: &Value) -> Result<(), CliError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, line)
            .map_err(|e| CliError::new(format!("cannot encode a result: {e}")))?;
        self.redact_key();
        self.buf.push(b'\n');
        self.file
            .write_all(&self.buf)
            .and_then(|()| self.file.flush())
            .map_err(|e| {
                CliError::new(format!(
                    "cannot write --output {}: {e}",
                    self.path.display()
                ))
            })
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
    let mut line = outcome_line(id, outcome);
    line["finished_at_ms"] = Value::from(unix_ms(finished));
    line
}

fn outcome_line(id: &str, outcome: &Outcome) -> Value {
    match outcome {
        Ok(r) => {
            let body = if r.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&r.body).into_owned())
                })
            };
            json!({"id": id, "status": r.status.as_u16(), "attempts": r.attempts, "body": body})
        }
        Err(e) => error_line(
            id,
            e.kind(),
            e.status(),
            e.code(),
            &e.to_string(),
            e.attempts(),
        ),
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("fbx-echoed-secret-key-123"), "{text}");
        assert!(text.contains(key.fingerprint()), "{text}");
        let written: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(written["status"], 200);
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
