//! `callosum-server`: runs a Callosum server until SIGINT/SIGTERM, then drains and logs its
//! final counters. A second signal exits at once.
//!
//! Logs go to stderr, without colour codes unless stderr is a terminal; the library logs
//! "listening" once the server serves and "stopped", with the final counters as fields, when
//! it is done.
//!
//! `cargo run --release -p callosum-server -- --port 4040 --mode hold`

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
mod cli {
    use std::net::{IpAddr, SocketAddr};
    use std::process::ExitCode;
    use std::time::Duration;

    use anyhow::Context;
    use callosum_server::prometheus::MetricsEndpoint;
    use callosum_server::{Echo, Hold, Keepalive, RunningServer, Server, ServerBuilder};
    use clap::{Parser, ValueEnum};
    use tokio::signal::unix::{Signal, SignalKind, signal};

    /// A thread-per-core io_uring server of the Callosum (Boxcar) protocol: every connection
    /// is sent the lowest free slot number, then served.
    #[derive(Debug, Parser)]
    #[command(version)]
    struct Args {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        host: IpAddr,
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 4040)]
        port: u16,
        /// Shards (threads with one io_uring each), 1 to 1024. Default: the available cores.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        shards: Option<u16>,
        /// Connections beyond this many are refused (closed without a slot line).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
        max_slots: u32,
        /// Listen backlog of each shard (1 to 2^31-1).
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
        backlog: u32,
        /// Unpinned shards, the default (kept for scripts written when pinning was).
        #[arg(long, hide = true)]
        no_pin: bool,
        /// Pin each shard to a core of its own (only where those cores run nothing else).
        #[arg(long, conflicts_with = "no_pin")]
        pin: bool,
        /// Seconds open connections get to finish after a shutdown signal (0 to 86400).
        #[arg(long, default_value = "10", value_parser = drain_seconds, allow_negative_numbers = true)]
        drain_timeout: Duration,
        /// What to do with a connection after its slot line.
        #[arg(long, value_enum, default_value_t = Mode::Hold)]
        mode: Mode,
        /// Serve the counters in the Prometheus text format on this address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Turn TCP keepalive of accepted connections off.
        #[arg(long, conflicts_with_all = ["keepalive_idle", "keepalive_interval", "keepalive_retries"])]
        no_keepalive: bool,
        /// Keepalive: seconds a connection is idle before the first probe (1 to 32767).
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(KEEPALIVE_SECS))]
        keepalive_idle: u64,
        /// Keepalive: seconds between probes (1 to 32767).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(KEEPALIVE_SECS))]
        keepalive_interval: u64,
        /// Keepalive: unanswered probes before the kernel drops the connection (and its slot
        /// frees) (1 to 127).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(KEEPALIVE_RETRIES))]
        keepalive_retries: u32,
    }

    /// `--drain-timeout`: seconds, finite, from 0 to a day.
    fn drain_seconds(s: &str) -> Result<Duration, String> {
        match s.trim().parse::<f64>() {
            Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
            _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
        }
    }

    /// The kernel's range for TCP_KEEPIDLE and TCP_KEEPINTVL, in seconds.
    const KEEPALIVE_SECS: std::ops::RangeInclusive<u64> = Keepalive::MIN_SECS..=Keepalive::MAX_SECS;
    /// The kernel's range for TCP_KEEPCNT.
    const KEEPALIVE_RETRIES: std::ops::RangeInclusive<i64> =
        Keepalive::MIN_RETRIES as i64..=Keepalive::MAX_RETRIES as i64;

    #[derive(Debug, Clone, Copy, ValueEnum)]
    enum Mode {
        /// Keep each connection open, discarding its input, until the peer closes it.
        Hold,
        /// Echo input back (an example service).
        Echo,
    }

    pub(crate) fn main() -> ExitCode {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
        let args = match Args::try_parse() {
            Ok(args) => args,
            Err(err) if !err.use_stderr() => err.exit(), // --help, --version
            Err(err) => {
                // One line, naming the option and the allowed values; exit status 2.
                let text = err.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                eprintln!("callosum-server: {}", first.trim_start_matches("error: "));
                return ExitCode::from(2);
            }
        };
        match run(args) {
            // The final counters are logged by the library, as one line ("stopped").
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("callosum-server: {err:#}");
                ExitCode::FAILURE
            }
        }
    }

    fn run(args: Args) -> anyhow::Result<()> {
        let drain = args.drain_timeout;
        let mut builder: ServerBuilder = Server::builder()
            .host(args.host)
            .port(args.port)
            .max_slots(args.max_slots)
            .backlog(args.backlog)
            .pin(args.pin);
        if let Some(shards) = args.shards {
            builder = builder.shards(usize::from(shards));
        }
        builder = builder.keepalive((!args.no_keepalive).then_some(Keepalive {
            idle: Duration::from_secs(args.keepalive_idle),
            interval: Duration::from_secs(args.keepalive_interval),
            retries: args.keepalive_retries,
        }));
        // Handlers first: a signal that arrives once the server is up must drain it, never
        // kill the process with the default action.
        let mut signals = Signals::install().context("installing signal handlers")?;
        let addr = SocketAddr::new(args.host, args.port);
        // Everything is bound before anything is served: a metrics address in use fails
        // start-up before the slot port takes a single connection.
        let metrics = args.metrics.map(MetricsEndpoint::bind).transpose()?;
        let server: RunningServer = match args.mode {
            Mode::Hold => builder.start_with(Hold),
            Mode::Echo => builder.start_with(Echo),
        }
        .with_context(|| format!("starting the server on {addr}"))?;
        if let Some(metrics) = metrics {
            metrics.serve(server.handle())?;
        }
        signals.wait();
        tracing::info!(?drain, "shutting down: draining open connections");
        server.handle().shutdown(drain);
        // A second signal while draining exits at once.
        std::thread::spawn(move || {
            signals.wait();
            eprintln!("callosum-server: second signal, exiting now");
            std::process::exit(130);
        });
        server.wait().map(drop).context("stopping the server")
    }

    /// SIGINT and SIGTERM, caught from the moment `install` returns.
    struct Signals {
        runtime: tokio::runtime::Runtime,
        term: Signal,
        int: Signal,
    }

    impl Signals {
        fn install() -> std::io::Result<Self> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            let _context = runtime.enter();
            let term = signal(SignalKind::terminate())?;
            let int = signal(SignalKind::interrupt())?;
            drop(_context);
            Ok(Self { runtime, term, int })
        }

        /// Blocks until the next SIGINT or SIGTERM.
        fn wait(&mut self) {
            let Self { runtime, term, int } = self;
            runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
        }
    }
}
