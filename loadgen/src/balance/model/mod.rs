//! What is balanced, shared by the simulator and the live harness: the scenario
//! ([`scenario`]) and the policies (the pool rules, [`policy`], and the baseline routers,
//! [`router`]).

pub mod policy;
pub mod router;
pub mod scenario;

pub use policy::{Policy, PoolRules};
pub use scenario::{
    ClusterArgs, MAX_POOL_SIZE, ModelOptions, ServiceDist, SimConfig, SimError, Timing, write_json,
};
