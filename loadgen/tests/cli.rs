//! The binary end to end: options in, table on stdout, the `--json`, `--hgrm` and `--svg`
//! files written, and a clear refusal for a run that cannot fit or an option out of range.

mod support;

use std::process::Command;

use support::{Misbehaviour, c_server, free_port, misbehaving};

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_callosum-loadgen"))
}

#[test]
fn a_churn_writes_the_table_and_every_output_file() {
    let server = c_server();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let out = loadgen()
        .args([
            "churn",
            "--count",
            "300",
            "--concurrency",
            "8",
            "--no-progress",
            "--target",
        ])
        .arg(server.addr.to_string())
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(table.contains("== churn against"), "{table}");
    assert!(table.contains("300 recorded"), "{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    assert_eq!(doc["runs"][0]["succeeded"], 300);
    let hgrm = std::fs::read_to_string(&hgrm).expect("hgrm file");
    assert!(hgrm.trim_start().starts_with("Value"));
    assert!(hgrm.contains("#[Buckets"));
    assert!(
        std::fs::read_to_string(&svg)
            .expect("svg file")
            .starts_with("<svg")
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_run_that_cannot_fit_fails_before_starting_with_the_reason() {
    let server = c_server();
    let out = loadgen()
        .args([
            "hold",
            "--connections",
            "100000000",
            "--no-progress",
            "--target",
        ])
        .arg(server.addr.to_string())
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file descriptors"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_reset_fraction_out_of_range_exits_2_naming_the_option() {
    for bad in ["1.5", "-0.1", "lots"] {
        let out = loadgen()
            .args(["churn", "--count", "1", "--reset-fraction", bad])
            .output()
            .expect("run the binary");
        assert_eq!(out.status.code(), Some(2), "--reset-fraction {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--reset-fraction"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// Asserts that a run was refused before it started: status `code`, one line on stderr
/// saying `says`, nothing on stdout.
fn assert_refused(out: &std::process::Output, code: i32, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(says), "{err}");
    assert!(out.stdout.is_empty());
}

/// The one line a failed run prints on stderr, besides any log lines.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_closed_port_stops_after_the_first_second_with_status_3() {
    let port = free_port();
    let out = loadgen()
        .args([
            "churn",
            "-z",
            "30s",
            "--no-progress",
            "--json",
            "-",
            "--target",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(3));
    let line = last_line(&out.stderr);
    assert!(line.contains("every attempt of the first second"), "{line}");
    assert!(line.contains("refused"), "{line}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let run = &doc["runs"][0];
    assert!(run["stopped_early"].is_string(), "{run}");
    assert_eq!(run["succeeded"], 0);
    let (elapsed, requested) = (
        run["elapsed_s"].as_f64().expect("elapsed"),
        run["requested_duration_s"].as_f64().expect("requested"),
    );
    assert!(
        elapsed < requested,
        "did not stop before its {requested} s: {elapsed}"
    );
    // With the JSON on stdout, the table goes to stderr.
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(table.contains("STOPPED"), "{table}");
}

#[test]
fn a_server_that_never_answers_stops_the_default_job_at_the_first_timeouts() {
    // Nothing finishes within the first second: the check waits for the first attempts to
    // time out, stops there, and the hold after the churn does not run.
    let silent = misbehaving(Misbehaviour::NeverAnswer);
    let out = loadgen()
        .args(["--timeout", "2s", "--no-progress", "--target"])
        .arg(silent.to_string())
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(3));
    let line = last_line(&out.stderr);
    assert!(line.contains("churn stopped"), "{line}");
    assert!(line.contains("timeout"), "{line}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("hold "), "the hold ran: {table}");
}

#[test]
fn zero_values_are_refused_in_one_line_without_a_backtrace() {
    for args in [
        &["churn", "--concurrency", "0"][..],
        &["churn", "--workers", "0"],
        &["churn", "--rate", "0"],
        &["churn", "--timeout", "0"],
        &["churn", "--duration", "0"],
        &["hold", "--connections", "0"],
        &["simulate", "--servers", "0"],
        &["simulate", "--duration", "1000000000y"],
        &["churn", "--rate", "1e300"],
        &["churn", "--target", "127.0.0.1:0"],
        &["balance", "--policy", "jsq"],
    ] {
        let out = loadgen()
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run the binary");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("backtrace"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn runs_too_large_or_contradictory_are_refused_before_starting_in_one_line() {
    for (args, says) in [
        (&["simulate", "--service-time", "1ns"][..], "events"),
        (&["simulate", "--load", "1000000"], "events"),
        (&["simulate", "--window", "1ns"], "windows"),
        (&["simulate", "--sample-interval", "1ns"], "samples"),
        (
            &["simulate", "--clients", "10000000"],
            "clients × pool-size",
        ),
        (&["simulate", "--servers", "100000000"], "at most 1,000,000"),
        (
            &["simulate", "--warmup", "60000000", "--duration", "60000000"],
            "at most 1e8 s",
        ),
        (&["simulate", "--slow-server", "9"], "below --servers"),
        (&["simulate", "--fail-fast-server", "9"], "below --servers"),
        (
            &["simulate", "--leave-server", "9", "--leave-at", "1s"],
            "below --servers",
        ),
        (
            &["simulate", "--join-at", "10s", "--duration", "5s"],
            "inside the measured window",
        ),
        (
            &["simulate", "--servers", "1", "--leave-at", "1s"],
            "at least 2 servers",
        ),
        (&["sweep", "--loads", "1000"], "invalid simulation"),
        (&["balance", "--service-time", "5us"], "at least 1 ms"),
        (&["balance", "--load", "50"], "at most 2"),
        (&["balance", "--servers", "10000"], "live servers"),
        (
            &["balance", "--clients", "3900", "--pool-size", "1000"],
            "file descriptors",
        ),
        (
            &["simulate", "--json", "/nonexistent/x.json"],
            "cannot write /nonexistent/x.json",
        ),
        (
            &["sweep", "--markdown", "/nonexistent/x.md"],
            "cannot write /nonexistent/x.md",
        ),
        (
            &["balance", "--json", "/nonexistent/x.json"],
            "cannot write /nonexistent/x.json",
        ),
        (
            &["churn", "--json", "/nonexistent/x.json"],
            "cannot write /nonexistent/x.json",
        ),
        (
            &["simulate", "--json", "x.json", "--svg", "x.json"],
            "two outputs",
        ),
        (
            &["simulate", "--json", "x.json", "--markdown", "./x.json"],
            "two outputs",
        ),
        (
            &[
                "simulate",
                "--servers",
                "2",
                "--load",
                "1",
                "--leave-at",
                "0s",
                "--warmup",
                "0s",
                "--duration",
                "200000s",
            ],
            "waiting beyond capacity",
        ),
    ] {
        let out = loadgen()
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run the binary");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!std::path::Path::new("x.json").exists());
}

#[test]
fn a_warmup_as_long_as_the_churn_exits_2_before_starting() {
    let out = loadgen()
        .args(["churn", "-z", "1s", "--warmup", "1s", "--no-progress"])
        .output()
        .expect("run the binary");
    assert_refused(&out, 2, "warmup");
}

#[test]
fn a_phase_that_measures_nothing_exits_1_saying_why() {
    let server = c_server();
    for (args, says) in [
        // The 20 connections open long before the warmup ends.
        (
            &["hold", "-n", "20", "--warmup", "30s"][..],
            "within the 30 s warmup",
        ),
        // Every connection is reset on purpose: none is left to hold.
        (
            &["hold", "-n", "20", "--reset-fraction", "1"],
            "held none of the 20",
        ),
    ] {
        let out = loadgen()
            .args(args)
            .args(["--no-progress", "--target"])
            .arg(server.addr.to_string())
            .output()
            .expect("run the binary");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = last_line(&out.stderr);
        assert!(line.contains(says), "{args:?}: {line}");
    }
}

#[test]
fn a_server_pid_that_serves_none_of_the_targets_is_refused() {
    let server = c_server();
    // A process of this network namespace that listens on nothing.
    let mut other = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let out = loadgen()
        .args(["churn", "-n", "10", "--no-progress", "--server-pid"])
        .arg(other.id().to_string())
        .arg("--target")
        .arg(server.addr.to_string())
        .output()
        .expect("run the binary");
    let _ = other.kill();
    let _ = other.wait();
    assert_refused(&out, 1, "listens on none of the targets");
}

#[test]
fn merge_refuses_to_overwrite_its_input() {
    let dir = std::env::temp_dir().join(format!("callosum-merge-self-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("a.json");
    std::fs::write(&input, "{}").expect("write the input");
    let out = loadgen()
        .arg("merge")
        .arg(&input)
        .arg("--json")
        .arg(&input)
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is an input"), "{err}");
    assert_eq!(std::fs::read_to_string(&input).expect("read it back"), "{}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_above_the_threshold_exit_3_and_samples_are_counted_with_a_hint() {
    let http = misbehaving(Misbehaviour::Http);
    let run = |extra: &[&str]| {
        loadgen()
            .args(["churn", "-n", "50", "-c", "4", "--no-progress", "--target"])
            .arg(http.to_string())
            .args(extra)
            .output()
            .expect("run the binary")
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8_lossy(&out.stdout);
    // Long sample lines wrap at 80 columns: read the words.
    let words = table.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("50× protocol"), "{table}");
    assert!(
        words.contains("an HTTP server, not a Callosum server"),
        "{table}"
    );
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    // Everything fails: even the most lenient threshold short of 1 fails the run.
    assert_eq!(run(&["--max-error-rate", "0.99"]).status.code(), Some(3));
    assert_eq!(run(&["--max-error-rate", "1"]).status.code(), Some(0));
}

#[test]
fn an_open_loop_rate_not_achieved_exits_4() {
    let server = c_server();
    let out = loadgen()
        .args([
            "churn",
            "-q",
            "10000000",
            "-z",
            "1s",
            "--no-progress",
            "--target",
        ])
        .arg(server.addr.to_string())
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(4), "{}", last_line(&out.stderr));
    assert!(last_line(&out.stderr).contains("rate not achieved"));
}

/// Whether process `pid` has a handler for SIGINT (`SigCgt` in `/proc/PID/status`).
fn catches_sigint(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Whether a thread of process `pid` has a name starting with `prefix`.
fn has_thread(pid: u32, prefix: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
}

#[test]
fn ctrl_c_exits_130_with_the_json_marked_interrupted() {
    let server = c_server();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let json = dir.join("r.json");
    let child = loadgen()
        .args(["churn", "-z", "60s", "-c", "4", "--no-progress", "--target"])
        .arg(server.addr.to_string())
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    // Ctrl-C once the run is under way: its handler installed and the churn's workers
    // started. A fixed wait could signal a slow start-up before either, killing the process
    // or stopping it before the churn.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(catches_sigint(child.id()) && has_thread(child.id(), "loadgen-")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the churn never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Let it run a moment (nothing below depends on how long).
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill has no memory effects; the pid is our child's, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    assert_eq!(doc["interrupted"], true);
    assert_eq!(doc["runs"][0]["requested_duration_s"], 60.0);
    let elapsed = doc["runs"][0]["elapsed_s"].as_f64().expect("elapsed");
    assert!(
        elapsed < 60.0,
        "stopped before the requested 60 s: {elapsed}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn interval_logs_and_json_results_of_two_runs_merge_into_one_report() {
    let server = c_server();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for name in ["a", "b"] {
        let out = loadgen()
            .args(["churn", "-n", "400", "-c", "8", "--no-progress", "--target"])
            .arg(server.addr.to_string())
            .arg("--json")
            .arg(dir.join(format!("{name}.json")))
            .arg("--hlog")
            .arg(dir.join(format!("{name}.hlog")))
            .output()
            .expect("run the binary");
        assert!(out.status.success(), "{}", last_line(&out.stderr));
    }
    let hlog = std::fs::read_to_string(dir.join("a.hlog")).expect("hlog");
    assert!(
        hlog.contains("\"StartTimestamp\",\"Interval_Length\""),
        "{hlog}"
    );
    assert!(hlog.lines().any(|l| l.starts_with("Tag=churn,")), "{hlog}");
    for ext in ["json", "hlog"] {
        let out = loadgen()
            .arg("merge")
            .arg(dir.join(format!("a.{ext}")))
            .arg(dir.join(format!("b.{ext}")))
            .arg("--json")
            .arg("-")
            .output()
            .expect("run the binary");
        assert!(out.status.success(), "{}", last_line(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        let text = doc.to_string();
        assert!(text.contains("800"), "both runs' 800 handshakes: {text}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("churn"));
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
