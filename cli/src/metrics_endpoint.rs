//! `send --metrics ADDR`: the scheduler's metrics
//! ([`fabraix_scheduler::scheduler_metrics`]) served for Prometheus at `http://ADDR/metrics`.

use std::net::SocketAddr;

use fabraix_scheduler::scheduler_metrics::SLOT_WAIT_SECONDS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::exit::CliError;

/// Bucket bounds of the slot-wait histogram, in seconds: from a slot due at once to an hour's
/// window.
const SLOT_WAIT_BUCKETS: [f64; 12] = [
    0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 600.0, 3600.0,
];

/// Installs the Prometheus recorder for this process and serves it on `addr` (call it inside
/// the tokio runtime, before the scheduler's keys are added). Fails if the address cannot be
/// bound or a recorder is installed already.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), CliError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(SLOT_WAIT_SECONDS.into()), &SLOT_WAIT_BUCKETS)
        .and_then(PrometheusBuilder::install)
        .map_err(|e| CliError::new(format!("--metrics {addr}: {e}")))
}
