//! The `metrics` feature: the roving client's counters, acquire latency and held
//! connections per server reach the application's recorder (here `metrics-util`'s
//! `DebuggingRecorder`, installed for this test binary alone), with the documented names,
//! and the counters agree with [`RovingClient::counters`].

mod support;

use std::collections::HashMap;
use std::time::Duration;

use callosum_client::observe::{
    ACQUIRE_SECONDS, EVICTED, HELD, KEPT, LEASES, REJECTED, RETIRED, UNREACHABLE,
};
use callosum_client::rover::Backoff;
use callosum_client::{Counters, PoolPolicy, RovingClient};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::until;

/// What the recorder saw, accumulated over snapshots (each snapshot resets what it reads).
#[derive(Debug, Default)]
struct Seen {
    counters: HashMap<String, u64>,
    /// Gauges by name and `server` label: the values of the last snapshot that had them.
    gauges: HashMap<(String, String), f64>,
    histograms: HashMap<String, Vec<f64>>,
}

impl Seen {
    fn take(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let name = key.name().to_owned();
            match value {
                DebugValue::Counter(n) => *self.counters.entry(name).or_default() += n,
                DebugValue::Gauge(v) => {
                    let server = key
                        .labels()
                        .find(|l| l.key() == "server")
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default();
                    self.gauges.insert((name, server), v.into_inner());
                }
                DebugValue::Histogram(vs) => self
                    .histograms
                    .entry(name)
                    .or_default()
                    .extend(vs.into_iter().map(|v| v.into_inner())),
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

fn sum(a: Counters, b: Counters) -> Counters {
    Counters {
        kept: a.kept + b.kept,
        leases: a.leases + b.leases,
        rejected: a.rejected + b.rejected,
        evicted: a.evicted + b.evicted,
        retired: a.retired + b.retired,
        unreachable: a.unreachable + b.unreachable,
        protocol_errors: a.protocol_errors + b.protocol_errors,
    }
}

#[tokio::test]
async fn the_client_reports_its_events_through_the_metrics_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");
    let mut seen = Seen::default();

    // Kept, rejected (max_slots 1), unreachable, a lease, then evicted (drop_server).
    let (live, _server) = support::start_server();
    let refusing = support::refusing_addr();
    let client = RovingClient::builder()
        .servers([live.to_string(), refusing.to_string()])
        .max_slots(1)
        .roving_interval(Duration::from_millis(5))
        .backoff(Some(Backoff::default().initial(Duration::from_millis(1))))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    until("kept, rejected and unreachable", || {
        let c = client.counters();
        c.kept > 0 && c.rejected > 0 && c.unreachable > 0
    })
    .await;
    drop(client.acquire().await.expect("a connection"));
    seen.take(&snapshotter);
    assert_eq!(
        seen.gauges.get(&(HELD.to_owned(), live.to_string())),
        Some(&1.0)
    );
    assert!(client.drop_server(&live.to_string()));
    seen.take(&snapshotter);
    assert_eq!(
        seen.gauges.get(&(HELD.to_owned(), live.to_string())),
        Some(&0.0)
    );

    // Retired: the improved policy's maximum age (10 × 5 ms). Five places: a smaller pool
    // keeps slots on expiry, and one server's newcomers come with higher slots.
    let (other, _server) = support::start_server();
    let aging = RovingClient::builder()
        .server(other.to_string())
        .pool_policy(PoolPolicy::improved().max_slots(5))
        .roving_interval(Duration::from_millis(5))
        .build()
        .expect("valid settings");
    until("retired", || aging.counters().retired > 0).await;

    let (first, second) = (client.counters(), aging.counters());
    drop((client, aging));
    seen.take(&snapshotter);
    let counted = sum(first, second);
    assert_eq!(seen.counter(KEPT), counted.kept, "{seen:?}");
    assert_eq!(seen.counter(REJECTED), counted.rejected);
    assert_eq!(seen.counter(EVICTED), counted.evicted);
    assert_eq!(seen.counter(RETIRED), counted.retired);
    assert_eq!(seen.counter(UNREACHABLE), counted.unreachable);
    assert!(counted.evicted >= 1 && counted.retired >= 1, "{counted:?}");
    assert_eq!(seen.counter(LEASES), counted.leases);
    assert_eq!(counted.leases, 1, "the one acquire");
    let waits = seen
        .histograms
        .get(ACQUIRE_SECONDS)
        .expect("acquire latency");
    assert_eq!(waits.len(), 1, "one sample per acquire");
    assert!(
        waits[0] < support::BOUND.as_secs_f64(),
        "the acquire got its connection before its timeout: waited {} s",
        waits[0]
    );
}
