//! What the simulator measures while it runs, and the definitions behind each figure.
//!
//! Why this shape: the hot path only bumps counters (a request counted at its server, a
//! latency recorded into a histogram); everything else happens on the sample tick (every
//! `sample` interval: instantaneous load of each server) and the window tick (every window:
//! request counts per server). Everything is over the measured window only (after warm-up)
//! and over the servers in the cluster at that moment.
//!
//! Definitions (also in `docs/balance.md`):
//! - instantaneous load of a server: requests queued at it plus in service;
//! - `inflight_max_over_mean`, `inflight_cv`: per sample, max/mean and standard
//!   deviation/mean of the servers' instantaneous loads, averaged over samples with mean > 0;
//! - `inflight_floor`: per sample, the best any policy could do, ⌈N/S⌉/(N/S) for N requests at
//!   S servers, averaged the same way;
//! - `rate_max_over_mean`: requests per server over the whole measured window, max/mean;
//! - `window_max_over_mean`: requests per server in each window, max/mean, averaged over
//!   windows;
//! - `rate_memory_s`: how long a server's share of the requests stays off the mean: the
//!   integrated autocorrelation time of each server's per-window deviation from the mean,
//!   window × (1 + 2 Σ ρ(k)) over lags k ≥ 1 up to the first ρ(k) ≤ 0 (at most a quarter of
//!   the windows, and [`MEMORY_MAX_LAGS`]). The long-run rates' spread over T seconds is
//!   about the per-window spread × √(memory / T), so it says whether uneven long-run rates
//!   come from a lasting assignment (long memory) or from fast swings (short);
//! - latency: from the request's arrival at its client (including any wait for an idle
//!   connection) to the end of its service, plus the round trip under `--rtt` (when its
//!   response reaches the client); requests answered with an error are counted apart.

use hdrhistogram::Histogram;

/// Running measurements of one simulation.
#[derive(Debug)]
pub struct Metrics {
    /// Request latency in nanoseconds, for requests arriving in the measured window.
    pub latency: Histogram<u64>,
    /// Requests sent to each server in the measured window.
    pub per_server: Vec<u64>,
    /// Requests sent to each server in the current window.
    pub window: Vec<u32>,
    /// Sum of instantaneous load per server over the current window's samples (for plots).
    pub window_load: Vec<u64>,
    /// Samples taken in the current window.
    pub window_samples: u32,
    samples: u64,
    sum_max_over_mean: f64,
    sum_cv: f64,
    sum_floor: f64,
    sum_mean: f64,
    windows: u64,
    sum_window_max_over_mean: f64,
    /// Per window with requests, each server's requests over the window's mean minus one
    /// (`NaN` for a server outside the cluster then), servers in a row.
    deviations: Vec<f32>,
    /// Per window: (requests to the watched server, all requests, servers in the cluster).
    pub watched: Vec<(u32, u64, u32)>,
    /// Per window, the plotted lines' values (per server if few, else min/mean/max).
    pub series: Vec<Vec<f64>>,
}

impl Metrics {
    /// Empty measurements for `servers` servers.
    pub fn new(servers: usize) -> Self {
        // 1 µs to 1 h at 3 significant digits: constant bounds, always valid.
        let latency = Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self {
            latency,
            per_server: vec![0; servers],
            window: vec![0; servers],
            window_load: vec![0; servers],
            window_samples: 0,
            samples: 0,
            sum_max_over_mean: 0.0,
            sum_cv: 0.0,
            sum_floor: 0.0,
            sum_mean: 0.0,
            windows: 0,
            sum_window_max_over_mean: 0.0,
            deviations: Vec::new(),
            watched: Vec::new(),
            series: Vec::new(),
        }
    }

    /// Counts one request sent to `server` (in the measured window).
    #[inline]
    pub fn count(&mut self, server: u32) {
        self.per_server[server as usize] += 1;
        self.window[server as usize] += 1;
    }

    /// Counts `n` requests sent to `server` (in the measured window) at once: the live run
    /// reads them as a difference of the server's counter.
    pub fn count_n(&mut self, server: u32, n: u32) {
        self.per_server[server as usize] += u64::from(n);
        self.window[server as usize] += n;
    }

    /// Records one sample of the members' instantaneous loads, given by `load(server)`.
    pub fn sample(&mut self, members: &[u32], load: impl Fn(usize) -> u32) {
        if members.is_empty() {
            return;
        }
        let (mut sum, mut sum_sq, mut max) = (0u64, 0u64, 0u32);
        for &s in members {
            let l = load(s as usize);
            self.window_load[s as usize] += l as u64;
            sum += l as u64;
            sum_sq += l as u64 * l as u64;
            max = max.max(l);
        }
        self.window_samples += 1;
        if sum == 0 {
            return;
        }
        let n = members.len() as f64;
        let mean = sum as f64 / n;
        let var = (sum_sq as f64 / n - mean * mean).max(0.0);
        self.samples += 1;
        self.sum_mean += mean;
        self.sum_max_over_mean += max as f64 / mean;
        self.sum_cv += var.sqrt() / mean;
        self.sum_floor += (sum as f64 / n).ceil() / mean;
    }

    /// Closes a window: its max/mean, the watched server's count, and the plotted values.
    /// `all` is every server id (plotted individually when `plot_each`).
    pub fn close_window(&mut self, members: &[u32], watch: Option<u32>, plot_each: bool) {
        let total: u64 = members
            .iter()
            .map(|&s| self.window[s as usize] as u64)
            .sum();
        if total > 0 {
            let max = members
                .iter()
                .map(|&s| self.window[s as usize])
                .max()
                .unwrap_or(0);
            self.windows += 1;
            self.sum_window_max_over_mean += max as f64 * members.len() as f64 / total as f64;
            let mean = total as f64 / members.len() as f64;
            let row = self.deviations.len();
            self.deviations.resize(row + self.window.len(), f32::NAN);
            for &s in members {
                self.deviations[row + s as usize] =
                    (f64::from(self.window[s as usize]) / mean - 1.0) as f32;
            }
        }
        if let Some(w) = watch {
            self.watched
                .push((self.window[w as usize], total, members.len() as u32));
        }
        let n = self.window_samples.max(1) as f64;
        let avg = |s: usize| self.window_load[s] as f64 / n;
        let values = if plot_each {
            (0..self.window_load.len()).map(avg).collect()
        } else {
            let loads: Vec<f64> = members.iter().map(|&s| avg(s as usize)).collect();
            let min = loads.iter().copied().fold(f64::INFINITY, f64::min);
            let max = loads.iter().copied().fold(0.0, f64::max);
            let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
            vec![if min.is_finite() { min } else { 0.0 }, mean, max]
        };
        self.series.push(values);
        self.window.iter_mut().for_each(|c| *c = 0);
        self.window_load.iter_mut().for_each(|c| *c = 0);
        self.window_samples = 0;
    }

    /// Mean over samples of (max/mean, CV, floor, mean load per server).
    pub fn inflight(&self) -> (f64, f64, f64, f64) {
        let n = self.samples.max(1) as f64;
        (
            self.sum_max_over_mean / n,
            self.sum_cv / n,
            self.sum_floor / n,
            self.sum_mean / n,
        )
    }

    /// Mean over windows of the per-window max/mean.
    pub fn window_max_over_mean(&self) -> f64 {
        self.sum_window_max_over_mean / self.windows.max(1) as f64
    }

    /// The rate memory in windows (see the module doc), `None` with fewer than
    /// [`MEMORY_MIN_WINDOWS`] windows with requests or no deviation at all.
    pub fn rate_memory_windows(&self) -> Option<f64> {
        let servers = self.window.len().max(1);
        let windows = self.deviations.len() / servers;
        if windows < MEMORY_MIN_WINDOWS {
            return None;
        }
        let row = |t: usize| &self.deviations[t * servers..(t + 1) * servers];
        let mut memory = 1.0;
        for lag in 1..=(windows / 4).min(MEMORY_MAX_LAGS) {
            // ρ over the pairs of one server `lag` windows apart, both in the cluster.
            let (mut product, mut square) = (0.0f64, 0.0f64);
            for t in 0..windows - lag {
                for (&a, &b) in row(t).iter().zip(row(t + lag)) {
                    if a.is_finite() && b.is_finite() {
                        let (a, b) = (f64::from(a), f64::from(b));
                        product += a * b;
                        square += (a * a + b * b) / 2.0;
                    }
                }
            }
            if square == 0.0 {
                return None;
            }
            let rho = product / square;
            if rho <= 0.0 {
                break;
            }
            memory += 2.0 * rho;
        }
        Some(memory)
    }
}

/// Windows with requests below which the rate memory is not estimated.
pub const MEMORY_MIN_WINDOWS: usize = 8;

/// The most lags the rate memory sums: each lag reads every window of every server, so a
/// share that never turns back over a long run of short windows would otherwise cost
/// windows² × servers.
pub const MEMORY_MAX_LAGS: usize = 256;

/// `(max/mean, min/mean)` of `values`, 0 if empty or all zero.
pub fn spread(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let sum: f64 = values.clone().sum();
    if n == 0.0 || sum == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    let max = values.clone().fold(f64::MIN, f64::max);
    let min = values.fold(f64::MAX, f64::min);
    (max / mean, min / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_statistics() {
        let mut m = Metrics::new(2);
        m.sample(&[0, 1], |s| [1, 3][s]);
        let (max_over_mean, cv, floor, mean) = m.inflight();
        assert_eq!(max_over_mean, 1.5);
        assert_eq!(cv, 0.5);
        assert_eq!(floor, 1.0);
        assert_eq!(mean, 2.0);
        m.sample(&[0, 1], |s| [0, 1][s]);
        assert_eq!(m.inflight().2, (1.0 + 2.0) / 2.0);
    }

    /// Closes one window with `counts` requests at servers 0, 1, ...
    fn window(m: &mut Metrics, counts: &[u32]) {
        m.window.copy_from_slice(counts);
        let members: Vec<u32> = (0..counts.len() as u32).collect();
        m.close_window(&members, None, false);
    }

    #[test]
    fn rate_memory_of_swings_and_of_a_lasting_assignment() {
        // Servers swap their surplus every window: no positive correlation, memory 1.
        let mut swings = Metrics::new(2);
        for t in 0..40 {
            window(&mut swings, if t % 2 == 0 { &[3, 1] } else { &[1, 3] });
        }
        assert_eq!(swings.rate_memory_windows(), Some(1.0));
        // Server 0 ahead every window: ρ = 1 at every lag up to 40 / 4.
        let mut lasting = Metrics::new(2);
        for _ in 0..40 {
            window(&mut lasting, &[3, 1]);
        }
        assert_eq!(lasting.rate_memory_windows(), Some(1.0 + 2.0 * 10.0));
        // The surplus swaps every 4 windows: ρ(1) = 1/2 (a quarter of the neighbouring
        // pairs straddle a swap), ρ(2) = 0, so 1 + 2 × 1/2 (within the edge effects).
        let mut blocks = Metrics::new(2);
        for t in 0..400 {
            window(
                &mut blocks,
                if (t / 4) % 2 == 0 { &[3, 1] } else { &[1, 3] },
            );
        }
        let memory = blocks.rate_memory_windows().expect("enough windows");
        assert!((memory - 2.0).abs() < 0.05, "{memory}");
        // Even rates, or too few windows: no estimate.
        let mut even = Metrics::new(2);
        for _ in 0..40 {
            window(&mut even, &[2, 2]);
        }
        assert_eq!(even.rate_memory_windows(), None);
        let mut short = Metrics::new(2);
        for _ in 0..MEMORY_MIN_WINDOWS - 1 {
            window(&mut short, &[3, 1]);
        }
        assert_eq!(short.rate_memory_windows(), None);
    }

    #[test]
    fn spread_of_counts() {
        assert_eq!(spread([1.0, 3.0].into_iter()), (1.5, 0.5));
        assert_eq!(spread(std::iter::empty()), (0.0, 0.0));
    }
}
