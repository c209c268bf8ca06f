//! The routing policies the simulator compares, and the pool rules that distinguish the
//! original Callosum (Boxcar) policy from the improved one.
//!
//! Why this shape: every policy runs on the same workload (same arrivals, same service times,
//! same seed); only the choice of server differs. The two Callosum policies route through a
//! client's pool of slot-ranked connections; the baselines pick a server per request and
//! ignore slots. The improved policy is the original plus three rules, each a field of
//! [`PoolRules`] so an ablation can switch it off and measure what it contributes.
//! [`PoolRules`] is the serialisable face of the client's [`PoolPolicy`], into which it
//! converts ([`PoolRules::policy`]): the simulated pools decide by the client's own code.

use std::time::Duration;

use callosum_client::{PoolPolicy, SlowPenalty};
use serde::Serialize;

/// How a client picks the server for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Boxcar as specified: pool of the `max_slots` lowest slots; lease the lowest-slot idle
    /// connection; a rover connection replaces the pool's worst only if strictly lower; ties
    /// between equal slots always broken the same way (the earliest arrival leased first, the
    /// latest replaced first).
    Original,
    /// The improved Callosum policy: the original plus a maximum connection age, equal slots
    /// accepted, random ties, least outstanding first and a slow-connection penalty.
    Improved,
    /// Uniform random server per request.
    Random,
    /// Each client cycles through the servers, starting at a random one.
    RoundRobin,
    /// Power of two choices: two random servers, the one with fewer of this client's own
    /// outstanding requests.
    P2c,
    /// Power of two choices over Finagle's peak-EWMA load (`Balancers.p2cPeakEwma`, as in
    /// Linkerd): per server, this client's peak-sensitive response-time average (decay time
    /// 10 s) × (its outstanding requests + 1); the lower of two random servers wins.
    #[value(name = "p2c-peak-ewma")]
    #[serde(rename = "p2c-peak-ewma")]
    P2cPeakEwma,
    /// The server with the fewest of this client's outstanding requests of all servers,
    /// ties at random.
    LeastRequest,
    /// Join the shortest queue with global knowledge (queued + in service, ties at random):
    /// the unreachable lower bound.
    #[value(name = "jsq-oracle", alias = "jsq")]
    #[serde(rename = "jsq-oracle")]
    Jsq,
}

impl Policy {
    /// Whether `balance` can run it live: every policy but the oracle, which no client could
    /// follow (it knows every server's queue).
    pub fn runs_live(self) -> bool {
        self != Policy::Jsq
    }

    /// Every policy, in report order.
    pub const ALL: [Policy; 8] = [
        Policy::Original,
        Policy::Improved,
        Policy::Random,
        Policy::RoundRobin,
        Policy::P2c,
        Policy::P2cPeakEwma,
        Policy::LeastRequest,
        Policy::Jsq,
    ];

    /// Whether requests go through the client's pool of slot-ranked connections.
    pub fn uses_pool(self) -> bool {
        matches!(self, Policy::Original | Policy::Improved)
    }

    /// Whether the client counts its outstanding requests per server (the routers that
    /// compare loads).
    pub fn counts_outstanding(self) -> bool {
        matches!(
            self,
            Policy::P2c | Policy::P2cPeakEwma | Policy::LeastRequest
        )
    }

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Original => "original",
            Policy::Improved => "improved",
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::P2c => "p2c",
            Policy::P2cPeakEwma => "p2c-peak-ewma",
            Policy::LeastRequest => "least-request",
            Policy::Jsq => "jsq-oracle",
        }
    }
}

/// The rules a Callosum pool follows; the original and the improved policy differ only here.
/// The same settings as [`PoolPolicy`], with the maximum age settled (in the JSON output).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PoolRules {
    /// Ties between equal slots (for leasing and for picking the worst) are broken uniformly
    /// at random instead of always by arrival order.
    pub random_ties: bool,
    /// A rover connection whose slot equals the pool's worst replaces it (the pool keeps
    /// exploring once every server holds its share), instead of only a strictly lower one.
    pub accept_equal: bool,
    /// Connections expire once older than this (nanoseconds; each connection's limit is
    /// drawn uniformly in `[age/2, 3·age/2)` so expiries do not synchronise), settled as
    /// the client settles it for the roving interval ([`PoolPolicy::max_age_for`]). An
    /// expired connection stays in the pool until the next rover connection replaces it,
    /// whatever the two slots (an idle one closes then, a leased one when its request
    /// completes), so pools never shrink by age.
    pub max_age_ns: Option<u64>,
    /// Lease the idle connection whose server has the fewest of this client's requests in
    /// flight (its leased pool entries there), lowest slot among those, instead of simply
    /// the lowest slot.
    pub least_outstanding: bool,
    /// Keep a moving average of each connection's response time (this is the weight of a new
    /// response; `None`: off) and count a connection whose average is at least
    /// `slow_threshold` × the pool's mean as one more request in flight at its server (two at
    /// twice that, ...), so a slow server is avoided like a busy one.
    pub latency_alpha: Option<f32>,
    /// See `latency_alpha`.
    pub slow_threshold: f32,
    /// Pools of at most 4 places lease any idle connection of the lowest cost at random,
    /// whatever its slot, instead of the lowest slot, and once full keep their connections
    /// on distinct servers.
    pub spread_small_pools: bool,
    /// A pool that holds at least two connections per server leases among the idle
    /// connections of the lowest cost at random, each with weight 1 / (slot + 1), instead
    /// of the lowest slot.
    pub slot_weighted_leases: bool,
    /// Under slot weights, each weight is multiplied by min(1, pool median / the
    /// connection's average)^8 (the averages of `latency_alpha`).
    pub latency_damped_weights: bool,
    /// A connection's average above its server's other connections' in the pool decays
    /// toward their mean while it goes unused (half-life 16 leases per pool place).
    pub outlier_decay: bool,
    /// A full pool that leases the lowest slot, offered slots averaging at least 4 per
    /// place, draws a preferred connection among its 8 lowest slots by weight
    /// 1 / √(slot + 1), damped against the slow penalty's threshold, and keeps it for 2
    /// leases, leasing it when it is idle and no other request of the pool is at its
    /// server.
    pub preferred_connection: bool,
    /// Where this age (nanoseconds; the maximum age without its floor of one roving
    /// interval per place) is below `max_age_ns`, so that the floor raised the age (pools
    /// of more than 10 places at the default age), a full pool of more than 4 places with
    /// more than half of them on distinct servers replaces its lowest-slot expired
    /// connection first and gives its newcomers this age instead of `max_age_ns`. `None`,
    /// or an age not below `max_age_ns`: the rule does not act.
    pub rotate_spread_pools_ns: Option<u64>,
}

/// `age` in nanoseconds, saturating.
fn nanos(age: Duration) -> u64 {
    u64::try_from(age.as_nanos()).unwrap_or(u64::MAX)
}

impl PoolRules {
    /// The original Boxcar rules.
    pub const ORIGINAL: PoolRules = PoolRules {
        random_ties: false,
        accept_equal: false,
        max_age_ns: None,
        least_outstanding: false,
        latency_alpha: None,
        slow_threshold: f32::INFINITY,
        spread_small_pools: false,
        slot_weighted_leases: false,
        latency_damped_weights: false,
        outlier_decay: false,
        preferred_connection: false,
        rotate_spread_pools_ns: None,
    };

    /// The rules of the client's `policy` for a pool fed every `roving_interval`: the
    /// maximum age is the one that policy settles on ([`PoolPolicy::max_age_for`]).
    pub fn of_policy(policy: &PoolPolicy, roving_interval: Duration) -> Self {
        let penalty = policy.get_slow_penalty();
        PoolRules {
            random_ties: policy.get_random_tie_break(),
            accept_equal: policy.get_accept_equal(),
            max_age_ns: policy.max_age_for(roving_interval).map(nanos),
            least_outstanding: policy.get_least_outstanding(),
            latency_alpha: penalty.map(|p| p.get_alpha()),
            slow_threshold: penalty.map_or(f32::INFINITY, |p| p.get_threshold()),
            spread_small_pools: policy.get_spread_small_pools(),
            slot_weighted_leases: policy.get_slot_weighted_leases(),
            latency_damped_weights: policy.get_latency_damped_weights(),
            outlier_decay: policy.get_outlier_decay(),
            preferred_connection: policy.get_preferred_connection(),
            rotate_spread_pools_ns: policy.rotate_spread_pools_for(roving_interval).map(nanos),
        }
    }

    /// These rules as the client's policy for pools of `max_slots` (the maximum age as
    /// settled here).
    pub fn policy(&self, max_slots: usize) -> PoolPolicy {
        PoolPolicy::original()
            .max_slots(max_slots)
            .random_tie_break(self.random_ties)
            .accept_equal(self.accept_equal)
            .least_outstanding(self.least_outstanding)
            .slow_penalty(self.latency_alpha.map(|alpha| {
                SlowPenalty::default()
                    .alpha(alpha)
                    .threshold(self.slow_threshold)
            }))
            .max_age(self.max_age_ns.map(Duration::from_nanos))
            .spread_small_pools(self.spread_small_pools)
            .slot_weighted_leases(self.slot_weighted_leases)
            .latency_damped_weights(self.latency_damped_weights)
            .outlier_decay(self.outlier_decay)
            .preferred_connection(self.preferred_connection)
            .rotate_spread_pools(self.rotate_spread_pools_ns.map(Duration::from_nanos))
    }
}
