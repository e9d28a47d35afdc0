//! The demo's workload: a fleet of agents, each run registered, then telemetry events (bulk) and
//! action checks (interactive: an agent waits on them).

use fabraix_scheduler::{Job, Priority};
use serde_json::json;

use crate::input::InputLine;

const EVENT_TYPES: [&str; 4] = ["model_input", "model_output", "tool", "environment"];

/// `calls` jobs of agent runs: `register-agent-run` (normal), then per step a `model_output`
/// event (bulk), a `/check` of the proposed action (interactive) and a `tool` event (bulk).
pub fn agent_workload(calls: u32) -> impl Iterator<Item = InputLine> + Send {
    (0..calls).map(|i| {
        // A run is 1 registration + 3 steps × 3 calls + 1 closing event = 11 calls.
        let run = i / 11;
        let step = i % 11;
        let agent = format!("agent-{}", run % 8);
        let trace = format!("trace-{run:05}");
        let ts = 1_700_000_000.0 + f64::from(i);
        let (id, job) = match step {
            0 => (
                format!("run-{run:05}"),
                Job::post_json(
                    "/register-agent-run",
                    &json!({
                        "agent_id": agent,
                        "timestamp": "2025-01-01T00:00:00Z",
                        "system_prompt": "You are a careful coding agent.",
                    }),
                ),
            ),
            s if s % 3 == 2 => (
                format!("check-{run:05}-{s:02}"),
                Job::post_json(
                    "/check",
                    &json!({
                        "event_type": "action_check",
                        "trace_id": trace,
                        "timestamp": ts,
                        "content": format!("run shell: cargo test -p crate-{}", s),
                        "schema": "{\"type\":\"string\"}",
                    }),
                )
                .map(|j| j.with_priority(Priority::Interactive)),
            ),
            s => (
                format!("event-{run:05}-{s:02}"),
                Job::post_json(
                    "/event",
                    &json!({
                        "event_type": EVENT_TYPES[s as usize % EVENT_TYPES.len()],
                        "trace_id": trace,
                        "timestamp": ts,
                        "content": format!("step {s} of {agent}"),
                        "schema": "{\"type\":\"string\"}",
                    }),
                )
                .map(|j| j.with_priority(Priority::Bulk)),
            ),
        };
        InputLine {
            line: u64::from(i) + 1,
            id,
            job: job.map_err(|e| e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_of_the_three_endpoints() {
        let jobs: Vec<InputLine> = agent_workload(22).collect();
        assert_eq!(jobs.len(), 22);
        let paths: Vec<String> = jobs
            .iter()
            .map(|l| l.job.as_ref().unwrap().path().to_string())
            .collect();
        assert_eq!(
            paths.iter().filter(|p| *p == "/register-agent-run").count(),
            2
        );
        assert_eq!(paths.iter().filter(|p| *p == "/check").count(), 6);
        let checks = jobs
            .iter()
            .filter(|l| l.job.as_ref().unwrap().priority() == Priority::Interactive)
            .count();
        assert_eq!(checks, 6);
        let ids: std::collections::HashSet<_> = jobs.iter().map(|l| l.id.clone()).collect();
        assert_eq!(ids.len(), 22);
    }
}
