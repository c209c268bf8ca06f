//! How long an unreachable server is left out of the rover's random pick: exponential in
//! the consecutive failures, jittered, capped, as gRPC's connection backoff (1 s × 1.6 per
//! failure, ±20 %, at most 120 s).
//!
//! A pure function of the failure count and a random source, so the schedule is unit
//! tested without sockets or clocks.

use std::time::Duration;

use rand::Rng;

/// The backoff schedule applied to a server after consecutive failed connects.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    jitter: f64,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

impl Backoff {
    /// Backoff after the first failure. Default 1 s.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Growth per further consecutive failure. Default 1.6; values under 1 (or NaN) are
    /// taken as 1.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
        self
    }

    /// Random spread, as a fraction of the backoff: the wait is drawn uniformly in
    /// `backoff × [1 − jitter, 1 + jitter]`. Default 0.2; clamped to `0..=1` (NaN: 0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter > 0.0 { jitter.min(1.0) } else { 0.0 };
        self
    }

    /// Longest backoff, jitter included. Default 120 s.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let max = self.max.as_secs_f64();
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.initial.as_secs_f64() * self.multiplier.powi(exponent)).min(max);
        let spread = if self.jitter > 0.0 {
            rng.random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        let secs = (base * (1.0 + spread)).clamp(0.0, max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn grows_by_the_multiplier_up_to_the_cap_without_jitter() {
        let backoff = Backoff::default().jitter(0.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let secs: Vec<f64> = (1..=14)
            .map(|n| backoff.delay(n, &mut rng).as_secs_f64())
            .collect();
        let expected = [1.0, 1.6, 2.56, 4.096, 6.5536];
        for (got, want) in secs.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{secs:?}");
        }
        assert_eq!(secs[13], 120.0, "capped: {secs:?}");
        assert_eq!(backoff.delay(u32::MAX, &mut rng), Duration::from_secs(120));
    }

    #[test]
    fn jitter_stays_within_its_band_and_the_cap() {
        let backoff = Backoff::default();
        let mut rng = SmallRng::seed_from_u64(7);
        for n in 1..40 {
            let d = backoff.delay(n, &mut rng).as_secs_f64();
            let base = (1.6f64.powi(n as i32 - 1)).min(120.0);
            assert!(
                d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(120.0) + 1e-9,
                "{n}: {d}"
            );
        }
    }

    #[test]
    fn out_of_range_settings_are_clamped() {
        let backoff = Backoff::default().multiplier(f64::NAN).jitter(f64::NAN);
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(backoff.delay(10, &mut rng), Duration::from_secs(1));
    }
}
