//! The live run's clients: a [`RovingClient`] from `callosum-client` for the Callosum
//! policies, and a small per-request router for the baselines (random, round-robin, P2C,
//! P2C over a peak-EWMA latency, least-request), both
//! speaking the one-byte request protocol of [`super::server`].
//!
//! Why this shape: the Callosum policies must be measured through the real client, so a
//! request leases the client's best idle connection (waiting for one if none is idle, as the
//! simulator's clients do), writes its byte, reads the reply and gives the lease back. The
//! baselines ignore slots, as in the simulator: a baseline client picks a server per request
//! from the cluster's current membership and uses an idle connection of its own to that
//! server, opening one when all are busy (so, like the simulator's, it never waits at the
//! client); connections are kept for reuse, so after warm-up no request pays a connect. P2C
//! and least-request compare the client's own outstanding requests; P2C-peak-EWMA learns
//! each server's measured response times (connect excluded, failures included). The pick
//! and the loads are the simulator's [`router::pick`] and [`router::load`], so both measure
//! the same baselines.
//!
//! A request whose connection breaks (its server left) is retried on another connection, at
//! most [`RETRIES`] times; every exchange has a deadline ([`EXCHANGE_TIMEOUT`]) so no request
//! outlives the run by much. Membership changes (a join, a leave) reach every client at once,
//! as a service registry would tell them: the roving clients add or drop the server, the
//! baselines see the shared [`Membership`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use callosum_client::{Prefixed, RovingClient, read_handshake};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balance::model::{Policy, router};

/// Attempts after the first when a request's connection breaks.
pub const RETRIES: u32 = 2;

/// Longest one request/reply exchange may take before it counts as failed.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect plus slot line, for a baseline client's new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No idle pool connection within the client's acquire timeout.
    #[error("no idle connection: {0}")]
    Acquire(#[from] callosum_client::AcquireError),
    /// No server in the cluster.
    #[error("no server in the cluster")]
    NoServer,
    /// Connecting or the exchange failed.
    #[error("request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange took longer than [`EXCHANGE_TIMEOUT`].
    #[error("no reply within {EXCHANGE_TIMEOUT:?}")]
    Timeout,
}

/// The servers in the cluster now: `(id, address)`, shared by every baseline client.
#[derive(Debug, Default)]
pub struct Membership {
    servers: RwLock<Vec<(u32, SocketAddr)>>,
}

impl Membership {
    /// Adds server `id`.
    pub fn join(&self, id: u32, addr: SocketAddr) {
        let mut s = self.servers.write().unwrap_or_else(PoisonError::into_inner);
        if !s.iter().any(|&(i, _)| i == id) {
            s.push((id, addr));
        }
    }

    /// Removes server `id`.
    pub fn leave(&self, id: u32) {
        self.servers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&(i, _)| i != id);
    }

    /// The member ids, in join order.
    pub fn ids(&self) -> Vec<u32> {
        self.snapshot().iter().map(|&(i, _)| i).collect()
    }

    fn snapshot(&self) -> Vec<(u32, SocketAddr)> {
        self.servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn contains(&self, id: u32) -> bool {
        self.servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|&(i, _)| i == id)
    }
}

/// One request/reply exchange on `conn`, under [`EXCHANGE_TIMEOUT`].
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S) -> Result<(), RequestError> {
    let io = async {
        conn.write_all(b"r").await?;
        let mut reply = [0u8; 1];
        conn.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, io).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// A baseline client: picks a server per request by its rule.
#[derive(Debug)]
pub struct Baseline {
    policy: Policy,
    members: Arc<Membership>,
    /// Idle connections per server id.
    idle: Vec<Mutex<Vec<Prefixed<TcpStream>>>>,
    /// This client's requests outstanding per server id (P2C, least-request, peak EWMA).
    outstanding: Vec<AtomicU32>,
    /// The router's state: its random source, round-robin cursor and latency averages.
    router: Mutex<RouterState>,
    /// The origin of the latency averages' clock.
    epoch: Instant,
}

/// What [`router::pick`] keeps per client.
#[derive(Debug)]
struct RouterState {
    rng: SmallRng,
    /// Round-robin position (see [`router::pick`]).
    cursor: u32,
    /// Peak-EWMA response time per server id.
    ewma: Vec<router::PeakEwma>,
}

impl Baseline {
    /// A client routing by `policy` over `members`, for server ids below `servers`.
    pub fn new(policy: Policy, members: Arc<Membership>, servers: usize, seed: u64) -> Self {
        Self {
            policy,
            members,
            idle: (0..servers).map(|_| Mutex::new(Vec::new())).collect(),
            outstanding: (0..servers).map(|_| AtomicU32::new(0)).collect(),
            router: Mutex::new(RouterState {
                rng: SmallRng::seed_from_u64(seed),
                cursor: 0,
                ewma: vec![router::PeakEwma::default(); servers],
            }),
            epoch: Instant::now(),
        }
    }

    /// Picks the server for one request: `(id, address)`.
    fn pick(&self) -> Option<(u32, SocketAddr)> {
        let members = self.members.snapshot();
        let mut guard = self.router.lock().unwrap_or_else(PoisonError::into_inner);
        let RouterState { rng, cursor, ewma } = &mut *guard;
        let now = self.nanos();
        let i = router::pick(self.policy, members.len(), cursor, rng, |i| {
            let s = members[i].0 as usize;
            // Relaxed: a heuristic read of this client's own counts.
            let pending = self.outstanding[s].load(Ordering::Relaxed);
            router::load(self.policy, pending, &ewma[s], now)
        })?;
        Some(members[i])
    }

    /// Nanoseconds since this client was made: the latency averages' clock.
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn once(&self) -> Result<(), RequestError> {
        let (id, addr) = self.pick().ok_or(RequestError::NoServer)?;
        let i = id as usize;
        let pooled = self.idle[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let connect = async {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    read_handshake(stream, CONNECT_TIMEOUT)
                        .await
                        .map_err(std::io::Error::other)
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(r) => r?.stream,
                    Err(_) => return Err(RequestError::Timeout),
                }
            }
        };
        // Relaxed: this client's own counts, read only by its picks.
        self.outstanding[i].fetch_add(1, Ordering::Relaxed);
        let sent = self.nanos();
        let result = exchange(&mut conn).await;
        let now = self.nanos();
        self.outstanding[i].fetch_sub(1, Ordering::Relaxed);
        self.router
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ewma[i]
            .observe(now, now.saturating_sub(sent) as f64);
        if result.is_ok() && self.members.contains(id) {
            self.idle[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }

    /// Closes the idle connections to server `id` (it left the cluster).
    pub fn forget(&self, id: u32) {
        if let Some(idle) = self.idle.get(id as usize) {
            idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

/// A client of the live run.
#[derive(Debug)]
pub enum LiveClient {
    /// A Callosum roving client (original or improved pool policy).
    Pool(RovingClient),
    /// A baseline router.
    Baseline(Baseline),
}

impl LiveClient {
    /// Sends one request and waits for its reply, retrying on another connection when one
    /// breaks.
    pub async fn request(&self) -> Result<(), RequestError> {
        let mut attempt = 0;
        loop {
            let result = match self {
                LiveClient::Pool(client) => {
                    let mut lease = client.acquire().await?;
                    let r = exchange(&mut *lease).await;
                    if r.is_err() {
                        lease.discard();
                    }
                    r
                }
                LiveClient::Baseline(b) => b.once().await,
            };
            match result {
                Err(RequestError::Io(err)) if attempt < RETRIES => {
                    tracing::debug!(%err, attempt, "request failed; retrying");
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// The server at `addr` joined the cluster (baselines see it in the [`Membership`]).
    pub fn join(&self, addr: SocketAddr) {
        if let LiveClient::Pool(client) = self {
            if let Err(err) = client.add_server(&addr.to_string()) {
                tracing::warn!(%err, "could not add a server");
            }
        }
    }

    /// Server `id` at `addr` left the cluster.
    pub fn leave(&self, id: u32, addr: SocketAddr) {
        match self {
            LiveClient::Pool(client) => {
                client.drop_server(&addr.to_string());
            }
            LiveClient::Baseline(b) => b.forget(id),
        }
    }
}
