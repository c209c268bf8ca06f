//! Which servers the roving client roves over: the configured names, the discovery that
//! turns them into servers, and the one place that changes the rover's set.
//!
//! [`Shared::apply`] makes the rover's set the discovered one: a new server joins the
//! pick, a missing one leaves it and its pooled connections leave the pool (idle ones
//! close at once, leased ones when their lease ends). It holds the membership lock while
//! it does, and the feed holds the same lock while it offers a connection, checking that
//! its server is still in the set: a connect that was in flight when its server left never
//! enters the pool.
//!
//! The rediscovery task asks the discovery again every interval, soon after a connect
//! failure (never sooner than the minimum gap after the previous lookup, so a dead server
//! does not turn every roving tick into a DNS query), and at once when the names change.
//! It holds a `Weak` to the client and ends with it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use super::counters::Event;
use crate::failure::Failure;
use crate::observe;
use crate::pool::{Liveness, ServerKey};
use crate::rover::{Connector, ServerId};

/// The configured names and the pool's numbering of the servers.
#[derive(Debug, Default)]
pub(super) struct Membership {
    names: BTreeSet<ServerId>,
    /// Bumped by every change of `names`: a lookup of older names is not applied.
    version: u64,
    keys: HashMap<ServerId, ServerKey>,
    next_key: u64,
}

impl Membership {
    pub(super) fn new(names: impl IntoIterator<Item = ServerId>) -> Self {
        Self {
            names: names.into_iter().collect(),
            ..Self::default()
        }
    }

    pub(super) fn names(&self) -> Vec<ServerId> {
        self.names.iter().cloned().collect()
    }

    /// Adds a name; whether it is new.
    pub(super) fn add_name(&mut self, name: ServerId) -> bool {
        self.version += 1;
        self.names.insert(name)
    }

    /// Removes a name; whether it was there.
    pub(super) fn remove_name(&mut self, name: &ServerId) -> bool {
        self.version += 1;
        self.names.remove(name)
    }

    /// The pool's key for `server`: the same while the server stays in the set.
    pub(super) fn key(&mut self, server: &ServerId) -> ServerKey {
        let next = ServerKey(self.next_key);
        let key = *self.keys.entry(server.clone()).or_insert(next);
        if key == next {
            self.next_key += 1;
        }
        key
    }
}

/// What wakes the rediscovery task before its interval ends.
#[derive(Debug, Default)]
pub(super) struct Wake {
    notify: Notify,
    /// The names changed: look up at once, without the minimum gap.
    names_changed: AtomicBool,
}

impl Wake {
    /// A connect failed: look again soon.
    pub(super) fn failure(&self) {
        self.notify.notify_one();
    }

    /// The names changed: look again now.
    pub(super) fn names(&self) {
        // Relaxed: the flag is read after the notification it comes with.
        self.names_changed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

impl<K: Connector> Shared<K>
where
    K::Stream: Liveness,
{
    /// Makes the rover's set `servers` (see the module doc).
    pub(super) fn apply(&self, servers: Vec<ServerId>) {
        let mut membership = self.membership();
        let current: BTreeSet<ServerId> = self.rover.servers().into_iter().collect();
        let wanted: BTreeSet<ServerId> = servers.into_iter().collect();
        for id in wanted.difference(&current) {
            if self.rover.add_server(id.as_str()).is_ok() {
                tracing::info!(server = %id, "server joined");
            }
        }
        for id in current.difference(&wanted) {
            self.rover.drop_server(id.as_str());
            let closed = membership
                .keys
                .remove(id)
                .map_or(0, |key| self.pool.evict_server(key));
            self.counters.add(Event::Evicted, closed as u64);
            observe::held(id, 0);
            tracing::info!(server = %id, closed, "server left");
        }
        drop(membership);
        self.publish_held();
    }

    /// Sets the held-connections gauge of every server the pool has numbered.
    pub(super) fn publish_held(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let held = self.pool.held_per_server();
        let membership = self.membership();
        for (id, key) in &membership.keys {
            observe::held(id, held.get(key).copied().unwrap_or(0));
        }
    }

    /// Looks up the names once and applies the answer, unless the names changed meanwhile
    /// (the lookup they asked for follows).
    async fn rediscover_once(shared: &Weak<Self>) -> Option<()> {
        let (discovery, names, version) = {
            let shared = shared.upgrade()?;
            let membership = shared.membership();
            (
                shared.discovery.clone(),
                membership.names(),
                membership.version,
            )
        };
        let result = discovery.dyn_discover(&names).await;
        let shared = shared.upgrade()?;
        match result {
            Ok(servers) if shared.membership().version == version => shared.apply(servers),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "discovery failed; keeping the servers");
                shared.note_failure(Failure::Discovery(Arc::new(error)));
            }
        }
        Some(())
    }
}

/// The rediscovery task (see the module doc).
pub(super) async fn rediscover<K: Connector>(
    shared: Weak<Shared<K>>,
    wake: Arc<Wake>,
    interval: Duration,
    min_gap: Duration,
) where
    K::Stream: Liveness,
{
    loop {
        let started = Instant::now();
        if Shared::rediscover_once(&shared).await.is_none() {
            return;
        }
        if tokio::time::timeout(interval, wake.notify.notified())
            .await
            .is_ok()
            // Relaxed: see `Wake::names`.
            && !wake.names_changed.swap(false, Ordering::Relaxed)
        {
            tokio::time::sleep_until(started + min_gap).await;
        }
    }
}
