//! Which servers the roving client roves over: the configured names, the discovery that
//! turns them into servers, and the one place that changes the rover's set.
//!
//! `Shared::apply` makes the rover's set the discovered one: a new server joins the
//! pick, a missing one leaves it and its pooled connections leave the pool (idle ones
//! close at once, leased ones when their lease ends). It runs under the membership lock,
//! and the feed holds the same lock while it offers a connection, checking that its server
//! is still in the set: a connect that was in flight when its server left never enters the
//! pool.
//!
//! Every answer is applied under the same guard that checked it is current: a change of
//! the names and the answer for the new names (`Shared::change_names`), or a lookup's
//! answer and the check that the names did not change while it ran
//! (`Shared::apply_if_current`). Checking, then locking again to apply, would let an
//! answer for older names overwrite a newer set.
//!
//! An empty answer for names that are not empty is kept out: a discovery that briefly
//! finds nothing (a registry restarting, every record gone at once) would otherwise close
//! every pooled connection. The last set stays until an answer names a server.
//!
//! The rediscovery task asks the discovery again every interval, soon after a connect
//! failure (never sooner than the minimum gap after the previous lookup, so a dead server
//! does not turn every roving tick into a DNS query), and at once when the names change,
//! also during that gap. Each lookup is bounded by the lookup timeout; one that takes
//! longer is a [`Failure::Discovery`] and the set stays. The task holds a `Weak` to the
//! client and ends with it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use super::counters::Event;
use crate::discovery::DiscoveryError;
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

    /// Adds a name.
    pub(super) fn add_name(&mut self, name: ServerId) {
        self.version += 1;
        self.names.insert(name);
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

    /// Whether the names changed since the last call.
    fn take_names_changed(&self) -> bool {
        // Relaxed: see `names`.
        self.names_changed.swap(false, Ordering::Relaxed)
    }
}

impl<K: Connector> Shared<K>
where
    K::Stream: Liveness,
{
    /// Changes the names with `change`, applies the answer for the new names when the
    /// discovery needs no lookup, all under one guard, and wakes the rediscovery task.
    pub(super) fn change_names<R>(&self, change: impl FnOnce(&mut Membership) -> R) -> R {
        let mut membership = self.membership();
        let changed = change(&mut membership);
        self.apply_known(membership);
        self.wake.names();
        changed
    }

    /// Applies the answer for the names when the discovery needs no lookup for it (at
    /// `build`, and after each change of the names), then releases `membership`.
    pub(super) fn apply_known(&self, mut membership: MutexGuard<'_, Membership>) {
        if let Some(servers) = self.discovery.dyn_discover_now(&membership.names()) {
            self.apply(&mut membership, servers);
        }
        drop(membership);
        self.publish_held();
    }

    /// Applies `servers`, a lookup's answer for the names at `version`, unless the names
    /// changed since (the lookup they asked for follows).
    fn apply_if_current(&self, version: u64, servers: Vec<ServerId>) {
        let mut membership = self.membership();
        if membership.version == version {
            self.apply(&mut membership, servers);
            drop(membership);
            self.publish_held();
        }
    }

    /// Makes the rover's set `servers` (see the module doc), under the membership guard.
    fn apply(&self, membership: &mut Membership, servers: Vec<ServerId>) {
        if servers.is_empty() && !membership.names.is_empty() {
            tracing::warn!("discovery found no server behind the names; keeping the servers");
            return;
        }
        let current: BTreeSet<ServerId> = self.rover.servers().into_iter().collect();
        let wanted: BTreeSet<ServerId> = servers.into_iter().collect();
        for id in wanted.difference(&current) {
            self.rover.add_id(id.clone());
            tracing::info!(server = %id, "server joined");
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

    /// Looks up the names once, within `timeout`, and applies the answer, unless the
    /// names changed meanwhile (the lookup they asked for follows).
    async fn rediscover_once(shared: &Weak<Self>, timeout: Duration) -> Option<()> {
        let (discovery, names, version) = {
            let shared = shared.upgrade()?;
            let membership = shared.membership();
            (
                shared.discovery.clone(),
                membership.names(),
                membership.version,
            )
        };
        let result = tokio::time::timeout(timeout, discovery.dyn_discover(&names))
            .await
            .unwrap_or(Err(DiscoveryError::Timeout { timeout }));
        let shared = shared.upgrade()?;
        match result {
            Ok(servers) => shared.apply_if_current(version, servers),
            Err(error) => {
                tracing::warn!(%error, "discovery failed; keeping the servers");
                shared.note_failure(Failure::Discovery(Arc::new(error)));
            }
        }
        Some(())
    }
}

/// When rediscovery looks up the names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// Time between two lookups.
    pub(super) interval: Duration,
    /// Shortest time between two lookups asked for by connect failures.
    pub(super) min_gap: Duration,
    /// Longest a lookup may take.
    pub(super) timeout: Duration,
}

/// The rediscovery task (see the module doc).
pub(super) async fn rediscover<K: Connector>(
    shared: Weak<Shared<K>>,
    wake: Arc<Wake>,
    schedule: Schedule,
) where
    K::Stream: Liveness,
{
    loop {
        let started = Instant::now();
        if Shared::rediscover_once(&shared, schedule.timeout)
            .await
            .is_none()
        {
            return;
        }
        if tokio::time::timeout(schedule.interval, wake.notify.notified())
            .await
            .is_ok()
            && !wake.take_names_changed()
        {
            // A connect failure: wait out the gap, unless the names change meanwhile.
            // (`timeout_at`, not `select!`: the library leaves tokio's `macros` feature to
            // its users.)
            let until = crate::deadline::after(started, schedule.min_gap);
            while tokio::time::timeout_at(until, wake.notify.notified())
                .await
                .is_ok()
            {
                if wake.take_names_changed() {
                    break;
                }
            }
        }
    }
}
