//! `mock`: the Fabraix-compatible mock server on loopback, for testing an integration locally.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};

use fabraix_scheduler::mock::{
    MockServer, ServerModel, TEST_DEV_KEY, TEST_PROD_KEY, TEST_RESTRICTED_KEY, TEST_REVOKED_KEY,
};

use crate::exit::{CliError, Exit};
use crate::options::MockOpts;
use crate::stop::Stop;

/// Starts the server, prints its URL and test keys to `out`, and serves until `stop`.
pub async fn mock(
    opts: &MockOpts,
    stop: Stop,
    out: &mut (dyn Write + Send),
) -> Result<Exit, CliError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port));
    let server = MockServer::builder()
        .with_test_keys()
        .model(ServerModel::from(opts.model))
        .time_scale(opts.time_scale)
        .bind(addr)
        .start()
        .await
        .map_err(|e| {
            CliError::new(format!(
                "--port {}: cannot listen on {addr}: {e}",
                opts.port
            ))
        })?;
    let url = server.base_url();
    let quota = |label: &str| {
        server
            .key_stats(label)
            .map_or_else(String::new, |s| s.quota.to_string())
    };
    let text = format!(
        "Fabraix mock server ({model} windows{scale}) at {url}\n\
         Endpoints: POST {url}/register-agent-run, {url}/event, {url}/check (header x-api-key)\n\
         Test keys (fake, for this mock only):\n\
         \x20 {TEST_DEV_KEY}   development, {dev}\n\
         \x20 {TEST_PROD_KEY}    production, {prod}\n\
         \x20 {TEST_RESTRICTED_KEY}    /event only (403 elsewhere), {dev}\n\
         \x20 {TEST_REVOKED_KEY}       always 401\n\
         Try: FABRAIX_API_KEY={TEST_DEV_KEY} fabraix-sched send --base-url {url} --quota {dev} --input jobs.jsonl --output results.jsonl\n\
         Ctrl-C to stop.\n",
        model = ServerModel::from(opts.model),
        scale = if (opts.time_scale - 1.0).abs() > f64::EPSILON {
            format!(", time-scaled ×{}", opts.time_scale)
        } else {
            String::new()
        },
        dev = quota("test-dev"),
        prod = quota("test-prod"),
    );
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("cannot print: {e}")))?;
    stop.wait().await;
    for s in server.stats() {
        let _ = writeln!(
            out,
            "{}: {} accepted, {} refused with 429",
            s.label, s.accepted, s.refused
        );
    }
    server.shutdown().await;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Command, Opts};
    use clap::Parser;

    #[tokio::test]
    async fn prints_url_and_test_keys_and_stops() {
        let Command::Mock(opts) = Opts::parse_from([
            "x",
            "mock",
            "--port",
            "0",
            "--model",
            "token-bucket",
            "--time-scale",
            "60",
        ])
        .command
        else {
            panic!("not mock")
        };
        let stop = Stop::new();
        stop.trigger(crate::stop::StopReason::Interrupted);
        let mut out = Vec::new();
        assert_eq!(mock(&opts, stop, &mut out).await.unwrap(), Exit::Success);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("token-bucket windows, time-scaled ×60"),
            "{text}"
        );
        assert!(text.contains("at http://127.0.0.1:"), "{text}");
        assert!(text.contains(TEST_DEV_KEY) && text.contains(TEST_REVOKED_KEY));
        assert!(text.contains("--quota 60/1s,1000/1m"), "{text}");
    }
}
