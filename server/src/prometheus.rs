//! Serves the server's counters in the Prometheus text format on an HTTP endpoint, from
//! threads of their own: the exporter's, and one that copies the counters into it once a
//! second. Shards never touch a metrics registry.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::server::ServerHandle;
use crate::stats::Stats;

/// How often the counters are copied into the exporter.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the Prometheus endpoint on {addr}: {source}")]
pub struct PrometheusError {
    addr: SocketAddr,
    #[source]
    source: metrics_exporter_prometheus::BuildError,
}

/// Starts the endpoint on `addr` (`GET /metrics`) for the server behind `handle`; the
/// publishing thread ends when the server stops. Call it at most once per process.
pub fn serve(addr: SocketAddr, handle: ServerHandle) -> Result<(), PrometheusError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|source| PrometheusError { addr, source })?;
    std::thread::Builder::new()
        .name("callosum-metrics".into())
        .spawn(move || {
            while !handle.is_stopping() {
                publish(&handle.stats());
                std::thread::sleep(PUBLISH_EVERY);
            }
        })
        .map_err(|e| PrometheusError {
            addr,
            source: metrics_exporter_prometheus::BuildError::FailedToCreateRuntime(e.to_string()),
        })?;
    Ok(())
}

fn publish(stats: &Stats) {
    metrics::counter!("callosum_accepted_total").absolute(stats.accepted);
    metrics::counter!("callosum_refused_total").absolute(stats.refused);
    metrics::counter!("callosum_accept_errors_total").absolute(stats.accept_errors);
    metrics::counter!("callosum_handshake_errors_total").absolute(stats.handshake_errors);
    metrics::counter!("callosum_handler_panics_total").absolute(stats.handler_panics);
    metrics::gauge!("callosum_active_connections").set(stats.active as f64);
    metrics::gauge!("callosum_slot_high_water").set(f64::from(stats.high_water));
}
