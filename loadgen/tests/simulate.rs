//! Behaviour of the balance simulator on small bounded runs (each a few simulated minutes of
//! 4 servers × 16 clients; well under a second of work in release, a few in debug).

use std::time::Duration;

use callosum_client::PoolPolicy;
use callosum_loadgen::balance::{Policy, PoolRules, SimConfig, SimulateArgs, simulate};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

/// The command-line defaults (S=4 C=16 P=8 k=4, 80 % load) with a short run (10 s warm-up,
/// 60 s measured unless `extra` says otherwise), plus `extra` flags.
fn config(policy: Policy, extra: &[&str]) -> SimConfig {
    let mut argv = vec!["simulate", "--warmup", "10s"];
    if !extra.contains(&"--duration") {
        argv.extend_from_slice(&["--duration", "60s"]);
    }
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("valid test flags");
    cli.args.config(policy)
}

#[test]
fn same_seed_gives_byte_identical_json() {
    for policy in Policy::ALL {
        let cfg = config(policy, &["--duration", "20s"]);
        let a = serde_json::to_string(&simulate(&cfg)).expect("serialisable");
        let b = serde_json::to_string(&simulate(&cfg)).expect("serialisable");
        assert_eq!(a, b, "{policy:?} is not deterministic");
        let mut other = cfg.clone();
        other.seed += 1;
        let c = serde_json::to_string(&simulate(&other)).expect("serialisable");
        assert_ne!(a, c, "{policy:?} ignores the seed");
    }
}

#[test]
fn the_maximum_age_is_settled_as_the_roving_client_settles_it() {
    let settled = |extra: &[&str]| config(Policy::Improved, extra).rules.max_age_ns;
    let client = |slots: usize, interval: Duration| {
        PoolPolicy::improved()
            .max_slots(slots)
            .max_age_for(interval)
            .map(|age| age.as_nanos() as u64)
    };
    let s = Duration::from_secs;
    // The defaults (P = 8, R = 1 s): the client's default, max(10 R, P R).
    assert_eq!(settled(&[]), client(8, s(1)));
    assert_eq!(settled(&[]), Some(10_000_000_000));
    assert_eq!(settled(&["--pool-size", "16"]), Some(16_000_000_000));
    assert_eq!(settled(&["--pool-size", "2"]), client(2, s(1)));
    assert_eq!(settled(&["--pool-size", "2"]), Some(10_000_000_000));
    assert_eq!(
        settled(&["--roving-interval", "10s"]),
        client(8, s(10)),
        "10 R at a long roving interval"
    );
    assert_eq!(settled(&["--max-age", "30s"]), Some(30_000_000_000));
    assert_eq!(
        settled(&["--max-age", "5s"]),
        Some(8_000_000_000),
        "raised to P R"
    );
    assert_eq!(settled(&["--max-age", "0"]), None);
    // The rules convert to the client's policy and back.
    let rules = config(Policy::Improved, &[]).rules;
    assert_eq!(PoolRules::of_policy(&rules.policy(8), s(1)), rules);
}

#[test]
fn every_policy_serves_the_same_workload() {
    let counts: Vec<u64> = Policy::ALL
        .iter()
        .map(|&p| simulate(&config(p, &[])).requests)
        .collect();
    let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
    let (Some(min), Some(max)) = (min, max) else {
        panic!("no policy ran")
    };
    assert!(min > 0);
    // Same arrivals; only the few requests in flight at the end differ.
    assert!((max - min) as f64 / (max as f64) < 0.001, "{counts:?}");
}

#[test]
fn a_slow_server_gets_less_than_its_fair_share() {
    for policy in [Policy::Original, Policy::Improved, Policy::Jsq] {
        let r = simulate(&config(policy, &["--slow-server", "0"]));
        let slow = r.slow.expect("slow report");
        assert!(
            slow.share < slow.fair * 0.8,
            "{policy:?}: share {} of fair {}",
            slow.share,
            slow.fair
        );
    }
    // The improved policy learns response times: no more than the original's share.
    let original = simulate(&config(Policy::Original, &["--slow-server", "0"]));
    let improved = simulate(&config(Policy::Improved, &["--slow-server", "0"]));
    let share = |r: &callosum_loadgen::balance::SimReport| r.slow.as_ref().map_or(1.0, |s| s.share);
    assert!(share(&improved) <= share(&original));
}

#[test]
fn a_joining_server_reaches_its_fair_share_under_the_improved_policy() {
    let extra = ["--join-at", "10s", "--duration", "70s"];
    let improved = simulate(&config(Policy::Improved, &extra))
        .join
        .expect("join report");
    assert!(
        (0.9..=1.1).contains(&improved.share_last_60s),
        "improved: {} of fair over the last 60 s",
        improved.share_last_60s
    );
    // The blind spot the improved policy removes: the original never gets it there.
    let original = simulate(&config(Policy::Original, &extra))
        .join
        .expect("join report");
    assert!(
        original.share_last_60s < 0.9,
        "original: {}",
        original.share_last_60s
    );
}

#[test]
fn the_improved_policy_evens_long_run_rates() {
    let original = simulate(&config(Policy::Original, &[]));
    let improved = simulate(&config(Policy::Improved, &[]));
    assert!(
        improved.rate_max_over_mean <= 1.05,
        "improved: {}",
        improved.rate_max_over_mean
    );
    assert!(improved.rate_max_over_mean < original.rate_max_over_mean);
    // Connections stay spread over every server.
    assert!(improved.conns_per_server.min > 0.0);
}

#[test]
fn a_server_that_leaves_drains_and_a_crash_fails_its_requests() {
    let drained = simulate(&config(Policy::Improved, &["--leave-at", "5s"]));
    let leave = drained.leave.expect("leave report");
    assert_eq!(leave.failed, 0);
    assert!(leave.drained_after_s.is_some_and(|d| d < 5.0), "{leave:?}");
    let crashed = simulate(&config(Policy::Original, &["--leave-at", "5s", "--crash"]));
    let leave = crashed.leave.expect("leave report");
    assert_eq!(leave.drained_after_s, Some(0.0));
    assert!(crashed.requests > 0);
}

#[test]
fn run_prints_a_table_json_and_a_plot() {
    let dir = std::env::temp_dir().join(format!("callosum-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let svg = dir.join("load.svg");
    let svg_arg = svg.to_string_lossy().to_string();
    let short = [
        "simulate",
        "--warmup",
        "2s",
        "--duration",
        "5s",
        "--policy",
        "original,p2c",
    ];
    let mut argv = short.to_vec();
    argv.extend_from_slice(&["--svg", &svg_arg]);
    let cli = Cli::try_parse_from(argv).expect("valid flags");
    let mut out = Vec::new();
    callosum_loadgen::balance::simulation::run(&cli.args, &mut out).expect("run");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("original") && text.contains("p2c"), "{text}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.contains("<svg") && plot.contains("server 3"));

    let json = |name: &str| {
        let path = dir.join(name);
        let mut argv = short.to_vec();
        let arg = path.to_string_lossy().to_string();
        argv.extend_from_slice(&["--json", &arg]);
        let cli = Cli::try_parse_from(argv).expect("valid flags");
        let mut table = Vec::new();
        callosum_loadgen::balance::simulation::run(&cli.args, &mut table).expect("run");
        assert!(!table.is_empty(), "the table still goes to the writer");
        std::fs::read(&path).expect("JSON written")
    };
    let (first, second) = (json("a.json"), json("b.json"));
    assert_eq!(first, second, "JSON output is deterministic");
    let v: serde_json::Value = serde_json::from_slice(&first).expect("valid JSON");
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
