//! Evidence over several seeds: `simulate --seeds N` summarises each figure over its seeds and
//! keeps every seed's reports, and `sweep` reports one row per cell of its grid (small bounded
//! runs: seconds of simulated time at S=4).

use callosum_loadgen::balance::{SimulateArgs, SweepArgs, simulation, sweep};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Simulate {
    #[command(flatten)]
    args: SimulateArgs,
}

#[derive(Parser)]
struct Sweep {
    #[command(flatten)]
    args: SweepArgs,
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.join(name)
}

/// Runs `simulate` with `flags` and its JSON to a file: (table, JSON).
fn simulate(flags: &[&str], name: &str) -> (String, Value) {
    let json = tmp(name);
    let mut argv = vec!["simulate", "--warmup", "5s", "--duration", "10s"];
    argv.extend_from_slice(flags);
    let path = json.to_str().expect("utf-8 path");
    argv.extend_from_slice(&["--json", path]);
    let args = Simulate::try_parse_from(argv).expect("valid flags").args;
    let mut table = Vec::new();
    simulation::run(&args, &mut table).expect("simulation runs");
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON file"))
        .expect("valid JSON");
    (String::from_utf8(table).expect("utf-8"), doc)
}

#[test]
fn three_seeds_give_per_seed_reports_whose_means_are_the_summary() {
    let (table, doc) = simulate(
        &[
            "--seeds",
            "3",
            "--seed",
            "7",
            "--policy",
            "original,improved",
        ],
        "three.json",
    );
    let per_seed = doc["per_seed"].as_array().expect("per-seed reports");
    let seeds: Vec<u64> = per_seed.iter().filter_map(|s| s["seed"].as_u64()).collect();
    assert_eq!(seeds, [7, 8, 9]);
    for (p, policy) in ["original", "improved"].iter().enumerate() {
        let summary = &doc["summary"][p];
        assert_eq!(summary["policy"], *policy);
        for (key, read) in [
            ("latency_ms.p99", ["latency_ms", "p99"]),
            ("rate_max_over_mean", ["rate_max_over_mean", ""]),
        ] {
            let samples: Vec<f64> = per_seed
                .iter()
                .map(|s| {
                    let run = &s["runs"][p];
                    assert_eq!(run["policy"], *policy);
                    let v = if read[1].is_empty() {
                        &run[read[0]]
                    } else {
                        &run[read[0]][read[1]]
                    };
                    v.as_f64().expect("a number")
                })
                .collect();
            let fig = &summary["figures"][key];
            let mean = samples.iter().sum::<f64>() / 3.0;
            assert_eq!(fig["n"], 3);
            assert!(
                (fig["mean"].as_f64().expect("mean") - mean).abs() < 1e-9,
                "{key}"
            );
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(fig["min"].as_f64(), Some(min));
            assert_eq!(fig["max"].as_f64(), Some(max));
            assert!(fig["ci95"].as_f64().is_some_and(|h| h >= 0.0), "{key}");
        }
    }
    assert!(table.contains("over 3 seeds (7..=9)"), "{table}");
    assert!(table.contains("p99 ms") && table.contains(" ± "), "{table}");
}

#[test]
fn one_seed_keeps_the_single_run_output() {
    let (table, doc) = simulate(&["--policy", "original,p2c"], "one.json");
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(2));
    assert!(doc.get("summary").is_none() && doc.get("per_seed").is_none());
    assert_eq!(doc["config"]["seed"], 1);
    assert!(
        table.starts_with("policy ") && table.contains(" p99ms "),
        "{table}"
    );
    assert!(!table.contains('±'), "{table}");
}

#[test]
fn a_tiny_sweep_reports_one_row_per_cell_with_every_field() {
    let (json, md) = (tmp("sweep.json"), tmp("sweep.md"));
    let argv = [
        "sweep",
        "--pool-sizes",
        "2",
        "--roving-intervals",
        "1s",
        "--loads",
        "0.5",
        "--servers",
        "4",
        "--seeds",
        "2",
        "--duration",
        "10s",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--markdown",
        md.to_str().expect("utf-8 path"),
    ];
    let args = Sweep::try_parse_from(argv).expect("valid flags").args;
    let mut table = Vec::new();
    let reports = sweep::run(&args, &mut table).expect("sweep runs");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(
        (r.cell.servers, r.cell.clients, r.cell.pool_size),
        (4, 16, 2)
    );
    assert_eq!(r.cell.warmup_s, 2.0 * 2.0 * 1.0 + 30.0, "2·P·R + 30 s");
    assert_eq!(r.per_seed.len(), 2);
    assert_eq!(r.p99_ratio.n, 2);
    let ratios: Vec<f64> = r
        .per_seed
        .iter()
        .map(|s| s.improved.p99_ms / s.original.p99_ms)
        .collect();
    assert!((r.p99_ratio.mean - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-12);
    assert_eq!(r.p99_ok, r.p99_ratio.mean <= sweep::P99_RATIO_TARGET);
    assert_eq!(
        r.rate_ok,
        r.improved_rate_max_over_mean.max <= sweep::RATE_TARGET
    );
    // Pools of 2 fill within the warm-up.
    assert!(
        r.original_fill.mean > 0.9 && r.original_fill.mean <= 1.0,
        "{r:?}"
    );
    assert!(
        r.improved_fill.mean > 0.5 && r.improved_fill.mean <= 1.0,
        "{r:?}"
    );

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON file"))
        .expect("valid JSON");
    let cells = doc["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 1);
    for key in [
        "servers",
        "clients",
        "pool_size",
        "roving_interval_s",
        "load",
        "warmup_s",
        "duration_s",
        "p99_ratio",
        "p99_ok",
        "original_p99_ms",
        "improved_p99_ms",
        "improved_rate_max_over_mean",
        "rate_ok",
        "improved_rate_memory_s",
        "original_fill",
        "improved_fill",
        "per_seed",
    ] {
        assert!(cells[0].get(key).is_some(), "no {key} in {}", cells[0]);
    }
    let table = String::from_utf8(table).expect("utf-8");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(" 1s ")).collect();
    assert_eq!(rows.len(), 1, "{table}");
    // 10 windows of 1 s: enough to estimate how long a server's share stays off the mean,
    // summing at most 10 / 4 = 2 lags, so between 1 and 1 + 2 × 2 windows.
    for seed in &r.per_seed {
        let memory = seed
            .improved
            .rate_memory_s
            .expect("estimated over 10 windows");
        assert!((1.0..=5.0).contains(&memory), "{memory}");
    }
    let md = std::fs::read_to_string(&md).expect("Markdown file");
    assert_eq!(md.lines().count(), 3, "header, rule, one row: {md}");
    let header: Vec<&str> = md.lines().next().expect("header").split('|').collect();
    let row: Vec<&str> = md.lines().nth(2).expect("row").split('|').collect();
    let memory = header
        .iter()
        .position(|h| h.trim() == "memory")
        .expect("a memory column");
    assert!(row[memory].trim().parse::<f64>().is_ok(), "{md}");
    assert!(
        md.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("| 4 | 16 | 2 | 1s | 0.50 |"))
    );
}

#[test]
fn the_default_grid_is_bounded_and_every_axis_can_be_narrowed() {
    let all = Sweep::try_parse_from(["sweep"]).expect("defaults").args;
    assert_eq!(all.cells().len(), 7 * 3 * 3 * 2);
    assert_eq!(all.seed_list().len(), 10);
    let some = Sweep::try_parse_from([
        "sweep",
        "--pool-sizes",
        "2,8",
        "--roving-intervals",
        "100ms,10s",
        "--loads",
        "0.8",
        "--servers",
        "4",
        "--clients-per-server",
        "2",
        "--warmup",
        "1s",
    ])
    .expect("valid flags")
    .args;
    let cells = some.cells();
    assert_eq!(cells.len(), 4);
    assert!(cells.iter().all(|c| c.clients == 8 && c.warmup_s == 1.0));
    for bad in [
        &["sweep", "--seeds", "0"][..],
        &["sweep", "--pool-sizes", "1025"],
        &["sweep", "--roving-intervals", "0s"],
    ] {
        assert!(Sweep::try_parse_from(bad).is_err(), "{bad:?}");
    }
    assert!(Simulate::try_parse_from(["simulate", "--seeds", "0"]).is_err());
    // The client's default pool of 100 places runs; beyond 1,024 is refused.
    assert!(Simulate::try_parse_from(["simulate", "--pool-size", "100"]).is_ok());
    assert!(Simulate::try_parse_from(["simulate", "--pool-size", "1025"]).is_err());
}
