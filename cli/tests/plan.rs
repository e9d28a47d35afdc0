//! `plan` through the real binary: the quoted contradictions, a count that used to panic, the
//! JSON schema, the SVG, shell completions, and the help's clap conventions.

use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

async fn sched(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn the_summary_agrees_with_the_ledger_line_in_the_quoted_cases() {
    let out = sched(&["plan", "--count", "5000", "--tier", "production"]).await;
    assert_eq!(out.status.code(), Some(0));
    let t = stdout(&out);
    assert!(!t.contains("8 min 20 s"), "{t}");
    assert!(
        t.starts_with("5,000 calls: 600 at once, then 4,400 paced by the minute window (600 per minute) from +1 min 0 s to +8 min 0 s.\n"),
        "{t}"
    );
    assert!(t.contains("the last at +8 min 0 s"), "{t}");
    let t = stdout(&sched(&["plan", "-n", "40", "--quota", "60/1m,30/1h"]).await);
    assert!(!t.contains(" all at once"), "{t}");
    assert!(
        t.starts_with(
            "40 calls: 30 at once, then 10 paced by the hour window (30 per hour) at +1 h 0 min.\n"
        ),
        "{t}"
    );
    assert!(t.contains("the last at +1 h 0 min"), "{t}");
    let t = stdout(&sched(&["plan", "-n", "1"]).await);
    assert!(t.starts_with("1 call: all at once"), "{t}");
}

#[tokio::test]
async fn no_count_panics() {
    for n in ["18446744073709551615", "0", "300000"] {
        let out = sched(&["plan", "-n", n]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{n}: {err}");
        if n == "18446744073709551615" {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.starts_with("error: 18,446,744,073,709,551,615 calls under 60/1m,1000/1h would take longer than can be planned"), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{n}: {err}");
        }
    }
    let out = sched(&["plan", "-n", "18446744073709551616"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}

#[tokio::test]
async fn the_json_is_the_same_plan_as_the_text_in_its_schema() {
    let text = stdout(&sched(&["plan", "-n", "5000", "--tier", "production"]).await);
    let out = sched(&["plan", "-n", "5000", "--tier", "production", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["schema"], "fabraix-sched.plan/1");
    assert_eq!(v["calls"], 5000);
    assert_eq!(v["quota"], "600/1m,10000/1h");
    assert_eq!(v["limits"][0]["count"], 600);
    assert_eq!(v["limits"][0]["window_secs"], 60.0);
    assert_eq!(v["exact_calls"], 5000);
    assert_eq!(v["first_at_secs"], 0.0);
    let last = v["last_at_secs"].as_f64().unwrap();
    assert!(text.contains(&format!("({last:.1} s)")), "{last} vs {text}");
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0]["paced_by"], Value::Null);
    assert_eq!(phases[0]["calls"], 600);
    assert_eq!(phases[1]["paced_by"]["count"], 600);
    assert_eq!(phases[1]["calls"], 4400);
    assert_eq!(phases[1]["last_at_secs"].as_f64(), Some(last));
}

#[tokio::test]
async fn svg_draws_each_window_against_its_limit() {
    let d = std::env::temp_dir().join(format!("fbx-cli-plan-svg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let svg = d.join("plan.svg");
    let out = sched(&["plan", "-n", "1500", "--svg", svg.to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.contains("calls in any minute window, against the limit of 60"));
    assert!(text.contains("calls in any hour window, against the limit of 1,000"));
    assert!(text.contains("1,500 calls under 60/1m,1000/1h"));
    assert!(text.matches("<polyline").count() >= 5, "curves and limits");
    // Too many calls to draw: one clear error, nothing written.
    let big = d.join("big.svg");
    let out = sched(&["plan", "-n", "2000000", "--svg", big.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("draws plans of up to 200,000 calls"));
    assert!(!big.exists());
}

#[tokio::test]
async fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sched(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = stdout(&out);
        assert!(script.contains("fabraix-sched"), "{shell}");
        assert!(
            script.contains("dry-run") && script.contains("refused-calls"),
            "{shell}"
        );
    }
    assert_eq!(sched(&["completions", "tcsh"]).await.status.code(), Some(2));
}

#[tokio::test]
async fn help_follows_clap_conventions() {
    let send = stdout(&sched(&["send", "--help"]).await);
    let short = stdout(&sched(&["send", "-h"]).await);
    assert!(short.contains("[default: learn]"), "{short}");
    assert!(
        short.contains("[possible values: learn, count, do-not-count]"),
        "{short}"
    );
    assert!(
        short.contains("[possible values: development, production]"),
        "{short}"
    );
    assert!(short.contains("[default: development]"), "{short}");
    assert!(
        send.contains("Usage: fabraix-sched send --input <FILE|-> --output <FILE> [OPTIONS]"),
        "{send}"
    );
    assert!(send.contains("[default: learn]"), "{send}");
    assert!(send.contains("- do-not-count: Never count them"), "{send}");
    assert!(send.contains("[default: development]"), "{send}");
    assert!(send.contains("[default: https://"), "{send}");
    assert!(
        !send.contains("default 16") && !send.contains("defaults to 16"),
        "{send}"
    );
    let mock = stdout(&sched(&["mock", "-h"]).await);
    assert!(
        mock.contains("[possible values: fixed, sliding-log, token-bucket, counter]"),
        "{mock}"
    );
    assert!(mock.contains("[default: sliding-log]"), "{mock}");
    let demo = stdout(&sched(&["demo", "--help"]).await);
    assert!(!demo.contains("default 120"), "{demo}");
    // Every flag's default appears once.
    for (help, flag) in [
        (&send, "--concurrency"),
        (&demo, "--time-scale"),
        (&send, "--max-line-bytes"),
    ] {
        let block = option_help(help, flag);
        assert_eq!(block.matches("default").count(), 1, "{flag}: {block}");
    }
    assert!(send.contains("fabraix-sched.summary/1"));
    let plan = stdout(&sched(&["plan", "--help"]).await);
    assert!(plan.contains("fabraix-sched.plan/1"), "{plan}");
}

/// The help text of one option: its line and those below it, up to the next option.
fn option_help(help: &str, flag: &str) -> String {
    let is_option = |l: &str| l.starts_with("  -") || l.starts_with("      --");
    let mut lines = help
        .lines()
        .skip_while(|l| !(is_option(l) && l.contains(flag)));
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.take_while(|l| !is_option(l)).collect();
    format!("{first}\n{}", rest.join("\n"))
}
