//! The binary end to end: options in, table on stdout, the `--json`, `--hgrm` and `--svg`
//! files written, and a clear refusal for a run that cannot fit or an option out of range.

mod support;

use std::process::Command;

use support::c_server;

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
