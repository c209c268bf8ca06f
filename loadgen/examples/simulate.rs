//! Runs the balance simulator until the lead wires `callosum-loadgen simulate`:
//! `cargo run --release -p callosum-loadgen --example simulate -- --help`.

use clap::Parser;

/// The simulator's options, as the `simulate` subcommand will take them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: callosum_loadgen::simulate::SimulateArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    callosum_loadgen::simulate::run(&cli.args, &mut stdout.lock())
}
