//! The output: one JSON line per input id, appended and flushed as each call completes; and, for
//! `--resume`, the ids an earlier run already wrote (a truncated last line is cut off first).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
}

/// What `--resume` found in an existing output.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The ids already written.
    pub done: HashSet<String>,
    /// Bytes cut off the end: a last line the crash left without its newline.
    pub truncated_bytes: u64,
}

impl ResultWriter {
    /// Opens `path` for appending. Without `resume` the file must not exist or be empty (so that no
    /// earlier results are mixed in by mistake); with it, the ids already written are returned.
    pub fn open(path: &Path, resume: bool) -> Result<(Self, Resumed), CliError> {
        let shown = path.display();
        let existing = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let resumed = if existing > 0 {
            if !resume {
                return Err(CliError::new(format!(
                    "--output {shown} already holds results: pass --resume to continue it, or choose another file"
                )));
            }
            scan(path)?
        } else {
            Resumed::default()
        };
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
            },
            resumed,
        ))
    }

    /// Writes one result line and flushes it.
    pub fn write(&mut self, line: &Value) -> Result<(), CliError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, line)
            .map_err(|e| CliError::new(format!("cannot encode a result: {e}")))?;
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

/// The ids of an existing output, read only (a truncated last line is ignored, not cut).
pub fn scan_ids(path: &Path) -> Result<HashSet<String>, CliError> {
    let file = File::open(path)
        .map_err(|e| CliError::new(format!("cannot open --output {}: {e}", path.display())))?;
    let mut done = HashSet::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line
            .map_err(|e| CliError::new(format!("cannot read --output {}: {e}", path.display())))?;
        if let Some(id) = serde_json::from_slice::<Value>(&line)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        {
            done.insert(id);
        }
    }
    Ok(done)
}

/// Reads the ids of an existing output; cuts off a last line that has no newline.
fn scan(path: &Path) -> Result<Resumed, CliError> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot open --output {shown} to resume: {e}")))?;
    let mut reader = BufReader::new(&mut file);
    let mut resumed = Resumed::default();
    let mut complete_end = 0u64;
    let mut line = Vec::new();
    let mut number = 0u64;
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
        let id = serde_json::from_slice::<Value>(&line)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
        match id {
            Some(id) => {
                resumed.done.insert(id);
            }
            None => {
                return Err(CliError::new(format!(
                    "--output {shown} line {number} is not a result line; cannot resume from it"
                )))
            }
        }
    }
    drop(reader);
    if resumed.truncated_bytes > 0 {
        file.set_len(complete_end)
            .and_then(|()| file.seek(SeekFrom::End(0)).map(|_| ()))
            .map_err(|e| CliError::new(format!("cannot cut the last line of {shown}: {e}")))?;
    }
    Ok(resumed)
}

/// The result line of a finished job.
pub fn result_line(id: &str, outcome: &Outcome) -> Value {
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
        let line = result_line("a", &rejected);
        assert_eq!(line["attempts"], 3);
        assert_eq!(line["error"]["kind"], "rejected");
        assert_eq!(line["error"]["status"], 422);
        let internal: Outcome = Err(JobError::Internal("lost".into()));
        assert_eq!(result_line("b", &internal)["attempts"], Value::Null);
        assert_eq!(invalid_input_line("c", "line 3: not JSON")["attempts"], 0);
    }

    #[test]
    fn resume_reads_ids_and_cuts_a_truncated_last_line() {
        let path = temp("resume");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"status\":200}\n{\"id\":\"b\",\"status\":200}\n{\"id\":\"c\",\"sta",
        )
        .unwrap();
        assert!(ResultWriter::open(&path, false).is_err());
        let (mut w, resumed) = ResultWriter::open(&path, true).unwrap();
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
    fn a_corrupt_complete_line_stops_the_resume() {
        let path = temp("corrupt");
        std::fs::write(&path, "{\"id\":\"a\"}\ngarbage\n").unwrap();
        let e = ResultWriter::open(&path, true).unwrap_err();
        assert!(e.0.contains("line 2"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
