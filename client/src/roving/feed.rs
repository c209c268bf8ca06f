//! The task that takes the rover's events into the pool, the counters and the last
//! failure.
//!
//! Each event is one rover tick: it counts the expired connections the pool's offers
//! replaced (improved policy only: an expired connection stays until a newcomer takes its
//! place), then offers a new connection to the pool (after a
//! prune of idle connections the servers closed, when the pool is full) with its server,
//! and counts the outcome. A failed connect is remembered for `acquire`'s error and asks
//! for a rediscovery; a successful one clears the failure. The task holds a `Weak` to the
//! client and ends with it, or when the rover stops.

use std::sync::{Arc, Weak};

use super::counters::Event;
use super::{Connection, Shared};
use crate::failure::Failure;
use crate::pool::{Liveness, Offer};
use crate::rover::{Connector, RoverError, RoverEvent, RoverEvents};

/// Takes the rover's events into the pool and the counters.
pub(super) async fn feed<K: Connector>(mut events: RoverEvents<K::Stream>, shared: Weak<Shared<K>>)
where
    K::Stream: Liveness,
{
    while let Some(event) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.take(event);
    }
}

impl<K: Connector> Shared<K>
where
    K::Stream: Liveness,
{
    /// One rover tick's event.
    fn take(&self, event: RoverEvent<K::Stream>) {
        // Each event is one rover tick: count the expired connections the last offers
        // replaced (none without a maximum age).
        let retired = self.pool.take_retired();
        self.counters.add(Event::Retired, retired as u64);
        match event {
            RoverEvent::Connected {
                server,
                slot,
                stream,
                ..
            } => {
                self.clear_failure();
                let mut membership = self.membership();
                if !self.rover.contains(&server) {
                    // Its server left while the connect was in flight.
                    tracing::debug!(%server, slot, "closed: the server left the set");
                    return;
                }
                // Dead idle connections must not make a full pool refuse a live one.
                if self.pool.len() >= self.pool.max_slots() {
                    let pruned = self.pool.prune();
                    if pruned > 0 {
                        tracing::debug!(pruned, "dropped idle connections the servers closed");
                    }
                }
                let key = membership.key(&server);
                let conn = Connection {
                    server,
                    slot,
                    stream,
                };
                match self.pool.offer_from(key, slot, conn) {
                    Offer::Kept => self.counters.add(Event::Kept, 1),
                    Offer::Replaced {
                        evicted_slot,
                        evicted,
                    } => {
                        tracing::debug!(slot, evicted_slot, "replaced the highest slot");
                        self.counters.add(Event::Kept, 1);
                        self.counters.add(Event::Evicted, 1);
                        drop(evicted);
                    }
                    Offer::Rejected(conn) => {
                        tracing::trace!(slot, server = %conn.server, "rejected");
                        self.counters.add(Event::Rejected, 1);
                    }
                }
                drop(membership);
                self.publish_held();
            }
            RoverEvent::Unreachable {
                server,
                addr,
                error,
            } => {
                tracing::debug!(%server, ?addr, %error, "unreachable");
                self.counters.add(Event::Unreachable, 1);
                self.note_failure(Failure::Connect {
                    server,
                    addr,
                    error: Arc::new(error),
                });
                self.wake.failure();
            }
            RoverEvent::Error(RoverError::Protocol {
                server,
                addr,
                source,
            }) => {
                tracing::warn!(%server, ?addr, %source, "server broke the handshake");
                self.counters.add(Event::ProtocolError, 1);
                self.note_failure(Failure::Protocol {
                    server,
                    addr,
                    error: Arc::new(source),
                });
            }
            RoverEvent::Error(error) => tracing::debug!(%error, "rover"),
        }
    }
}
