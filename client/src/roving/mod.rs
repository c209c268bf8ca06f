//! The roving client: a [`Rover`] feeding a [`Pool`], with discovery keeping the rover's
//! servers current: the everyday entry point.
//!
//! The user only calls [`RovingClient::acquire`] and gets a lease on the lowest-slot idle
//! connection (under the improved policy, the best by the policy's cost). Behind it, three
//! parts share one state: the rover's events go through the feed task into the pool
//! (`feed`); the configured names go through a [`Discovery`] into the rover's server set,
//! one server per address by default (`membership`); and every event is counted once for
//! [`Counters`] and the `metrics` facade (`counters`, [`observe`]). Dropping
//! the client stops the rover and both tasks; connections still leased are closed when their
//! leases end.
//!
//! The pool policy defaults to the improved Callosum policy, whose maximum age the builder
//! settles from the roving interval (10 intervals, at least one per pool place, `max_slots`
//! intervals); `.pool_policy(PoolPolicy::original())` keeps the original library's rules. The
//! transport defaults to TCP ([`TcpConnector`]); `.connector(…)` takes any [`Connector`] whose
//! stream the pool can check for liveness.
//!
//! - `connection`: [`Connection`], a pooled stream with its server and slot.
//! - `counters`: [`Counters`] and the atomics behind them.
//! - `feed`: the rover's events into the pool.
//! - `membership`: the names, the discovery task, the server set.

mod connection;
mod counters;
mod feed;
mod membership;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use connection::Connection;
pub use counters::Counters;
use counters::{AtomicCounters, Event};
use membership::{Membership, Schedule, Wake};

use crate::discovery::{Discovery, DnsDiscovery, DynDiscovery, IpFamily};
use crate::failure::Failure;
use crate::observe;
use crate::pool::{AcquireError, Lease, Liveness, Pool, PoolError, PoolPolicy};
use crate::rover::{
    Backoff, Connector, InvalidServerId, MIN_ROVING_INTERVAL, Rover, RoverOptions, ServerId,
    TcpConnector,
};

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

/// Default wait of [`RovingClient::acquire`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time between two discoveries.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// Default shortest time between two discoveries asked for by connect failures.
pub const DEFAULT_DISCOVERY_MIN_GAP: Duration = Duration::from_secs(5);

/// Default longest time one discovery may take.
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a client's discovery.
type MakeDiscovery = Arc<dyn Fn() -> Arc<dyn DynDiscovery> + Send + Sync>;

/// Settings of a [`RovingClient`] over the connector `K`.
#[derive(Clone)]
#[must_use]
pub struct RovingClientBuilder<K = TcpConnector> {
    servers: Vec<String>,
    rover: RoverOptions,
    pool: PoolPolicy,
    acquire_timeout: Duration,
    connector: K,
    /// Makes each built client its own discovery (a clone of the one given).
    discovery: Option<MakeDiscovery>,
    ip_family: IpFamily,
    discovery_interval: Duration,
    discovery_min_gap: Duration,
    discovery_timeout: Duration,
}

impl Default for RovingClientBuilder<TcpConnector> {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            rover: RoverOptions::default(),
            pool: PoolPolicy::default(),
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            connector: TcpConnector,
            discovery: None,
            ip_family: IpFamily::default(),
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            discovery_min_gap: DEFAULT_DISCOVERY_MIN_GAP,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
        }
    }
}

impl<K: std::fmt::Debug> std::fmt::Debug for RovingClientBuilder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RovingClientBuilder")
            .field("servers", &self.servers)
            .field("rover", &self.rover)
            .field("pool", &self.pool)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connector", &self.connector)
            .field("custom_discovery", &self.discovery.is_some())
            .field("ip_family", &self.ip_family)
            .field("discovery_interval", &self.discovery_interval)
            .field("discovery_min_gap", &self.discovery_min_gap)
            .field("discovery_timeout", &self.discovery_timeout)
            .finish()
    }
}

impl<K: Connector> RovingClientBuilder<K>
where
    K::Stream: Liveness,
{
    /// Adds a server name (`host:port`): by default each of its addresses is a server (see
    /// [`discovery`](Self::discovery)). Default: none (add them later with
    /// [`RovingClient::add_server`]).
    pub fn server(mut self, id: impl Into<String>) -> Self {
        self.servers.push(id.into());
        self
    }

    /// Adds server names (`host:port` each).
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.servers.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Most connections kept. Default 100; 0 fails the build.
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.pool = self.pool.max_slots(max_slots);
        self
    }

    /// The whole pool policy (replaces `max_slots` set before). Default: the improved Callosum
    /// policy ([`PoolPolicy::improved`], `docs/balance.md`); [`PoolPolicy::original`] keeps the
    /// original library's rules. Its maximum age is settled at `build` from the roving
    /// interval: 10 intervals by default, never below `max_slots` intervals.
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
        self.acquire_timeout = timeout;
        self
    }

    /// How connections are opened: any [`Connector`] (socket options, a source address,
    /// Unix sockets, a proxy) whose stream the pool can check for liveness. Default:
    /// [`TcpConnector`].
    pub fn connector<C: Connector>(self, connector: C) -> RovingClientBuilder<C>
    where
        C::Stream: Liveness,
    {
        RovingClientBuilder {
            servers: self.servers,
            rover: self.rover,
            pool: self.pool,
            acquire_timeout: self.acquire_timeout,
            connector,
            discovery: self.discovery,
            ip_family: self.ip_family,
            discovery_interval: self.discovery_interval,
            discovery_min_gap: self.discovery_min_gap,
            discovery_timeout: self.discovery_timeout,
        }
    }

    /// Where the servers come from, given the names. Default: [`DnsDiscovery`], one server
    /// per address of each name (of the [`ip_family`](Self::ip_family));
    /// [`StaticDiscovery`](crate::StaticDiscovery) takes each name as one server, resolved
    /// by the connector at each connect. Each client built gets a clone of `discovery`, so
    /// what it keeps between lookups (the kept answers of a `DnsDiscovery`) is its own.
    pub fn discovery<D: Discovery + Clone>(mut self, discovery: D) -> Self {
        self.discovery = Some(Arc::new(move || Arc::new(discovery.clone())));
        self
    }

    /// Which addresses of a name the default discovery makes servers of. Default:
    /// [`IpFamily::V4`], as `callosum-server` listens on `0.0.0.0` by default; use
    /// [`IpFamily::Any`] for servers listening on both families. Ignored when
    /// [`discovery`](Self::discovery) is set (configure that discovery instead).
    pub fn ip_family(mut self, family: IpFamily) -> Self {
        self.ip_family = family;
        self
    }

    /// Time between two discoveries (DNS lookups, by default). Default 30 s; at least
    /// 1 ms.
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval.max(MIN_ROVING_INTERVAL);
        self
    }

    /// Shortest time between two discoveries when connect failures ask for one sooner than
    /// the interval. Default 5 s. A change of the names is looked up at once all the same.
    pub fn discovery_min_gap(mut self, gap: Duration) -> Self {
        self.discovery_min_gap = gap;
        self
    }

    /// Longest time one discovery (all the names' lookups) may take; one that takes longer
    /// is a failed discovery ([`Failure::Discovery`]) and the servers stay as they were.
    /// Default 5 s.
    pub fn discovery_timeout(mut self, timeout: Duration) -> Self {
        self.discovery_timeout = timeout;
        self
    }

    /// Builds the client and starts roving and discovering. Names that are addresses are
    /// servers at once; others join when their lookup answers. Must be called within a
    /// tokio runtime.
    pub fn build(self) -> Result<RovingClient<K>, BuildError> {
        let names = self
            .servers
            .iter()
            .map(|id| ServerId::new(id))
            .collect::<Result<Vec<_>, _>>()?;
        let interval = self.rover.get_roving_interval();
        let pool = Pool::with_policy(self.pool.for_roving_interval(interval))?;
        let discovery = match &self.discovery {
            Some(make) => make(),
            None => Arc::new(DnsDiscovery::default().ip_family(self.ip_family)),
        };
        let shared = Arc::new(Shared {
            rover: Rover::with_connector(self.rover, self.connector),
            pool,
            counters: AtomicCounters::default(),
            membership: Mutex::new(Membership::new(names.iter().cloned())),
            discovery,
            wake: Arc::new(Wake::default()),
            last_failure: Mutex::new(None),
        });
        shared.apply_known(shared.membership());
        let events = shared.rover.start();
        let feed = tokio::spawn(feed::feed(events, Arc::downgrade(&shared)));
        let discovering = tokio::spawn(membership::rediscover(
            Arc::downgrade(&shared),
            shared.wake.clone(),
            Schedule {
                interval: self.discovery_interval,
                min_gap: self.discovery_min_gap,
                timeout: self.discovery_timeout,
            },
        ));
        Ok(RovingClient {
            shared,
            tasks: [feed, discovering],
            acquire_timeout: self.acquire_timeout,
        })
    }
}

/// What the client's parts share.
struct Shared<K: Connector>
where
    K::Stream: Liveness,
{
    rover: Rover<K>,
    pool: Pool<Connection<K::Stream>>,
    counters: AtomicCounters,
    membership: Mutex<Membership>,
    discovery: Arc<dyn DynDiscovery>,
    wake: Arc<Wake>,
    /// The last failure to reach a server since the last successful connect.
    last_failure: Mutex<Option<Failure>>,
}

impl<K: Connector> Shared<K>
where
    K::Stream: Liveness,
{
    fn membership(&self) -> MutexGuard<'_, Membership> {
        // Nothing panics under this lock; the membership is whole at every unlock.
        self.membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn last_failure(&self) -> MutexGuard<'_, Option<Failure>> {
        // Nothing panics under this lock.
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn note_failure(&self, failure: Failure) {
        *self.last_failure() = Some(failure);
    }

    fn clear_failure(&self) {
        *self.last_failure() = None;
    }

    /// The timeout error with what is known of the servers now.
    fn unavailable(&self, timeout: Duration) -> AcquireError {
        let (backing_off, servers) = self.rover.backing_off();
        AcquireError::Unavailable {
            timeout,
            servers,
            backing_off,
            last_error: self.last_failure().clone(),
        }
    }
}

/// The rover feeding the pool, over the connector `K` (TCP by default). Dropping it stops
/// roving and discovering.
pub struct RovingClient<K: Connector = TcpConnector>
where
    K::Stream: Liveness,
{
    shared: Arc<Shared<K>>,
    tasks: [JoinHandle<()>; 2],
    acquire_timeout: Duration,
}

impl RovingClient<TcpConnector> {
    /// Settings, with the defaults (TCP, DNS discovery).
    pub fn builder() -> RovingClientBuilder<TcpConnector> {
        RovingClientBuilder::default()
    }
}

impl<K: Connector> RovingClient<K>
where
    K::Stream: Liveness,
{
    /// A lease on the lowest-slot idle connection (the best by the pool policy), waiting up
    /// to the acquire timeout. On timeout, [`AcquireError::Unavailable`] says how many
    /// servers are backing off and the last failure to reach one.
    pub async fn acquire(&self) -> Result<Lease<Connection<K::Stream>>, AcquireError> {
        let span = tracing::debug_span!(
            "acquire",
            slot = tracing::field::Empty,
            server = tracing::field::Empty
        );
        async {
            let started = Instant::now();
            let acquired = self.shared.pool.acquire(self.acquire_timeout).await;
            observe::acquired(started.elapsed());
            match acquired {
                Ok(lease) => {
                    self.shared.counters.add(Event::Leased, 1);
                    span.record("slot", lease.slot());
                    span.record("server", tracing::field::display(lease.server()));
                    Ok(lease)
                }
                Err(AcquireError::Timeout { timeout }) => {
                    let error = self.shared.unavailable(timeout);
                    tracing::debug!(%error, "acquire timed out");
                    Err(error)
                }
                Err(error) => Err(error),
            }
        }
        .instrument(span.clone())
        .await
    }

    /// A lease on the lowest-slot idle connection, if one is idle now.
    pub fn try_acquire(&self) -> Option<Lease<Connection<K::Stream>>> {
        let lease = self.shared.pool.get();
        if lease.is_some() {
            self.shared.counters.add(Event::Leased, 1);
        }
        lease
    }

    /// Adds a server name (`host:port`) while roving: its servers join at once when the
    /// discovery needs no lookup (an address), else when the lookup, started now, answers.
    /// An address already in the set has its backoff reset.
    pub fn add_server(&self, id: &str) -> Result<ServerId, InvalidServerId> {
        let id = ServerId::new(id)?;
        self.shared.change_names(|membership| {
            membership.add_name(id.clone());
            // Adding the same address again resets its backoff, as `Rover::add_server` does.
            if self.shared.rover.contains(&id) {
                self.shared.rover.add_id(id.clone());
            }
        });
        Ok(id)
    }

    /// Removes a server name; returns whether it was configured. The servers behind it
    /// leave at once when the discovery needs no lookup, else at the next lookup (started
    /// now); their idle connections close then and their leased ones when their leases end.
    pub fn drop_server(&self, id: &str) -> bool {
        let Ok(id) = ServerId::new(id) else {
            return false;
        };
        self.shared
            .change_names(|membership| membership.remove_name(&id))
    }

    /// The configured names, sorted.
    pub fn names(&self) -> Vec<ServerId> {
        self.shared.membership().names()
    }

    /// The servers now in the rover's set (addresses, under the default discovery), sorted.
    pub fn servers(&self) -> Vec<ServerId> {
        self.shared.rover.servers()
    }

    /// The pool (sizes, held slots).
    pub fn pool(&self) -> &Pool<Connection<K::Stream>> {
        &self.shared.pool
    }

    /// Event counts so far.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }
}

impl<K: Connector> Drop for RovingClient<K>
where
    K::Stream: Liveness,
{
    fn drop(&mut self) {
        self.shared.rover.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<K: Connector> std::fmt::Debug for RovingClient<K>
where
    K::Stream: Liveness,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RovingClient")
            .field("rover", &self.shared.rover)
            .field("pool", &self.shared.pool)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish_non_exhaustive()
    }
}
