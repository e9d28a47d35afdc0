//! `proxy`: a local sidecar. Any program on the host sends `http://ADDR/v1/<path>` without a key;
//! the proxy forwards it to `BASE_URL/<path>` with the key added, each call in its slot of the
//! quota (one ledger and one queue with lanes for every process and language), and passes the
//! API's answer back.
//!
//! - [`access`]: loopback by default; elsewhere only with a client token.
//! - [`headers`]: what crosses (never the client's credentials), and the lanes.
//! - [`forward`]: one request through the scheduler; [`upstream`]: the transport to the API.
//! - [`envelope`]: the proxy's own answers; [`metrics`]: `/metrics`; [`server`]: accept, drain.

pub mod access;
pub mod envelope;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod opts;
pub mod server;
pub mod upstream;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fabraix_scheduler::{Endpoint, KeyConfig, KeyId, Overflow, Scheduler, ShutdownMode};
use tokio::net::TcpListener;

use crate::exit::{CliError, Exit};
use crate::key_args::ResolvedKey;
use crate::Context;
use access::{check_listen, parse_listen, ClientToken};
use forward::ProxyState;
pub use opts::ProxyOpts;
use upstream::{Captures, UpstreamTransport};

/// Runs the proxy until `ctx.stop` (Ctrl-C) or SIGTERM: prints `listening on http://ADDR` to
/// `out` once it accepts connections, then drains and returns.
pub async fn proxy(
    opts: &ProxyOpts,
    ctx: &Context,
    out: &mut (dyn Write + Send),
) -> Result<Exit, CliError> {
    let addr = parse_listen(&opts.listen)?;
    let token = ClientToken::read(opts.token_file.as_deref(), |v| std::env::var(v).ok())?;
    check_listen(addr, opts.allow_non_loopback, &token)?;
    let endpoint = Endpoint::new(&opts.base_url, opts.allow_insecure_http).map_err(|e| {
        CliError::new(format!(
            "--base-url {}: {e} (plain http is allowed to loopback only, or with --allow-insecure-http)",
            opts.base_url
        ))
    })?;
    let key = ResolvedKey::read(&opts.key, &ctx.key).await?;
    let captures = Arc::new(Captures::default());
    let transport = UpstreamTransport::new(
        opts.upstream_timeout,
        opts.max_response_bytes,
        Arc::clone(&captures),
    )
    .map_err(CliError::new)?;
    if let Some(addr) = opts.metrics {
        // Installed before the key is added: its metric handles are taken then.
        crate::metrics_endpoint::serve_metrics(addr)?;
    }
    let store = crate::store::CliStore::open(
        opts.redis.as_deref(),
        opts.redis_ca.as_deref(),
        opts.redis_cluster,
    )
    .await?;
    let scheduler = Scheduler::builder()
        .store(store)
        .transport(Arc::new(transport))
        .build()
        .map_err(|e| CliError::new(format!("cannot build the scheduler: {e}")))?;
    let id = KeyId::new("default");
    let quota = opts.quota.quota();
    let config = KeyConfig::with_endpoint(id.clone(), key.key.clone(), endpoint, quota.clone())
        .map_err(|e| CliError::new(format!("--base-url {}: {e}", opts.base_url)))?
        .max_in_flight(opts.concurrency as usize)
        .queue_capacity(opts.queue_capacity as usize)
        .overflow(Overflow::Reject)
        .refused_calls(opts.refused_calls.into());
    let config = key.configure(config, Arc::clone(scheduler.clock()));
    scheduler
        .add_key(config)
        .await
        .map_err(|e| CliError::new(format!("cannot add the key: {e}")))?;
    let _watch = key.watch(&scheduler, &id);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::new(format!("--listen {addr}: cannot listen: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::new(format!("--listen {addr}: {e}")))?;
    let state = Arc::new(ProxyState {
        scheduler: scheduler.clone(),
        key: id,
        token,
        captures,
        counters: Default::default(),
        max_request_bytes: opts.max_request_bytes,
        client_timeout: opts.client_timeout,
        stopping: AtomicBool::new(false),
    });
    eprintln!(
        "proxy: /v1/* to {} with key {} under {quota} (queue {}, {} at once){}",
        opts.base_url,
        key.key.fingerprint(),
        opts.queue_capacity,
        opts.concurrency,
        if state.token.required() {
            "; clients need the token"
        } else {
            ""
        }
    );
    // Listened for before the address is printed: a SIGTERM sent once it is seen is caught.
    let term = sigterm()?;
    writeln!(out, "listening on http://{local}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("cannot print: {e}")))?;
    let stopping = {
        let state = Arc::clone(&state);
        let stop = ctx.stop.clone();
        async move {
            tokio::select! {
                _ = stop.wait() => {}
                () = term => {}
            }
            state.stopping.store(true, Ordering::Release);
            eprintln!("proxy: stopping; finishing the requests already taken");
        }
    };
    let drain = opts.drain_timeout;
    let served = server::serve(
        listener,
        Arc::clone(&state),
        opts.max_connections as usize,
        opts.client_timeout,
        stopping,
        drain,
    );
    let served = served.await;
    let deadline = scheduler.clock().now();
    let report = scheduler.shutdown(ShutdownMode::DrainUntil(deadline)).await;
    let stats = scheduler.stats(&state.key).unwrap_or_default();
    eprintln!(
        "proxy: stopped: {} calls sent, {} answered 429 and waited out, {} handed back",
        stats.sent,
        stats.rate_limited,
        report.returned.len()
    );
    if served && report.returned.is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!("proxy: some requests did not finish within --drain-timeout {drain:?}");
        Ok(Exit::SomeFailed)
    }
}

/// A future that completes on SIGTERM (never, elsewhere than on Unix), listening from now on.
fn sigterm() -> Result<impl std::future::Future<Output = ()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut s = signal(SignalKind::terminate())
            .map_err(|e| CliError::new(format!("cannot listen for SIGTERM: {e}")))?;
        Ok(async move {
            s.recv().await;
        })
    }
    #[cfg(not(unix))]
    Ok(std::future::pending::<()>())
}
