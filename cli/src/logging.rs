//! The log on stderr: a `tracing-subscriber` fmt layer, warnings and errors by default, `-v` /
//! `-q` / `RUST_LOG` to change it. The library names keys by their fingerprint only, and so does
//! everything the CLI logs: no log line carries the key.

use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Mutex;

use indicatif::ProgressBar;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::options::LogArgs;

/// The filter these flags ask for, given `RUST_LOG`'s value: `-q` errors only; `-v`, `-vv`,
/// `-vvv` info, debug, trace; neither: `rust_log` when set and valid (the `target=level,level`
/// syntax), else warnings and errors. The second value is a complaint about an invalid
/// `RUST_LOG`, to log once the subscriber is installed.
pub fn filter(args: LogArgs, rust_log: Option<&str>) -> (Targets, Option<String>) {
    let level = |l: LevelFilter| (Targets::new().with_default(l), None);
    match (args.quiet, args.verbose) {
        (true, _) => level(LevelFilter::ERROR),
        (false, 1) => level(LevelFilter::INFO),
        (false, 2) => level(LevelFilter::DEBUG),
        (false, v) if v >= 3 => level(LevelFilter::TRACE),
        _ => match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
            None => level(LevelFilter::WARN),
            Some(spec) => match Targets::from_str(spec) {
                Ok(t) => (t, None),
                Err(e) => (
                    Targets::new().with_default(LevelFilter::WARN),
                    Some(format!(
                        "RUST_LOG={spec:?} is not a filter ({e}); showing warnings"
                    )),
                ),
            },
        },
    }
}

/// The progress bar on stderr now, if one is drawn: log lines are written above it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Log lines go above `bar` while it is drawn (`None`: it is gone). Owned by the progress display.
pub fn write_above(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// stderr, with the progress bar (if any) taken down while a log line is written and drawn
/// again below it; the fmt layer writes each event in one `write_all`.
struct AboveTheBar;

impl Write for AboveTheBar {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf).map(|()| buf.len())),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Writes one line of the run's own messages to stderr, above the progress bar if one is drawn.
pub fn note(line: &str) {
    let _ = AboveTheBar.write(format!("{line}\n").as_bytes());
}

/// Installs the subscriber for the binary: stderr (above the progress bar), no timestamps, no
/// colours. A second call (or a subscriber already set) leaves the first in place.
pub fn init(args: LogArgs) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (targets, complaint) = filter(args, rust_log.as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| AboveTheBar)
        .with_target(false)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(targets)
        .try_init();
    if let Some(c) = complaint {
        tracing::warn!("{c}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn would_log(args: LogArgs, rust_log: Option<&str>, level: tracing::Level) -> bool {
        filter(args, rust_log)
            .0
            .would_enable("fabraix_scheduler::scheduler", &level)
    }

    #[test]
    fn warnings_by_default_flags_before_rust_log() {
        use tracing::Level;
        let none = LogArgs::default();
        assert!(would_log(none, None, Level::WARN));
        assert!(!would_log(none, None, Level::INFO));
        let quiet = LogArgs {
            quiet: true,
            verbose: 0,
        };
        assert!(!would_log(quiet, Some("debug"), Level::WARN));
        assert!(would_log(quiet, None, Level::ERROR));
        let vv = LogArgs {
            quiet: false,
            verbose: 2,
        };
        assert!(would_log(vv, Some("off"), Level::DEBUG));
        assert!(would_log(
            none,
            Some("fabraix_scheduler=debug"),
            Level::DEBUG
        ));
        assert!(!would_log(none, Some("off"), Level::ERROR));
        let (_, complaint) = filter(none, Some("a=b=c"));
        assert!(complaint.is_some());
    }
}
