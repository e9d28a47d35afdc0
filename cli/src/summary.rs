//! The end-of-run summary: a few lines on stderr, and JSON with `--summary FILE`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exit::CliError;
use crate::human;

/// The schema name of [`Summary`]'s JSON (`send --summary FILE`).
pub const SUMMARY_SCHEMA: &str = "fabraix-sched.summary/1";

/// What a run did. Times in seconds. Written by `send --summary FILE` as JSON, schema
/// [`SUMMARY_SCHEMA`] (the fields below, plus `"schema"`; documented in `cli/SCHEMA.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Input lines read (blank lines not counted).
    pub lines: u64,
    /// Lines skipped because their id was already in the output (`--resume`).
    pub skipped: u64,
    /// Jobs handed to the scheduler.
    pub submitted: u64,
    /// Results written as successes.
    pub succeeded: u64,
    /// Results written as failures (bad input lines included).
    pub failed: u64,
    /// Failures by kind (`rejected`, `transient`, `invalid_input`, ...).
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Jobs not sent because the run was stopped; not written, so `--resume` sends them.
    pub unsent: u64,
    /// Lines not sent because an earlier line has their id (not written; reported on stderr).
    pub duplicate_ids: u64,
    /// Calls put on the wire (every attempt).
    pub calls_sent: u64,
    /// 429 responses received.
    pub rate_limited_429: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_secs: f64,
    /// The ledger's plan for the same number of calls on an idle key: when the last could go at the
    /// earliest, in seconds after the first.
    pub planned_minimum_secs: f64,
    /// The quota the run kept.
    pub quota: String,
    /// When the server refused calls far earlier than `quota` allows: what its limits look like
    /// (the most calls it accepted in a window of each such limit, e.g. `"60/1m"`); else null.
    pub server_limits_look_like: Option<String>,
    /// The key's fingerprint (never the key).
    pub key: String,
    /// Whether the run was stopped before the end of its input.
    pub interrupted: bool,
}

impl Summary {
    /// The summary as text for stderr.
    pub fn text(&self) -> String {
        let mut s = self.results_text();
        s.push_str(&format!(
            "{} sent, {} answered 429, {}; key {} under {}\n",
            human::count_of(self.calls_sent, "call", "calls"),
            human::count(self.rate_limited_429),
            human::count_of(self.retries, "retry", "retries"),
            self.key,
            self.quota
        ));
        s.push_str(&format!(
            "elapsed {}; planned minimum for {} {}\n",
            human::duration(
                Duration::try_from_secs_f64(self.elapsed_secs).unwrap_or(Duration::MAX)
            ),
            human::count_of(self.submitted, "call", "calls"),
            human::duration(
                Duration::try_from_secs_f64(self.planned_minimum_secs).unwrap_or(Duration::MAX)
            )
        ));
        if let Some(looks) = &self.server_limits_look_like {
            s.push_str(&format!(
                "The server refused calls far earlier than {} allows: its limits look like {looks}, not the configured {}. Check --tier / --quota (is this key of another tier?), or whether another client uses the key.\n",
                self.quota, self.quota
            ));
        }
        s
    }

    fn results_text(&self) -> String {
        let mut s = format!(
            "{} succeeded, {} failed",
            human::count(self.succeeded),
            human::count(self.failed)
        );
        if !self.failed_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .failed_by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {}", human::count(*n)))
                .collect();
            s.push_str(&format!(" ({})", kinds.join(", ")));
        }
        if self.skipped > 0 {
            s.push_str(&format!(
                ", {} skipped (already in the output)",
                human::count(self.skipped)
            ));
        }
        if self.unsent > 0 {
            s.push_str(&format!(
                ", {} not sent (rerun with --resume)",
                human::count(self.unsent)
            ));
        }
        if self.duplicate_ids > 0 {
            s.push_str(&format!(
                ", {} not sent: {} an id an earlier line has",
                human::count_of(self.duplicate_ids, "line", "lines"),
                if self.duplicate_ids == 1 {
                    "it repeats"
                } else {
                    "each repeats"
                }
            ));
        }
        s.push('\n');
        s
    }

    /// The summary as JSON: `"schema"` ([`SUMMARY_SCHEMA`]) and the fields.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("schema".into(), SUMMARY_SCHEMA.into());
        }
        v
    }

    /// Writes the summary as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), CliError> {
        let json = serde_json::to_string_pretty(&self.json())
            .map_err(|e| CliError::new(format!("cannot encode the summary: {e}")))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| CliError::new(format!("cannot write --summary {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_figures() {
        let mut s = Summary {
            succeeded: 1_000,
            failed: 2,
            submitted: 1_002,
            rate_limited_429: 0,
            planned_minimum_secs: 960.1,
            key: "key#00000000".into(),
            quota: "60/1m,1000/1h".into(),
            ..Summary::default()
        };
        s.failed_by_kind.insert("rejected".into(), 2);
        let t = s.text();
        assert!(t.contains("1,000 succeeded, 2 failed (rejected: 2)"), "{t}");
        assert!(t.contains("0 answered 429"), "{t}");
        assert!(
            t.contains("planned minimum for 1,002 calls 16 min 0 s"),
            "{t}"
        );
        let one = Summary {
            calls_sent: 1,
            retries: 1,
            submitted: 1,
            duplicate_ids: 1,
            ..Summary::default()
        };
        let t = one.text();
        assert!(t.contains("1 call sent, 0 answered 429, 1 retry;"), "{t}");
        assert!(t.contains("planned minimum for 1 call "), "{t}");
        assert!(t.contains("1 line not sent: it repeats an id"), "{t}");
        assert_eq!(one.json()["schema"], SUMMARY_SCHEMA);
    }
}
