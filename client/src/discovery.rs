//! Which servers there are: the [`Discovery`] trait, which turns the configured names
//! (`host:port`) into the current set of servers, and its two implementations.
//!
//! A deployment puts its servers behind one name that resolves to many addresses (a
//! Kubernetes headless Service, Consul DNS, round-robin DNS). Connecting to the name would
//! reach whichever address the resolver lists first, so every client would pick the same
//! instance; the pool's per-server rules need each instance as a server of its own. So the
//! default, [`DnsDiscovery`], resolves each name into one server per address,
//! and the roving client asks it again on an interval and soon after connect failures,
//! adding and dropping servers as the records change. [`StaticDiscovery`] takes the ids as
//! they are (one server per id, resolved by the connector at each connect), for connectors
//! whose ids are not DNS names (Unix sockets, proxies). Any other source (a service
//! registry's API, a test's in-memory answers) implements the trait.
//!
//! Ids that are already addresses (`10.0.0.1:7000`, `[::1]:7000`) need no lookup:
//! [`Discovery::discover_now`] answers for them at once, so a static list of addresses is
//! in place as soon as the client is built, as it always was.
//!
//! `DnsDiscovery` keeps only IPv4 addresses by default ([`IpFamily::V4`]): `callosum-server`
//! listens on `0.0.0.0` by default, so the AAAA records of a dual-stack name (`localhost`
//! among them) would be servers that refuse every connect forever. A deployment whose
//! servers listen on IPv6 picks [`IpFamily::Any`] or [`IpFamily::V6`]. The names are
//! resolved concurrently, so one slow name does not hold the others back; the roving client
//! bounds the whole lookup (`discovery_timeout`).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::rover::ServerId;

/// A source of the current set of servers.
pub trait Discovery: Send + Sync + 'static {
    /// The servers behind `names` now (the ids given to the builder and to
    /// [`RovingClient::add_server`](crate::RovingClient::add_server)), each one id. The
    /// client adds the new ones to its set and drops the missing ones with their pooled
    /// connections. On an error the client keeps the set it has, and so it does on an
    /// empty answer for names that are not empty: a source that briefly knows of no server
    /// does not close every pooled connection.
    fn discover(
        &self,
        names: &[ServerId],
    ) -> impl Future<Output = Result<Vec<ServerId>, DiscoveryError>> + Send;

    /// The answer without waiting, when it needs no lookup (applied at `build`,
    /// `add_server` and `drop_server`); `None` otherwise. Default: `None`. Called with the
    /// client's membership lock held, so that the answer and the names it answers for
    /// change together: it must not block.
    fn discover_now(&self, names: &[ServerId]) -> Option<Vec<ServerId>> {
        let _ = names;
        None
    }
}

/// Why discovery could not say which servers there are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A name did not resolve.
    #[error("resolving {name}: {error}")]
    Resolve {
        /// The name.
        name: ServerId,
        /// Why.
        error: io::Error,
    },
    /// No answer within the discovery timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
    },
    /// Another source failed (a registry's API, ...).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Which addresses of a name [`DnsDiscovery`] makes servers of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpFamily {
    /// IPv4 only (A records): the family `callosum-server` listens on by default
    /// (`0.0.0.0`). The default.
    #[default]
    V4,
    /// IPv6 only (AAAA records).
    V6,
    /// Both: for servers listening on both families (`[::]` with dual-stack sockets, or one
    /// listener per family).
    Any,
}

impl IpFamily {
    /// Whether `addr` is of this family.
    pub fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Self::V4 => addr.is_ipv4(),
            Self::V6 => addr.is_ipv6(),
            Self::Any => true,
        }
    }
}

/// Takes each id as one server, as given; the connector resolves a name at each connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticDiscovery;

impl Discovery for StaticDiscovery {
    async fn discover(&self, names: &[ServerId]) -> Result<Vec<ServerId>, DiscoveryError> {
        Ok(names.to_vec())
    }

    fn discover_now(&self, names: &[ServerId]) -> Option<Vec<ServerId>> {
        Some(names.to_vec())
    }
}

/// A lookup of `host:port` into addresses (the system resolver by default).
type Resolve = Arc<
    dyn Fn(ServerId) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// Resolves each name into one server per address of the chosen family (IPv4 by default,
/// see [`ip_family`](Self::ip_family)), through the system resolver, all names at once. A
/// name that fails to resolve, or has no address of the family, keeps its last answer (a
/// resolver hiccup does not drop live servers); the whole lookup fails only when no name
/// has an answer, new or kept.
///
/// The kept answers are each instance's own, and a clone starts with none: the roving
/// client clones the discovery it is given for each client it builds, so two clients never
/// share them.
pub struct DnsDiscovery {
    resolve: Resolve,
    family: IpFamily,
    /// Each name's last successful answer.
    last: Mutex<HashMap<ServerId, Vec<ServerId>>>,
}

impl Default for DnsDiscovery {
    fn default() -> Self {
        Self::with_resolver(|name: ServerId| {
            Box::pin(async move { Ok(tokio::net::lookup_host(name.as_str()).await?.collect()) })
        })
    }
}

impl Clone for DnsDiscovery {
    /// The same resolver and family, with no kept answers.
    fn clone(&self) -> Self {
        Self {
            resolve: self.resolve.clone(),
            family: self.family,
            last: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// Resolves with `resolve` instead of the system resolver.
    fn with_resolver<F>(resolve: F) -> Self
    where
        F: Fn(ServerId) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
            + Send
            + Sync
            + 'static,
    {
        Self {
            resolve: Arc::new(resolve),
            family: IpFamily::default(),
            last: Mutex::default(),
        }
    }

    /// Which addresses of a name become servers. Default: [`IpFamily::V4`], the family
    /// `callosum-server` listens on by default. Ids that are addresses are taken as given,
    /// whatever their family.
    #[must_use]
    pub fn ip_family(mut self, family: IpFamily) -> Self {
        self.family = family;
        self
    }

    /// The kept answers, by name.
    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<ServerId, Vec<ServerId>>> {
        // Nothing panics under this lock; the map is whole at every unlock.
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The id as an address, when it is one (no lookup needed).
fn literal(name: &ServerId) -> Option<ServerId> {
    name.as_str().parse::<SocketAddr>().ok().map(ServerId::from)
}

impl Discovery for DnsDiscovery {
    async fn discover(&self, names: &[ServerId]) -> Result<Vec<ServerId>, DiscoveryError> {
        // Every name's lookup at once, each spawned on its own; dropping the set (the
        // client's discovery timeout) aborts them.
        let mut lookups = tokio::task::JoinSet::new();
        for name in names.iter().filter(|name| literal(name).is_none()) {
            let lookup = (self.resolve)(name.clone());
            let name = name.clone();
            lookups.spawn(async move { (name, lookup.await) });
        }
        let mut resolved = HashMap::new();
        while let Some(done) = lookups.join_next().await {
            if let Ok((name, addrs)) = done {
                resolved.insert(name, addrs);
            }
        }
        let mut servers: BTreeSet<ServerId> = names.iter().filter_map(literal).collect();
        let mut answered = !servers.is_empty();
        let mut failed = None;
        for name in names.iter().filter(|name| literal(name).is_none()) {
            let answer = resolved
                .remove(name)
                .unwrap_or_else(|| Err(io::Error::other("the lookup ended early")))
                .and_then(|addrs| self.admitted(addrs));
            match answer {
                Ok(ids) => {
                    servers.extend(ids.iter().cloned());
                    self.last().insert(name.clone(), ids);
                    answered = true;
                }
                Err(error) => {
                    tracing::warn!(%name, %error, "name did not resolve; keeping its last answer");
                    if let Some(kept) = self.last().get(name) {
                        servers.extend(kept.iter().cloned());
                        answered = true;
                    }
                    failed.get_or_insert(DiscoveryError::Resolve {
                        name: name.clone(),
                        error,
                    });
                }
            }
        }
        // Forget the names no longer configured.
        self.last().retain(|name, _| names.contains(name));
        match failed {
            Some(error) if !answered => Err(error),
            _ => Ok(servers.into_iter().collect()),
        }
    }

    fn discover_now(&self, names: &[ServerId]) -> Option<Vec<ServerId>> {
        names.iter().map(literal).collect()
    }
}

impl DnsDiscovery {
    /// The addresses of the chosen family as servers; none is an error naming the family.
    fn admitted(&self, addrs: Vec<SocketAddr>) -> io::Result<Vec<ServerId>> {
        let found = addrs.len();
        let ids: Vec<ServerId> = addrs
            .into_iter()
            .filter(|addr| self.family.admits(addr))
            .map(ServerId::from)
            .collect();
        if ids.is_empty() && found > 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {:?} address among {found}", self.family),
            ));
        }
        Ok(ids)
    }
}

/// [`Discovery`] as a trait object, so the client is not generic over it.
pub(crate) trait DynDiscovery: Send + Sync + 'static {
    fn dyn_discover<'a>(
        &'a self,
        names: &'a [ServerId],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ServerId>, DiscoveryError>> + Send + 'a>>;

    fn dyn_discover_now(&self, names: &[ServerId]) -> Option<Vec<ServerId>>;
}

impl<D: Discovery> DynDiscovery for D {
    fn dyn_discover<'a>(
        &'a self,
        names: &'a [ServerId],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ServerId>, DiscoveryError>> + Send + 'a>> {
        Box::pin(Discovery::discover(self, names))
    }

    fn dyn_discover_now(&self, names: &[ServerId]) -> Option<Vec<ServerId>> {
        Discovery::discover_now(self, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ServerId {
        ServerId::new(s).expect("valid id")
    }

    fn ids(list: &[&str]) -> Vec<ServerId> {
        list.iter().map(|s| id(s)).collect()
    }

    /// A resolver answering from a table the test changes; a missing name fails.
    fn table_resolver(table: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>) -> DnsDiscovery {
        DnsDiscovery::with_resolver(move |name: ServerId| {
            let answer = table.lock().expect("lock").get(name.as_str()).cloned();
            Box::pin(async move {
                answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
            })
        })
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|s| s.parse().expect("an address"))
            .collect()
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_is_one_server_per_address() {
        let table = Arc::new(Mutex::new(HashMap::from([(
            "db.svc:7000".to_owned(),
            addrs(&["127.0.0.2:7000", "127.0.0.3:7000", "[::1]:7000"]),
        )])));
        let dns = table_resolver(table).ip_family(IpFamily::Any);
        let names = ids(&["db.svc:7000", "127.0.0.9:7001"]);
        let mut got = dns.discover(&names).await.expect("resolved");
        got.sort();
        assert_eq!(
            got,
            ids(&[
                "127.0.0.2:7000",
                "127.0.0.3:7000",
                "127.0.0.9:7001",
                "[::1]:7000"
            ])
        );
        assert_eq!(dns.discover_now(&names), None, "a name needs a lookup");
        assert_eq!(
            dns.discover_now(&ids(&["127.0.0.1:1", "[::1]:2"])),
            Some(ids(&["127.0.0.1:1", "[::1]:2"])),
            "addresses need none"
        );
    }

    #[tokio::test]
    async fn a_name_that_stops_resolving_keeps_its_last_answer() {
        let table = Arc::new(Mutex::new(HashMap::from([(
            "db.svc:7000".to_owned(),
            addrs(&["127.0.0.2:7000", "127.0.0.3:7000"]),
        )])));
        let dns = table_resolver(table.clone());
        let names = ids(&["db.svc:7000"]);
        let first = dns.discover(&names).await.expect("resolved");
        table.lock().expect("lock").clear();
        assert_eq!(dns.discover(&names).await.expect("kept"), first);
        // Records change: the new answer replaces the old.
        table.lock().expect("lock").insert(
            "db.svc:7000".to_owned(),
            addrs(&["127.0.0.3:7000", "127.0.0.4:7000"]),
        );
        assert_eq!(
            dns.discover(&names).await.expect("resolved"),
            ids(&["127.0.0.3:7000", "127.0.0.4:7000"])
        );
    }

    #[tokio::test]
    async fn a_name_that_never_resolved_is_an_error_naming_it() {
        let dns = table_resolver(Arc::default());
        let error = dns
            .discover(&ids(&["nowhere.svc:7000"]))
            .await
            .expect_err("nothing resolves");
        assert_eq!(
            error.to_string(),
            "resolving nowhere.svc:7000: no such name"
        );
        // Another name that does answer still yields its servers.
        let answered = dns
            .discover(&ids(&["nowhere.svc:7000", "127.0.0.1:1"]))
            .await
            .expect("one answer");
        assert_eq!(answered, ids(&["127.0.0.1:1"]));
    }

    #[tokio::test]
    async fn only_the_chosen_family_becomes_servers() {
        let table = Arc::new(Mutex::new(HashMap::from([
            (
                "both.svc:7000".to_owned(),
                addrs(&["127.0.0.2:7000", "[::1]:7000"]),
            ),
            ("six.svc:7000".to_owned(), addrs(&["[::1]:7001"])),
        ])));
        let names = ids(&["both.svc:7000"]);
        let v4 = table_resolver(table.clone());
        assert_eq!(
            v4.discover(&names).await.expect("resolved"),
            ids(&["127.0.0.2:7000"]),
            "IPv4 by default"
        );
        let v6 = table_resolver(table.clone()).ip_family(IpFamily::V6);
        assert_eq!(
            v6.discover(&names).await.expect("resolved"),
            ids(&["[::1]:7000"])
        );
        let error = v4
            .discover(&ids(&["six.svc:7000"]))
            .await
            .expect_err("no IPv4 address");
        assert_eq!(
            error.to_string(),
            "resolving six.svc:7000: no V4 address among 1"
        );
    }

    #[tokio::test]
    async fn a_clone_keeps_no_answer_of_the_original() {
        let table = Arc::new(Mutex::new(HashMap::from([(
            "db.svc:7000".to_owned(),
            addrs(&["127.0.0.2:7000"]),
        )])));
        let dns = table_resolver(table.clone());
        let names = ids(&["db.svc:7000"]);
        dns.discover(&names).await.expect("resolved");
        let other = dns.clone();
        table.lock().expect("lock").clear();
        assert!(
            dns.discover(&names).await.is_ok(),
            "the original kept its answer"
        );
        assert!(
            other.discover(&names).await.is_err(),
            "the clone has none to keep"
        );
    }

    #[tokio::test]
    async fn the_system_resolver_turns_localhost_into_addresses() {
        let got = DnsDiscovery::default()
            .ip_family(IpFamily::Any)
            .discover(&ids(&["localhost:7000"]))
            .await
            .expect("localhost resolves");
        assert!(!got.is_empty());
        for server in got {
            let addr: SocketAddr = server.as_str().parse().expect("an address");
            assert!(addr.ip().is_loopback() && addr.port() == 7000, "{addr}");
        }
    }

    #[tokio::test]
    async fn static_discovery_takes_the_ids_as_given() {
        let names = ids(&["db.svc:7000", "127.0.0.1:1"]);
        assert_eq!(StaticDiscovery.discover(&names).await.expect("ok"), names);
        assert_eq!(StaticDiscovery.discover_now(&names), Some(names));
    }
}
