//! Instants some duration after another that never overflow. A timeout, roving interval,
//! backoff or gap of `Duration::MAX` is a natural way to say "never"; `Instant + Duration`
//! panics on it, so every deadline the crate computes from a user's duration goes through
//! [`after`], which caps the duration at about 30 years (what tokio itself takes for "never").

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: far enough to be never, near enough that adding it to any instant of a
/// running process cannot overflow.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + d`, with `d` capped at about 30 years.
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    at + d.min(FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_of_max_is_the_far_future_not_a_panic() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
