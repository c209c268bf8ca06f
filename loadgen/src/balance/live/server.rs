//! The live run's servers: real `callosum-server` instances on loopback whose handler answers
//! a one-byte request after an exponential service time, with at most k requests in service
//! and a FIFO queue for the rest, and counts what the metrics need.
//!
//! The request protocol: after the slot line, the client writes one byte per request and
//! waits for one byte back before it sends the next (a connection carries one request at a
//! time, as a pool lease does). The handler counts a request when it reads it (`received`:
//! what the simulator counts when a request is sent), holds it in `load` (queued plus in
//! service, the simulator's instantaneous load) until its service ends, then writes the
//! reply.
//!
//! Why this shape: k workers are a fair (FIFO) `tokio::sync::Semaphore` with k permits, shared
//! by every connection of the server, so requests queue in arrival order exactly as the
//! simulator's FIFO does; service is a `tokio::time::sleep` on the shard's runtime (tokio-uring
//! runs one with the time driver). The tokio timer fires on the first millisecond tick at or
//! after its deadline, plus the shard's wake-up: about half a tick late or more. Each server
//! keeps a moving average of that lateness (starting at [`TIMER_COMPENSATION`]) and takes it
//! off each drawn service time, so the mean slept service time tracks the asked mean (draws
//! shorter than the lateness still overshoot a little); the time actually slept is summed so
//! the report shows the real mean. One shard per server, unpinned: the machine running K servers and C
//! clients has few cores, and the scheduler should place them. Counters are relaxed atomics
//! read by the sampler on another thread.
//!
//! Leaving ([`LiveServer::begin_leave`]) mirrors the simulator's drain: every idle connection
//! closes at once, a busy one right after its response; the server is then shut down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use callosum_server::{Connection, Handler, RunningServer, Server, ServerError, ServerHandle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, watch};

/// The timer's initial lateness estimate (half a 1 ms tick), taken off each service time.
pub const TIMER_COMPENSATION: Duration = Duration::from_micros(500);

/// How long a stopping server lets its connections finish before it shuts them down.
const STOP_DRAIN: Duration = Duration::from_millis(200);

/// How one server serves requests.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSpec {
    /// Requests in service at once; the rest queue FIFO.
    pub workers: u32,
    /// Mean service time (exponential), already multiplied by any slowdown.
    pub mean: Duration,
    /// Seed of the server's service-time generator.
    pub seed: u64,
}

/// Live counters of one server.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Requests queued at the server or in service now.
    pub load: AtomicU64,
    /// Requests read so far.
    pub received: AtomicU64,
    /// Requests answered so far.
    pub completed: AtomicU64,
    /// Service time slept so far, nanoseconds.
    pub service_ns: AtomicU64,
}

struct State {
    counters: Arc<ServerCounters>,
    permits: Semaphore,
    mean_ns: f64,
    rng: Mutex<SmallRng>,
    /// How late the timer fires, moving average, ns: taken off each service time.
    lag_ns: AtomicU64,
}

impl State {
    fn draw(&self) -> Duration {
        let u: f64 = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random();
        Duration::from_nanos((-self.mean_ns * (1.0 - u).ln()) as u64)
    }

    /// Serves one request: queue for a worker, hold it for a service time.
    async fn serve(&self) -> bool {
        let c = &self.counters;
        // Relaxed: statistics read by the sampler; nothing else is published through them.
        c.received.fetch_add(1, Ordering::Relaxed);
        c.load.fetch_add(1, Ordering::Relaxed);
        // Out of `load` when served or dropped (a shard dropping handlers at a forced stop).
        let _load = LoadGuard(&c.load);
        let served = match self.permits.acquire().await {
            Ok(_permit) => {
                let d = self.draw();
                // Relaxed: the lag estimate is a heuristic shared by this server's requests.
                let lag = self.lag_ns.load(Ordering::Relaxed);
                let asked = d.saturating_sub(Duration::from_nanos(lag));
                let start = tokio::time::Instant::now();
                tokio::time::sleep(asked).await;
                let slept = start.elapsed();
                c.service_ns
                    .fetch_add(slept.as_nanos() as u64, Ordering::Relaxed);
                // Moving average (weight 1/16) of how late the timer fired.
                let late = slept.saturating_sub(asked).as_nanos() as u64;
                let lag = self.lag_ns.load(Ordering::Relaxed);
                self.lag_ns
                    .store(lag - lag / 16 + late / 16, Ordering::Relaxed);
                true
            }
            // The semaphore is never closed; if it were, the request is not served.
            Err(_) => false,
        };
        if served {
            c.completed.fetch_add(1, Ordering::Relaxed);
        }
        served
    }
}

/// Takes one request out of a server's load when dropped.
struct LoadGuard<'a>(&'a AtomicU64);

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        // Relaxed: a statistic.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The request handler: one byte in, a service time, one byte out.
#[derive(Clone)]
struct RequestHandler {
    state: Arc<State>,
    leaving: watch::Receiver<bool>,
}

impl Handler for RequestHandler {
    async fn handle(&self, conn: &mut Connection) {
        let mut leaving = self.leaving.clone();
        // tokio-uring reads into the vector's spare capacity: it holds what was read.
        let mut buf = Vec::with_capacity(64);
        loop {
            if *leaving.borrow_and_update() {
                return;
            }
            // An idle connection closes as soon as the server leaves (the dropped read is
            // settled by the connection's own shutdown on drop).
            let (read, b) = tokio::select! {
                r = conn.stream().read(buf) => r,
                _ = leaving.wait_for(|l| *l) => return,
            };
            buf = b;
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for _ in 0..n {
                if !self.state.serve().await {
                    return;
                }
            }
            // The reply echoes the request bytes, one per request.
            let (written, b) = conn.stream().write_all(buf).await;
            buf = b;
            buf.clear();
            if written.is_err() {
                return;
            }
        }
    }
}

/// One running server of the live run.
pub struct LiveServer {
    running: RunningServer,
    handle: ServerHandle,
    counters: Arc<ServerCounters>,
    leaving: watch::Sender<bool>,
}

impl std::fmt::Debug for LiveServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveServer")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl LiveServer {
    /// Starts a server on 127.0.0.1 with a free port, one unpinned shard.
    pub fn start(spec: ServiceSpec) -> Result<Self, ServerError> {
        let counters = Arc::new(ServerCounters::default());
        let (leaving, rx) = watch::channel(false);
        let state = Arc::new(State {
            counters: counters.clone(),
            permits: Semaphore::new(spec.workers.max(1) as usize),
            mean_ns: spec.mean.as_nanos() as f64,
            rng: Mutex::new(SmallRng::seed_from_u64(spec.seed)),
            lag_ns: AtomicU64::new(TIMER_COMPENSATION.as_nanos() as u64),
        });
        let running = Server::builder()
            .host(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(0)
            .shards(1)
            .pin(false)
            .start_with(RequestHandler { state, leaving: rx })?;
        let handle = running.handle();
        Ok(Self {
            running,
            handle,
            counters,
            leaving,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Its request counters.
    pub fn counters(&self) -> &Arc<ServerCounters> {
        &self.counters
    }

    /// Requests queued or in service now.
    pub fn load(&self) -> u64 {
        // Relaxed: a statistics sample.
        self.counters.load.load(Ordering::Relaxed)
    }

    /// Requests read so far.
    pub fn received(&self) -> u64 {
        // Relaxed: a statistics sample.
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Connections open now, as the server counts them.
    pub fn active_connections(&self) -> u64 {
        self.handle.stats().active
    }

    /// Leaves the cluster: stops accepting; idle connections close now, busy ones after
    /// their response, those still open after `drain` are shut down.
    pub fn begin_leave(&self, drain: Duration) {
        self.leaving.send_replace(true);
        self.handle.shutdown(drain);
    }
}

/// Stops servers together: each stops accepting and closes its idle connections at once,
/// busy ones get a short drain, then the rest are shut down; waits for every shard.
pub fn stop_all(servers: impl IntoIterator<Item = LiveServer>) -> Result<(), ServerError> {
    let servers: Vec<LiveServer> = servers.into_iter().collect();
    for s in &servers {
        s.begin_leave(STOP_DRAIN);
    }
    let mut result = Ok(());
    for s in servers {
        if let Err(err) = s.running.wait() {
            result = Err(err);
        }
    }
    result
}
