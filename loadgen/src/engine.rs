//! The engine: runs each phase on worker threads, each with its own current-thread tokio
//! runtime and its own [`Recorder`], and merges what they measured.
//!
//! Why this shape: a multi-thread runtime would move tasks and wake-ups between cores and
//! share one timer wheel; here every handshake starts, completes and is recorded on one thread,
//! and the only shared writes are two relaxed progress counters, the count budget and the
//! slot-uniqueness bitmap. Closed-loop pacing runs `concurrency` lanes (split over workers),
//! each a loop of handshakes; open-loop pacing gives every worker an equal share of the rate
//! on a fixed schedule, interleaved with the others', and measures each handshake from its
//! intended start (coordinated omission corrected).
//!
//! A hold keeps every connection on its worker until all workers are done opening; the main
//! thread then takes the memory and server readings, and releases them.
//!
//! With a reset fraction, each worker's own `SmallRng` (seeded by its index, so a run is
//! repeatable) picks the connections to reset and where ([`ResetPoint`]); a reset connection
//! is never held.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::TcpStream;

use crate::config::{Config, Pacing, Phase, PhaseKind};
use crate::embedded::{EmbeddedError, EmbeddedServer};
use crate::handshake::{HandshakeError, connect_then_reset, handshake, reset, still_open};
use crate::limits::{self, LimitError};
use crate::progress::Progress;
use crate::registry::SlotRegistry;
use crate::report::{Report, RunReport};
use crate::reset::ResetPoint;
use crate::stats::{LATE_START, PhaseResult, Recorder, micros};
use crate::sysinfo;

/// Why a run failed (as opposed to handshakes failing, which are counted in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The run does not fit the limits, or its configuration is invalid; nothing was started.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The embedded server failed.
    #[error("embedded server: {0}")]
    Embedded(#[from] EmbeddedError),
    /// A worker thread or its runtime could not be created.
    #[error("starting a worker: {0}")]
    Worker(#[source] std::io::Error),
    /// A worker thread panicked (a bug: please report it).
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

/// Asks a run to stop early (Ctrl-C): phases stop starting handshakes, finish the ones in
/// flight and report what they measured.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A trigger that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires it.
    pub fn trigger(&self) {
        // Relaxed: a flag polled between handshakes; no data is published through it.
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it fired.
    pub fn is_triggered(&self) -> bool {
        // Relaxed: see `trigger`.
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs every phase of `config` and returns the report. Checks the limits first and refuses a
/// run that cannot fit them, before anything starts.
pub fn run(config: &Config, shutdown: &Shutdown) -> Result<Report, LoadgenError> {
    let ports = limits::port_plan(config);
    if let Some(warning) = ports.warning() {
        tracing::warn!("{warning}");
    }
    let config = &Config {
        src_ips: Some(ports.src_ips),
        ..config.clone()
    };
    limits::check(config)?;
    let embedded = if config.is_embedded() {
        Some(EmbeddedServer::start(&config.embedded)?)
    } else {
        None
    };
    let targets = match &embedded {
        Some(server) => vec![server.local_addr()],
        None => config.targets.clone(),
    };
    let mut runs = Vec::new();
    for phase in &config.phases {
        if shutdown.is_triggered() {
            break;
        }
        let result = run_phase(config, phase, &targets, embedded.as_ref(), shutdown);
        match result {
            Ok(run) => runs.push(run),
            Err(e) => {
                if let Some(server) = embedded {
                    let _ = server.shutdown();
                }
                return Err(e);
            }
        }
    }
    let embedded_stats = match embedded {
        Some(server) => server.shutdown()?,
        None => None,
    };
    Ok(Report {
        schema: crate::report::SCHEMA,
        runs,
        embedded_final_stats: embedded_stats,
    })
}

/// A connection kept open by a hold.
struct Held {
    stream: TcpStream,
    target: usize,
    slot: u32,
    /// False when the slot was already held (a violation): the registry bit is not ours.
    registered: bool,
}

/// State shared by the workers of one phase.
struct Shared {
    targets: Vec<(SocketAddr, SlotRegistry)>,
    sources: Vec<IpAddr>,
    timeout: Duration,
    /// Share of connections reset on purpose.
    reset_fraction: f64,
    hold: bool,
    /// Hold: connections asked for (the held-count quarters are of this).
    hold_total: u64,
    /// When the phase started, set by the main thread just before it opens `go`.
    timing: OnceLock<Timing>,
    /// Opened once every worker is ready (runtime built) and the "before" readings are taken,
    /// so neither thread start-up nor set-up memory is in the figures.
    go: Gate,
    /// Handshakes left to start; negative once exhausted.
    remaining: AtomicI64,
    shutdown: Shutdown,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Hold: connections kept (successes not reset on purpose).
    kept: AtomicU64,
    release: Gate,
}

/// The phase's clock.
#[derive(Debug, Clone, Copy)]
struct Timing {
    start: Instant,
    warmup_end: Instant,
    deadline: Option<Instant>,
}

impl Shared {
    /// The phase's clock; only read by workers after `go` opened.
    fn timing(&self) -> &Timing {
        self.timing
            .get()
            .expect("the timing is set before the start gate opens")
    }

    /// Claims the right to start one more handshake meant to start `at`.
    fn may_start(&self, at: Instant) -> bool {
        // An open-loop schedule that fell behind stops at the deadline too: the run ends on
        // time, and the shortfall shows as a rate not achieved.
        !self.shutdown.is_triggered()
            && self
                .timing()
                .deadline
                .is_none_or(|d| at < d && Instant::now() < d)
            // Relaxed: a budget counter; each claim only needs to be unique.
            && self.remaining.fetch_sub(1, Ordering::Relaxed) > 0
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

/// One worker's state, shared by its tasks (all on its thread).
struct Local {
    rec: RefCell<Recorder>,
    held: RefCell<Vec<Held>>,
    next: Cell<usize>,
    /// Picks the connections reset on purpose.
    rng: RefCell<SmallRng>,
}

impl Local {
    /// Worker `w`'s state: its round-robin starts at `w`, its generator is seeded by `w`.
    fn new(w: usize) -> Self {
        Self {
            rec: RefCell::default(),
            held: RefCell::default(),
            next: Cell::new(w),
            rng: RefCell::new(SmallRng::seed_from_u64(w as u64)),
        }
    }
}

/// What one worker hands back.
#[derive(Default)]
pub(crate) struct WorkerOut {
    pub(crate) rec: Recorder,
    pub(crate) cpu: Duration,
    /// Hold: slots held per target at the snapshot.
    pub(crate) held_slots: Vec<Vec<u32>>,
    /// Hold: connections found closed by the server at the end of the hold.
    pub(crate) closed_by_server: u64,
}

enum Event {
    /// A worker has built its runtime and waits for `go`.
    Ready,
    /// Hold: a worker has opened its share and waits for `release`.
    Opened,
}

fn run_phase(
    config: &Config,
    phase: &Phase,
    targets: &[SocketAddr],
    embedded: Option<&EmbeddedServer>,
    shutdown: &Shutdown,
) -> Result<RunReport, LoadgenError> {
    let (hold, budget, duration) = match phase.kind {
        PhaseKind::Churn { duration, count } => (false, count.unwrap_or(u64::MAX), duration),
        PhaseKind::Hold { connections, .. } => (true, connections, None),
    };
    let workers = config.workers;
    let rss_pid = config.server_pid;
    let shared = Arc::new(Shared {
        targets: targets.iter().map(|t| (*t, SlotRegistry::new())).collect(),
        sources: config.source_addrs().into_iter().map(IpAddr::V4).collect(),
        timeout: config.timeout,
        reset_fraction: config.reset_fraction,
        hold,
        hold_total: if hold { budget } else { 0 },
        timing: OnceLock::new(),
        go: Gate::default(),
        remaining: AtomicI64::new(i64::try_from(budget).unwrap_or(i64::MAX)),
        shutdown: shutdown.clone(),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        kept: AtomicU64::new(0),
        release: Gate::default(),
    });
    let progress = Progress::new(
        config.progress,
        phase.kind.name(),
        (budget != u64::MAX).then_some(budget),
        duration,
    );
    let (tx, rx) = mpsc::channel::<Event>();

    let mut snapshot = None;
    let mut opened_at = None;
    let mut before = None;
    let outs = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let tx = tx.clone();
            let mine = shared.clone();
            let pacing = phase.pacing;
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{w}"))
                .spawn_scoped(scope, move || worker(w, workers, pacing, &mine, tx))
                .map_err(LoadgenError::Worker);
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.shutdown.trigger();
                    let _ = shared.timing.set(timing(Instant::now(), phase, duration));
                    shared.go.open();
                    shared.release.open();
                    return Err(e);
                }
            }
        }
        drop(tx);
        // Wait until every worker is ready (or one failed), take the "before" readings, start.
        let mut ready = 0;
        while ready < workers && !handles.iter().any(|h| h.is_finished()) {
            if let Ok(Event::Ready) = rx.recv_timeout(Duration::from_millis(100)) {
                ready += 1;
            }
        }
        before = Some((
            (hold && (embedded.is_some() || rss_pid.is_some()))
                .then(|| sysinfo::rss(rss_pid).ok())
                .flatten(),
            config.server_pid.and_then(|p| sysinfo::pid_cpu(p).ok()),
            sysinfo::process_cpu(),
            hold.then(sysinfo::kernel_memory),
        ));
        let _ = shared.timing.set(timing(Instant::now(), phase, duration));
        shared.go.open();
        // Wait for the workers (for a hold: until every one has opened its share), updating
        // the progress bar.
        let mut opened = 0;
        loop {
            // Relaxed: progress display only.
            progress.update(
                shared.ok.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
            );
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Opened) => opened += 1,
                Ok(Event::Ready) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            // A worker that finished during a hold has failed: stop waiting for it.
            if hold && (opened == workers || handles.iter().any(|h| h.is_finished())) {
                break;
            }
            if !hold && handles.iter().all(|h| h.is_finished()) {
                break;
            }
        }
        progress.finish();
        if hold {
            opened_at = Some(Instant::now());
            if let PhaseKind::Hold { hold_for, .. } = phase.kind {
                let until = Instant::now() + hold_for;
                while Instant::now() < until && !shutdown.is_triggered() {
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
                }
            }
            // Relaxed: every worker has reported `Opened` (a channel send) after its last store.
            let held = shared.kept.load(Ordering::Relaxed);
            let rss_now = sysinfo::rss(rss_pid).ok();
            let kernel_now = sysinfo::kernel_memory();
            snapshot = Some((
                before
                    .and_then(|b| b.0)
                    .zip(rss_now)
                    .filter(|_| held > 0)
                    .map(|(b, n)| (n as f64 - b as f64) / held as f64),
                before
                    .and_then(|b| b.3)
                    .and_then(|b| kernel_now.per_held(&b, held)),
                embedded.and_then(EmbeddedServer::stats),
            ));
        }
        shared.release.open();
        let mut outs = Vec::with_capacity(workers);
        for h in handles {
            outs.push(h.join().map_err(|_| LoadgenError::WorkerPanicked)?);
        }
        outs.into_iter().collect::<Result<Vec<_>, _>>()
    })?;

    let end = opened_at.unwrap_or_else(Instant::now);
    let (_, server_cpu_before, process_cpu_before, _) =
        before.unwrap_or((None, None, Duration::ZERO, None));
    let Timing {
        start, warmup_end, ..
    } = *shared.timing();
    let mut rec = Recorder::default();
    let mut loadgen_cpu = Duration::ZERO;
    let mut held_slots = vec![Vec::new(); targets.len()];
    let mut closed_by_server = 0;
    for out in &outs {
        rec.merge(&out.rec);
        loadgen_cpu += out.cpu;
        for (all, mine) in held_slots.iter_mut().zip(&out.held_slots) {
            all.extend_from_slice(mine);
        }
        closed_by_server += out.closed_by_server;
    }
    for slots in &mut held_slots {
        slots.sort_unstable();
    }
    let process_cpu = sysinfo::process_cpu().saturating_sub(process_cpu_before);
    let server_cpu = match (config.server_pid, server_cpu_before) {
        (Some(pid), Some(before)) => sysinfo::pid_cpu(pid).ok().map(|c| c.saturating_sub(before)),
        _ if embedded.is_some() => Some(process_cpu.saturating_sub(loadgen_cpu)),
        _ => None,
    };
    let window_start = warmup_end;
    let window = rec.last_completion.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(window_start)
    });
    let (rss_per_held, kernel_per_held, server_stats) = match snapshot {
        Some((rss, kernel, stats)) => (rss, kernel, stats),
        None => (None, None, embedded.and_then(EmbeddedServer::stats)),
    };
    let result = PhaseResult {
        rec,
        loadgen_cpu,
        process_cpu,
        server_cpu,
        elapsed: end - start,
        window,
        held_slots,
        closed_by_server,
        rss_per_held,
        kernel_per_held,
        server_stats,
        violations: shared
            .targets
            .iter()
            .map(|(_, r)| (r.violations(), r.examples()))
            .collect(),
    };
    Ok(RunReport::new(
        config,
        phase,
        targets,
        embedded.is_some(),
        result,
    ))
}

/// The clock of a phase starting at `start`.
fn timing(start: Instant, phase: &Phase, duration: Option<Duration>) -> Timing {
    Timing {
        start,
        warmup_end: start + phase.warmup,
        deadline: duration.map(|d| start + d),
    }
}

/// One worker thread: its runtime, its lanes or schedule, and for a hold its connections.
fn worker(
    w: usize,
    workers: usize,
    pacing: Pacing,
    shared: &Arc<Shared>,
    events: mpsc::Sender<Event>,
) -> Result<WorkerOut, LoadgenError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadgenError::Worker)?;
    let local = tokio::task::LocalSet::new();
    let state = Rc::new(Local::new(w));
    // The receiver lives until the phase is over.
    let _ = events.send(Event::Ready);
    shared.go.wait();
    let cpu_before = sysinfo::thread_cpu();
    local.block_on(&rt, async {
        match pacing {
            Pacing::Closed { concurrency } => {
                let lanes = concurrency / workers + usize::from(w < concurrency % workers);
                let tasks: Vec<_> = (0..lanes)
                    .map(|_| tokio::task::spawn_local(lane(shared.clone(), state.clone())))
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            }
            Pacing::Open {
                rate,
                max_in_flight,
            } => open_loop(w, workers, rate, max_in_flight, shared, &state).await,
        }
    });
    let cpu = sysinfo::thread_cpu().saturating_sub(cpu_before);
    let mut out = WorkerOut {
        rec: state.rec.take(),
        cpu,
        held_slots: vec![Vec::new(); shared.targets.len()],
        closed_by_server: 0,
    };
    if shared.hold {
        // The receiver only goes away once the phase is over.
        let _ = events.send(Event::Opened);
        shared.release.wait();
        let _guard = rt.enter();
        for held in state.held.take() {
            if still_open(&held.stream).unwrap_or(false) {
                out.held_slots[held.target].push(held.slot);
            } else {
                out.closed_by_server += 1;
            }
            if held.registered {
                shared.targets[held.target].1.release(held.slot);
            }
            drop(held.stream);
        }
    }
    Ok(out)
}

/// A closed-loop lane: one handshake at a time, back to back.
async fn lane(shared: Arc<Shared>, state: Rc<Local>) {
    loop {
        let now = Instant::now();
        if !shared.may_start(now) {
            break;
        }
        one(&shared, &state, now).await;
    }
}

/// Open loop: this worker's share of `rate`, on a fixed schedule interleaved with the other
/// workers', each handshake measured from its intended start.
async fn open_loop(
    w: usize,
    workers: usize,
    rate: f64,
    max_in_flight: usize,
    shared: &Arc<Shared>,
    state: &Rc<Local>,
) {
    let period = workers as f64 / rate;
    let offset = w as f64 / rate;
    let permits = max_in_flight.div_ceil(workers).max(1);
    let limiter = Arc::new(tokio::sync::Semaphore::new(permits));
    for k in 0u64.. {
        let intended = shared.timing().start + Duration::from_secs_f64(offset + k as f64 * period);
        if !shared.may_start(intended) {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        // The semaphore is never closed.
        let Ok(permit) = limiter.clone().acquire_owned().await else {
            break;
        };
        {
            let mut rec = state.rec.borrow_mut();
            rec.started += 1;
            if intended.elapsed() > LATE_START {
                rec.late_starts += 1;
            }
        }
        let (shared, state) = (shared.clone(), state.clone());
        tokio::task::spawn_local(async move {
            one(&shared, &state, intended).await;
            drop(permit);
        });
    }
    // Wait for every handshake still in flight.
    let _ = limiter.acquire_many(permits as u32).await;
}

/// One handshake, recorded; for a hold, the connection is kept; if picked for a reset, it is
/// reset at its point instead.
async fn one(shared: &Shared, state: &Local, intended: Instant) {
    let i = state.next.get();
    state.next.set(i.wrapping_add(1));
    let target = i % shared.targets.len();
    let source = (!shared.sources.is_empty()).then(|| shared.sources[i % shared.sources.len()]);
    let (addr, registry) = &shared.targets[target];
    let reset_at = ResetPoint::choose(&mut *state.rng.borrow_mut(), shared.reset_fraction);
    if reset_at == Some(ResetPoint::AfterConnect) {
        match connect_then_reset(*addr, source, shared.timeout).await {
            Ok(()) => state.rec.borrow_mut().resets.add(ResetPoint::AfterConnect),
            Err(e) => failed(shared, state, &e),
        }
        return;
    }
    match handshake(*addr, source, shared.timeout, intended).await {
        Ok(c) => {
            // Relaxed: a counter; its value only places this success among the others.
            let index = shared.ok.fetch_add(1, Ordering::Relaxed);
            {
                let mut rec = state.rec.borrow_mut();
                let recorded = intended >= shared.timing().warmup_end;
                rec.success(c.connect, c.handshake, recorded);
                if shared.hold && recorded && reset_at.is_none() {
                    // The quarter of the hold this connection was opened in: its latency was
                    // measured with about `index` connections already held.
                    let quarter =
                        (index.saturating_mul(4) / shared.hold_total.max(1)).min(3) as usize;
                    rec.by_held_quarter[quarter].saturating_record(micros(c.handshake));
                }
            }
            let registered = registry.acquire(c.slot);
            if let Some(point) = reset_at {
                let hold = point.hold(&mut *state.rng.borrow_mut());
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                if registered {
                    registry.release(c.slot);
                }
                match reset(c.stream) {
                    Ok(()) => state.rec.borrow_mut().resets.add(point),
                    Err(e) => failed(shared, state, &e),
                }
            } else if shared.hold {
                // Relaxed: a count, read by the main thread once every worker has opened.
                shared.kept.fetch_add(1, Ordering::Relaxed);
                state.held.borrow_mut().push(Held {
                    stream: c.stream,
                    target,
                    slot: c.slot,
                    registered,
                });
            } else {
                if registered {
                    registry.release(c.slot);
                }
                drop(c.stream);
            }
        }
        Err(e) => failed(shared, state, &e),
    }
}

/// Counts a failed handshake.
fn failed(shared: &Shared, state: &Local, e: &HandshakeError) {
    state.rec.borrow_mut().errors.add(e);
    // Relaxed: progress display only.
    shared.failed.fetch_add(1, Ordering::Relaxed);
}
