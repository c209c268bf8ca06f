//! The load generator against its embedded `callosum-server` (the default job's setup):
//! bounded holds and churns, the slot distribution and the server's own counters, and a hold
//! in which some connections are reset on purpose.

mod support;

use std::time::Duration;

use callosum_loadgen::instrument::limits::LimitError;
use callosum_loadgen::{LoadgenError, Pacing, Phase, PhaseKind, Plan, Shutdown};
use support::{hold, within};

fn embedded(phases: Vec<Phase>) -> Plan {
    let mut config = Plan {
        phases,
        workers: 2,
        progress: false,
        ..Plan::default()
    };
    config.embedded.shards = 2;
    config
}

#[test]
fn hold_2000_gets_2000_successes_and_slots_0_to_1999_once_each() {
    let config = embedded(vec![hold(2_000)]);
    let report = within(Duration::from_secs(60), move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("run")
    });
    let r = &report.runs[0];
    assert!(r.embedded);
    assert_eq!(r.succeeded, 2_000);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    let h = r.hold.as_ref().expect("hold report");
    assert_eq!(h.held, 2_000);
    assert_eq!(h.closed_by_server, 0);
    assert_eq!(h.per_target[0].slots, (0..2_000).collect::<Vec<u32>>());
    assert_eq!(r.invariant.violations, 0);
    let stats = r.server_stats.expect("server stats at full hold");
    assert_eq!(stats.active, 2_000);
    assert_eq!(stats.high_water, 2_000);
    assert!(h.rss_per_held_connection_bytes.is_some());
    assert!(r.cpu.server_s.is_some());
    let last = report.embedded_final_stats.expect("final stats");
    assert_eq!(last.accepted, 2_000);
}

#[test]
fn a_bounded_churn_then_a_hold_like_the_default_job() {
    let churn = Phase {
        kind: PhaseKind::Churn {
            duration: Some(Duration::from_secs(20)),
            count: Some(2_000),
        },
        pacing: Pacing::Closed { concurrency: 32 },
        warmup: Duration::ZERO,
    };
    let config = embedded(vec![churn, hold(500)]);
    let report = within(Duration::from_secs(60), move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("run")
    });
    assert_eq!(report.runs.len(), 2);
    assert_eq!(
        report.runs[0].succeeded, 2_000,
        "{:?}",
        report.runs[0].errors
    );
    assert_eq!(report.runs[0].invariant.violations, 0);
    let hold = report.runs[1].hold.as_ref().expect("hold");
    // The churn's connections are all closed: the hold starts again from slot 0.
    assert_eq!(hold.per_target[0].slot_ranges, vec![[0, 499]]);
    let table = report.table();
    assert!(
        table.contains("== churn") && table.contains("== hold"),
        "{table}"
    );
    assert!(table.contains("embedded callosum-server"), "{table}");
}

#[test]
fn a_time_bounded_churn_spreads_over_loopback_source_addresses_by_itself() {
    // 1 s at 32 in flight could reach the port range's budget of one address pair: with
    // `src_ips` left unset, the run binds to several 127.0.0.x source addresses.
    let churn = Phase {
        kind: PhaseKind::Churn {
            duration: Some(Duration::from_secs(1)),
            count: None,
        },
        pacing: Pacing::Closed { concurrency: 32 },
        warmup: Duration::ZERO,
    };
    let config = embedded(vec![churn]);
    let expected = callosum_loadgen::instrument::limits::port_plan(&config).src_ips;
    assert!(expected > 1, "the estimate asks for a spread: {expected}");
    let report = within(Duration::from_secs(60), move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("run")
    });
    let r = &report.runs[0];
    assert_eq!(r.src_ips, expected);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert!(r.succeeded > 0);
}

#[test]
fn an_embedded_hold_beyond_half_the_descriptors_is_refused_before_starting() {
    // 60 % of the descriptor limit (19,000 here, with the hard limit of 20,000 per process)
    // would fit one side of the connections, but not both ends in one process.
    let limit = callosum_server::raise_nofile_limit().expect("rlimit");
    let config = embedded(vec![hold(limit * 3 / 5)]);
    let err =
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect_err("refused");
    assert!(
        matches!(err, LoadgenError::Limits(LimitError::TooManyFds { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--target"), "{err}");
}

#[test]
fn a_hold_with_resets_keeps_exactly_the_connections_not_reset() {
    let mut config = embedded(vec![hold(1_000)]);
    config.reset_fraction = 0.5;
    let report = within(Duration::from_secs(60), move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("run")
    });
    let r = &report.runs[0];
    let resets = r.resets.as_ref().expect("resets reported");
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.attempted, 1_000);
    assert!(resets.total > 0 && resets.total < 1_000, "{resets:?}");
    let h = r.hold.as_ref().expect("hold report");
    assert_eq!(
        h.held,
        1_000 - resets.total,
        "reset connections are never held"
    );
    assert_eq!(h.per_target[0].duplicates, 0);
    assert_eq!(r.invariant.violations, 0);
}
