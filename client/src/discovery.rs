//! Which servers there are: the [`Discovery`] trait, which turns the configured names
//! (`host:port`) into the current set of servers, and its two implementations.
//!
//! A deployment puts its servers behind one name that resolves to many addresses (a
//! Kubernetes headless Service, Consul DNS, round-robin DNS). Connecting to the name would
//! reach whichever address the resolver lists first, so every client would pick the same
//! instance; the pool's per-server rules need each instance as a server of its own. So the
//! default, [`DnsDiscovery`], resolves each name into one server per address (A and AAAA),
//! and the roving client asks it again on an interval and soon after connect failures,
//! adding and dropping servers as the records change. [`StaticDiscovery`] takes the ids as
//! they are (one server per id, resolved by the connector at each connect), for connectors
//! whose ids are not DNS names (Unix sockets, proxies). Any other source (a service
//! registry's API, a test's in-memory answers) implements the trait.
//!
//! Ids that are already addresses (`10.0.0.1:7000`, `[::1]:7000`) need no lookup:
//! [`Discovery::discover_now`] answers for them at once, so a static list of addresses is
//! in place as soon as the client is built, as it always was.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use crate::rover::ServerId;

/// A source of the current set of servers.
pub trait Discovery: Send + Sync + 'static {
    /// The servers behind `names` now (the ids given to the builder and to
    /// [`RovingClient::add_server`](crate::RovingClient::add_server)), each one id. The
    /// client adds the new ones to its set and drops the missing ones with their pooled
    /// connections. On an error the client keeps the set it has.
    fn discover(
        &self,
        names: &[ServerId],
    ) -> impl Future<Output = Result<Vec<ServerId>, DiscoveryError>> + Send;

    /// The answer without waiting, when it needs no lookup (applied at `build`,
    /// `add_server` and `drop_server`); `None` otherwise. Default: `None`.
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
    /// Another source failed (a registry's API, ...).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
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

/// Resolves each name into one server per address (A and AAAA records), through the system
/// resolver. A name that fails to resolve keeps its last answer (a resolver hiccup does not
/// drop live servers); the whole lookup fails only when no name has an answer, new or kept.
#[derive(Clone)]
pub struct DnsDiscovery {
    resolve: Resolve,
    /// Each name's last successful answer.
    last: Arc<Mutex<HashMap<ServerId, Vec<ServerId>>>>,
}

impl Default for DnsDiscovery {
    fn default() -> Self {
        Self::with_resolver(|name: ServerId| {
            Box::pin(async move { Ok(tokio::net::lookup_host(name.as_str()).await?.collect()) })
        })
    }
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery").finish_non_exhaustive()
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
            last: Arc::default(),
        }
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
        let mut servers = BTreeSet::new();
        let mut failed = None;
        let mut answered = false;
        for name in names {
            if let Some(addr) = literal(name) {
                servers.insert(addr);
                answered = true;
                continue;
            }
            match (self.resolve)(name.clone()).await {
                Ok(addrs) => {
                    let ids: Vec<ServerId> = addrs.into_iter().map(ServerId::from).collect();
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
        let dns = table_resolver(table);
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
    async fn the_system_resolver_turns_localhost_into_addresses() {
        let got = DnsDiscovery::default()
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
