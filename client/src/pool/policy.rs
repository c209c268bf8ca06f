//! The pool's knobs, gathered in one options struct so balancing policies can grow without
//! changing the pool's API: the original rules, the improved Callosum policy, and every rule
//! of the improved policy as its own toggle so each can be switched off (ablation).
//!
//! [`PoolPolicy::improved`] (also the `Default`) is the policy measured in `docs/balance.md`
//! ("The improved Callosum policy"): maximum connection age, slow-connection penalty, least
//! outstanding first, random ties, accept equal, small pools spread, slot-weighted leases,
//! latency-damped weights, outlier decay, a preferred connection, spread pools rotating
//! their lowest slots first. It evens request rates, brings a joining server to
//! its share and avoids a slow one where the original does not, for a lease that scans the idle
//! connections. [`PoolPolicy::original`] is the original `callosum-client-tcp` exactly: 100
//! slots, lease the lowest slot, replace the highest only with a strictly lower one, ties
//! between equal slots broken by arrival order, every operation O(log n). The rules themselves
//! are written once, in [`decide`](super::decide), which the pool and the simulator
//! (`callosum-loadgen simulate`, whose `PoolRules` converts to this type) both call.

use std::time::Duration;

use crate::pool::{PoolError, age};

/// Default number of connections a pool keeps.
pub const DEFAULT_MAX_SLOTS: usize = 100;

/// The roving interval a pool assumes for [`PoolPolicy::improved`]'s default maximum age
/// when it is used without a roving client (the rover's default interval).
pub const ASSUMED_ROVING_INTERVAL: Duration = Duration::from_secs(1);

pub use crate::pool::age::DEFAULT_MAX_AGE_INTERVALS;

/// The slow-connection penalty: each pool entry keeps an exponentially weighted moving
/// average of its response time (lease to return); when leasing, an idle connection whose
/// average is at least `threshold` × the mean of the pool's averages counts as
/// ⌊average / (threshold × mean)⌋ more requests in flight at its server. Never-used
/// connections count nothing, so they are tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowPenalty {
    alpha: f32,
    threshold: f32,
}

impl Default for SlowPenalty {
    /// Weight 0.2 for a new sample, threshold 1.5 (the measured values).
    fn default() -> Self {
        Self {
            alpha: 0.2,
            threshold: 1.5,
        }
    }
}

impl SlowPenalty {
    /// Weight of a new response time in the moving average, in (0, 1]; the first sample
    /// sets the average. Default 0.2. Other values are refused by
    /// [`Pool::with_policy`](crate::pool::Pool::with_policy).
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// How many times the pool's mean an average must reach to count as one more request
    /// in flight; finite and positive. Default 1.5.
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// The configured weight.
    pub fn get_alpha(&self) -> f32 {
        self.alpha
    }

    /// The configured threshold.
    pub fn get_threshold(&self) -> f32 {
        self.threshold
    }

    fn is_valid(&self) -> bool {
        self.alpha > 0.0 && self.alpha <= 1.0 && self.threshold.is_finite() && self.threshold > 0.0
    }
}

/// How long a pooled connection may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxAge {
    /// Never retired (the original).
    Off,
    /// [`DEFAULT_MAX_AGE_INTERVALS`] roving intervals, at least `max_slots` intervals.
    Auto,
    /// This age (at least `max_slots` roving intervals under a roving client).
    Fixed(Duration),
}

/// How a pool chooses between connections. Start from [`improved`](Self::improved) (the
/// default) or [`original`](Self::original) and switch single rules with the builder
/// methods. Each toggle below says its setting in both.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolPolicy {
    pub(crate) max_slots: usize,
    pub(crate) random_tie_break: bool,
    pub(crate) accept_equal: bool,
    pub(crate) least_outstanding: bool,
    pub(crate) slow_penalty: Option<SlowPenalty>,
    pub(crate) max_age: MaxAge,
    pub(crate) spread_small_pools: bool,
    pub(crate) slot_weighted_leases: bool,
    pub(crate) latency_damped_weights: bool,
    pub(crate) outlier_decay: bool,
    pub(crate) preferred_connection: bool,
    /// The age of pools spread over many servers; `Off`: the rule is off.
    pub(crate) rotate_spread_pools: MaxAge,
    pub(crate) seed: Option<u64>,
}

impl Default for PoolPolicy {
    /// The improved Callosum policy ([`improved`](Self::improved)).
    fn default() -> Self {
        Self::improved()
    }
}

impl PoolPolicy {
    /// The original `callosum-client-tcp` rules: lease the lowest slot; at `max_slots`
    /// replace the highest slot only with a strictly lower one; equal slots by arrival
    /// order; connections live until replaced or closed. 100 slots.
    pub fn original() -> Self {
        Self {
            max_slots: DEFAULT_MAX_SLOTS,
            random_tie_break: false,
            accept_equal: false,
            least_outstanding: false,
            slow_penalty: None,
            max_age: MaxAge::Off,
            spread_small_pools: false,
            slot_weighted_leases: false,
            latency_damped_weights: false,
            outlier_decay: false,
            preferred_connection: false,
            rotate_spread_pools: MaxAge::Off,
            seed: None,
        }
    }

    /// The improved Callosum policy (`docs/balance.md`): every rule below on, with the
    /// measured settings. 100 slots.
    ///
    /// - [`max_age`](Self::max_age): 10 roving intervals, never below `max_slots`
    ///   intervals (a pool without a roving client assumes a 1 s interval);
    /// - [`slow_penalty`](Self::slow_penalty): weight 0.2, threshold 1.5;
    /// - [`least_outstanding`](Self::least_outstanding), [`random_tie_break`](Self::random_tie_break)
    ///   and [`accept_equal`](Self::accept_equal);
    /// - [`spread_small_pools`](Self::spread_small_pools),
    ///   [`slot_weighted_leases`](Self::slot_weighted_leases),
    ///   [`latency_damped_weights`](Self::latency_damped_weights),
    ///   [`outlier_decay`](Self::outlier_decay),
    ///   [`preferred_connection`](Self::preferred_connection) and
    ///   [`rotate_spread_pools`](Self::rotate_spread_pools) (at the maximum age without
    ///   its floor).
    pub fn improved() -> Self {
        Self {
            max_slots: DEFAULT_MAX_SLOTS,
            random_tie_break: true,
            accept_equal: true,
            least_outstanding: true,
            slow_penalty: Some(SlowPenalty::default()),
            max_age: MaxAge::Auto,
            spread_small_pools: true,
            slot_weighted_leases: true,
            latency_damped_weights: true,
            outlier_decay: true,
            preferred_connection: true,
            rotate_spread_pools: MaxAge::Auto,
            seed: None,
        }
    }

    /// Most connections held at once, leased ones included. Default 100; 0 is refused by
    /// [`Pool::with_policy`](crate::pool::Pool::with_policy).
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.max_slots = max_slots;
        self
    }

    /// Between connections with the same slot (from different servers), lease and replace one
    /// picked uniformly at random at each decision instead of the earliest-offered one, so
    /// equal servers share the load. Costs a scan of the idle connections per lease and of the
    /// held ones per replacement. Off in the original (arrival order), on in the improved
    /// policy.
    pub fn random_tie_break(mut self, on: bool) -> Self {
        self.random_tie_break = on;
        self
    }

    /// At `max_slots`, a newcomer whose slot equals the highest held one replaces it (the
    /// pool keeps exploring once every server holds its share). Off in the original (strictly
    /// lower only), on in the improved policy.
    pub fn accept_equal(mut self, on: bool) -> Self {
        self.accept_equal = on;
        self
    }

    /// Lease the idle connection whose server has the fewest of this pool's leases (plus
    /// the [`slow_penalty`](Self::slow_penalty)), then the lowest slot. Servers are known
    /// from [`Pool::offer_from`](crate::pool::Pool::offer_from); connections offered with
    /// plain `offer` count as alone on their server. Costs a scan of the idle connections
    /// per lease. Off in the original, on in the improved policy.
    pub fn least_outstanding(mut self, on: bool) -> Self {
        self.least_outstanding = on;
        self
    }

    /// Keep each connection's response-time average and count a slow one as more requests
    /// in flight (see [`SlowPenalty`]). Costs a scan of the idle connections per lease and
    /// two clock reads. Off in the original; weight 0.2 and threshold 1.5 in the improved
    /// policy.
    pub fn slow_penalty(mut self, penalty: Option<SlowPenalty>) -> Self {
        self.slow_penalty = penalty;
        self
    }

    /// Replace connections by age: each kept connection gets a lifetime drawn uniformly in
    /// [A/2, 3A/2) so expiries do not synchronise. An expired connection stays in the pool
    /// (soft expiry) and the next offer replaces it whatever the two slots (an idle one is
    /// closed then, a leased one when its lease ends), so the pool never shrinks by age. Pools
    /// of at most 4 places ([`age::SLOT_KEEPING_MAX_SLOTS`]) keep slots: there an offer
    /// replaces an expired connection only if its slot is no higher. Under a roving client, A
    /// is raised to at least `max_slots` roving intervals: the rover brings one newcomer per
    /// interval, so a shorter age could not be honoured. A pool spread over many servers
    /// rotates its lowest slots first at A itself (see
    /// [`rotate_spread_pools`](Self::rotate_spread_pools)). `None`: never (the original); the
    /// improved policy's is 10 roving intervals, at least `max_slots` of them.
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age.map_or(MaxAge::Off, MaxAge::Fixed);
        self
    }

    /// In pools of at most 4 places ([`age::SLOT_KEEPING_MAX_SLOTS`]), lease any idle
    /// connection of the lowest cost (the [`least_outstanding`](Self::least_outstanding)
    /// count plus the [`slow_penalty`](Self::slow_penalty)) uniformly at random, whatever
    /// its slot, instead of the lowest slot; and once full, keep the connections on
    /// distinct servers (known from [`Pool::offer_from`](crate::pool::Pool::offer_from)): a
    /// newcomer from a server the pool holds may only replace that server's connection,
    /// and one from another server first replaces a second connection to a shared server.
    /// Such a pool keeps its slots (see [`max_age`](Self::max_age)), so its lowest slot,
    /// and with it most of the client's requests, would stay on one server for good;
    /// spread over distinct servers, each connection carries an equal share and a server's
    /// rate follows the connections it holds, which the slots keep even. Larger pools keep
    /// leasing the lowest slot: there the maximum age rotates the lowest slots among
    /// servers, and the lowest slot's preference lowers the tail (`docs/balance.md`,
    /// "Small pools spread"). Costs a scan of the idle connections per lease and of the
    /// held ones per offer. Off in the original, on in the improved policy.
    pub fn spread_small_pools(mut self, on: bool) -> Self {
        self.spread_small_pools = on;
        self
    }

    /// While the pool holds at least two connections per server on average (servers known from
    /// [`Pool::offer_from`](crate::pool::Pool::offer_from)), lease among the idle connections
    /// of the lowest cost at random, each with weight 1 / (slot + 1), instead of always the
    /// lowest slot: slot 3 is leased twice as often as slot 7. Such a pool has few servers for
    /// its places, so each client's lowest slot carries a large share of one server's requests,
    /// and every rotation of the lowest slots moves that share at once: a server's per-second
    /// share wandered twice as far as under random routing. Weighted by slot, the lowest slot
    /// still carries the most (the slot stays the load signal) but no longer all. Pools spread
    /// over more servers keep leasing the lowest slot, which lowers the tail there (weighting a
    /// pool of 64 over 100 servers raised its p99 by 16 %); a small pool that spreads
    /// ([`spread_small_pools`](Self::spread_small_pools)) spreads instead (`docs/balance.md`,
    /// "Slot-weighted leases"). Costs a scan of the idle connections per lease and a map of
    /// held connections per server. Off in the original, on in the improved policy.
    pub fn slot_weighted_leases(mut self, on: bool) -> Self {
        self.slot_weighted_leases = on;
        self
    }

    /// Under [`slot_weighted_leases`](Self::slot_weighted_leases), damp each idle connection's
    /// weight by its response-time average: the weight 1 / (slot + 1) is multiplied by
    /// min(1, m / a)^8, where a is the connection's average and m the median of the pool's averages
    /// (those of the [`slow_penalty`](Self::slow_penalty), which must be on for this to act; a
    /// connection without a sample yet is not damped). A connection answering 10 % slower than
    /// the pool's median keeps half its weight, one answering twice as slowly 1/256. The
    /// median, not the mean: a fail-fast server's quick errors would drag a mean down until
    /// every healthy connection looked slow. Slot-weighted pools have few servers for their
    /// places, so a slow server holds a large share of each pool; the slow penalty steps in
    /// only at 1.5 × the mean (a lower threshold moves leases on noise in every pool), while
    /// damping moves the weighted share off a slow connection gradually and only where weights
    /// apply: with one 3 × slow server among 4 the p99 matches P2C over a peak-sensitive
    /// latency average, and pools that lease the lowest slot are unchanged (`docs/balance.md`,
    /// "Latency-damped weights"). Costs a division and a few multiplications per idle
    /// connection per weighted lease. Off in the original, on in the improved policy.
    pub fn latency_damped_weights(mut self, on: bool) -> Self {
        self.latency_damped_weights = on;
        self
    }

    /// A connection's response-time average that stands above the mean of its server's
    /// other connections in the pool is forgotten while it goes unused: toward that mean,
    /// with a half-life of 16 leases per pool place (128 of the pool's leases at 8 places),
    /// and a new response folds into what is left of it. Acts on the averages of the
    /// [`slow_penalty`](Self::slow_penalty), which must be on, and so on the penalty and on
    /// [`latency_damped_weights`](Self::latency_damped_weights).
    ///
    /// Why: a connection that drew a few slow responses by chance crosses the slow
    /// penalty's threshold, is leased no more, and so never takes the sample that would
    /// clear it; with connections that live for minutes (a 10 s roving interval), a
    /// growing share of each pool sat out its lifetime that way, and which servers they
    /// belonged to unevened the long-run rates (over 4 servers at 50 % load, up to 1.09 ×
    /// the mean on the worst seed). Only against the same server's other connections: a
    /// server that is slow on every connection keeps its averages, and decaying toward the
    /// pool's mean instead re-tried a 3 × slow server's connections until the p99 rose
    /// by 4.5 ms (`docs/balance.md`, "Outlier decay"). A connection alone on its server is
    /// left as it is. Costs a count of the pool's leases and a running sum per server.
    /// Off in the original, on in the improved policy.
    pub fn outlier_decay(mut self, on: bool) -> Self {
        self.outlier_decay = on;
        self
    }

    /// In a full pool that leases the lowest slot (neither
    /// [`spread_small_pools`](Self::spread_small_pools) nor
    /// [`slot_weighted_leases`](Self::slot_weighted_leases) applies) and that is offered
    /// slots averaging at least 4 per place (each server serving several times the pool's
    /// size in connections: many clients per server), draw a preferred connection among
    /// the pool's 8 lowest slots, each with weight 1 / √(slot + 1) damped (as under
    /// [`latency_damped_weights`](Self::latency_damped_weights)) against the average from
    /// which the [`slow_penalty`](Self::slow_penalty) counts, and keep it for the pool's
    /// next 2 leases: a lease takes it when it is idle and no other lease of the pool is
    /// outstanding at its server, and otherwise leases the lowest slot of the lowest cost
    /// as before.
    ///
    /// Why: leasing the lowest slot sends nearly all of a lightly loaded client's requests
    /// over one connection, so a server's request rate follows how many clients hold their
    /// lowest slot there, which changes only as the maximum age rotates those slots: over
    /// 100 servers and 1,000 clients at 50 % load the busiest server took 1.087 × the mean
    /// rate over two minutes. With a preferred connection the share moves between a few low
    /// slots every other lease, and that falls to 1.034. A busy client's preferred is more
    /// often still out, so more of its leases fall back to the lowest slot, which holds the
    /// tail: the p99 at 80 % load is 1.007 × the original rules'; drawing among the whole
    /// of a pool of 64, or afresh for every lease, raised it further (`docs/balance.md`, "A
    /// preferred connection").
    /// With fewer clients per server (400 clients over 100 servers) it evened rates less
    /// and cost tail (the p99 at 95 % load rose to 1.026 × the original rules'), so such
    /// pools keep the lowest slot. Costs a scan of the held connections every other lease.
    /// Off in the original, on in the improved policy.
    pub fn preferred_connection(mut self, on: bool) -> Self {
        self.preferred_connection = on;
        self
    }

    /// A full pool spread over many servers, more than half its places on distinct ones
    /// (servers known from [`Pool::offer_from`](crate::pool::Pool::offer_from)), rotates its
    /// lowest slots first: a newcomer replaces the expired connection with the lowest slot,
    /// not the one that expired longest ago, and the connections it takes in live `age`
    /// (drawn as under [`max_age`](Self::max_age)) instead of the maximum age with its
    /// floor of `max_slots` roving intervals. `Some(age)` sets that age; the improved
    /// policy's is the maximum age before its floor (10 roving intervals). The rule acts
    /// only where `age` is below the pool's maximum age, which at the defaults means pools
    /// of more than 10 places (where the floor binds); `None` turns it off: such pools
    /// follow `max_age` like the others.
    ///
    /// Why: the lowest slots carry most of a pool's requests, and a server's share is
    /// remembered until they move. A pool renews one place per roving interval; with the
    /// floor, a pool of 64 renews each place about once per 64 intervals, its lowest slots
    /// no sooner than the rest, so over 100 servers its busiest server's rate stayed 1.29 ×
    /// the mean over a minute at 50 % load, against 1.13 for pools of 8. Rotating the
    /// lowest slots first, at the unfloored age, brings large pools near the memory of a
    /// pool of 8 (pools of 64 at a 1 s interval: 22.5 s to 5.0 s, pools of 8 5.1 s). Only
    /// pools spread over many servers: over 4 servers, where a pool of 8 or
    /// more holds each server several times, the same rule re-drew which server carries a
    /// client's most-used connections at every interval, and 6 of 36 cells lost the
    /// evenness they had. Only where the floor binds: in pools of 8 the order alone moved
    /// the mean rate max/mean by at most 0.004 either way, for no clear gain
    /// (`docs/balance.md`, "Large pools rotate their lowest slots first"). Costs a scan of
    /// the held connections per offer to a full spread pool. Off in the original, on in the
    /// improved policy.
    pub fn rotate_spread_pools(mut self, age: Option<Duration>) -> Self {
        self.rotate_spread_pools = age.map_or(MaxAge::Off, MaxAge::Fixed);
        self
    }

    /// Seed of the pool's random choices (equal slots under random ties, lifetimes), for
    /// reproducible runs: a pool fed the same offers, leases and returns at the same times
    /// then decides the same as the simulator's clients do. `None`: seeded from the OS (the
    /// default).
    pub fn seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    /// The configured `max_slots`.
    pub fn get_max_slots(&self) -> usize {
        self.max_slots
    }

    /// Whether equal slots are picked at random.
    pub fn get_random_tie_break(&self) -> bool {
        self.random_tie_break
    }

    /// Whether an equal slot replaces the worst.
    pub fn get_accept_equal(&self) -> bool {
        self.accept_equal
    }

    /// Whether small pools spread their leases and keep their servers distinct.
    pub fn get_spread_small_pools(&self) -> bool {
        self.spread_small_pools
    }

    /// Whether a pool holding at least two connections per server leases by slot weight.
    pub fn get_slot_weighted_leases(&self) -> bool {
        self.slot_weighted_leases
    }

    /// Whether slot weights are damped by the connections' response-time averages.
    pub fn get_latency_damped_weights(&self) -> bool {
        self.latency_damped_weights
    }

    /// Whether an average above its server's other connections' is forgotten while unused.
    pub fn get_outlier_decay(&self) -> bool {
        self.outlier_decay
    }

    /// Whether a preferred connection rotates among the lowest slots.
    pub fn get_preferred_connection(&self) -> bool {
        self.preferred_connection
    }

    /// Whether this pool spreads its leases and keeps its servers distinct: the rule is on
    /// and the pool is small.
    pub(crate) fn spreads(&self) -> bool {
        self.spread_small_pools && age::keeps_slots_on_expiry(self.max_slots)
    }

    /// The age of pools spread over many servers that rotate their lowest slots first
    /// ([`rotate_spread_pools`](Self::rotate_spread_pools)), as
    /// [`get_max_age`](Self::get_max_age) settles the maximum age; `None`: the rule is off.
    /// The rule acts only where this age is below [`get_max_age`](Self::get_max_age).
    pub fn get_rotate_spread_pools(&self) -> Option<Duration> {
        match self.rotate_spread_pools {
            MaxAge::Off => None,
            MaxAge::Auto => self.rotate_spread_pools_for(ASSUMED_ROVING_INTERVAL),
            MaxAge::Fixed(age) => Some(age),
        }
    }

    /// The age of pools spread over many servers, fed every `roving_interval`, under
    /// [`rotate_spread_pools`](Self::rotate_spread_pools): as set, or for the improved
    /// default the maximum age without its floor (10 intervals, or the configured
    /// `max_age`); `None` when the rule is off, or under the default when connections are
    /// never retired.
    pub fn rotate_spread_pools_for(&self, roving_interval: Duration) -> Option<Duration> {
        match (self.rotate_spread_pools, self.max_age) {
            (MaxAge::Off, _) | (MaxAge::Auto, MaxAge::Off) => None,
            (MaxAge::Fixed(age), _) | (MaxAge::Auto, MaxAge::Fixed(age)) => Some(age),
            (MaxAge::Auto, MaxAge::Auto) => Some(age::unfloored_max_age(roving_interval)),
        }
    }

    /// Whether leases go to the server with the fewest of the pool's leases.
    pub fn get_least_outstanding(&self) -> bool {
        self.least_outstanding
    }

    /// The slow-connection penalty, if on.
    pub fn get_slow_penalty(&self) -> Option<SlowPenalty> {
        self.slow_penalty
    }

    /// The maximum age A this policy gives a pool fed every `roving_interval`: `None` when
    /// connections are never retired; else the configured age, or
    /// [`age::default_max_age`] (10 intervals) for [`improved`](Self::improved)'s default,
    /// raised to at least [`age::max_age_floor`] (`max_slots` intervals).
    pub fn max_age_for(&self, roving_interval: Duration) -> Option<Duration> {
        match self.max_age {
            MaxAge::Off => None,
            MaxAge::Auto => Some(age::default_max_age(roving_interval, self.max_slots)),
            MaxAge::Fixed(age) => {
                Some(age.max(age::max_age_floor(roving_interval, self.max_slots)))
            }
        }
    }

    /// The maximum age A a pool built with this policy uses: as configured, or for the
    /// improved default, 10 × [`ASSUMED_ROVING_INTERVAL`] (at least `max_slots` of it).
    /// A roving client's pool reports the age settled from its roving interval.
    pub fn get_max_age(&self) -> Option<Duration> {
        match self.max_age {
            MaxAge::Off => None,
            MaxAge::Auto => self.max_age_for(ASSUMED_ROVING_INTERVAL),
            MaxAge::Fixed(age) => Some(age),
        }
    }

    /// This policy with its maximum age settled for a pool fed every `roving_interval`.
    pub(crate) fn for_roving_interval(mut self, roving_interval: Duration) -> Self {
        // The spread pools' age first: it reads the maximum age before it is settled.
        self.rotate_spread_pools = self
            .rotate_spread_pools_for(roving_interval)
            .map_or(MaxAge::Off, MaxAge::Fixed);
        if let Some(age) = self.max_age_for(roving_interval) {
            match self.max_age {
                MaxAge::Fixed(asked) if asked < age => tracing::warn!(
                    ?asked,
                    raised_to = ?age,
                    "max_age raised to max_slots roving intervals, one newcomer per interval"
                ),
                _ => {}
            }
            self.max_age = MaxAge::Fixed(age);
        }
        self
    }

    /// Whether leasing scans the idle connections (a rule ranks them by more than the slot
    /// and arrival order).
    pub(crate) fn scans_on_lease(&self) -> bool {
        self.least_outstanding
            || self.slow_penalty.is_some()
            || self.random_tie_break
            || self.spreads()
            || self.slot_weighted_leases
            || self.preferred_connection
    }

    pub(crate) fn validate(&self) -> Result<(), PoolError> {
        if self.max_slots == 0 {
            return Err(PoolError::ZeroMaxSlots);
        }
        if self.max_slots >= u32::MAX as usize {
            return Err(PoolError::TooManySlots {
                max_slots: self.max_slots,
            });
        }
        if self.slow_penalty.is_some_and(|p| !p.is_valid()) {
            return Err(PoolError::InvalidSlowPenalty);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improved_is_the_default_and_turns_every_rule_on() {
        assert_eq!(PoolPolicy::improved(), PoolPolicy::default());
        let improved = PoolPolicy::improved();
        assert!(improved.random_tie_break && improved.accept_equal && improved.least_outstanding);
        assert_eq!(improved.slow_penalty, Some(SlowPenalty::default()));
        assert_eq!(improved.max_age, MaxAge::Auto);
        assert!(improved.spread_small_pools && !PoolPolicy::original().spread_small_pools);
        assert!(improved.slot_weighted_leases && !PoolPolicy::original().slot_weighted_leases);
        assert!(improved.latency_damped_weights && !PoolPolicy::original().latency_damped_weights);
        assert!(improved.outlier_decay && !PoolPolicy::original().outlier_decay);
        assert!(improved.preferred_connection && !PoolPolicy::original().preferred_connection);
        assert_eq!(improved.rotate_spread_pools, MaxAge::Auto);
        assert_eq!(PoolPolicy::original().get_rotate_spread_pools(), None);
        assert_eq!(
            PoolPolicy::original().max_age_for(ASSUMED_ROVING_INTERVAL),
            None
        );
    }

    #[test]
    fn max_age_defaults_to_ten_intervals_never_below_one_per_slot() {
        let ms = Duration::from_millis;
        let p = PoolPolicy::improved().max_slots(8);
        assert_eq!(p.max_age_for(ms(100)), Some(ms(1000)));
        let p = PoolPolicy::improved().max_slots(16);
        assert_eq!(p.max_age_for(ms(100)), Some(ms(1600)));
        let fixed = PoolPolicy::improved().max_slots(4).max_age(Some(ms(100)));
        assert_eq!(fixed.max_age_for(ms(10)), Some(ms(100)));
        assert_eq!(fixed.max_age_for(ms(100)), Some(ms(400)));
        assert_eq!(fixed.get_max_age(), Some(ms(100)));
        let off = PoolPolicy::improved().max_age(None);
        assert_eq!(off.max_age_for(ms(100)), None);
        let settled = PoolPolicy::improved()
            .max_slots(4)
            .for_roving_interval(ms(5));
        assert_eq!(settled.max_age, MaxAge::Fixed(ms(50)));
    }

    #[test]
    fn spread_pools_rotate_at_the_maximum_age_without_its_floor() {
        let ms = Duration::from_millis;
        let p = PoolPolicy::improved().max_slots(64);
        assert_eq!(p.max_age_for(ms(100)), Some(ms(6400)));
        assert_eq!(p.rotate_spread_pools_for(ms(100)), Some(ms(1000)));
        assert_eq!(p.get_rotate_spread_pools(), Some(ms(10_000)));
        // Settled for the roving interval, both ages stay apart.
        let settled = p.clone().for_roving_interval(ms(100));
        assert_eq!(settled.get_max_age(), Some(ms(6400)));
        assert_eq!(settled.get_rotate_spread_pools(), Some(ms(1000)));
        // A configured maximum age is the spread pools' age, unfloored.
        let fixed = p.clone().max_age(Some(ms(300)));
        assert_eq!(fixed.rotate_spread_pools_for(ms(100)), Some(ms(300)));
        assert_eq!(fixed.max_age_for(ms(100)), Some(ms(6400)));
        // Set apart, or off; and never with no maximum age at all.
        assert_eq!(
            p.clone()
                .rotate_spread_pools(Some(ms(7)))
                .get_rotate_spread_pools(),
            Some(ms(7))
        );
        assert_eq!(
            p.clone()
                .rotate_spread_pools(None)
                .rotate_spread_pools_for(ms(100)),
            None
        );
        assert_eq!(p.max_age(None).rotate_spread_pools_for(ms(100)), None);
        // Huge settings saturate instead of overflowing.
        let huge = PoolPolicy::improved().max_slots(u32::MAX as usize - 1);
        assert_eq!(huge.max_age_for(Duration::MAX), Some(Duration::MAX));
    }

    #[test]
    fn bad_slow_penalties_are_refused() {
        for (alpha, threshold) in [(0.0, 1.5), (1.5, 1.5), (f32::NAN, 1.5), (0.2, 0.0)] {
            let p = SlowPenalty::default().alpha(alpha).threshold(threshold);
            let policy = PoolPolicy::original().slow_penalty(Some(p));
            assert_eq!(policy.validate(), Err(PoolError::InvalidSlowPenalty));
        }
        let p = SlowPenalty::default().threshold(f32::INFINITY);
        assert!(
            PoolPolicy::original()
                .slow_penalty(Some(p))
                .validate()
                .is_err()
        );
        assert!(PoolPolicy::improved().validate().is_ok());
    }
}
