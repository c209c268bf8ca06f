//! One worker thread of a phase: its runtime, its closed-loop lanes or open-loop schedule,
//! each handshake, and what it kept open until the phase releases it.
//!
//! With a reset fraction, each worker's own `SmallRng` (seeded by its index, so a run is
//! repeatable) picks the connections to reset and where ([`ResetPoint`]); a reset connection
//! is never kept.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::{Event, LoadgenError, Shared};
use crate::instrument::handshake::{
    Connected, HandshakeError, connect_then_reset, handshake, reset, still_open,
};
use crate::instrument::hlog::{DEFAULT_INTERVAL, IntervalRecorder, Intervals};
use crate::instrument::kind::{Kept, Opened};
use crate::instrument::plan::Pacing;
use crate::instrument::reset::ResetPoint;
use crate::instrument::stats::{LATE_START, Recorder, micros};
use crate::instrument::sysinfo;

/// What one worker hands back.
pub(crate) struct WorkerOut {
    pub(crate) rec: Recorder,
    /// Recorded handshake latencies by interval of the phase.
    pub(crate) intervals: Intervals,
    pub(crate) cpu: Duration,
    /// Slots still held per target when the phase released its connections.
    pub(crate) held_slots: Vec<Vec<u32>>,
    /// Kept connections the server had closed by then.
    pub(crate) closed_by_server: u64,
}

/// One worker's state, shared by its tasks (all on its thread).
struct Local {
    rec: RefCell<Recorder>,
    /// The recorded handshake latencies by interval (for `--hlog`).
    intervals: RefCell<IntervalRecorder>,
    kept: Kept,
    next: Cell<usize>,
    /// Picks the connections reset on purpose.
    rng: RefCell<SmallRng>,
}

impl Local {
    /// Worker `w`'s state for a phase that started at `start`: its round-robin starts at
    /// `w`, its generator is seeded by `w`.
    fn new(w: usize, start: Instant) -> Self {
        Self {
            rec: RefCell::default(),
            intervals: RefCell::new(IntervalRecorder::new(start, DEFAULT_INTERVAL)),
            kept: RefCell::default(),
            next: Cell::new(w),
            rng: RefCell::new(SmallRng::seed_from_u64(w as u64)),
        }
    }
}

/// Worker `w` of `workers`: waits for the start gate, opens its share, reports it is done,
/// waits for the release gate and closes what it kept.
pub(super) fn run(
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
    // The receiver lives until the phase is over.
    let _ = events.send(Event::Ready);
    shared.go.wait();
    let state = Rc::new(Local::new(w, shared.timing().start));
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
    let _ = events.send(Event::Opened);
    shared.release.wait();
    let start = shared.timing().start;
    let recorder = IntervalRecorder::new(start, DEFAULT_INTERVAL);
    let intervals = state
        .intervals
        .replace(recorder)
        .finish()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the interval log of worker {w} is incomplete");
            Intervals::new(DEFAULT_INTERVAL)
        });
    let mut out = WorkerOut {
        rec: state.rec.take(),
        intervals,
        cpu,
        held_slots: vec![Vec::new(); shared.targets.len()],
        closed_by_server: 0,
    };
    let _guard = rt.enter();
    for conn in state.kept.take() {
        if still_open(&conn.stream).unwrap_or(false) {
            out.held_slots[conn.target].push(conn.slot);
        } else {
            out.closed_by_server += 1;
        }
        if conn.registered {
            shared.targets[conn.target].1.release(conn.slot);
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

/// One handshake, recorded; the connection then goes to the phase kind, or, if picked for a
/// reset, is reset at its point instead.
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
    let Connected {
        stream,
        slot,
        connect,
        handshake: latency,
    } = match handshake(*addr, source, shared.timeout, intended).await {
        Ok(c) => c,
        Err(e) => return failed(shared, state, &e),
    };
    // Relaxed: a counter; its value only places this success among the others.
    let index = shared.ok.fetch_add(1, Ordering::Relaxed);
    let recorded = intended >= shared.timing().warmup_end;
    state.rec.borrow_mut().success(connect, latency, recorded);
    if recorded {
        // The latency runs from `intended`: their sum is when the slot line arrived, with no
        // second clock read on the hot path.
        let done = intended + latency;
        if let Err(e) = state.intervals.borrow_mut().record(done, micros(latency)) {
            tracing::warn!(error = %e, "an interval of the interval log was lost");
        }
    }
    let registered = registry.acquire(slot);
    let Some(point) = reset_at else {
        let opened = Opened {
            stream,
            target,
            slot,
            registered,
            index,
            handshake: latency,
            recorded,
        };
        let mut rec = state.rec.borrow_mut();
        return shared.kind.opened(opened, registry, &state.kept, &mut rec);
    };
    let hold = point.hold(&mut *state.rng.borrow_mut());
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    if registered {
        registry.release(slot);
    }
    match reset(stream) {
        Ok(()) => state.rec.borrow_mut().resets.add(point),
        Err(e) => failed(shared, state, &e),
    }
}

/// Counts a failed handshake.
fn failed(shared: &Shared, state: &Local, e: &HandshakeError) {
    state.rec.borrow_mut().errors.add(e);
    shared.failed(e);
}
