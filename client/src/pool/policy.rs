//! The pool's knobs, gathered in one options struct so balancing policies can grow (issue 7:
//! equal-slot replacement, retirement by age…) without changing the pool's API.
//!
//! The default is the original `callosum-client-tcp` exactly: 100 slots, ties between equal
//! slots broken by arrival order.

use crate::pool::PoolError;

/// Default number of connections a pool keeps.
pub const DEFAULT_MAX_SLOTS: usize = 100;

/// How a pool chooses between connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolPolicy {
    pub(crate) max_slots: usize,
    pub(crate) random_tie_break: bool,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            max_slots: DEFAULT_MAX_SLOTS,
            random_tie_break: false,
        }
    }
}

impl PoolPolicy {
    /// Most connections held at once, leased ones included. Default 100; 0 is refused by
    /// [`Pool::with_policy`](crate::pool::Pool::with_policy).
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.max_slots = max_slots;
        self
    }

    /// Between connections with the same slot (from different servers), lease and evict a
    /// random one instead of the earliest-offered one, so equal servers share the load.
    /// The draw happens once per offered connection. Default off (the original's order).
    pub fn random_tie_break(mut self, on: bool) -> Self {
        self.random_tie_break = on;
        self
    }

    /// The configured `max_slots`.
    pub fn get_max_slots(&self) -> usize {
        self.max_slots
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
        Ok(())
    }
}
