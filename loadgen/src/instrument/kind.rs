//! The phase kinds, seen by the engine: what a phase does with each connection it opens and
//! how long it keeps them.
//!
//! Why a trait: churn and hold run the same machinery (workers, pacing, recording, the start
//! and release gates); they differ only in how many handshakes to start, whether an open
//! connection closes at once or is kept, and what happens while every kept connection is
//! open. [`Churn`] and [`Hold`] say exactly that, so the engine carries no flag for the kind.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::instrument::plan::PhaseKind;
use crate::instrument::registry::SlotRegistry;
use crate::instrument::shutdown::Shutdown;
use crate::instrument::stats::{Recorder, micros};

/// A connection whose handshake succeeded and that was not picked for a reset.
pub struct Opened {
    /// The connection.
    pub stream: TcpStream,
    /// Index of its target.
    pub target: usize,
    /// The slot the server assigned.
    pub slot: u32,
    /// False when the slot was already held (a violation): the registry bit is not ours.
    pub registered: bool,
    /// How many successes of the phase came before this one.
    pub index: u64,
    /// Its handshake latency.
    pub handshake: Duration,
    /// Whether it was recorded (started after the warmup).
    pub recorded: bool,
}

/// One worker's connections kept open until the phase releases them.
pub type Kept = RefCell<Vec<Opened>>;

/// What distinguishes one phase kind from another.
pub trait Kind: Send + Sync {
    /// Most handshakes to start (`u64::MAX`: no bound).
    fn budget(&self) -> u64;
    /// Stop starting handshakes this long after the phase starts.
    fn time_limit(&self) -> Option<Duration>;
    /// On a worker, for each connection opened: close it now, or keep it in `kept`.
    fn opened(&self, conn: Opened, registry: &SlotRegistry, kept: &Kept, rec: &mut Recorder);
    /// On the main thread, once every worker has finished opening and before they release
    /// what they kept: keep everything open as long as the phase asks.
    fn keep_open(&self, _shutdown: &Shutdown) {}
    /// Connections kept per target at this moment (empty: none kept).
    fn kept(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// The engine's view of a plan's phase kind.
pub fn of(kind: &PhaseKind, targets: usize) -> Box<dyn Kind> {
    match *kind {
        PhaseKind::Churn { duration, count } => Box::new(Churn {
            budget: count.unwrap_or(u64::MAX),
            time_limit: duration,
        }),
        PhaseKind::Hold {
            connections,
            hold_for,
        } => Box::new(Hold {
            connections,
            hold_for,
            kept: (0..targets).map(|_| AtomicU64::new(0)).collect(),
        }),
    }
}

/// Connect, read the slot, close.
pub struct Churn {
    budget: u64,
    time_limit: Option<Duration>,
}

impl Kind for Churn {
    fn budget(&self) -> u64 {
        self.budget
    }

    fn time_limit(&self) -> Option<Duration> {
        self.time_limit
    }

    fn opened(&self, conn: Opened, registry: &SlotRegistry, _: &Kept, _: &mut Recorder) {
        if conn.registered {
            registry.release(conn.slot);
        }
    }
}

/// Open every connection and keep them all open until the last one is open, then `hold_for`.
pub struct Hold {
    connections: u64,
    hold_for: Duration,
    /// Per target, connections kept so far.
    kept: Vec<AtomicU64>,
}

impl Kind for Hold {
    fn budget(&self) -> u64 {
        self.connections
    }

    fn time_limit(&self) -> Option<Duration> {
        None
    }

    fn opened(&self, conn: Opened, _: &SlotRegistry, kept: &Kept, rec: &mut Recorder) {
        if conn.recorded {
            // The quarter of the hold this connection was opened in: its latency was measured
            // with about `index` connections already held.
            let quarter = (conn.index.saturating_mul(4) / self.connections.max(1)).min(3) as usize;
            rec.by_held_quarter[quarter].saturating_record(micros(conn.handshake));
        }
        // Relaxed: a count, read by the main thread once every worker has reported that it
        // finished opening (a channel send after its last store).
        self.kept[conn.target].fetch_add(1, Ordering::Relaxed);
        kept.borrow_mut().push(conn);
    }

    fn keep_open(&self, shutdown: &Shutdown) {
        let until = std::time::Instant::now() + self.hold_for;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if left.is_zero() || shutdown.is_triggered() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn kept(&self) -> Vec<u64> {
        // Relaxed: see `opened`.
        self.kept
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .collect()
    }
}
