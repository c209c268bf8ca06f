//! The rover's server set: ids (`host:port`), per-server backoff state, and the random
//! pick that skips servers backing off.
//!
//! Kept apart from the task that drives it so the pick and the backoff bookkeeping are plain
//! functions of "now". Each entry carries a generation, bumped by every `add`, so the result
//! of an attempt started before a server was replaced or re-added does not touch its fresh
//! state.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::IteratorRandom;
use tokio::time::Instant;

use super::backoff::Backoff;

/// A server's id: `host:port`, the host a name or an address. The roving client's default
/// discovery makes every server id an address; a name given to the rover itself is
/// resolved by the connector at each connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(Arc<str>);

/// A server id that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server id {id:?}: expected host:port")]
pub struct InvalidServerId {
    /// The id given.
    pub id: String,
}

impl ServerId {
    /// Checks that `id` is `host:port` (port a `u16`, host non-empty; IPv6 in brackets).
    pub fn new(id: &str) -> Result<Self, InvalidServerId> {
        let valid = id
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if valid {
            Ok(Self(id.into()))
        } else {
            Err(InvalidServerId { id: id.to_owned() })
        }
    }

    /// The id as given, `host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An address as an id: `10.0.0.1:7000`, `[::1]:7000`.
impl From<SocketAddr> for ServerId {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.to_string().into())
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One server's state.
#[derive(Debug)]
struct State {
    generation: u64,
    failures: u32,
    /// Left out of the random pick until then.
    backoff_until: Option<Instant>,
}

/// What the rover should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The set is empty.
    Empty,
    /// Try this server (with the generation of its entry).
    Server(ServerId, u64),
}

/// The server set.
#[derive(Debug)]
pub(crate) struct Servers {
    map: HashMap<ServerId, State>,
    generations: u64,
    pub(crate) rng: SmallRng,
}

impl Servers {
    pub(crate) fn new(rng: SmallRng) -> Self {
        Self {
            map: HashMap::new(),
            generations: 0,
            rng,
        }
    }

    /// Adds `id`, or replaces it with fresh state (its backoff reset).
    pub(crate) fn add(&mut self, id: ServerId) {
        self.generations += 1;
        let state = State {
            generation: self.generations,
            failures: 0,
            backoff_until: None,
        };
        self.map.insert(id, state);
    }

    /// Removes `id`; returns whether it was there.
    pub(crate) fn remove(&mut self, id: &ServerId) -> bool {
        self.map.remove(id).is_some()
    }

    /// Whether `id` is in the set.
    pub(crate) fn contains(&self, id: &ServerId) -> bool {
        self.map.contains_key(id)
    }

    /// How many servers are left out of the pick at `now` (backing off), and how many
    /// there are.
    pub(crate) fn backing_off(&self, now: Instant) -> (usize, usize) {
        let off = self
            .map
            .values()
            .filter(|s| s.backoff_until.is_some_and(|until| until > now))
            .count();
        (off, self.map.len())
    }

    /// The ids, sorted.
    pub(crate) fn ids(&self) -> Vec<ServerId> {
        let mut ids: Vec<ServerId> = self.map.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A uniformly random server not backing off at `now`; when every server is backing
    /// off, the one whose backoff ends first (the rover never sits idle).
    pub(crate) fn pick(&mut self, now: Instant) -> Pick {
        if self.map.is_empty() {
            return Pick::Empty;
        }
        let ready = self
            .map
            .iter()
            .filter(|(_, s)| s.backoff_until.is_none_or(|until| until <= now))
            .choose(&mut self.rng);
        if let Some((id, state)) = ready {
            return Pick::Server(id.clone(), state.generation);
        }
        // Ties (equal backoff ends) break by id, so the pick is deterministic.
        self.map
            .iter()
            .min_by(|(a_id, a), (b_id, b)| (a.backoff_until, a_id).cmp(&(b.backoff_until, b_id)))
            .map_or(Pick::Empty, |(id, state)| {
                Pick::Server(id.clone(), state.generation)
            })
    }

    /// A connect to `id` failed: one more consecutive failure, and a backoff if enabled.
    pub(crate) fn failed(
        &mut self,
        id: &ServerId,
        generation: u64,
        now: Instant,
        backoff: Option<&Backoff>,
    ) {
        let Some(state) = self.map.get_mut(id).filter(|s| s.generation == generation) else {
            return;
        };
        state.failures = state.failures.saturating_add(1);
        if let Some(backoff) = backoff {
            let delay = backoff.delay(state.failures, &mut self.rng);
            state.backoff_until = Some(crate::deadline::after(now, delay));
        }
    }

    /// A connect to `id` succeeded: its backoff is reset.
    pub(crate) fn succeeded(&mut self, id: &ServerId, generation: u64) {
        if let Some(state) = self.map.get_mut(id).filter(|s| s.generation == generation) {
            state.failures = 0;
            state.backoff_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;

    fn id(s: &str) -> ServerId {
        ServerId::new(s).expect("valid id")
    }

    #[test]
    fn ids_must_be_host_and_port() {
        for ok in [
            "localhost:4040",
            "127.0.0.1:0",
            "[::1]:65535",
            "a.example:1",
        ] {
            assert_eq!(id(ok).as_str(), ok);
        }
        for bad in [
            "",
            "localhost",
            ":80",
            "host:",
            "host:65536",
            "host:-1",
            "host:x",
        ] {
            assert!(ServerId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pick_skips_servers_backing_off_until_their_backoff_ends() {
        let mut servers = Servers::new(SmallRng::seed_from_u64(5));
        let now = Instant::now();
        assert_eq!(servers.pick(now), Pick::Empty);
        let (a, b) = (id("a:1"), id("b:1"));
        servers.add(a.clone());
        servers.add(b.clone());
        let backoff = Backoff::default().jitter(0.0);
        let gen_a = match servers.pick(now) {
            Pick::Server(_, _) => servers.map[&a].generation,
            other => panic!("{other:?}"),
        };
        servers.failed(&a, gen_a, now, Some(&backoff));
        for _ in 0..50 {
            assert!(matches!(servers.pick(now), Pick::Server(ref s, _) if *s == b));
        }
        let gen_b = servers.map[&b].generation;
        servers.failed(&b, gen_b, now, Some(&backoff));
        servers.failed(&b, gen_b, now, Some(&backoff));
        // Both backing off: a's (1 s) ends before b's (1.6 s), so a is tried rather than none.
        assert!(matches!(servers.pick(now), Pick::Server(ref s, _) if *s == a));
        assert!(
            matches!(servers.pick(now + Duration::from_secs(1)), Pick::Server(ref s, _) if *s == a)
        );
        assert_eq!(servers.backing_off(now), (2, 2));
        servers.succeeded(&b, gen_b);
        assert!(servers.map[&b].backoff_until.is_none());
        assert_eq!(servers.backing_off(now), (1, 2));
        // A stale generation (the server was re-added meanwhile) changes nothing.
        servers.add(a.clone());
        servers.failed(&a, gen_a, now, Some(&backoff));
        assert!(servers.map[&a].backoff_until.is_none());
        // Without backoff (the original), failures never leave a server out.
        let gen_a = servers.map[&a].generation;
        servers.failed(&a, gen_a, now, None);
        assert!(servers.map[&a].backoff_until.is_none());
    }

    #[test]
    fn adding_a_server_again_ends_its_backoff_at_once() {
        let mut servers = Servers::new(SmallRng::seed_from_u64(1));
        let now = Instant::now();
        let (down, up) = (id("down:1"), id("up:1"));
        servers.add(down.clone());
        servers.add(up.clone());
        let backoff = Backoff::default().jitter(0.0);
        let generation = servers.map[&down].generation;
        for _ in 0..4 {
            servers.failed(&down, generation, now, Some(&backoff));
        }
        assert!(servers.map[&down].backoff_until.is_some());
        servers.add(down.clone());
        assert!(servers.map[&down].backoff_until.is_none());
        let picked_down =
            (0..100).any(|_| matches!(servers.pick(now), Pick::Server(ref s, _) if *s == down));
        assert!(picked_down, "eligible again at once");
    }

    #[test]
    fn add_replaces_and_remove_drops() {
        let mut servers = Servers::new(SmallRng::seed_from_u64(0));
        servers.add(id("foo:1234"));
        servers.add(id("foo:1234"));
        servers.add(id("bar:1"));
        assert_eq!(servers.ids(), vec![id("bar:1"), id("foo:1234")]);
        assert!(servers.remove(&id("foo:1234")));
        assert!(!servers.remove(&id("foo:1234")));
        assert_eq!(servers.ids(), vec![id("bar:1")]);
    }
}
