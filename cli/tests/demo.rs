//! The demo on tokio's paused clock: every call succeeds, no 429, and the client's summary agrees
//! with the mock server's own record, window by window.

use std::time::Duration;

use clap::Parser;
use fabraix_sched::demo::demo_report;
use fabraix_sched::{Command, Exit, Opts, Stop};

#[tokio::test(start_paused = true)]
async fn the_demo_keeps_both_windows_and_its_summary_matches_the_server() {
    let Command::Demo(opts) =
        Opts::parse_from(["x", "demo", "--calls", "1100", "--no-progress"]).command
    else {
        panic!("not demo")
    };
    let r = demo_report(&opts, Stop::new()).await.unwrap();
    assert_eq!(r.exit, Exit::Success);
    assert_eq!(r.summary.succeeded, 1_100);
    assert_eq!(r.summary.succeeded, r.accepted);
    assert_eq!(r.summary.rate_limited_429, r.refused);
    assert_eq!(r.refused, 0);
    // 60/1m and 1000/1h scaled ×120 (the default): 60 per 500 ms, 1,000 per 30 s; both
    // reached, neither passed.
    assert_eq!(
        r.windows,
        vec![
            (60, Duration::from_millis(500), 60),
            (1_000, Duration::from_secs(30), 1_000)
        ]
    );
    // The 1,001st call waited for the (scaled) hour window.
    assert!(r.summary.elapsed_secs >= 30.0, "{}", r.summary.elapsed_secs);
}
