//! The roving client: a [`Rover`] feeding a [`Pool`], the everyday entry point.
//!
//! A background task takes the rover's events: each one is a rover tick, so it first retires
//! the pool's connections past their maximum age (improved policy only), then offers a new
//! connection to the pool (after a prune of idle connections the servers closed, when the
//! pool is full) with its server, and counts the outcome. The user only calls
//! [`RovingClient::acquire`] and gets a lease on the lowest-slot idle connection (under the
//! improved policy, the best by the policy's cost). Dropping the client stops the rover and
//! the task; connections still leased are closed when their leases end.
//!
//! The pool policy defaults to the original rules, for compatibility with the original
//! library; `.pool_policy(PoolPolicy::improved())` switches to the improved Callosum policy,
//! whose maximum age the builder settles from the roving interval (10 intervals, at least
//! 2 × `max_slots` intervals).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::handshake::Prefixed;
use crate::pool::{AcquireError, Lease, Liveness, Offer, Pool, PoolError, PoolPolicy, ServerKey};
use crate::rover::{
    Backoff, InvalidServerId, Rover, RoverError, RoverEvent, RoverEvents, RoverOptions, ServerId,
};

/// A pooled connection: the server it goes to, its slot, and the stream (positioned after
/// the slot line). Reads and writes go to the stream.
#[derive(Debug)]
pub struct Connection {
    server: ServerId,
    slot: u32,
    stream: Prefixed<TcpStream>,
}

impl Connection {
    /// The server's id.
    pub fn server(&self) -> &ServerId {
        &self.server
    }

    /// The slot the server assigned.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The stream.
    pub fn stream(&mut self) -> &mut Prefixed<TcpStream> {
        &mut self.stream
    }
}

impl Liveness for Connection {
    fn is_alive(&self) -> bool {
        self.stream.is_alive()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Event counts since the client started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections the pool kept (replacements included).
    pub kept: u64,
    /// Connections the pool refused (slot not better than its worst).
    pub rejected: u64,
    /// Connections evicted by a lower-slot newcomer.
    pub evicted: u64,
    /// Connections retired past their maximum age (improved policy).
    pub retired: u64,
    /// Failed connects.
    pub unreachable: u64,
    /// Handshake violations (malformed line, early close, handshake timeout).
    pub protocol_errors: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    kept: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    retired: AtomicU64,
    unreachable: AtomicU64,
    protocol_errors: AtomicU64,
}

impl AtomicCounters {
    fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: independent statistics; no other memory is published through them.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counters {
        // Relaxed: a statistics snapshot, each value read on its own.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            kept: get(&self.kept),
            rejected: get(&self.rejected),
            evicted: get(&self.evicted),
            retired: get(&self.retired),
            unreachable: get(&self.unreachable),
            protocol_errors: get(&self.protocol_errors),
        }
    }
}

/// Why a roving client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A server id is not `host:port`.
    #[error(transparent)]
    Server(#[from] InvalidServerId),
    /// The pool settings are invalid (`max_slots` 0).
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Settings of a [`RovingClient`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RovingClientBuilder {
    servers: Vec<String>,
    rover: RoverOptions,
    pool: PoolPolicy,
    acquire_timeout: Option<Duration>,
}

/// Default wait of [`RovingClient::acquire`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl RovingClientBuilder {
    /// Adds a server (`host:port`). Default: none (add them later with
    /// [`RovingClient::add_server`]).
    pub fn server(mut self, id: impl Into<String>) -> Self {
        self.servers.push(id.into());
        self
    }

    /// Adds servers (`host:port` each).
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.servers.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Most connections kept. Default 100; 0 fails the build.
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.pool = self.pool.max_slots(max_slots);
        self
    }

    /// The whole pool policy (replaces `max_slots` set before). Default: the original rules
    /// ([`PoolPolicy::original`]), for compatibility; [`PoolPolicy::improved`] is the
    /// improved Callosum policy (`docs/balance.md`). Its maximum age is settled at `build`
    /// from the roving interval: 10 intervals by default, never below 2 × `max_slots`.
    pub fn pool_policy(mut self, policy: PoolPolicy) -> Self {
        self.pool = policy;
        self
    }

    /// Time between connection attempts. Default 1 s.
    pub fn roving_interval(mut self, interval: Duration) -> Self {
        self.rover = self.rover.roving_interval(interval);
        self
    }

    /// Connect timeout (name resolution included). Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.rover = self.rover.connect_timeout(timeout);
        self
    }

    /// Time a server has to send its slot line. Default 5 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.rover = self.rover.handshake_timeout(timeout);
        self
    }

    /// Backoff of unreachable servers; `None` is the original behaviour. Default on
    /// (1 s × 1.6 per failure, ±20 %, at most 120 s).
    pub fn backoff(mut self, backoff: Option<Backoff>) -> Self {
        self.rover = self.rover.backoff(backoff);
        self
    }

    /// How long [`RovingClient::acquire`] waits for an idle connection. Default 5 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Builds the client and starts roving. Must be called within a tokio runtime.
    pub fn build(self) -> Result<RovingClient, BuildError> {
        let interval = self.rover.get_roving_interval();
        let pool = Pool::with_policy(self.pool.for_roving_interval(interval))?;
        let rover = Rover::new(self.rover);
        for id in &self.servers {
            rover.add_server(id)?;
        }
        let counters = Arc::new(AtomicCounters::default());
        let events = rover.start();
        let task = tokio::spawn(feed(events, pool.clone(), counters.clone()));
        Ok(RovingClient {
            rover,
            pool,
            counters,
            task,
            acquire_timeout: self.acquire_timeout.unwrap_or(DEFAULT_ACQUIRE_TIMEOUT),
        })
    }
}

/// The rover feeding the pool. Dropping it stops roving.
#[derive(Debug)]
pub struct RovingClient {
    rover: Rover,
    pool: Pool<Connection>,
    counters: Arc<AtomicCounters>,
    task: JoinHandle<()>,
    acquire_timeout: Duration,
}

impl RovingClient {
    /// Settings, with the defaults.
    pub fn builder() -> RovingClientBuilder {
        RovingClientBuilder::default()
    }

    /// A lease on the lowest-slot idle connection (the best by the pool policy), waiting up
    /// to the acquire timeout.
    pub async fn acquire(&self) -> Result<Lease<Connection>, AcquireError> {
        self.pool.acquire(self.acquire_timeout).await
    }

    /// A lease on the lowest-slot idle connection, if one is idle now.
    pub fn try_acquire(&self) -> Option<Lease<Connection>> {
        self.pool.get()
    }

    /// Adds a server (`host:port`) while roving; the same id resets its backoff.
    pub fn add_server(&self, id: &str) -> Result<ServerId, InvalidServerId> {
        self.rover.add_server(id)
    }

    /// Removes a server; its pooled connections stay until evicted or closed.
    pub fn drop_server(&self, id: &str) -> bool {
        self.rover.drop_server(id)
    }

    /// The server ids, sorted.
    pub fn servers(&self) -> Vec<ServerId> {
        self.rover.servers()
    }

    /// The pool (sizes, held slots).
    pub fn pool(&self) -> &Pool<Connection> {
        &self.pool
    }

    /// Event counts so far.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }
}

impl Drop for RovingClient {
    fn drop(&mut self) {
        self.rover.stop();
        self.task.abort();
    }
}

/// Numbers the servers for the pool ([`ServerKey`]): the same id always gets the same key.
/// Grows with the distinct ids seen, which the user chose.
#[derive(Debug, Default)]
struct ServerKeys(HashMap<ServerId, ServerKey>);

impl ServerKeys {
    fn key(&mut self, server: &ServerId) -> ServerKey {
        let next = ServerKey(self.0.len() as u64);
        *self.0.entry(server.clone()).or_insert(next)
    }
}

/// Takes the rover's events into the pool and the counters.
async fn feed(
    mut events: RoverEvents<TcpStream>,
    pool: Pool<Connection>,
    counters: Arc<AtomicCounters>,
) {
    let mut keys = ServerKeys::default();
    while let Some(event) = events.recv().await {
        // Each event is one rover tick: retire expired connections before the probe's
        // connection is offered (a no-op without a maximum age).
        let retired = pool.retire_expired(tokio::time::Instant::now());
        AtomicCounters::add(&counters.retired, retired as u64);
        match event {
            RoverEvent::Connected {
                server,
                slot,
                stream,
                ..
            } => {
                // Dead idle connections must not make a full pool refuse a live one.
                if pool.len() >= pool.max_slots() {
                    let pruned = pool.prune();
                    if pruned > 0 {
                        tracing::debug!(pruned, "dropped idle connections the servers closed");
                    }
                }
                let key = keys.key(&server);
                let conn = Connection {
                    server,
                    slot,
                    stream,
                };
                match pool.offer_from(key, slot, conn) {
                    Offer::Kept => AtomicCounters::bump(&counters.kept),
                    Offer::Replaced {
                        evicted_slot,
                        evicted,
                    } => {
                        tracing::debug!(slot, evicted_slot, "replaced the highest slot");
                        AtomicCounters::bump(&counters.kept);
                        AtomicCounters::bump(&counters.evicted);
                        drop(evicted);
                    }
                    Offer::Rejected(conn) => {
                        tracing::trace!(slot, server = %conn.server, "rejected");
                        AtomicCounters::bump(&counters.rejected);
                    }
                }
            }
            RoverEvent::Unreachable {
                server,
                addr,
                error,
            } => {
                tracing::debug!(%server, ?addr, %error, "unreachable");
                AtomicCounters::bump(&counters.unreachable);
            }
            RoverEvent::Error(error) => {
                tracing::warn!(%error, "rover error");
                if matches!(error, RoverError::Protocol { .. }) {
                    AtomicCounters::bump(&counters.protocol_errors);
                }
            }
        }
    }
}
