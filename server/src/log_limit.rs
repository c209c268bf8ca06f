//! Rate-limited logging for events that can come in floods (accept errors, refused
//! connections): the first occurrence is logged, then at most one line per interval with the
//! number suppressed meanwhile, so a storm costs a counter increment, not a log line each.

use std::time::{Duration, Instant};

/// One kind of event's log budget (shard-local, so not thread-safe by design).
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(suppressed)` when this occurrence may be logged (with the count of
    /// occurrences swallowed since the last line), `None` when it must stay quiet.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_counts_suppressed() {
        let mut limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limit.allow(), Some(2));
    }
}
