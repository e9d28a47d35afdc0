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
