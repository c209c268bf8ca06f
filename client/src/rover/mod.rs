//! The rover (the original `callosum-client-tcp-rover`): one connection attempt at start,
//! then one every roving interval, to a server picked at random from a set that may change
//! at any time; each attempt ends in an event: connected (with the slot and the stream),
//! unreachable, or error.
//!
//! The rover runs as one tokio task that owns the schedule and spawns each attempt as its
//! own task (in a `JoinSet` it owns), so a slow connect never delays the next tick and
//! stopping the rover aborts everything. The task holds only a `Weak` to the rover's state
//! and ends when the rover is dropped or stopped, or when the event receiver is dropped.
//! Each attempt reserves room in the event channel before it starts, so a consumer that
//! stalls pauses the schedule (no pile of open sockets), and a stall longer than an interval
//! reschedules from its end rather than firing the missed attempts in a burst.
//!
//! Scheduling, with backoff on (the default): an unreachable server is left out of the pick
//! for [`Backoff::delay`] after each consecutive failure; a success or an `add_server` of
//! that id resets it, and `drop_server` forgets it. When every server is backing off, the
//! rover does not sit idle: on each tick it tries the server whose backoff ends first.
//! Attempts are never closer than the roving interval. With backoff off, the pick is always
//! uniform over the whole set, as in the original.
//!
//! Each attempt runs in a `connect` tracing span (`server`, and `slot` once read).
//!
//! - [`backoff`]: the backoff schedule.
//! - [`connect`]: the connector trait and the TCP connector.
//! - `servers`: the server set and the pick.

pub mod backoff;
pub mod connect;
mod servers;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

pub use backoff::Backoff;
pub use connect::{ConnectError, Connected, Connector, TcpConnector, connect_tcp};
pub use servers::{InvalidServerId, ServerId};
use servers::{Pick, Servers};

use crate::handshake::{
    DEFAULT_HANDSHAKE_TIMEOUT, Handshake, HandshakeError, Prefixed, read_handshake,
};

/// Shortest roving interval; shorter settings are raised to it.
pub const MIN_ROVING_INTERVAL: Duration = Duration::from_millis(1);

/// The rover's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoverOptions {
    roving_interval: Duration,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    backoff: Option<Backoff>,
    event_capacity: usize,
}

impl Default for RoverOptions {
    fn default() -> Self {
        Self {
            roving_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            backoff: Some(Backoff::default()),
            event_capacity: 64,
        }
    }
}

impl RoverOptions {
    /// Time between connection attempts. Default 1 s; at least 1 ms.
    pub fn roving_interval(mut self, interval: Duration) -> Self {
        self.roving_interval = interval.max(MIN_ROVING_INTERVAL);
        self
    }

    /// How long a connect (name resolution included) may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server has to send its whole slot line. Default 5 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Backoff of unreachable servers; `None` turns it off (the original behaviour).
    /// Default on: 1 s × 1.6 per consecutive failure, ±20 % jitter, at most 120 s.
    pub fn backoff(mut self, backoff: Option<Backoff>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Events buffered or in flight before the rover waits for the receiver (each attempt
    /// reserves room for its event first). Default 64; at least 1.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// The configured roving interval.
    pub fn get_roving_interval(&self) -> Duration {
        self.roving_interval
    }
}

/// Something the rover wants the user to know.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoverError {
    /// The server set is empty; the rover keeps going.
    #[error("no servers to contact")]
    NoServers,
    /// The server broke the handshake; the connection was closed.
    #[error("server {server} broke the handshake: {source}")]
    Protocol {
        /// The server's id.
        server: ServerId,
        /// The address connected to, if known.
        addr: Option<SocketAddr>,
        /// What was wrong.
        source: HandshakeError,
    },
}

/// The outcome of one attempt (or of a tick with no server to try).
#[derive(Debug)]
#[non_exhaustive]
pub enum RoverEvent<S> {
    /// Connected and read the slot line.
    Connected {
        /// The server's id.
        server: ServerId,
        /// The address connected to, if known.
        addr: Option<SocketAddr>,
        /// The slot the server assigned.
        slot: u32,
        /// The connection, positioned after the slot line.
        stream: Prefixed<S>,
    },
    /// The connect failed (refused, timed out, name not resolved).
    Unreachable {
        /// The server's id.
        server: ServerId,
        /// The address tried, if the name resolved.
        addr: Option<SocketAddr>,
        /// Why.
        error: io::Error,
    },
    /// A protocol violation, or an empty server set.
    Error(RoverError),
}

/// The events of a started rover: a `Stream`, or `recv()` one at a time. Ends when the
/// rover stops.
#[derive(Debug)]
pub struct RoverEvents<S> {
    rx: mpsc::Receiver<RoverEvent<S>>,
}

impl<S> RoverEvents<S> {
    /// The next event, or `None` once the rover has stopped.
    pub async fn recv(&mut self) -> Option<RoverEvent<S>> {
        self.rx.recv().await
    }
}

impl<S> tokio_stream::Stream for RoverEvents<S> {
    type Item = RoverEvent<S>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The rover. Dropping it (or [`stop`](Rover::stop)) ends its task.
pub struct Rover<K: Connector = TcpConnector> {
    shared: Arc<Shared<K>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Shared<K> {
    servers: Mutex<Servers>,
    connector: Arc<K>,
    options: RoverOptions,
}

impl<K> Shared<K> {
    fn servers(&self) -> MutexGuard<'_, Servers> {
        // No code path panics under this lock; the set stays consistent at every unlock.
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rover<TcpConnector> {
    /// A rover over TCP, with no servers, not started.
    pub fn new(options: RoverOptions) -> Self {
        Self::with_connector(options, TcpConnector)
    }
}

impl<K: Connector> Rover<K> {
    /// A rover opening connections with `connector`, with no servers, not started.
    pub fn with_connector(options: RoverOptions, connector: K) -> Self {
        Self {
            shared: Arc::new(Shared {
                servers: Mutex::new(Servers::new(SmallRng::from_os_rng())),
                connector: Arc::new(connector),
                options,
            }),
            task: Mutex::new(None),
        }
    }

    /// The rover's settings.
    pub fn options(&self) -> &RoverOptions {
        &self.shared.options
    }

    /// Adds a server by id (`host:port`); the same id replaces it, resetting its backoff.
    /// Allowed at any time, also while roving.
    pub fn add_server(&self, id: &str) -> Result<ServerId, InvalidServerId> {
        let id = ServerId::new(id)?;
        self.add_id(id.clone());
        Ok(id)
    }

    /// [`add_server`](Self::add_server) with an id already checked.
    pub(crate) fn add_id(&self, id: ServerId) {
        self.shared.servers().add(id);
    }

    /// Removes a server by id; returns whether it was in the set.
    pub fn drop_server(&self, id: &str) -> bool {
        let Ok(id) = ServerId::new(id) else {
            return false;
        };
        self.shared.servers().remove(&id)
    }

    /// The server ids, sorted.
    pub fn servers(&self) -> Vec<ServerId> {
        self.shared.servers().ids()
    }

    /// Whether `id` is in the server set.
    pub fn contains(&self, id: &ServerId) -> bool {
        self.shared.servers().contains(id)
    }

    /// How many servers are backing off now (left out of the random pick after failed
    /// connects), and how many there are: `(backing_off, servers)`.
    pub fn backing_off(&self) -> (usize, usize) {
        self.shared.servers().backing_off(Instant::now())
    }

    /// Starts roving: one attempt now, then one every roving interval. Starting again
    /// restarts the schedule (the previous events stream ends). Must be called within a
    /// tokio runtime.
    pub fn start(&self) -> RoverEvents<K::Stream> {
        let (tx, rx) = mpsc::channel(self.shared.options.event_capacity);
        let task = tokio::spawn(run(
            Arc::downgrade(&self.shared),
            self.shared.options.clone(),
            tx,
        ));
        if let Some(old) = self.task_slot().replace(task) {
            old.abort();
        }
        RoverEvents { rx }
    }

    /// Stops roving; attempts in flight are abandoned. Servers are kept: `start` resumes.
    pub fn stop(&self) {
        if let Some(task) = self.task_slot().take() {
            task.abort();
        }
    }

    fn task_slot(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Connector> Drop for Rover<K> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<K: Connector> std::fmt::Debug for Rover<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rover")
            .field("servers", &self.servers())
            .field("options", &self.shared.options)
            .finish()
    }
}

/// The rover's schedule. Ends when the rover is gone or the receiver is dropped.
async fn run<K: Connector>(
    rover: Weak<Shared<K>>,
    options: RoverOptions,
    tx: mpsc::Sender<RoverEvent<K::Stream>>,
) {
    let mut attempts = JoinSet::new();
    let mut next = Instant::now();
    loop {
        // The receiver dropped before the next tick ends the schedule.
        if tokio::time::timeout_at(next, tx.closed()).await.is_ok() {
            return;
        }
        // Room for this attempt's event first: a consumer that stalls pauses the schedule
        // instead of piling up attempts that each hold an open socket.
        let Ok(permit) = tx.clone().reserve_owned().await else {
            return;
        };
        let Some(shared) = rover.upgrade() else {
            return;
        };
        let pick = shared.servers().pick(Instant::now());
        drop(shared);
        match pick {
            Pick::Server(server, generation) => {
                attempts.spawn(attempt(rover.clone(), permit, server, generation));
            }
            _ => {
                permit.send(RoverEvent::Error(RoverError::NoServers));
            }
        }
        // Reap finished attempts so the set stays small.
        while attempts.try_join_next().is_some() {}
        next = crate::deadline::after(next, options.roving_interval);
        // A stall longer than an interval (a full event channel, a suspended process)
        // reschedules from now instead of firing the missed attempts in a burst.
        let now = Instant::now();
        if next < now {
            next = crate::deadline::after(now, options.roving_interval);
        }
    }
}

/// One connection attempt: connect, read the slot line, report.
async fn attempt<K: Connector>(
    rover: Weak<Shared<K>>,
    permit: mpsc::OwnedPermit<RoverEvent<K::Stream>>,
    server: ServerId,
    generation: u64,
) {
    let Some((connector, options)) = rover
        .upgrade()
        .map(|s| (s.connector.clone(), s.options.clone()))
    else {
        return;
    };
    let span = tracing::debug_span!("connect", %server, slot = tracing::field::Empty);
    let event = attempt_once(&rover, &*connector, &options, server, generation)
        .instrument(span.clone())
        .await;
    if let RoverEvent::Connected { slot, .. } = &event {
        span.record("slot", slot);
    }
    // Room was reserved before the attempt; if the receiver is gone meanwhile, the event
    // (and its stream) is dropped.
    permit.send(event);
}

/// Connects and reads the slot line; the event to report.
async fn attempt_once<K: Connector>(
    rover: &Weak<Shared<K>>,
    connector: &K,
    options: &RoverOptions,
    server: ServerId,
    generation: u64,
) -> RoverEvent<K::Stream> {
    match connector.connect(&server, options.connect_timeout).await {
        Err(ConnectError { addr, error }) => {
            tracing::trace!(?addr, %error, "connect failed");
            if let Some(shared) = rover.upgrade() {
                shared.servers().failed(
                    &server,
                    generation,
                    Instant::now(),
                    options.backoff.as_ref(),
                );
            }
            RoverEvent::Unreachable {
                server,
                addr,
                error,
            }
        }
        Ok(Connected { addr, stream }) => {
            match read_handshake(stream, options.handshake_timeout).await {
                Ok(Handshake { slot, stream }) => {
                    tracing::trace!(?addr, slot, "connected");
                    if let Some(shared) = rover.upgrade() {
                        shared.servers().succeeded(&server, generation);
                    }
                    RoverEvent::Connected {
                        server,
                        addr,
                        slot,
                        stream,
                    }
                }
                // The stream was dropped (closed) inside the failed handshake.
                Err(source) => {
                    tracing::trace!(?addr, %source, "handshake failed");
                    RoverEvent::Error(RoverError::Protocol {
                        server,
                        addr,
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
