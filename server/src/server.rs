//! The server as a whole: the builder that starts it, the running server that owns its shard
//! threads, and the cloneable handle that stops it and reads its counters.
//!
//! Start-up does everything that can fail before any shard runs (configuration, descriptor
//! limits, binding every listener, each shard's io_uring), so `start` either returns a server
//! that serves or a clear error, and no thread is left behind.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Keepalive, ServerConfig};
use crate::error::ServerError;
use crate::fd_budget::{self, FdBudget};
use crate::handler::{Handler, Hold};
use crate::limits;
use crate::listener::bind_shard_listeners;
use crate::shard;
use crate::shared::Shared;
use crate::slots::{SlotSource, Slots};
use crate::stats::Stats;

/// Entry point: `Server::builder().port(4040).start()?`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults of [`ServerConfig`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Collects a server's settings; [`start`](Self::start) binds and runs it.
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    slot_source: Option<Arc<dyn SlotSource + Send + Sync>>,
}

impl ServerBuilder {
    /// Address to listen on. Default: `0.0.0.0`.
    pub fn host(mut self, host: IpAddr) -> Self {
        self.config.host = host;
        self
    }

    /// Port to listen on; 0 picks a free one. Default: 4040.
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }

    /// Number of shards (threads). Default: the available cores.
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Slots of the default allocator (connections beyond are refused). Default: 1,000,000.
    pub fn max_slots(mut self, max_slots: u32) -> Self {
        self.config.max_slots = max_slots;
        self
    }

    /// Listen backlog per shard. Default: 4096.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Pin each shard to a core of its own; only worth it where those cores are reserved
    /// for the server (see [`ServerConfig::pin`]). Default: off.
    pub fn pin(mut self, pin: bool) -> Self {
        self.config.pin = pin;
        self
    }

    /// TCP keepalive of accepted connections; `None` turns it off. Default: 120 s idle, then
    /// a probe every 30 s, dropped after 4 unanswered.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.config.keepalive = keepalive;
        self
    }

    /// Submission queue entries of each shard's io_uring (a power of two). Default: 2048.
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.config.ring_entries = entries;
        self
    }

    /// Takes slots from `source` instead of the default lowest-first allocator (which
    /// `max_slots` sizes). The server calls `release` exactly once per acquired slot, after
    /// the connection is shut down.
    pub fn slot_source<S: SlotSource + Send + Sync + 'static>(mut self, source: S) -> Self {
        self.slot_source = Some(Arc::new(source));
        self
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts a server that holds each connection open, discarding input, until its peer
    /// closes it (the plain Callosum server).
    pub fn start(self) -> Result<RunningServer, ServerError> {
        self.start_with(Hold)
    }

    /// Starts a server that gives every connection to `handler` after its slot line.
    pub fn start_with<H: Handler>(self, handler: H) -> Result<RunningServer, ServerError> {
        let config = self.config;
        config.validate()?;
        let (descriptors, short) = descriptor_budget(&config, self.slot_source.is_none());
        let slots = self
            .slot_source
            .unwrap_or_else(|| Arc::new(Slots::new(config.max_slots)));
        let listeners = bind_shard_listeners(&config)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.addr(),
                source,
            })?;
        let shard_listeners = listeners
            .iter()
            .map(TcpListener::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServerError::Listen {
                addr: local_addr,
                source,
            })?;
        let shared = Arc::new(Shared::new(
            config,
            slots,
            descriptors,
            listeners,
            local_addr,
        ));

        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(shared.config.shards);
        let mut failure = None;
        for (index, listener) in shard_listeners.into_iter().enumerate() {
            let (shared, handler, ready) = (shared.clone(), handler.clone(), ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("callosum-shard-{index}"))
                .spawn(move || shard::run(index, listener, shared, handler, ready));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    failure = Some(ServerError::Spawn {
                        shard: index,
                        source,
                    });
                    break;
                }
            }
        }
        drop(ready_tx);
        for index in 0..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    failure.get_or_insert(err);
                }
                Err(_) => {
                    // Every shard not yet heard from ended without a word, so no message will
                    // come: name one that has finished (threads are in shard order). Its
                    // thread drops its sender while unwinding, a moment before it counts as
                    // finished, so wait for that moment (briefly).
                    let waited = std::time::Instant::now();
                    let shard = loop {
                        if let Some(i) = threads.iter().position(|t| t.is_finished()) {
                            break i;
                        }
                        if waited.elapsed() > Duration::from_secs(1) {
                            break index;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    failure.get_or_insert(ServerError::ShardPanicked { shard });
                    break;
                }
            }
        }
        let running = RunningServer {
            handle: ServerHandle { shared },
            threads,
        };
        if let Some(err) = failure {
            let _ = running.shutdown(Duration::ZERO);
            return Err(err);
        }
        // Only a server that started warns that it cannot hold `max_slots`: one that failed
        // to start prints its one error and nothing else.
        if let Some(short) = short {
            short.warn();
        }
        // The one line that says the server serves, and where (`RunningServer::wait` logs
        // the other end, "stopped").
        tracing::info!(
            addr = %local_addr,
            shards = running.threads.len(),
            descriptor_capacity = running.handle.shared.descriptors.capacity(),
            "listening"
        );
        Ok(running)
    }
}

/// Raises the descriptor limit, grows the descriptor table up front, and sizes the server's
/// descriptor budget: the limit less a reserve for the server's own descriptors (see
/// [`crate::fd_budget`]). Also says whether the default allocator's `max_slots` does not fit,
/// for the server to warn of once it has started.
fn descriptor_budget(
    config: &ServerConfig,
    default_slots: bool,
) -> (FdBudget, Option<ShortOfSlots>) {
    let limit = match limits::raise_nofile_limit() {
        Ok(limit) => {
            if let Err(err) = limits::grow_fd_table(limit) {
                tracing::warn!(error = %err, "could not grow the descriptor table up front");
            }
            Some(limit)
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not raise RLIMIT_NOFILE");
            limits::nofile_limit().ok()
        }
    };
    let Some(limit) = limit else {
        // Unknown: count on the accept path's shedding alone.
        return (FdBudget::new(u64::MAX, config.shards), None);
    };
    // Before any listener is bound: they are part of the per-shard reserve.
    let open = limits::open_descriptors().unwrap_or(64);
    let reserve = fd_budget::reserve(open, config.shards, crate::accept::IN_FLIGHT);
    let capacity = limit.saturating_sub(reserve);
    let short = (default_slots && capacity < u64::from(config.max_slots)).then_some(
        ShortOfSlots {
            limit,
            capacity,
            max_slots: config.max_slots,
        },
    );
    (FdBudget::new(capacity, config.shards), short)
}

/// The descriptor limit holds fewer connections than `max_slots`.
struct ShortOfSlots {
    limit: u64,
    capacity: u64,
    max_slots: u32,
}

impl ShortOfSlots {
    fn warn(&self) {
        let Self {
            limit,
            capacity,
            max_slots,
        } = *self;
        tracing::warn!(
            descriptor_limit = limit,
            capacity,
            max_slots,
            "the descriptor limit ({limit}) holds only {capacity} connections, fewer than \
             max_slots ({max_slots}): connections beyond {capacity} are refused; raise \
             RLIMIT_NOFILE (ulimit -n) above {} to hold them all",
            u64::from(max_slots) + (limit - capacity),
        );
    }
}

/// A cloneable handle on a running server: stop it, read its counters. `Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Stops accepting at once, lets open connections finish for up to `drain`, then shuts
    /// the rest down. Returns immediately; [`RunningServer::wait`] waits for the end. Only the
    /// first call counts: a later one (or dropping the [`RunningServer`]) keeps its drain.
    pub fn shutdown(&self, drain: Duration) {
        self.shared.stop(drain);
    }

    /// Whether a shutdown was asked for.
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }

    /// The server's counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The slots of the default allocator (`max_slots`; a custom slot source may hold fewer).
    pub fn max_slots(&self) -> u32 {
        self.shared.config.max_slots
    }

    /// How many connections the descriptor limit lets the server hold at once (beyond them,
    /// connections are refused as beyond `max_slots`).
    pub fn descriptor_capacity(&self) -> u64 {
        self.shared.descriptors.capacity()
    }

    /// The address the server listens on (with the port resolved when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr()
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr())
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

/// A started server. Dropping it stops it without a drain and waits for its shards.
#[derive(Debug)]
pub struct RunningServer {
    handle: ServerHandle,
    threads: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The server's counters now.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// A handle to stop the server or read its counters from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops the server (see [`ServerHandle::shutdown`]) and waits until every shard is done.
    pub fn shutdown(self, drain: Duration) -> Result<Stats, ServerError> {
        self.handle.shutdown(drain);
        self.wait()
    }

    /// Waits until the server has been stopped (through a handle) and every shard is done;
    /// returns the final counters, which it also logs as one line ("stopped").
    pub fn wait(mut self) -> Result<Stats, ServerError> {
        let mut result = Ok(());
        for (shard, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                result = Err(ServerError::ShardPanicked { shard });
            }
        }
        let stats = self.handle.stats();
        tracing::info!(
            addr = %self.handle.local_addr(),
            accepted = stats.accepted,
            refused = stats.refused,
            active = stats.active,
            high_water = stats.high_water,
            accept_errors = stats.accept_errors,
            handshake_errors = stats.handshake_errors,
            handler_panics = stats.handler_panics,
            "stopped"
        );
        result.map(|()| stats)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.handle.shutdown(Duration::ZERO);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
