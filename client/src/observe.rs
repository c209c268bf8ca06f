//! What the roving client reports through the [`metrics`](https://docs.rs/metrics) facade,
//! with the `metrics` feature: the names, and the few calls that record them.
//!
//! The facade costs nothing until the application installs a recorder (Prometheus, StatsD,
//! ...), and the library never installs one. Without the feature every call here is an empty
//! inline function, so the roving client records unconditionally and the feature decides.
//! The counters mirror [`Counters`](crate::Counters) one for one (each event is recorded in
//! both by one call; `Counters` stay available without the feature); the gauge is updated
//! at each rover tick and whenever servers join or leave.
//!
//! Tracing is always on (the `tracing` crate is a dependency anyway): each connection
//! attempt runs in a `connect` span (`server`, then `slot` once the handshake is read) and
//! each [`RovingClient::acquire`](crate::RovingClient::acquire) in an `acquire` span.

use std::time::Duration;

use crate::rover::ServerId;

/// Histogram: seconds each `acquire` waited, timeouts included.
pub const ACQUIRE_SECONDS: &str = "callosum_client_acquire_seconds";
/// Counter: leases handed out (`acquire` and `try_acquire`).
pub const LEASES: &str = "callosum_client_leases_total";
/// Counter: connections the pool kept (replacements included).
pub const KEPT: &str = "callosum_client_kept_total";
/// Counter: connections the pool refused.
pub const REJECTED: &str = "callosum_client_rejected_total";
/// Counter: connections evicted (by a lower slot, or their server left).
pub const EVICTED: &str = "callosum_client_evicted_total";
/// Counter: connections retired past their maximum age.
pub const RETIRED: &str = "callosum_client_retired_total";
/// Counter: failed connects.
pub const UNREACHABLE: &str = "callosum_client_unreachable_total";
/// Counter: handshake violations.
pub const PROTOCOL_ERRORS: &str = "callosum_client_protocol_errors_total";
/// Gauge, label `server`: connections the pool holds per server.
pub const HELD: &str = "callosum_client_held_connections";

/// Adds `n` to the counter `name`.
#[inline]
pub(crate) fn count(name: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, n);
}

/// One acquire that waited `waited` (leases are counted with the other events).
#[inline]
pub(crate) fn acquired(waited: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(ACQUIRE_SECONDS).record(waited.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = waited;
}

/// The pool holds `held` connections to `server`.
#[inline]
pub(crate) fn held(server: &ServerId, held: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(HELD, "server" => server.to_string()).set(held as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (server, held);
}
