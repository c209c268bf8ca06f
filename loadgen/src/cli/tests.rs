//! The command line: what each command's options become, what is refused while parsing, and
//! options before the command's name.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from_args(
        std::iter::once("callosum-loadgen")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect(),
    )
}

fn load(args: &[&str]) -> LoadRun {
    match parse(args).expect("valid arguments") {
        Cli {
            command: None,
            load,
        } => load.default_job(),
        Cli {
            command: Some(Command::Churn(a)),
            ..
        } => a.run(),
        Cli {
            command: Some(Command::Hold(a)),
            ..
        } => a.run(),
        other => panic!("not a load run: {other:?}"),
    }
}

#[test]
fn no_arguments_is_the_embedded_default_job() {
    let LoadRun { plan, .. } = load(&[]);
    assert!(plan.is_embedded());
    assert_eq!(plan.phases.len(), 2);
    assert_eq!(plan.phases[0].kind.name(), "churn");
    assert_eq!(plan.phases[1].kind.name(), "hold");
    assert_eq!(plan.criteria.max_error_rate, 0.0);
    assert_eq!(plan.validate(), Ok(()));
}

#[test]
fn churn_with_rate_is_open_loop() {
    let LoadRun { plan, outputs } = load(&[
        "churn",
        "--target",
        "127.0.0.1:9000",
        "-q",
        "1000",
        "-n",
        "50",
        "--warmup",
        "500ms",
        "--json",
        "x.json",
        "--src-ips",
        "16",
        "--max-error-rate",
        "0.01",
    ]);
    assert_eq!(plan.targets, vec!["127.0.0.1:9000".parse().unwrap()]);
    assert!(matches!(plan.phases[0].pacing, Pacing::Open { rate, .. } if rate == 1000.0));
    assert!(matches!(
        plan.phases[0].kind,
        PhaseKind::Churn {
            duration: None,
            count: Some(50)
        }
    ));
    assert_eq!(plan.phases[0].warmup, Duration::from_millis(500));
    assert_eq!(plan.src_ips, Some(16));
    assert_eq!(plan.criteria.max_error_rate, 0.01);
    assert_eq!(outputs.json, Some(PathBuf::from("x.json")));
    assert!(!outputs.json_to_stdout());
}

#[test]
fn hold_takes_connections_and_a_churn_defaults_to_ten_seconds() {
    let LoadRun { plan, .. } = load(&["hold", "-n", "19000", "-c", "128"]);
    assert!(matches!(
        plan.phases[0].kind,
        PhaseKind::Hold {
            connections: 19_000,
            ..
        }
    ));
    assert_eq!(plan.phases[0].pacing, Pacing::Closed { concurrency: 128 });
    let LoadRun { plan, .. } = load(&["churn"]);
    assert!(matches!(
        plan.phases[0].kind,
        PhaseKind::Churn { duration: Some(d), count: None } if d == Duration::from_secs(10)
    ));
    let LoadRun { plan, .. } = load(&["churn", "-z", "2m"]);
    assert!(matches!(
        plan.phases[0].kind,
        PhaseKind::Churn { duration: Some(d), .. } if d == Duration::from_secs(120)
    ));
}

#[test]
fn options_may_come_before_the_command() {
    let LoadRun { plan, outputs } = load(&[
        "--target",
        "127.0.0.1:9000",
        "--json",
        "-",
        "churn",
        "-n",
        "5",
    ]);
    assert_eq!(plan.targets, vec!["127.0.0.1:9000".parse().unwrap()]);
    assert!(outputs.json_to_stdout());
    // A value that is a command's name stays a value.
    let LoadRun { outputs, .. } = load(&["--json", "churn", "hold"]);
    assert_eq!(outputs.json, Some(PathBuf::from("churn")));
    // Options of the default job alone still run it.
    let LoadRun { plan, .. } = load(&["--workers", "3"]);
    assert_eq!((plan.workers, plan.phases.len()), (3, 2));
}

#[test]
fn phase_names_go_before_the_extension() {
    assert_eq!(
        with_phase(std::path::Path::new("/tmp/out.hgrm"), "hold"),
        PathBuf::from("/tmp/out.hold.hgrm")
    );
    assert_eq!(
        with_phase(std::path::Path::new("out"), "churn"),
        PathBuf::from("out.churn")
    );
}

#[test]
fn values_out_of_range_are_refused_while_parsing() {
    for args in [
        &["--src-ips", "0"][..],
        &["--timeout", "-1"],
        &["--timeout", "0"],
        &["--timeout", "0s"],
        &["churn", "--duration", "abc"],
        &["churn", "--duration", "0"],
        &["churn", "-n", "0"],
        &["churn", "--concurrency", "0"],
        &["churn", "--workers", "0"],
        &["churn", "--rate", "0"],
        &["churn", "--rate", "NaN"],
        &["churn", "--max-in-flight", "0"],
        &["hold", "--connections", "0"],
        &["--shards", "0"],
        &["--max-slots", "0"],
        &["--target", "nohost"],
        &["churn", "--reset-fraction", "1.5"],
        &["churn", "--reset-fraction", "-0.1"],
        &["churn", "--reset-fraction", "NaN"],
        &["churn", "--max-error-rate", "2"],
    ] {
        let err = parse(args).expect_err(&format!("{args:?} refused"));
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn reset_fraction_reaches_the_plan_and_defaults_to_none() {
    let LoadRun { plan, .. } = load(&["churn", "-n", "10", "--reset-fraction", "0.3"]);
    assert_eq!(plan.reset_fraction, 0.3);
    let LoadRun { plan, .. } = load(&["hold"]);
    assert_eq!(plan.reset_fraction, 0.0);
}

#[test]
fn the_help_shows_each_default_once_and_no_rustdoc_links() {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    let mut commands = vec![cmd.clone()];
    commands.extend(cmd.get_subcommands().cloned());
    for mut c in commands {
        let help = c.render_long_help().to_string();
        assert!(!help.contains("[`"), "rustdoc link in the help:\n{help}");
        for para in help.split("\n\n") {
            assert!(
                !(para.contains("[default:") && para.contains("Default ")),
                "a default given twice:\n{para}"
            );
        }
    }
}

#[test]
fn zero_seeds_are_refused() {
    for command in ["simulate", "sweep"] {
        let err = parse(&[command, "--seeds", "0"]).expect_err("0 seeds");
        assert!(err.to_string().contains("--seeds"), "{err}");
    }
    assert!(parse(&["simulate", "--seeds", "3"]).is_ok());
}
