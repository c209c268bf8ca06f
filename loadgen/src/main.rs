//! `callosum-loadgen`: benchmarks Callosum servers and simulates their balance (see the crate
//! docs and docs/loadgen.md).
//!
//! Exit status: 0 when the run did what was asked; 1 when it could not be done at all or a
//! phase measured nothing; 2 for a command line that cannot be parsed or values that do not
//! fit together; 3 when more handshakes failed than `--max-error-rate`
//! allows (or every attempt of the first second failed alike); 4 when an open-loop rate was
//! not achieved; 5 when the slot invariant was violated; 130 after Ctrl-C. Every failure is
//! one line on stderr.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use callosum_loadgen::Shutdown;
use callosum_loadgen::cli::{
    Cli, Command, LoadArgs, LoadRun, MergeArgs, check_outputs, is_stdout, write_to,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse_args() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(), // --help, --version
        Err(err) => {
            // One line, naming the option and what is wrong (clap's first paragraph, joined);
            // exit status 2, as clap's own.
            let text = err.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "callosum-loadgen: {}",
                first.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The embedded server's own capacity warnings are the load generator's to
                // make (it plans descriptors and ports itself): errors only from it.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,callosum_server=error")
                }),
        )
        // Colour codes only for a terminal: logs piped to a file or a CI log stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain, no backtrace (even with RUST_BACKTRACE set).
            eprintln!("callosum-loadgen: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes in one line, each said once: a library error whose message
/// already ends with its source's is not followed by that source again.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// What a command writes: outputs for which `-` means stdout, outputs always written to
/// their path, and the files it reads.
type Files<'a> = (
    Vec<Option<&'a std::path::Path>>,
    Vec<Option<&'a std::path::Path>>,
    &'a [std::path::PathBuf],
);

/// The files a load run writes: `--json` may be `-`, the others are files.
fn load_outputs(o: &LoadArgs) -> Files<'_> {
    (
        vec![o.json.as_deref()],
        vec![o.hgrm.as_deref(), o.svg.as_deref(), o.hlog.as_deref()],
        &[],
    )
}

/// Every file the command will write, and the files it reads.
fn files(cli: &Cli) -> Files<'_> {
    match &cli.command {
        None => load_outputs(&cli.load),
        Some(Command::Churn(a)) => load_outputs(&a.load),
        Some(Command::Hold(a)) => load_outputs(&a.load),
        Some(Command::Simulate(a)) => (
            vec![a.cluster.json.as_deref(), a.markdown.as_deref()],
            vec![a.cluster.svg.as_deref()],
            &[],
        ),
        Some(Command::Sweep(a)) => (vec![a.json.as_deref(), a.markdown.as_deref()], vec![], &[]),
        Some(Command::Balance(a)) => (
            vec![a.cluster.json.as_deref()],
            vec![a.cluster.svg.as_deref()],
            &[],
        ),
        Some(Command::Merge(a)) => (vec![a.json.as_deref()], vec![a.hlog.as_deref()], &a.files),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (streamable, outputs, inputs) = files(&cli);
    check_outputs(&streamable, &outputs, inputs).map_err(anyhow::Error::msg)?;
    let load = match cli.command {
        None => cli.load.default_job(),
        Some(Command::Churn(a)) => a.run(),
        Some(Command::Hold(a)) => a.run(),
        Some(Command::Simulate(args)) => {
            let mut table = table_out(args.cluster.json.as_deref());
            callosum_loadgen::balance::simulation::run(&args, &mut table).context("simulation")?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Sweep(args)) => {
            let mut table = table_out(args.json.as_deref());
            callosum_loadgen::balance::sweep::run(&args, &mut table).context("sweep")?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Merge(args)) => return merge(&args),
        Some(Command::Balance(args)) => {
            let mut table = table_out(args.cluster.json.as_deref());
            callosum_loadgen::balance::live::run(&args, &mut table).context("live balance run")?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    // Values that parse one by one but not together (a warmup as long as the run) are a
    // command line that cannot be run: status 2, as for a value out of range.
    if let Err(e) = load.plan.validate() {
        eprintln!("callosum-loadgen: {e}");
        return Ok(ExitCode::from(2));
    }
    run_load(load)
}

/// Runs the load instrument: the table to stdout (stderr when the JSON goes to stdout), the
/// files, and the verdict as the exit status.
fn run_load(LoadRun { plan, outputs }: LoadRun) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new();
    on_ctrl_c(shutdown.clone());
    let table = table_out(outputs.json.as_deref());
    let report = callosum_loadgen::run(&plan, &shutdown, table).context("load run")?;
    outputs.write(&report).context("writing the output files")?;
    let verdict = report.verdict(&plan.criteria);
    if !verdict.is_pass() {
        eprintln!("callosum-loadgen: {verdict}");
    }
    Ok(ExitCode::from(verdict.exit_code()))
}

/// Where the table goes: stdout, unless the JSON goes there (`--json -`).
fn table_out(json: Option<&std::path::Path>) -> Box<dyn Write> {
    if json.is_some_and(is_stdout) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

/// `merge`: the table to stdout (stderr when the JSON goes to stdout), the files asked for.
fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let merged = callosum_loadgen::instrument::merge::merge(&args.files)?;
    merged
        .write_table(&mut table_out(args.json.as_deref()))
        .context("writing the table")?;
    if let Some(path) = &args.json {
        write_to(path, |mut out| {
            merged.write_json(&mut out).map_err(std::io::Error::other)
        })
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.hlog {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        merged
            .write_hlog(std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C stops the run early: phases finish the handshakes in flight and report.
fn on_ctrl_c(shutdown: Shutdown) {
    let _ = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("callosum-loadgen: stopping (Ctrl-C)");
                shutdown.trigger();
            }
        });
}
