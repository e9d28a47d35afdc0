//! The progress bar on a terminal: `send` under a pseudo-terminal (util-linux `script`), and
//! the bar's last line ends before the summary starts.

mod common;

use common::*;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fabraix-sched");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bars_last_line_ends_with_a_newline_on_a_terminal() {
    let server = server("100/1s").await;
    let d = dir("tty");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    write_events(&input, 3);
    let command = format!(
        "{BIN} send --quota 100/1s --base-url {} -i {} -o {}",
        server.base_url(),
        input.display(),
        output.display()
    );
    let out = Command::new("script")
        .env("FABRAIX_API_KEY", KEY)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("util-linux `script` is needed to run send under a pseudo-terminal");
    assert_eq!(out.status.code(), Some(0));
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("3/3"), "the bar was drawn: {tty:?}");
    let at = tty.find("3 succeeded").unwrap_or_else(|| panic!("{tty:?}"));
    let before: String = tty[..at]
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        before.ends_with('\n'),
        "the summary starts on the bar's line: {before:?}"
    );
    assert_eq!(lines(&output).len(), 3);
    server.shutdown().await;
}

/// The text on the terminal line where `needle` starts, before it, without ANSI escapes.
fn before_on_its_line(tty: &str, needle: &str) -> String {
    let at = tty
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in {tty:?}"));
    let line_start = tty[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let mut out = String::new();
    let mut chars = tty[line_start..at].chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_during_the_bar_is_written_on_a_line_of_its_own() {
    use fabraix_scheduler::mock::{MockServer, TEST_RESTRICTED_KEY};
    let server = MockServer::builder()
        .with_test_keys()
        .start()
        .await
        .unwrap();
    let d = dir("tty-warn");
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    // Paced at one call a second: the bar is drawn when /check's 403 warning comes.
    let check = r#"{"id":"c","path":"/check","body":{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"x","schema":"{}"}}"#;
    std::fs::write(&input, [event("a"), check.to_string()].join("\n")).unwrap();
    let command = format!(
        "{BIN} send --quota 1/1s --base-url {} -i {} -o {}",
        server.base_url(),
        input.display(),
        output.display()
    );
    let out = Command::new("script")
        .env("FABRAIX_API_KEY", TEST_RESTRICTED_KEY)
        .env_remove("RUST_LOG")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("util-linux `script` is needed to run send under a pseudo-terminal");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{tty:?}");
    assert!(
        tty.contains("1/2"),
        "the bar was drawn before the warning: {tty:?}"
    );
    let before = before_on_its_line(&tty, "WARN");
    assert!(
        before.trim().is_empty(),
        "the warning shares the bar's line: {before:?}"
    );
    server.shutdown().await;
}
