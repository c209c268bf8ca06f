use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::instrument::hlog::{IntervalRecorder, encode_histogram, read_log, write_log};
use crate::instrument::stats::new_histogram;

/// 2026-12-02 08:00:00 UTC.
const T0: u64 = 1_796_198_400;

/// A fresh directory for one test's files.
fn dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: only uniqueness matters.
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("callosum-merge-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = new_histogram();
    for &v in values {
        h.record(v).expect("in range");
    }
    h
}

/// An interval log starting at `start` (Unix seconds), `values[i]` recorded in second `i`.
fn hlog_file(path: &Path, start: u64, tag: Option<&str>, values: &[&[u64]]) {
    let t = Instant::now();
    let mut r = IntervalRecorder::new(t, Duration::from_secs(1));
    for (i, vs) in values.iter().enumerate() {
        for &v in *vs {
            r.record(t + Duration::from_secs(i as u64), v)
                .expect("record");
        }
    }
    let intervals = r.finish().expect("finish");
    let file = std::fs::File::create(path).expect("create");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
    write_log(file, start, &intervals, tag).expect("write");
}

fn run(
    scenario: &str,
    attempted: u64,
    rate: f64,
    errors: [u64; 2],
    h: &Histogram<u64>,
) -> serde_json::Value {
    let succeeded = h.len();
    json!({
        "scenario": scenario,
        "targets": ["10.0.0.1:4040"],
        "attempted": attempted,
        "succeeded": succeeded,
        "recorded": succeeded,
        "window_s": 10.0,
        "elapsed_s": 11.0,
        "handshakes_per_s": rate,
        "errors": {"refused": errors[0], "timeout": errors[1], "reset": 0, "protocol": 0,
                   "no_slot": 0, "other": 0, "total": errors[0] + errors[1],
                   "samples": ["refused: connection refused"]},
        "invariant": {"violations": 0, "examples": []},
        "handshake_histogram": encode_histogram(h).expect("encodes"),
    })
}

fn json_file(path: &Path, runs: Vec<serde_json::Value>) {
    let doc = json!({"schema": "callosum-loadgen/v2", "runs": runs, "embedded_final_stats": null});
    std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
}

fn only_group(m: &Merged) -> &Group {
    assert_eq!(
        m.groups.len(),
        1,
        "{:?}",
        m.groups.iter().map(|g| &g.name).collect::<Vec<_>>()
    );
    &m.groups[0]
}

#[test]
fn merging_two_json_results_sums_counts_rates_and_histograms_exactly() {
    let d = dir();
    let (ha, hb) = (histogram(&[100, 200, 300]), histogram(&[150, 5000]));
    json_file(
        &d.join("a.json"),
        vec![run("churn", 5, 1000.0, [1, 1], &ha)],
    );
    json_file(&d.join("b.json"), vec![run("churn", 4, 500.5, [2, 0], &hb)]);
    let m = merge(&[d.join("a.json"), d.join("b.json")]).expect("merges");
    let g = only_group(&m);
    assert_eq!(g.name, "churn");
    let mut sum = histogram(&[100, 200, 300]);
    sum.add(&hb).expect("add");
    assert_eq!(g.histogram, sum);
    assert_eq!((g.files, g.json_runs, g.hlog_files), (2, 2, 0));
    assert_eq!(g.handshakes_per_s, 1500.5);
    let c = g.counts.expect("counts");
    assert_eq!((c.attempted, c.succeeded), (9, 5));
    assert_eq!(
        (
            c.errors.get(ErrorKind::Refused),
            c.errors.get(ErrorKind::Timeout),
            c.errors.total
        ),
        (3, 1, 4)
    );
}

#[test]
fn runs_are_grouped_by_scenario_and_a_repeat_in_one_file_is_numbered() {
    let d = dir();
    let h = histogram(&[100]);
    let runs = vec![
        run("churn", 1, 1.0, [0, 0], &h),
        run("hold", 1, 1.0, [0, 0], &h),
        run("churn", 1, 1.0, [0, 0], &h),
    ];
    json_file(&d.join("a.json"), runs.clone());
    json_file(&d.join("b.json"), runs);
    let m = merge(&[d.join("a.json"), d.join("b.json")]).expect("merges");
    let names: Vec<(&str, usize, u64)> = m
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.files, g.histogram.len()))
        .collect();
    assert_eq!(names, [("churn", 2, 2), ("hold", 2, 2), ("churn#2", 2, 2)]);
}

#[test]
fn a_json_run_without_its_histogram_is_an_error_naming_file_and_run() {
    let d = dir();
    let mut r = run("churn", 1, 1.0, [0, 0], &histogram(&[1]));
    r.as_object_mut()
        .expect("object")
        .remove("handshake_histogram");
    json_file(&d.join("old.json"), vec![r]);
    let err = merge(&[d.join("old.json")]).expect_err("refused");
    assert!(
        matches!(&err, MergeError::MissingHistogram { run: 1, scenario, .. } if scenario == "churn"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("old.json: run 1 (churn) has no handshake_histogram"),
        "{err}"
    );
}

#[test]
fn damaged_json_inputs_are_typed_errors() {
    let d = dir();
    let path = d.join("bad.json");
    std::fs::write(
        &path,
        "{\"schema\": \"callosum-loadgen/v2\",\n \"runs\": [ {\"scenario\": 3} ]}",
    )
    .expect("write");
    let err = merge(std::slice::from_ref(&path)).expect_err("refused");
    assert!(matches!(err, MergeError::Json { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad.json:2:"), "{err}");

    std::fs::write(&path, r#"{"schema": "other/v9", "runs": []}"#).expect("write");
    let err = merge(std::slice::from_ref(&path)).expect_err("refused");
    assert!(
        matches!(&err, MergeError::Schema { found, .. } if found == "other/v9"),
        "{err}"
    );

    let mut r = run("churn", 1, 1.0, [0, 0], &histogram(&[1]));
    r["handshake_histogram"] = json!("HISTF@@@");
    json_file(&path, vec![r]);
    let err = merge(std::slice::from_ref(&path)).expect_err("refused");
    assert!(
        matches!(
            err,
            MergeError::Histogram {
                run: 1,
                source: DecodeError::Base64(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_malformed_interval_log_is_an_error_naming_file_and_line() {
    let d = dir();
    let path = d.join("bad.hlog");
    std::fs::write(
        &path,
        "#[BaseTime: 10.000 (seconds since epoch)]\n\"StartTimestamp\"\n1.0,1.0\n",
    )
    .expect("write");
    let err = merge(std::slice::from_ref(&path)).expect_err("refused");
    assert!(
        matches!(err, MergeError::Hlog(HlogError::Malformed { line: 3, .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: ", path.display())),
        "{err}"
    );
}

#[test]
fn no_files_and_missing_files_are_errors() {
    assert!(matches!(merge(&[]), Err(MergeError::NoInputs)));
    let err = merge(&[PathBuf::from("/nonexistent/a.hlog")]).expect_err("missing");
    assert!(matches!(err, MergeError::Read { .. }), "{err}");
}

#[test]
fn a_file_given_twice_or_with_nothing_to_merge_is_an_error_naming_it() {
    let d = dir();
    let log = d.join("a.hlog");
    hlog_file(&log, T0, None, &[&[100]]);
    assert!(matches!(
        merge(&[log.clone(), log.clone()]),
        Err(MergeError::Duplicate { path }) if path == log
    ));
    let respelled = d.join(".").join("a.hlog");
    assert!(matches!(
        merge(&[log.clone(), respelled.clone()]),
        Err(MergeError::Duplicate { path }) if path == respelled
    ));
    let empty = d.join("empty.hlog");
    std::fs::write(&empty, "").expect("write");
    assert!(matches!(
        merge(&[log.clone(), empty.clone()]),
        Err(MergeError::Empty { path }) if path == empty
    ));
    // A run with no successful handshake: a header and no interval. It merges beside others,
    // but alone there is nothing to merge.
    let header_only = d.join("header-only.hlog");
    hlog_file(&header_only, T0, None, &[]);
    let no_runs = d.join("no-runs.json");
    json_file(&no_runs, vec![]);
    assert!(merge(&[log.clone(), header_only.clone()]).is_ok());
    assert!(matches!(
        merge(&[header_only, no_runs]),
        Err(MergeError::NothingToMerge)
    ));
}

#[test]
fn interval_logs_starting_one_second_apart_align_on_absolute_seconds() {
    let d = dir();
    hlog_file(&d.join("a.hlog"), T0, Some("churn"), &[&[10], &[20], &[30]]);
    hlog_file(
        &d.join("b.hlog"),
        T0 + 1,
        Some("churn"),
        &[&[21, 22], &[31]],
    );
    let m = merge(&[d.join("a.hlog"), d.join("b.hlog")]).expect("merges");
    let g = only_group(&m);
    assert_eq!(g.histogram, histogram(&[10, 20, 21, 22, 30, 31]));
    assert_eq!((g.files, g.hlog_files, g.json_runs), (2, 2, 0));
    assert_eq!(g.counts, None);
    // 6 handshakes over the union of [T0, T0+3) and [T0+1, T0+3).
    assert_eq!(g.handshakes_per_s, 2.0);

    let t = m.timeline(Some("churn")).expect("timeline");
    let got: Result<Vec<_>, _> = t.histograms().collect();
    assert_eq!(
        got.expect("decodes"),
        [
            (T0, histogram(&[10])),
            (T0 + 1, histogram(&[20, 21, 22])),
            (T0 + 2, histogram(&[30, 31])),
        ]
    );

    let out = d.join("merged.hlog");
    m.write_hlog(std::fs::File::create(&out).expect("create"))
        .expect("writes");
    let read = read_log(&out).expect("reads back");
    let got: Vec<(Option<&str>, u64, u64)> = read
        .iter()
        .map(|i| (i.tag.as_deref(), i.start.as_secs(), i.histogram.len()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("churn"), T0, 1),
            (Some("churn"), T0 + 1, 3),
            (Some("churn"), T0 + 2, 2)
        ]
    );
    let text = std::fs::read_to_string(&out).expect("text");
    assert!(text.contains("#[StartTime: 1796198400.000 "), "{text}");
    assert!(text.contains("\nTag=churn,1.000,1.000,"), "{text}");
}

#[test]
fn interval_logs_and_json_results_merge_into_one_report() {
    let d = dir();
    hlog_file(&d.join("a.hlog"), T0, Some("churn"), &[&[1000, 2000]]);
    hlog_file(&d.join("a2.hlog"), T0, None, &[&[3]]);
    json_file(
        &d.join("b.json"),
        vec![run("churn", 3, 100.0, [1, 0], &histogram(&[1500]))],
    );
    let paths = [d.join("a.hlog"), d.join("a2.hlog"), d.join("b.json")];
    let m = merge(&paths).expect("merges");
    assert_eq!((m.json_files, m.hlog_files), (1, 2));
    assert_eq!(m.groups.len(), 2);
    let churn = &m.groups[0];
    assert_eq!(churn.histogram, histogram(&[1000, 1500, 2000]));
    assert_eq!(churn.handshakes_per_s, 102.0);
    assert_eq!(m.groups[1].name, UNTAGGED);

    let mut table = Vec::new();
    m.write_table(&mut table).expect("table");
    let table = String::from_utf8(table).expect("utf-8");
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(
        table.contains("merged 3 files (JSON results: 1, interval logs: 2)"),
        "{table}"
    );
    assert!(table.contains("churn errors: refused 1"), "{table}");
    let latency = table
        .lines()
        .find(|l| l.starts_with("churn ") && l.contains('.') && !l.contains("102.0"));
    let cols: Vec<&str> = latency.expect("latency row").split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "churn", "3", "1.500", "2.000", "2.000", "2.000", "2.000", "2.000"
        ],
        "{table}"
    );
    let untagged = table
        .lines()
        .find(|l| l.starts_with("untagged "))
        .expect("untagged row");
    assert!(untagged.contains(" - "), "{untagged}");

    let mut out = Vec::new();
    m.write_json(&mut out).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("parses");
    assert_eq!(v["schema"], SCHEMA);
    assert_eq!(v["files"].as_array().map(Vec::len), Some(3));
    let g = &v["groups"][0];
    assert_eq!(g["name"], "churn");
    assert_eq!(
        (
            g["files"].as_u64(),
            g["json_runs"].as_u64(),
            g["hlog_files"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(
        (g["attempted"].as_u64(), g["succeeded"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(g["errors"]["refused"], 1);
    assert_eq!(g["handshake_us"]["count"], 3);
    assert_eq!(g["handshake_us"]["p50"], 1500);
    let h = hlog::decode_histogram(g["handshake_histogram"].as_str().expect("string"))
        .expect("decodes");
    assert_eq!(h, churn.histogram);
    assert_eq!(v["groups"][1]["attempted"], serde_json::Value::Null);
}
