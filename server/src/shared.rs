//! The state every shard of a server shares: its settings, the slot source, the counters, the
//! descriptor budget, the stop flag with its drain timeout, and the listening sockets that
//! stopping shuts down.
//!
//! It has a module of its own so that the server (which owns the threads), the shards and the
//! connections all depend on it, and not on each other.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::ServerConfig;
use crate::fd_budget::FdBudget;
use crate::slots::SlotSource;
use crate::stats::Counters;

/// `Shared::drain_ms` before the first stop.
const DRAIN_UNSET: u64 = u64::MAX;

/// What every shard shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) slots: Arc<dyn SlotSource + Send + Sync>,
    pub(crate) counters: Counters,
    /// Connections beyond what the descriptor limit holds are refused like those beyond
    /// `max_slots`.
    pub(crate) descriptors: FdBudget,
    stopping: AtomicBool,
    drain_ms: AtomicU64,
    /// The listening sockets (shards own duplicates): shutting one down stops its shard's
    /// pending accept.
    listeners: Vec<TcpListener>,
    local_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn new(
        config: ServerConfig,
        slots: Arc<dyn SlotSource + Send + Sync>,
        descriptors: FdBudget,
        listeners: Vec<TcpListener>,
        local_addr: SocketAddr,
    ) -> Self {
        Self {
            counters: Counters::new(config.shards),
            descriptors,
            config,
            slots,
            stopping: AtomicBool::new(false),
            drain_ms: AtomicU64::new(DRAIN_UNSET),
            listeners,
            local_addr,
        }
    }

    /// The address the server listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn is_stopping(&self) -> bool {
        // Acquire: pairs with the Release in `stop`, so the drain timeout set before is seen.
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        // Relaxed: ordered by the Acquire load of `stopping` that precedes every call.
        Duration::from_millis(self.drain_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn stop(&self, drain: Duration) {
        // The first stop sets the drain timeout; a later one (a second `shutdown`, or dropping
        // the `RunningServer` with its zero drain) does not shorten it. Relaxed: whichever
        // stop's swap a shard sees, that stop's exchange (which wrote or read the value) comes
        // before it, so the shard reads the value set (coherence + the Release swap below).
        let _ = self.drain_ms.compare_exchange(
            DRAIN_UNSET,
            drain.as_millis().min(u128::from(DRAIN_UNSET - 1)) as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        // Release: publishes the drain timeout to shards that see `stopping`.
        if self.stopping.swap(true, Ordering::Release) {
            return;
        }
        for index in 0..self.listeners.len() {
            self.shut_listener(index);
        }
    }

    /// Shuts shard `index`'s listening socket down: its pending accepts fail, and the kernel
    /// sends new connections to the other shards' listeners.
    pub(crate) fn shut_listener(&self, index: usize) {
        // SAFETY: the listener is an open socket owned by `self` (the shard owns a duplicate).
        // SHUT_RD on a listening socket makes its pending accepts fail and takes it out of
        // the SO_REUSEPORT group.
        unsafe { libc::shutdown(self.listeners[index].as_raw_fd(), libc::SHUT_RD) };
    }
}
