//! Resets on purpose (`--reset-fraction F`): which connections the tool closes with an RST
//! (`SO_LINGER 0`) instead of a FIN, at which point of their life, and how many it did.
//!
//! A server in front of every service call must survive clients that vanish abruptly at any
//! moment, so each connection is picked with probability `F` and given one of three points at
//! random, in equal shares: right after the connection is established (before its slot line
//! is read: the server may still be writing it), right after the line is read, or after a
//! short random hold (up to [`MAX_HOLD`]) behind the line. These resets are counted here, by
//! point, and are not errors; errors stay what the server did wrong.

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

/// The longest hold before a reset at [`ResetPoint::AfterHold`].
pub const MAX_HOLD: Duration = Duration::from_millis(5);

/// Where in a connection's life the tool resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPoint {
    /// As soon as the connection is established, before the slot line is read.
    AfterConnect,
    /// Right after the slot line was read.
    AfterLine,
    /// After the slot line and a random hold of up to [`MAX_HOLD`].
    AfterHold,
}

impl ResetPoint {
    /// Every point, in report order.
    pub const ALL: [ResetPoint; 3] = [
        ResetPoint::AfterConnect,
        ResetPoint::AfterLine,
        ResetPoint::AfterHold,
    ];

    /// Whether this connection is reset (with probability `fraction`), and where.
    pub fn choose(rng: &mut impl Rng, fraction: f64) -> Option<ResetPoint> {
        (fraction > 0.0 && rng.random_bool(fraction.min(1.0)))
            .then(|| Self::ALL[rng.random_range(0..Self::ALL.len())])
    }

    /// How long to hold the connection after its line before the reset.
    pub fn hold(self, rng: &mut impl Rng) -> Duration {
        match self {
            ResetPoint::AfterHold => {
                Duration::from_micros(rng.random_range(0..=MAX_HOLD.as_micros() as u64))
            }
            ResetPoint::AfterConnect | ResetPoint::AfterLine => Duration::ZERO,
        }
    }
}

/// Resets done on purpose, by point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResetCounts {
    /// Reset as soon as connected, before the slot line was read.
    pub after_connect: u64,
    /// Reset right after the slot line.
    pub after_line: u64,
    /// Reset after a short hold behind the slot line.
    pub after_hold: u64,
}

impl ResetCounts {
    /// Counts one reset at `point`.
    pub fn add(&mut self, point: ResetPoint) {
        match point {
            ResetPoint::AfterConnect => self.after_connect += 1,
            ResetPoint::AfterLine => self.after_line += 1,
            ResetPoint::AfterHold => self.after_hold += 1,
        }
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &ResetCounts) {
        self.after_connect += other.after_connect;
        self.after_line += other.after_line;
        self.after_hold += other.after_hold;
    }

    /// All resets.
    pub fn total(&self) -> u64 {
        self.after_connect + self.after_line + self.after_hold
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn the_fraction_picks_that_share_of_connections_over_every_point() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = ResetCounts::default();
        for _ in 0..30_000 {
            if let Some(point) = ResetPoint::choose(&mut rng, 0.3) {
                assert!(point.hold(&mut rng) <= MAX_HOLD);
                counts.add(point);
            }
        }
        assert!((8_500..9_500).contains(&counts.total()), "{counts:?}");
        for n in [counts.after_connect, counts.after_line, counts.after_hold] {
            assert!((2_700..3_300).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn zero_never_resets_and_one_always_does() {
        let mut rng = SmallRng::seed_from_u64(7);
        assert!((0..1000).all(|_| ResetPoint::choose(&mut rng, 0.0).is_none()));
        assert!((0..1000).all(|_| ResetPoint::choose(&mut rng, 1.0).is_some()));
    }
}
