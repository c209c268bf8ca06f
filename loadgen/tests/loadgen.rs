//! Behaviour of the load generator over real loopback sockets: against the C reference server
//! (a well-behaved server) and against misbehaving servers. Every run is bounded in count and
//! time; no assertion is about speed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use callosum_loadgen::{Pacing, Phase, PhaseKind, Plan, Report, Shutdown};
use support::{Misbehaviour, c_server, hold, misbehaving, within};

const LIMIT: Duration = Duration::from_secs(60);

fn config(targets: Vec<SocketAddr>, phase: Phase) -> Plan {
    Plan {
        targets,
        phases: vec![phase],
        workers: 2,
        progress: false,
        ..Plan::default()
    }
}

fn churn(count: u64, concurrency: usize) -> Phase {
    Phase {
        kind: PhaseKind::Churn {
            duration: Some(Duration::from_secs(20)),
            count: Some(count),
        },
        pacing: Pacing::Closed { concurrency },
        warmup: Duration::ZERO,
    }
}

/// A churn bounded by time only.
fn churn_for(duration: Duration, pacing: Pacing) -> Phase {
    Phase {
        kind: PhaseKind::Churn {
            duration: Some(duration),
            count: None,
        },
        pacing,
        warmup: Duration::ZERO,
    }
}

fn run(config: Plan) -> Report {
    within(LIMIT, move || {
        callosum_loadgen::run(&config, &Shutdown::new(), std::io::sink()).expect("run")
    })
}

#[test]
fn hold_2000_against_the_c_server_gets_slots_0_to_1999_once_each() {
    let server = c_server();
    let report = run(config(vec![server.addr], hold(2_000)));
    let r = &report.runs[0];
    assert_eq!(r.succeeded, 2_000);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    let h = r.hold.as_ref().expect("hold report");
    assert_eq!(h.held, 2_000);
    assert_eq!(h.per_target[0].slots, (0..2_000).collect::<Vec<u32>>());
    assert_eq!(h.per_target[0].slot_ranges, vec![[0, 1_999]]);
    assert_eq!(r.invariant.violations, 0);
    assert_eq!(r.handshake_us.count, 2_000);
}

#[test]
fn a_bounded_churn_counts_every_handshake() {
    let server = c_server();
    let mut config = config(vec![server.addr], churn(3_000, 16));
    config.src_ips = Some(4);
    let report = run(config);
    let r = &report.runs[0];
    assert_eq!(r.attempted, 3_000);
    assert_eq!(r.succeeded, 3_000, "{:?}", r.errors);
    assert_eq!(r.recorded, 3_000);
    assert_eq!(r.invariant.violations, 0);
    assert!(r.handshake_us.p50 >= r.connect_us.p50);
    assert!(r.handshake_us.max >= r.handshake_us.p99 && r.handshake_us.p99 >= r.handshake_us.p50);
    assert!(r.cpu.loadgen_s > 0.0);
}

#[test]
fn an_open_loop_churn_keeps_to_its_count_and_reports_its_rate() {
    let server = c_server();
    let phase = Phase {
        kind: PhaseKind::Churn {
            duration: Some(Duration::from_secs(10)),
            count: Some(500),
        },
        pacing: Pacing::Open {
            rate: 1_000.0,
            max_in_flight: 64,
        },
        warmup: Duration::ZERO,
    };
    let report = run(config(vec![server.addr], phase));
    let r = &report.runs[0];
    assert_eq!(r.attempted, 500);
    assert_eq!(r.succeeded, 500, "{:?}", r.errors);
    let rate = r.rate.as_ref().expect("rate report");
    assert_eq!(rate.target_per_s, 1_000.0);
    assert!(rate.started_per_s > 0.0);
}

#[test]
fn warmup_handshakes_are_not_recorded() {
    let server = c_server();
    let mut phase = churn(300, 4);
    // The whole phase is warmup (all but the last second of its 20 s bound: the 300
    // handshakes end long before it, however busy the machine): everything succeeds,
    // nothing is recorded.
    phase.warmup = Duration::from_secs(19);
    let report = run(config(vec![server.addr], phase));
    let r = &report.runs[0];
    assert!(r.succeeded > 0);
    assert_eq!(r.recorded, 0);
    assert_eq!(r.handshake_us.count, 0);
}

/// The fields the README's "JSON output" section documents: the schema is pinned here.
#[test]
fn the_json_output_parses_and_has_the_documented_fields() {
    let server = c_server();
    // The hold first: right after a churn, the server may not yet have seen the churn's last
    // connections close, and the hold would start above their slots.
    let mut config = config(vec![server.addr], hold(100));
    config.phases.push(churn(200, 8));
    let report = run(config);
    let doc: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert_eq!(doc["schema"], "callosum-loadgen/v2");
    assert!(doc["embedded_final_stats"].is_null());
    assert_eq!(doc["interrupted"], false);
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |k: &[&str]| {
        let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&runs[1]),
        sorted(&[
            "scenario",
            "targets",
            "embedded",
            "pacing",
            "workers",
            "src_ips",
            "warmup_s",
            "requested_duration_s",
            "elapsed_s",
            "stopped_early",
            "window_s",
            "attempted",
            "succeeded",
            "recorded",
            "handshakes_per_s",
            "handshake_us",
            "connect_us",
            "errors",
            "resets",
            "rate",
            "invariant",
            "cpu",
            "hold",
            "server_stats",
            "handshake_histogram",
        ])
    );
    let histogram = runs[1]["handshake_histogram"]
        .as_str()
        .expect("encoded histogram");
    let decoded = callosum_loadgen::instrument::hlog::decode_histogram(histogram).expect("decodes");
    assert_eq!(
        decoded.len(),
        runs[1]["recorded"].as_u64().expect("recorded")
    );
    let latency = sorted(&[
        "count", "min", "p50", "p90", "p99", "p999", "p9999", "max", "mean", "stdev",
    ]);
    assert_eq!(keys(&runs[1]["handshake_us"]), latency);
    assert_eq!(keys(&runs[1]["connect_us"]), latency);
    assert_eq!(
        keys(&runs[1]["errors"]),
        sorted(&[
            "refused", "timeout", "reset", "protocol", "no_slot", "other", "total", "samples"
        ])
    );
    assert_eq!(
        keys(&runs[1]["invariant"]),
        sorted(&["violations", "examples"])
    );
    assert_eq!(
        keys(&runs[1]["cpu"]),
        sorted(&[
            "loadgen_s",
            "loadgen_us_per_handshake",
            "loadgen_cores",
            "cores",
            "process_s",
            "server_s",
            "server_us_per_handshake",
        ])
    );
    assert_eq!(runs[1]["pacing"]["mode"], "closed");
    assert_eq!(runs[1]["pacing"]["concurrency"], 8);
    assert_eq!(runs[1]["scenario"], "churn");
    assert_eq!(runs[1]["succeeded"], 200);
    assert!(runs[1]["hold"].is_null());
    assert!(runs[1]["rate"].is_null());
    assert!(runs[1]["resets"].is_null(), "no resets asked for");
    let hold = &runs[0]["hold"];
    assert_eq!(
        keys(hold),
        sorted(&[
            "requested",
            "held",
            "closed_by_server",
            "latency_by_held_quarter",
            "per_target",
            "rss_per_held_connection_bytes",
            "kernel_per_held_connection"
        ])
    );
    // Root can read /proc/slabinfo; everyone can read /proc/net/sockstat.
    assert_eq!(
        keys(&hold["kernel_per_held_connection"]),
        sorted(&["slab_bytes", "socket_buffer_bytes"])
    );
    assert_eq!(
        keys(&hold["per_target"][0]),
        sorted(&[
            "target",
            "held",
            "lowest",
            "highest",
            "gaps",
            "duplicates",
            "slot_ranges"
        ])
    );
    assert_eq!(
        hold["per_target"][0]["slot_ranges"],
        serde_json::json!([[0, 99]])
    );
    assert_eq!(hold["held"], 100);
    let quarters = hold["latency_by_held_quarter"]
        .as_array()
        .expect("quarters");
    assert_eq!(quarters.len(), 4);
    let counted: u64 = quarters
        .iter()
        .map(|q| q["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counted, 100);
    assert_eq!(keys(&quarters[0]), latency);
}

#[test]
fn the_hgrm_output_of_a_run_is_well_formed() {
    let server = c_server();
    let report = run(config(vec![server.addr], churn(500, 8)));
    let mut out = Vec::new();
    callosum_loadgen::instrument::hgrm::write(&report.runs[0].handshake_histogram, &mut out)
        .expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let rows = &lines[2..lines.len() - 3];
    assert!(rows.len() > 5);
    let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
    assert_eq!(last[1].parse::<f64>().expect("percentile"), 1.0);
    assert_eq!(last[2], "500");
    assert!(lines[lines.len() - 2].contains("Total count    =          500]"));
}

#[test]
fn misbehaving_servers_are_counted_by_kind_and_the_run_ends() {
    let targets = vec![
        misbehaving(Misbehaviour::Garbage),
        misbehaving(Misbehaviour::CloseEarly),
        misbehaving(Misbehaviour::NeverAnswer),
        misbehaving(Misbehaviour::Truncated),
        misbehaving(Misbehaviour::Reset),
        SocketAddr::from(([127, 0, 0, 1], support::free_port())),
    ];
    let mut config = config(targets, churn(60, 6));
    // One worker: connection i goes to target i % 6, so each target gets exactly 10. Only
    // the silent server's connections may reach the timeout: long enough that a busy machine
    // still sees every other server's answer before it (the run takes about two of them).
    config.workers = 1;
    config.timeout = Duration::from_secs(2);
    let report = run(config);
    let e = &report.runs[0].errors;
    assert_eq!(report.runs[0].succeeded, 0);
    assert_eq!(e.protocol, 20, "garbage and truncated lines: {e:?}");
    assert_eq!(e.no_slot, 10, "{e:?}");
    assert_eq!(e.timeout, 10, "{e:?}");
    assert_eq!(e.refused, 10, "{e:?}");
    // A reset may be seen before or after the FIN-less close; it is never a success.
    assert_eq!(e.reset + e.no_slot + e.other, 20, "{e:?}");
    assert_eq!(e.total, 60);
}

#[test]
fn a_duration_bounded_run_against_a_silent_server_ends() {
    let target = misbehaving(Misbehaviour::NeverAnswer);
    let phase = churn_for(
        Duration::from_millis(500),
        Pacing::Closed { concurrency: 8 },
    );
    let mut config = config(vec![target], phase);
    config.timeout = Duration::from_millis(200);
    let report = run(config);
    let r = &report.runs[0];
    assert_eq!(r.succeeded, 0);
    assert!(r.errors.timeout >= 8, "{:?}", r.errors);
    assert_eq!(r.errors.total, r.errors.timeout);
}

#[test]
fn an_open_loop_run_that_cannot_keep_its_rate_says_so_and_ends() {
    let target = misbehaving(Misbehaviour::NeverAnswer);
    let phase = churn_for(
        Duration::from_millis(500),
        // Four in flight, each stuck until its 200 ms timeout: at most ~20 starts a second.
        Pacing::Open {
            rate: 1_000.0,
            max_in_flight: 4,
        },
    );
    let mut config = config(vec![target], phase);
    config.timeout = Duration::from_millis(200);
    let report = run(config);
    let r = &report.runs[0];
    let rate = r.rate.as_ref().expect("rate report");
    assert!(!rate.achieved);
    assert!(rate.late_starts > 0);
    assert!(
        report.table().contains("NOT ACHIEVED"),
        "{}",
        report.table()
    );
    assert_eq!(r.errors.total, r.errors.timeout);
}

#[test]
fn an_open_loop_hold_keeps_every_connection() {
    let server = c_server();
    let mut phase = hold(300);
    phase.pacing = Pacing::Open {
        rate: 3_000.0,
        max_in_flight: 64,
    };
    let report = run(config(vec![server.addr], phase));
    let h = report.runs[0].hold.as_ref().expect("hold");
    assert_eq!(h.per_target[0].slot_ranges, vec![[0, 299]]);
    assert!(report.runs[0].rate.is_some());
}

#[test]
fn shutdown_stops_a_long_run_early() {
    // A server that answers one connection, then asks the run to stop.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let _ = std::io::Write::write_all(&mut conn, format!("{i}\r\n").as_bytes());
            held.push(conn);
            trigger.trigger();
        }
    });
    let phase = churn_for(Duration::from_secs(600), Pacing::Closed { concurrency: 1 });
    let config = config(vec![addr], phase);
    let report = within(LIMIT, move || {
        callosum_loadgen::run(&config, &shutdown, std::io::sink()).expect("run")
    });
    assert!(report.runs[0].succeeded >= 1);
}

#[test]
fn a_hold_over_two_targets_reports_each_targets_slots() {
    let (a, b) = (c_server(), c_server());
    let report = run(config(vec![a.addr, b.addr], hold(600)));
    let h = report.runs[0].hold.as_ref().expect("hold");
    assert_eq!(h.per_target.len(), 2);
    for t in &h.per_target {
        assert_eq!(t.slot_ranges, vec![[0, 299]], "{}", t.target);
    }
    assert_eq!(report.runs[0].invariant.violations, 0);
}
