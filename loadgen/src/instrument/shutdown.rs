//! The user's request to stop a run early (Ctrl-C), shared by the engine, the phase kinds and
//! whoever holds the trigger.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
