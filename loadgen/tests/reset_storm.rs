//! A reset storm against an in-process `callosum-server`: a churn in which 30 % of the clients
//! vanish with an RST (right after connect, right after the slot line, or after a short hold)
//! while a hold of a few hundred connections stays open throughout.
//!
//! Why: a server in front of every service call must keep its slot table exact whatever its
//! clients do. Afterwards the held connections must still be open with their own distinct
//! slots, every slot the storm took must be free again (the next connection gets the lowest
//! one above the hold, and slot 0 once the hold is gone), and the server's descriptors must be
//! back to what they were: a slot or a socket leaked on a reset path fails this test. It is the
//! only test in its binary, so the process's descriptor count is this test's alone.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callosum_loadgen::instrument::handshake::{Connected, handshake, still_open};
use callosum_loadgen::instrument::limits::open_fds;
use callosum_loadgen::{Pacing, Phase, PhaseKind, Plan, Shutdown};
use callosum_server::{Server, Slots};
use support::within;

/// Connections held open for the whole storm.
const HELD: u32 = 300;
/// Handshakes in the storm.
const STORM: u64 = 20_000;
/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds; fails the test, naming `what`, after [`PATIENCE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// This process's descriptors by what they refer to (sockets, `/dev/null`, rings, …), for a
/// failure message.
fn fd_kinds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map_or_else(|_| "?".into(), |t| t.display().to_string());
        let kind = target.split(":[").next().unwrap_or("?").to_owned();
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

/// One handshake on `rt`, which must succeed.
fn connect(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Connected {
    rt.block_on(handshake(addr, None, PATIENCE, Instant::now()))
        .expect("handshake with the test server")
}

#[test]
fn a_reset_storm_beside_a_hold_leaks_no_slot_and_no_descriptor() {
    let slots = Arc::new(Slots::new(1 << 16));
    let server = Server::builder()
        .host(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(0)
        .shards(2)
        .pin(false)
        .slot_source(slots.clone())
        .start()
        .expect("the test server starts");
    let addr = server.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let held: Vec<Connected> = (0..HELD).map(|_| connect(&rt, addr)).collect();
    let mut slots_held: Vec<u32> = held.iter().map(|c| c.slot).collect();
    slots_held.sort_unstable();
    assert_eq!(slots_held, (0..HELD).collect::<Vec<_>>());
    // The baseline, taken with the hold open: by now every shard has accepted connections, so
    // it has opened whatever it keeps for good (shards finish starting after `start` returns).
    wait_until("the hold registered", || {
        server.stats().active == u64::from(HELD)
    });
    let baseline = open_fds();
    let kinds_before = fd_kinds();

    let config = Plan {
        targets: vec![addr],
        phases: vec![Phase {
            kind: PhaseKind::Churn {
                duration: Some(Duration::from_secs(120)),
                count: Some(STORM),
            },
            pacing: Pacing::Closed { concurrency: 32 },
            warmup: Duration::ZERO,
        }],
        workers: 2,
        // Four source addresses: the FIN-closed three quarters leave TIME_WAIT sockets behind.
        src_ips: Some(4),
        progress: false,
        reset_fraction: 0.3,
        ..Plan::default()
    };
    let report = within(Duration::from_secs(180), move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("the storm runs")
    });
    let run = &report.runs[0];
    let resets = run.resets.as_ref().expect("resets reported");
    assert_eq!(run.errors.total, 0, "{:?}", run.errors);
    assert_eq!(run.attempted, STORM);
    assert_eq!(run.succeeded + resets.after_connect, STORM);
    // 30 % of 20,000 is 6,000 with a standard deviation of 65: ±600 never fails by chance.
    assert!((5_400..=6_600).contains(&resets.total), "{resets:?}");
    for at_point in [resets.after_connect, resets.after_line, resets.after_hold] {
        assert!(at_point > 1_000, "{resets:?}");
    }
    assert_eq!(run.invariant.violations, 0, "{:?}", run.invariant);
    assert!(
        report.table().contains("resets      "),
        "{}",
        report.table()
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["runs"][0]["resets"]["total"], resets.total);

    // The hold came through untouched: every connection open, on its own slot.
    for c in &held {
        assert!(
            still_open(&c.stream).expect("peek"),
            "slot {} closed",
            c.slot
        );
    }
    // Every slot the storm took is free again: only the hold's remain, so the next connection
    // gets the lowest slot above them.
    wait_until("the storm's slots freed", || slots.in_use() == HELD);
    let next = connect(&rt, addr);
    assert_eq!(next.slot, HELD, "a slot below it is taken twice or leaked");
    drop(next);

    drop(held);
    wait_until("every slot freed", || slots.in_use() == 0);
    assert_eq!(connect(&rt, addr).slot, 0);
    wait_until("no connection active", || server.stats().active == 0);
    // Both ends of every held connection were open at the baseline.
    let expected = baseline - 2 * u64::from(HELD);
    let settled = Instant::now() + PATIENCE;
    while open_fds() > expected && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        open_fds(),
        expected,
        "descriptors with the hold open: {kinds_before:?}, now: {:?}",
        fd_kinds()
    );
    let stats = server.shutdown(Duration::from_secs(5)).expect("clean stop");
    assert_eq!(stats.active, 0);
    assert_eq!(slots.in_use(), 0);
}
