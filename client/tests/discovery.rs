//! Discovery end to end on loopback: a name behind which stand two servers (two loopback
//! addresses, one port, as a Kubernetes headless Service) is two servers and the pool
//! spreads over both; servers join and leave as the answers change, a leaving server's
//! idle connections close at once and its leased ones on return; connect failures bring
//! the next lookup forward, and so does a change of the names even in the gap a failure
//! waits out; `drop_server` closes the dropped server's connections. A lookup of older names
//! never replaces a newer set, one that takes too long is a failure, and an empty answer
//! keeps the servers.
//!
//! The answers come from an in-memory [`Discovery`] the test changes; no test touches the
//! system resolver's files.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callosum_client::{
    AcquireError, Discovery, DiscoveryError, Failure, Lease, PoolPolicy, RovingClient, ServerId,
    StaticDiscovery,
};
use support::until;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// Answers every lookup with the servers the test set last; counts the lookups. Clones
/// share the answers, so the test keeps one to change them.
#[derive(Debug, Default, Clone)]
struct Answers(Arc<Table>);

#[derive(Debug, Default)]
struct Table {
    servers: Mutex<Vec<ServerId>>,
    lookups: AtomicUsize,
}

impl Answers {
    fn new(servers: &[SocketAddr]) -> Self {
        let answers = Self::default();
        answers.set(servers);
        answers
    }

    fn set(&self, servers: &[SocketAddr]) {
        *self.0.servers.lock().expect("lock") =
            servers.iter().copied().map(ServerId::from).collect();
    }

    fn lookups(&self) -> usize {
        self.0.lookups.load(Ordering::SeqCst)
    }
}

impl Discovery for Answers {
    async fn discover(&self, _names: &[ServerId]) -> Result<Vec<ServerId>, DiscoveryError> {
        self.0.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self.0.servers.lock().expect("lock").clone())
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Held connections per server, by leasing every idle one.
fn spread(client: &RovingClient) -> BTreeMap<String, Vec<u32>> {
    let leases: Vec<Lease<_>> = std::iter::from_fn(|| client.try_acquire()).collect();
    let mut by_server: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for lease in &leases {
        by_server
            .entry(lease.server().to_string())
            .or_default()
            .push(lease.slot());
    }
    for slots in by_server.values_mut() {
        slots.sort_unstable();
    }
    by_server
}

#[tokio::test]
async fn a_name_with_two_addresses_is_two_servers_and_the_pool_spreads_over_both() {
    // Two instances on one port at two addresses: what a headless Service name resolves to.
    let ((a, server_a), (b, server_b)) = support::start_two_on_one_port(loopback(2), loopback(3));
    let client = support::two_on_each(
        RovingClient::builder()
            .server(format!("db.callosum.svc:{}", a.port()))
            .discovery(Answers::new(&[a, b])),
    )
    .await;
    let spread = spread(&client);
    println!("one name, two addresses, max_slots = 4: {spread:?}");
    let expected = BTreeMap::from([(a.to_string(), vec![0, 1]), (b.to_string(), vec![0, 1])]);
    assert_eq!(spread, expected);
    assert_eq!(client.servers(), vec![ServerId::from(a), ServerId::from(b)]);
    // The rover keeps connecting every 5 ms and closes each newcomer it turns down (slot 2);
    // the server frees that slot when it sees the close, so a count taken at one instant
    // may include a newcomer on its way out. The held connections are all that stay.
    until("each server holds the pool's two connections", || {
        (server_a.slots.in_use(), server_b.slots.in_use()) == (2, 2)
    })
    .await;
}

#[tokio::test]
async fn servers_join_and_leave_as_the_answers_change() {
    let (a, server_a) = support::start_server();
    let (b, server_b) = support::start_server();
    let answers = Answers::new(&[a]);
    let client = RovingClient::builder()
        .server("db.callosum.svc:7000")
        .discovery(answers.clone())
        .discovery_interval(Duration::from_millis(10))
        .max_slots(3)
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    until("three connections to a", || client.pool().len() == 3).await;
    let mut leased = client.acquire().await.expect("a connection");
    assert_eq!(leased.server(), &ServerId::from(a));

    answers.set(&[b]);
    until("a left and b joined", || {
        client.servers() == [ServerId::from(b)]
    })
    .await;
    // The idle connections to a closed at once; the leased one is still usable.
    until("a's idle connections closed", || {
        server_a.slots.in_use() == 1
    })
    .await;
    leased
        .stream()
        .write_all(b"still open")
        .await
        .expect("usable");
    assert!(client.counters().evicted >= 2, "{:?}", client.counters());
    drop(leased);
    until("a's leased connection closed on return", || {
        server_a.slots.in_use() == 0
    })
    .await;
    until("three connections to b", || {
        client.pool().len() == 3 && server_b.slots.in_use() == 3
    })
    .await;
    let spread = spread(&client);
    assert_eq!(spread.keys().collect::<Vec<_>>(), [&b.to_string()]);
}

#[tokio::test]
async fn connect_failures_bring_the_next_lookup_forward() {
    let refusing = support::refusing_addr();
    let (live, _server) = support::start_server();
    let answers = Answers::new(&[refusing]);
    let client = RovingClient::builder()
        .server("db.callosum.svc:7000")
        .discovery(answers.clone())
        .discovery_interval(Duration::from_secs(3600))
        .discovery_min_gap(Duration::from_millis(10))
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    // With an hour between lookups, only the failures can ask for the second one.
    until("a second lookup after the failures", || {
        answers.lookups() >= 2
    })
    .await;
    assert!(client.counters().unreachable > 0);
    // The instance moved: the next lookup finds it.
    answers.set(&[live]);
    let lease = client
        .acquire()
        .await
        .expect("a connection to the new address");
    assert_eq!(lease.server(), &ServerId::from(live));
}

#[tokio::test]
async fn drop_server_closes_that_servers_pooled_connections() {
    let (a, server_a) = support::start_server();
    let (b, _server_b) = support::start_server();
    let client =
        support::two_on_each(RovingClient::builder().servers([a.to_string(), b.to_string()])).await;
    assert!(client.drop_server(&a.to_string()));
    // Out of the pool at once, closed at the server soon after.
    assert_eq!(client.pool().len(), 2);
    assert_eq!(client.servers(), vec![ServerId::from(b)]);
    until("a's connections closed", || server_a.slots.in_use() == 0).await;
    assert!(!client.drop_server(&a.to_string()), "already gone");
}

#[tokio::test]
async fn static_discovery_keeps_each_id_as_one_server() {
    let (a, _server) = support::start_server();
    let name = format!("localhost:{}", a.port());
    let client = RovingClient::builder()
        .server(name.clone())
        .discovery(StaticDiscovery)
        .pool_policy(PoolPolicy::improved().max_slots(2))
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    assert_eq!(client.servers(), vec![ServerId::new(&name).expect("valid")]);
    let lease = client.acquire().await.expect("a connection");
    assert_eq!(lease.server().as_str(), name);
}

#[tokio::test]
async fn a_configured_name_is_resolved_into_addresses_by_default() {
    let (a, _server) = support::start_server();
    let client = RovingClient::builder()
        .server(format!("localhost:{}", a.port()))
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    until("localhost resolved", || !client.servers().is_empty()).await;
    for server in client.servers() {
        let addr: SocketAddr = server.as_str().parse().expect("an address, not the name");
        assert!(addr.ip().is_loopback(), "{addr}");
    }
    assert_eq!(
        client.names(),
        vec![ServerId::new(&format!("localhost:{}", a.port())).expect("valid")]
    );
}

/// Answers each lookup with the addresses of the names asked for, and holds every lookup
/// until the test releases one; counts the lookups started.
#[derive(Debug, Clone)]
struct Gated(Arc<GatedState>);

#[derive(Debug)]
struct GatedState {
    addrs: HashMap<String, SocketAddr>,
    started: AtomicUsize,
    release: Semaphore,
}

impl Gated {
    fn new(addrs: &[(&str, SocketAddr)]) -> Self {
        Self(Arc::new(GatedState {
            addrs: addrs
                .iter()
                .map(|(name, addr)| ((*name).to_owned(), *addr))
                .collect(),
            started: AtomicUsize::new(0),
            release: Semaphore::new(0),
        }))
    }

    fn started(&self) -> usize {
        self.0.started.load(Ordering::SeqCst)
    }

    /// Lets `n` more lookups answer.
    fn release(&self, n: usize) {
        self.0.release.add_permits(n);
    }
}

impl Discovery for Gated {
    async fn discover(&self, names: &[ServerId]) -> Result<Vec<ServerId>, DiscoveryError> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let permit = self.0.release.acquire().await;
        permit
            .map_err(|closed| DiscoveryError::Other(Box::new(closed)))?
            .forget();
        Ok(names
            .iter()
            .filter_map(|name| self.0.addrs.get(name.as_str()))
            .copied()
            .map(ServerId::from)
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_of_older_names_never_replaces_the_newer_set() {
    let (a, b) = (support::refusing_addr(), support::refusing_addr());
    let gated = Gated::new(&[("a.svc:7000", a), ("b.svc:7000", b)]);
    let client = RovingClient::builder()
        .server("a.svc:7000")
        .discovery(gated.clone())
        .discovery_interval(Duration::from_secs(3600))
        .roving_interval(Duration::from_secs(3600))
        .build()
        .expect("valid settings");
    until("the lookup of a.svc started", || gated.started() == 1).await;
    // While it is held, the names become b.svc alone.
    assert!(client.drop_server("a.svc:7000"));
    client.add_server("b.svc:7000").expect("valid id");
    gated.release(1);
    until("the lookup of the new names started", || {
        gated.started() == 2
    })
    .await;
    assert!(
        client.servers().is_empty(),
        "the answer for a.svc came too late to apply: {:?}",
        client.servers()
    );
    gated.release(100);
    until("b.svc's server in the set", || {
        client.servers() == [ServerId::from(b)]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_and_drops_leave_exactly_the_servers_of_the_names_left() {
    let client = Arc::new(
        RovingClient::builder()
            .roving_interval(Duration::from_secs(3600))
            .build()
            .expect("valid settings"),
    );
    let workers: Vec<_> = (0..2u16)
        .map(|worker| {
            let client = client.clone();
            tokio::task::spawn_blocking(move || {
                for n in 0..300u16 {
                    let id = format!("127.0.0.{}:{}", 10 + worker, 1000 + n);
                    client.add_server(&id).expect("valid id");
                    if n % 2 == 0 {
                        assert!(client.drop_server(&id));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(client.names().len(), 300);
    assert_eq!(client.servers(), client.names());
}

/// Never answers.
#[derive(Debug, Clone)]
struct Silent;

impl Discovery for Silent {
    async fn discover(&self, _names: &[ServerId]) -> Result<Vec<ServerId>, DiscoveryError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_lookup_that_takes_too_long_is_a_discovery_failure_acquire_reports() {
    let client = RovingClient::builder()
        .server("db.callosum.svc:7000")
        .discovery(Silent)
        .discovery_timeout(Duration::from_millis(10))
        .acquire_timeout(Duration::from_millis(10))
        .build()
        .expect("valid settings");
    let failure = tokio::time::timeout(support::BOUND, async {
        loop {
            if let Err(AcquireError::Unavailable {
                last_error: Some(failure @ Failure::Discovery(_)),
                ..
            }) = client.acquire().await
            {
                return failure;
            }
        }
    })
    .await
    .expect("a discovery failure within the bound");
    assert!(
        matches!(
            &failure,
            Failure::Discovery(error)
                if matches!(**error, DiscoveryError::Timeout { timeout } if timeout == Duration::from_millis(10))
        ),
        "{failure:?}"
    );
    assert_eq!(failure.to_string(), "discovery: no answer within 10ms");
}

#[tokio::test]
async fn an_empty_answer_keeps_the_servers_and_their_connections() {
    let (live, _server) = support::start_server();
    let answers = Answers::new(&[live]);
    let client = RovingClient::builder()
        .server("db.callosum.svc:7000")
        .discovery(answers.clone())
        .discovery_interval(Duration::from_millis(5))
        .roving_interval(Duration::from_millis(5))
        .max_slots(2)
        .build()
        .expect("valid settings");
    until("a full pool", || client.pool().len() == 2).await;
    answers.set(&[]);
    // The lookup after the one under way answers with nothing, and the one after it
    // starts only once that answer was dealt with.
    let seen = answers.lookups();
    until("two more lookups", || answers.lookups() >= seen + 2).await;
    assert_eq!(client.servers(), vec![ServerId::from(live)]);
    assert_eq!(client.pool().len(), 2);
}

#[tokio::test]
async fn a_name_added_in_the_gap_after_a_failure_is_looked_up_at_once() {
    let answers = Answers::new(&[support::refusing_addr()]);
    let client = RovingClient::builder()
        .server("db.callosum.svc:7000")
        .discovery(answers.clone())
        .discovery_interval(Duration::from_secs(3600))
        .discovery_min_gap(Duration::from_secs(3600))
        .roving_interval(Duration::from_millis(5))
        .backoff(None)
        .build()
        .expect("valid settings");
    // Refused connects ask for a lookup; rediscovery now waits out the hour-long gap.
    until("refused connects", || client.counters().unreachable >= 3).await;
    let before = answers.lookups();
    client
        .add_server("other.callosum.svc:7000")
        .expect("valid id");
    until("a lookup of the new names", || answers.lookups() > before).await;
}
