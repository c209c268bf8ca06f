//! The maximum-age rule of the improved policy, in one place: how long a pooled connection
//! may live given the roving interval and the pool's size, which pools keep slots when an
//! expired connection is replaced, and which rotate their lowest slots first without the
//! age's floor. Both the policy ([`super::policy`], which settles the
//! age for a roving interval) and the decisions ([`super::decide`], which apply it) read
//! these, so neither depends on the other for them.

use std::time::Duration;

/// The improved policy's default maximum age, in roving intervals.
pub const DEFAULT_MAX_AGE_INTERVALS: u32 = 10;

/// The fewest roving intervals per pool place a maximum age may span: a pool takes in one
/// newcomer per roving interval at most, so under a shorter age connections would expire
/// faster than the rover can replace them. One interval per place, not more: with soft
/// expiry an expired connection keeps serving until replaced, so the floor only has to
/// keep the replacements possible, and a longer age slows the rotation that evens the
/// long-run rates (at 100 servers and 8 places, 16 intervals gave a rate max/mean of 1.064
/// on average over seeds, 10 intervals 1.051; `docs/balance.md`). Pools spread over many
/// servers that rotate their lowest slots first go without it ([`unfloored_max_age`]).
pub const MAX_AGE_FLOOR_INTERVALS_PER_SLOT: u32 = 1;

/// The largest pool whose expired connections are replaced only by a newcomer with a slot
/// no higher than theirs (slot-keeping soft expiry); larger pools replace them whatever
/// the slots. See the module doc for why small pools differ.
pub const SLOT_KEEPING_MAX_SLOTS: usize = 4;

/// Whether a pool of `max_slots` keeps slots when it replaces an expired connection:
/// `max_slots` ≤ [`SLOT_KEEPING_MAX_SLOTS`].
pub fn keeps_slots_on_expiry(max_slots: usize) -> bool {
    max_slots <= SLOT_KEEPING_MAX_SLOTS
}

/// The least maximum age for a pool of `max_slots` fed every `roving_interval`:
/// `max_slots` intervals (saturating).
pub fn max_age_floor(roving_interval: Duration, max_slots: usize) -> Duration {
    let per_slot = max_slots.saturating_mul(MAX_AGE_FLOOR_INTERVALS_PER_SLOT as usize);
    roving_interval.saturating_mul(u32::try_from(per_slot).unwrap_or(u32::MAX))
}

/// The default maximum age before its floor: [`DEFAULT_MAX_AGE_INTERVALS`] roving intervals.
/// At the default age, pools spread over many servers whose age the floor raised live this
/// long instead ([`spreads_over_many_servers`]).
pub fn unfloored_max_age(roving_interval: Duration) -> Duration {
    roving_interval.saturating_mul(DEFAULT_MAX_AGE_INTERVALS)
}

/// The maximum age the improved policy uses unless told otherwise: 10 roving intervals, at
/// least [`max_age_floor`] (one interval per pool place).
pub fn default_max_age(roving_interval: Duration, max_slots: usize) -> Duration {
    unfloored_max_age(roving_interval).max(max_age_floor(roving_interval, max_slots))
}

/// Whether a pool of `max_slots` places, `held` of them held on `servers` distinct servers,
/// is spread over many servers, where it rotates its lowest slots first: more than
/// [`SLOT_KEEPING_MAX_SLOTS`] places, and more than half of the held ones on distinct
/// servers. Over 4 servers a pool of 8 or more holds each server twice on average and never
/// qualifies.
pub fn spreads_over_many_servers(max_slots: usize, held: usize, servers: usize) -> bool {
    !keeps_slots_on_expiry(max_slots) && servers.saturating_mul(2) > held
}
