//! The engine: runs each phase on worker threads, each with its own current-thread tokio
//! runtime and its own [`Recorder`], and merges what they measured.
//!
//! Why this shape: a multi-thread runtime would move tasks and wake-ups between cores and
//! share one timer wheel; here every handshake starts, completes and is recorded on one thread,
//! and the only shared writes are a few relaxed counters, the count budget and the
//! slot-uniqueness bitmap. The workers' pacing and handshakes are in `worker`; this module is
//! the phase's lifecycle, the same for every kind ([`crate::instrument::kind`]):
//!
//! 1. spawn the workers; each builds its runtime and reports ready;
//! 2. take the "before" readings (CPU, memory), open the start gate;
//! 3. wait until every worker has finished opening, watching the first second (or, when
//!    fewer attempts finish within it, the first wave of them) for a run in which every
//!    attempt fails the same way (stopped early, with that reason);
//! 4. let the kind keep the connections open as long as it asks, take the readings at that
//!    moment, open the release gate;
//! 5. join the workers, merge their records, build the phase's report.

mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use crate::instrument::embedded::{EmbeddedError, EmbeddedServer};
use crate::instrument::handshake::{ErrorKind, HandshakeError};
use crate::instrument::hlog::{DEFAULT_INTERVAL, Intervals};
use crate::instrument::kind::{self, Kind};
use crate::instrument::limits::{self, LimitError};
use crate::instrument::measured::PhaseResult;
use crate::instrument::plan::{Phase, Plan, PlanError};
use crate::instrument::progress::Progress;
use crate::instrument::registry::SlotRegistry;
use crate::instrument::report::{Report, RunReport};
use crate::instrument::shutdown::Shutdown;
use crate::instrument::stats::Recorder;
use crate::instrument::sysinfo::{self, KernelMemory};

/// How long a phase runs before it is stopped if every attempt so far failed the same way
/// (longer when fewer than a wave of attempts has finished by then: see `drive`).
const FIRST_SECOND: Duration = Duration::from_secs(1);

/// Longest wait, between phases, for the embedded server to free the previous phase's slots.
const IDLE_BETWEEN_PHASES: Duration = Duration::from_secs(5);

/// Why a run failed (as opposed to handshakes failing, which are counted in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The plan is invalid; nothing was started.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The run does not fit the limits; nothing was started.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The embedded server failed.
    #[error("embedded server: {0}")]
    Embedded(#[from] EmbeddedError),
    /// A worker thread or its runtime could not be created.
    #[error("starting a worker: {0}")]
    Worker(#[source] std::io::Error),
    /// `--server-pid` names a process that listens on none of the targets: its CPU time and
    /// memory would be some other program's.
    #[error("process {pid} listens on none of the targets ({targets}): not the server under load")]
    NotTheServer {
        /// The process.
        pid: u32,
        /// The targets, comma-separated.
        targets: String,
    },
    /// A worker thread panicked (a bug: please report it).
    #[error("a worker thread panicked")]
    WorkerPanicked,
    /// Writing a phase's table failed.
    #[error("writing the table: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs every phase of `plan` (see [`crate::run`]).
pub(crate) fn run(
    plan: &Plan,
    shutdown: &Shutdown,
    mut out: impl std::io::Write,
) -> Result<Report, LoadgenError> {
    plan.validate()?;
    let ports = limits::port_plan(plan);
    if let Some(warning) = ports.warning() {
        tracing::warn!("{warning}");
    }
    let plan = &Plan {
        src_ips: Some(ports.src_ips),
        ..plan.clone()
    };
    limits::check(plan)?;
    let embedded = if plan.is_embedded() {
        Some(EmbeddedServer::start(&plan.embedded)?)
    } else {
        None
    };
    let targets = match &embedded {
        Some(server) => vec![server.local_addr()],
        None => plan.targets.clone(),
    };
    let server_targets = match server_targets(plan.server_pid, &targets) {
        Ok(mask) => mask,
        Err(e) => {
            if let Some(server) = embedded {
                let _ = server.shutdown();
            }
            return Err(e);
        }
    };
    let mut runs: Vec<RunReport> = Vec::new();
    let mut result = Ok(());
    for phase in &plan.phases {
        if shutdown.is_triggered() || runs.last().is_some_and(|r| r.stopped_early.is_some()) {
            break;
        }
        if let (Some(server), false) = (&embedded, runs.is_empty()) {
            // Each phase starts on an idle server, so its slots read from 0.
            if !server.wait_idle(IDLE_BETWEEN_PHASES) {
                tracing::warn!(
                    "the embedded server still held slots {IDLE_BETWEEN_PHASES:?} after the \
                     previous phase: this phase's slots start above them"
                );
            }
        }
        let ctx = PhaseContext {
            plan,
            phase,
            targets: &targets,
            embedded: embedded.as_ref(),
            server_targets: server_targets.as_deref(),
            shutdown,
        };
        match run_phase(&ctx) {
            Ok(run) => {
                if !runs.is_empty() {
                    let _ = writeln!(out);
                }
                if let Err(e) = run.write_table(&mut out) {
                    result = Err(LoadgenError::Output(e));
                }
                runs.push(run);
            }
            Err(e) => result = Err(e),
        }
        if result.is_err() {
            break;
        }
    }
    let embedded_stats = match embedded {
        Some(server) => server.shutdown(),
        None => Ok(None),
    };
    result?;
    Ok(Report::new(runs, embedded_stats?, shutdown.is_triggered()))
}

/// Which targets the `--server-pid` process serves, when it has several targets: its figures
/// are divided by the connections to those only. `None` when every target counts (one target
/// it serves, no pid) or when it cannot be told (warned of); an error when it serves none
/// (and shares this process's network namespace, so that its listeners are the targets').
fn server_targets(
    pid: Option<u32>,
    targets: &[SocketAddr],
) -> Result<Option<Vec<bool>>, LoadgenError> {
    let Some(pid) = pid else { return Ok(None) };
    match sysinfo::listening(pid) {
        Ok(listening) => {
            let mask: Vec<bool> = targets
                .iter()
                .map(|t| listening.iter().any(|l| sysinfo::serves(*l, *t)))
                .collect();
            if !mask.iter().any(|&m| m) {
                if !sysinfo::same_network_namespace(pid) {
                    // A container's server listens on its own addresses, behind a forwarded
                    // port: what it serves cannot be told from here.
                    tracing::warn!(
                        pid,
                        "process {pid} listens on none of the targets in its own network \
                         namespace: its figures are divided by the connections to every target"
                    );
                    return Ok(None);
                }
                return Err(LoadgenError::NotTheServer {
                    pid,
                    targets: targets
                        .iter()
                        .map(SocketAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            Ok((targets.len() > 1).then_some(mask))
        }
        Err(e) => {
            tracing::warn!(
                pid,
                error = %e,
                "cannot tell which targets process {pid} serves: its figures are divided by the \
                 connections to every target"
            );
            Ok(None)
        }
    }
}

/// Everything one phase runs against.
struct PhaseContext<'a> {
    plan: &'a Plan,
    phase: &'a Phase,
    targets: &'a [SocketAddr],
    embedded: Option<&'a EmbeddedServer>,
    /// See [`server_targets`].
    server_targets: Option<&'a [bool]>,
    shutdown: &'a Shutdown,
}

/// State shared by the workers of one phase.
pub(crate) struct Shared {
    targets: Vec<(SocketAddr, SlotRegistry)>,
    sources: Vec<std::net::IpAddr>,
    timeout: Duration,
    /// Share of connections reset on purpose.
    reset_fraction: f64,
    /// What the phase does with each connection.
    kind: Box<dyn Kind>,
    /// When the phase started, set by the main thread just before it opens `go`.
    timing: OnceLock<Timing>,
    /// Opened once every worker is ready (runtime built) and the "before" readings are taken,
    /// so neither thread start-up nor set-up memory is in the figures.
    go: Gate,
    /// Handshakes left to start; negative once exhausted.
    remaining: AtomicI64,
    /// The user's stop (Ctrl-C).
    shutdown: Shutdown,
    /// The phase's own stop: every attempt of the first second failed the same way.
    stop: AtomicBool,
    ok: AtomicU64,
    /// Failures by kind (for the progress bar and the first-second check).
    failed: [AtomicU64; ErrorKind::ALL.len()],
    /// The first failure's message.
    first_error: OnceLock<String>,
    /// Opened once the kind has kept its connections open as long as it asks.
    release: Gate,
}

/// The phase's clock.
#[derive(Debug, Clone, Copy)]
struct Timing {
    start: Instant,
    warmup_end: Instant,
    deadline: Option<Instant>,
}

impl Timing {
    fn new(start: Instant, phase: &Phase, time_limit: Option<Duration>) -> Self {
        Timing {
            start,
            warmup_end: start + phase.warmup,
            deadline: time_limit.map(|d| start + d),
        }
    }
}

impl Shared {
    /// The phase's clock; only read by workers after `go` opened.
    fn timing(&self) -> &Timing {
        self.timing
            .get()
            .expect("the timing is set before the start gate opens")
    }

    /// Whether the phase must stop starting handshakes.
    fn stopping(&self) -> bool {
        // Relaxed: a flag polled between handshakes.
        self.shutdown.is_triggered() || self.stop.load(Ordering::Relaxed)
    }

    /// Claims the right to start one more handshake meant to start `at`.
    fn may_start(&self, at: Instant) -> bool {
        // An open-loop schedule that fell behind stops at the deadline too: the run ends on
        // time, and the shortfall shows as a rate not achieved.
        !self.stopping()
            && self
                .timing()
                .deadline
                .is_none_or(|d| at < d && Instant::now() < d)
            // Relaxed: a budget counter; each claim only needs to be unique.
            && self.remaining.fetch_sub(1, Ordering::Relaxed) > 0
    }

    /// Counts a failed handshake in the shared tallies.
    fn failed(&self, e: &HandshakeError) {
        // Relaxed: counters for the progress bar and the first-second check.
        self.failed[e.kind().index()].fetch_add(1, Ordering::Relaxed);
        let _ = self.first_error.set(format!("{}: {e}", e.kind().name()));
    }

    fn failed_total(&self) -> u64 {
        // Relaxed: see `failed`.
        self.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }

    /// When every attempt so far failed, all of one kind: why the phase should stop.
    fn all_failed_alike(&self) -> Option<String> {
        // Relaxed: a snapshot of counters; a race only delays the check by a poll.
        let kinds = self
            .failed
            .iter()
            .filter(|f| f.load(Ordering::Relaxed) > 0)
            .count();
        let failed = self.failed_total();
        (self.ok.load(Ordering::Relaxed) == 0 && kinds == 1).then(|| {
            format!(
                "every attempt of the first second (or its first wave) failed the same way \
                 ({} attempts; {})",
                crate::instrument::report::group(failed),
                self.first_error.get().map_or("", String::as_str)
            )
        })
    }
}

/// A one-way gate: workers wait until the main thread opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.cond.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What a worker tells the main thread.
enum Event {
    /// It has built its runtime and waits for `go`.
    Ready,
    /// It has finished opening and waits for `release`.
    Opened,
}

/// Readings taken just before the start gate opens.
struct Before {
    /// The wall clock at the phase's start (for the interval log's timestamps).
    wall: SystemTime,
    rss: Option<u64>,
    server_cpu: Option<Duration>,
    process_cpu: Duration,
    kernel: KernelMemory,
}

/// Readings taken while the kind keeps its connections open.
struct AtFullHold {
    at: Instant,
    rss: Option<u64>,
    kernel: KernelMemory,
    kept: Vec<u64>,
    server_stats: Option<crate::instrument::embedded::ServerStats>,
}

impl Before {
    fn read(plan: &Plan) -> Self {
        Before {
            wall: SystemTime::now(),
            rss: sysinfo::rss(plan.server_pid).ok(),
            server_cpu: plan.server_pid.and_then(|p| sysinfo::pid_cpu(p).ok()),
            process_cpu: sysinfo::process_cpu(),
            kernel: sysinfo::kernel_memory(),
        }
    }
}

impl AtFullHold {
    fn read(ctx: &PhaseContext<'_>, shared: &Shared) -> Self {
        AtFullHold {
            at: Instant::now(),
            rss: sysinfo::rss(ctx.plan.server_pid).ok(),
            kernel: sysinfo::kernel_memory(),
            kept: shared.kind.kept(),
            server_stats: ctx.embedded.and_then(EmbeddedServer::stats),
        }
    }
}

impl Shared {
    /// The state of one phase of `ctx`, before it starts.
    fn new(ctx: &PhaseContext<'_>) -> Self {
        let kind = kind::of(&ctx.phase.kind, ctx.targets.len());
        let budget = kind.budget();
        Shared {
            targets: ctx
                .targets
                .iter()
                .map(|t| (*t, SlotRegistry::new()))
                .collect(),
            sources: ctx
                .plan
                .source_addrs()
                .into_iter()
                .map(std::net::IpAddr::V4)
                .collect(),
            timeout: ctx.plan.timeout,
            reset_fraction: ctx.plan.reset_fraction,
            kind,
            timing: OnceLock::new(),
            go: Gate::default(),
            remaining: AtomicI64::new(i64::try_from(budget).unwrap_or(i64::MAX)),
            shutdown: ctx.shutdown.clone(),
            stop: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            failed: Default::default(),
            first_error: OnceLock::new(),
            release: Gate::default(),
        }
    }

    /// Starts the phase's clock and opens the start gate.
    fn start(&self, phase: &Phase) -> Instant {
        let start = Instant::now();
        let _ = self
            .timing
            .set(Timing::new(start, phase, self.kind.time_limit()));
        self.go.open();
        start
    }

    /// Lets every worker already started run through and exit (a worker could not start).
    fn abandon(&self, phase: &Phase) {
        // Relaxed: a flag polled between handshakes.
        self.stop.store(true, Ordering::Relaxed);
        self.start(phase);
        self.release.open();
    }
}

/// What one phase produced before it is merged.
struct Driven {
    outs: Vec<worker::WorkerOut>,
    before: Before,
    full: AtFullHold,
    stopped_early: Option<String>,
}

fn run_phase(ctx: &PhaseContext<'_>) -> Result<RunReport, LoadgenError> {
    let shared = Arc::new(Shared::new(ctx));
    let driven = drive(ctx, &shared)?;
    let result = merge(ctx, &shared, driven);
    Ok(RunReport::new(
        ctx.plan,
        ctx.phase,
        ctx.targets,
        ctx.embedded.is_some(),
        result,
    ))
}

/// The phase's lifecycle (see the module's docs): workers started, readings, start gate, the
/// wait for every worker to finish opening, the kind's keeping, release, join.
fn drive(ctx: &PhaseContext<'_>, shared: &Arc<Shared>) -> Result<Driven, LoadgenError> {
    let workers = ctx.plan.workers;
    let budget = shared.kind.budget();
    let progress = Progress::new(
        ctx.plan.progress,
        ctx.phase.kind.name(),
        (budget != u64::MAX).then_some(budget),
        shared.kind.time_limit(),
    );
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, mine) = (tx.clone(), shared.clone());
            let pacing = ctx.phase.pacing;
            let spawned = std::thread::Builder::new()
                .name(format!("loadgen-{w}"))
                .spawn_scoped(scope, move || worker::run(w, workers, pacing, &mine, tx));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.abandon(ctx.phase);
                    return Err(LoadgenError::Worker(e));
                }
            }
        }
        drop(tx);
        let finished = || handles.iter().filter(|h| h.is_finished()).count();
        // Every worker ready (or one failed): the "before" readings, then start.
        let mut ready = 0;
        while ready < workers && finished() == 0 {
            if let Ok(Event::Ready) = rx.recv_timeout(Duration::from_millis(100)) {
                ready += 1;
            }
        }
        let before = Before::read(ctx.plan);
        let start = shared.start(ctx.phase);
        // Every worker done opening (a worker that exited early has failed: not waited for).
        let mut opened = 0;
        let mut stopped_early = None;
        let wave = ctx.phase.pacing.in_flight() as u64;
        let timeout = ctx.plan.timeout;
        let mut first_second_checked = false;
        while opened + finished() < workers {
            // Relaxed: progress display only.
            progress.update(shared.ok.load(Ordering::Relaxed), shared.failed_total());
            if let Ok(Event::Opened) = rx.recv_timeout(Duration::from_millis(50)) {
                opened += 1;
            }
            // Relaxed: a snapshot of counters, as in `all_failed_alike`.
            let finished = shared.ok.load(Ordering::Relaxed) + shared.failed_total();
            // After the first second, once a whole wave of attempts has finished (or, for a
            // phase with fewer attempts, one has and a handshake timeout has passed too):
            // against an address that drops packets nothing finishes before the timeout,
            // and the phase must not run on for minutes of identical timeouts; one early
            // failure among attempts still on their way must not stop it either.
            let elapsed = start.elapsed();
            let due = elapsed >= FIRST_SECOND
                && (finished >= wave || (finished > 0 && elapsed >= FIRST_SECOND + timeout));
            if !first_second_checked && due {
                first_second_checked = true;
                stopped_early = shared.all_failed_alike();
                if stopped_early.is_some() {
                    // Relaxed: a flag polled between handshakes.
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        progress.finish();
        // Keep what the kind keeps, read the memory at that moment, release.
        shared.kind.keep_open(ctx.shutdown);
        let full = AtFullHold::read(ctx, shared);
        shared.release.open();
        let mut outs = Vec::with_capacity(handles.len());
        for h in handles {
            outs.push(h.join().map_err(|_| LoadgenError::WorkerPanicked)??);
        }
        Ok(Driven {
            outs,
            before,
            full,
            stopped_early,
        })
    })
}

/// Merges the workers' records and the readings into what the report is built from.
fn merge(ctx: &PhaseContext<'_>, shared: &Shared, driven: Driven) -> PhaseResult {
    let Driven {
        outs,
        before,
        full,
        stopped_early,
    } = driven;
    let mut rec = Recorder::default();
    let mut intervals = Intervals::new(DEFAULT_INTERVAL);
    let mut loadgen_cpu = Duration::ZERO;
    let mut held_slots = vec![Vec::new(); ctx.targets.len()];
    let mut closed_by_server = 0;
    for out in outs {
        rec.merge(&out.rec);
        if let Err(e) = intervals.merge(out.intervals) {
            tracing::warn!(error = %e, "the interval log misses a worker's intervals");
        }
        loadgen_cpu += out.cpu;
        for (all, mine) in held_slots.iter_mut().zip(out.held_slots) {
            all.extend(mine);
        }
        closed_by_server += out.closed_by_server;
    }
    for slots in &mut held_slots {
        slots.sort_unstable();
    }
    let timing = shared.timing();
    let process_cpu = sysinfo::process_cpu().saturating_sub(before.process_cpu);
    let server_cpu = match (ctx.plan.server_pid, before.server_cpu) {
        (Some(pid), Some(b)) => sysinfo::pid_cpu(pid).ok().map(|c| c.saturating_sub(b)),
        _ if ctx.embedded.is_some() => Some(process_cpu.saturating_sub(loadgen_cpu)),
        _ => None,
    };
    // Only the connections to the targets the measured server serves count.
    let counts = |t: usize| ctx.server_targets.is_none_or(|m| m[t]);
    let held: u64 = full
        .kept
        .iter()
        .enumerate()
        .filter(|&(t, _)| counts(t))
        .map(|(_, k)| k)
        .sum();
    let measured = ctx.embedded.is_some() || ctx.plan.server_pid.is_some();
    PhaseResult {
        loadgen_cpu,
        process_cpu,
        server_cpu,
        server_share: ctx.server_targets.map_or(1.0, |m| {
            m.iter().filter(|&&b| b).count() as f64 / m.len() as f64
        }),
        elapsed: full.at - timing.start,
        window: rec.last_completion.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(timing.warmup_end)
        }),
        requested: shared.kind.time_limit(),
        held_slots,
        closed_by_server,
        rss_per_held: before
            .rss
            .zip(full.rss)
            .filter(|_| measured && held > 0)
            .map(|(b, n)| (n as f64 - b as f64) / held as f64),
        kernel_per_held: full.kernel.per_held(&before.kernel, held),
        server_stats: full.server_stats,
        violations: shared
            .targets
            .iter()
            .map(|(_, r)| (r.violations(), r.examples()))
            .collect(),
        stopped_early,
        started_at: before.wall,
        intervals,
        rec,
    }
}
