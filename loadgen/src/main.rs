//! `callosum-loadgen`: benchmarks Callosum servers (see the crate docs and the README).

use anyhow::Context;
use callosum_loadgen::cli::Command;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = match callosum_loadgen::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(), // --help, --version
        Err(err) => {
            // One line, naming the option and what is wrong; exit status 2, as clap's own.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("callosum-loadgen: {first}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Colour codes only for a terminal: logs piped to a file or a CI log stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(Command::Simulate(args)) = &cli.command {
        return callosum_loadgen::simulate::run(args, &mut std::io::stdout().lock())
            .context("simulation");
    }
    if let Some(Command::Balance(args)) = &cli.command {
        return callosum_loadgen::balance::run(args, &mut std::io::stdout().lock())
            .context("live balance run");
    }
    let (config, outputs) = cli.config().context("not a load scenario")?;
    let shutdown = callosum_loadgen::Shutdown::new();
    on_ctrl_c(shutdown.clone());
    let report = callosum_loadgen::run(&config, &shutdown).context("load generator run")?;
    report
        .write_table(&mut std::io::stdout().lock())
        .context("writing the table")?;
    outputs.write(&report).context("writing the output files")?;
    Ok(())
}

/// Ctrl-C stops the run early: phases finish the handshakes in flight and report.
fn on_ctrl_c(shutdown: callosum_loadgen::Shutdown) {
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
