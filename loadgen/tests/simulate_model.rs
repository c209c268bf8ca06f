//! The stronger baselines (p2c-peak-ewma, least-request) and the richer model (network round
//! trip, connect cost, heavy-tailed service, a fail-fast server) on small bounded runs of
//! 4 servers × 16 clients; each assertion is loose, a direction rather than a figure.

use callosum_loadgen::balance::{Policy, SimConfig, SimulateArgs, simulate};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

/// The command-line defaults (S=4 C=16 P=8 k=4, 80 % load), 10 s warm-up and 60 s measured,
/// plus `extra` flags.
fn config(policy: Policy, extra: &[&str]) -> SimConfig {
    let mut argv = vec!["simulate", "--warmup", "10s", "--duration", "60s"];
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("valid test flags");
    cli.args.config(policy)
}

#[test]
fn peak_ewma_avoids_a_slow_server_more_than_p2c() {
    let share = |p| {
        simulate(&config(p, &["--slow-server", "0"]))
            .slow
            .map_or(1.0, |s| s.share)
    };
    let (p2c, ewma) = (share(Policy::P2c), share(Policy::P2cPeakEwma));
    assert!(
        ewma < p2c,
        "slow server's share: peak EWMA {ewma}, p2c {p2c}"
    );
}

#[test]
fn least_request_balances_in_flight_load_at_least_as_well_as_p2c() {
    let inflight = |p| simulate(&config(p, &[])).inflight_max_over_mean;
    let (p2c, least) = (inflight(Policy::P2c), inflight(Policy::LeastRequest));
    assert!(least <= p2c * 1.01, "least-request {least}, p2c {p2c}");
}

#[test]
fn a_round_trip_raises_the_median_by_about_itself() {
    let p50 = |extra: &[&str]| simulate(&config(Policy::P2c, extra)).latency_ms.p50;
    let rise = p50(&["--rtt", "1ms"]) - p50(&[]);
    assert!((0.8..1.3).contains(&rise), "p50 rose by {rise} ms");
}

#[test]
fn pareto_service_raises_the_tail_at_the_same_mean() {
    let run = |extra: &[&str]| simulate(&config(Policy::Random, extra)).latency_ms;
    let (exp, pareto) = (
        run(&[]),
        run(&["--service-dist", "pareto", "--service-alpha", "2.5"]),
    );
    assert!(pareto.p999 > exp.p999, "{pareto:?} vs {exp:?}");
    // Same mean service time: the mean latency stays within a factor of two.
    assert!(pareto.mean < 2.0 * exp.mean && exp.mean < 2.0 * pareto.mean);
    let lognormal = run(&["--service-dist", "lognormal", "--service-sigma", "1"]);
    assert!(lognormal.mean < 2.0 * exp.mean && exp.mean < 2.0 * lognormal.mean);
}

#[test]
fn connects_are_counted_and_a_connect_cost_is_paid() {
    let free = simulate(&config(Policy::Improved, &[]));
    // 16 clients rove once a second to 4 servers: 4 connects per second per server.
    assert!((3.0..5.0).contains(&free.connects_per_s.mean), "{free:?}");
    assert!(free.connects_per_s.max >= free.connects_per_s.mean);
    // Roving ten times as often, 5 ms per connect takes 5 % of the servers' capacity.
    let fast = ["--roving-interval", "100ms"];
    let free = simulate(&config(Policy::Improved, &fast));
    let costly = simulate(&config(
        Policy::Improved,
        &[&fast[..], &["--connect-cost", "5ms"]].concat(),
    ));
    assert!((35.0..45.0).contains(&costly.connects_per_s.mean));
    assert!(
        costly.latency_ms.p99 > free.latency_ms.p99,
        "{costly:?} vs {free:?}"
    );
    let p2c = simulate(&config(Policy::P2c, &[]));
    assert_eq!(p2c.connects_per_s.mean, 0.0);
}

#[test]
fn a_fail_fast_servers_errors_are_counted_and_attract_latency_routers() {
    let run = |p| simulate(&config(p, &["--fail-fast-server", "0"]));
    let random = run(Policy::Random);
    let ff = random.fail_fast.as_ref().map_or(0.0, |f| f.share);
    // Random routing sends it a quarter; every one of those fails.
    assert!((0.23..0.27).contains(&ff), "{ff}");
    assert!((random.error_share - ff).abs() < 0.01, "{random:?}");
    let ewma = run(Policy::P2cPeakEwma);
    let share = ewma.fail_fast.as_ref().map_or(0.0, |f| f.share);
    assert!(share > 0.3, "peak EWMA sent the failing server {share}");
    assert!(ewma.error_share > random.error_share);
    // A share of failures: fewer errors.
    let half = simulate(&config(
        Policy::Random,
        &["--fail-fast-server", "0", "--fail-fast-share", "0.5"],
    ));
    assert!(
        (0.1..0.15).contains(&half.error_share),
        "{}",
        half.error_share
    );
}

#[test]
fn the_richer_model_is_deterministic() {
    let extra = [
        "--rtt",
        "1ms",
        "--connect-cost",
        "1ms",
        "--service-dist",
        "lognormal",
        "--fail-fast-server",
        "1",
        "--fail-fast-share",
        "0.2",
    ];
    for policy in Policy::ALL {
        let cfg = config(policy, &extra);
        let a = serde_json::to_string(&simulate(&cfg)).expect("serialisable");
        let b = serde_json::to_string(&simulate(&cfg)).expect("serialisable");
        assert_eq!(a, b, "{policy:?} is not deterministic");
    }
}

#[test]
fn bad_model_options_are_refused() {
    for extra in [
        &["--service-dist", "pareto", "--service-alpha", "1"][..],
        &["--fail-fast-share", "1.5"][..],
    ] {
        assert!(config(Policy::P2c, extra).validate().is_err(), "{extra:?}");
    }
}
