//! One live run of one policy: K servers, C clients, Poisson arrivals, the sampler, joins and
//! leaves, and the report built from the servers' counters with the simulator's own
//! [`Metrics`] and [`SimReport::build`].
//!
//! Timeline (as in the simulator): arrivals start at once (clients start with empty pools),
//! the measured window starts after the warm-up and ends `duration` later; arrivals stop then.
//! A sampler on a fixed grid (every `sample_ms` from the start of the window; the grid, not
//! the wake-up time, defines each sample's instant) reads every member server's load (queued +
//! in service) into [`Metrics::sample`] and, at each window boundary, the difference of each
//! server's request counter into [`Metrics::count_n`]. Latency is from a request's scheduled
//! arrival (open loop: a late arrival task still measures from its intended instant) to its
//! reply, for arrivals in the window that complete before it ends, as in the simulator.
//!
//! Why this shape: one multi-threaded tokio runtime per run for the clients, a fresh set of
//! servers per run (their own threads), and everything torn down before the next policy, so
//! runs cannot disturb one another; every loop has an end (arrivals stop at the window's end,
//! in-flight requests get [`SETTLE`], exchanges time out, servers stop with a short drain),
//! and after the clients are dropped the servers' open connections are counted
//! (`conns_open_after_close`: anything but 0 is a leak).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use callosum_client::{PoolPolicy, RovingClient};
use callosum_server::ServerError;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::client::{Baseline, LiveClient, Membership};
use super::server::{LiveServer, ServiceSpec, stop_all};
use crate::balance::metrics::Metrics;
use crate::balance::report::{LeftServer, RunEnd};
use crate::balance::simulation::engine::PLOT_EACH_MAX;
use crate::balance::{Policy, SimConfig, SimReport};

/// How long requests still in flight at the end of the window may take to finish.
pub const SETTLE: Duration = Duration::from_secs(3);

/// How long a leaving server lets its busy connections finish.
const LEAVE_DRAIN: Duration = Duration::from_secs(2);

/// How long the servers get to see every client connection closed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a live run could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// A server did not start or stop.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// The client runtime could not be built.
    #[error("client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A roving client could not be built.
    #[error("client: {0}")]
    Client(#[from] callosum_client::roving::BuildError),
    /// The policy has no live counterpart.
    #[error("policy {0} cannot run live: {1}")]
    Unsupported(&'static str, &'static str),
    /// A task of the run panicked or was cancelled.
    #[error("a task of the run failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a live run adds to the simulator's report.
#[derive(Clone, Debug, Serialize)]
pub struct LiveReport {
    /// The figures the simulator also reports, with the same definitions.
    #[serde(flatten)]
    pub report: SimReport,
    /// Mean service time actually slept at normal-speed servers, ms (the timer's rounding
    /// shows here).
    pub service_ms_measured: f64,
    /// Samples the sampler took late by more than one sample interval (a busy machine).
    pub late_samples: u64,
    /// Connections the servers still had open once every client was dropped (a leak if > 0).
    pub conns_open_after_close: u64,
}

/// How the clients of a run pick servers.
fn pool_policy(cfg: &SimConfig) -> Result<Option<PoolPolicy>, LiveError> {
    let p = cfg.max_slots;
    match cfg.policy {
        Policy::Original => Ok(Some(PoolPolicy::original().max_slots(p))),
        Policy::Improved => Ok(Some(PoolPolicy::improved().max_slots(p))),
        Policy::Random
        | Policy::RoundRobin
        | Policy::P2c
        | Policy::P2cPeakEwma
        | Policy::LeastRequest => Ok(None),
        Policy::Jsq => Err(LiveError::Unsupported(
            "jsq-oracle",
            "it needs global knowledge of every queue",
        )),
    }
}

fn service_spec(cfg: &SimConfig, server: usize) -> ServiceSpec {
    let slow = if cfg.slow_server == Some(server) {
        cfg.slow_factor
    } else {
        1.0
    };
    ServiceSpec {
        workers: cfg.workers,
        mean: Duration::from_secs_f64(cfg.service_ms * slow / 1e3),
        seed: cfg.seed ^ 0x5E4F_0002 ^ (server as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// Draws an exponential variate with the given mean, by inversion.
fn exp(rng: &mut SmallRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// Runs `cfg` live on loopback with a client runtime of `threads` worker threads.
pub fn run_live(cfg: &SimConfig, threads: usize) -> Result<LiveReport, LiveError> {
    let pool = pool_policy(cfg)?;
    let k = cfg.servers;
    let joiner = cfg.join_at_s.map(|_| k - 1);
    let mut servers: Vec<Option<LiveServer>> = Vec::with_capacity(k);
    for i in 0..k {
        servers.push(if Some(i) == joiner {
            None
        } else {
            Some(LiveServer::start(service_spec(cfg, i))?)
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("balance-client")
        .enable_all()
        .build()
        .map_err(LiveError::Runtime)?;
    let result = rt.block_on(drive(cfg, pool, &mut servers));
    rt.shutdown_timeout(Duration::from_secs(1));
    let mut servers: Vec<LiveServer> = servers.into_iter().flatten().collect();
    // Every client is gone: the servers should see all their connections close.
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    let open = |servers: &[LiveServer]| -> u64 {
        servers.iter().map(LiveServer::active_connections).sum()
    };
    while open(&servers) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let still_open = open(&servers);
    if still_open > 0 {
        tracing::warn!(
            still_open,
            "connections left open after every client closed"
        );
    }
    let service = measured_service_ms(cfg, &servers);
    stop_all(std::mem::take(&mut servers))?;
    let (report, late_samples) = result?;
    Ok(LiveReport {
        report,
        service_ms_measured: service,
        late_samples,
        conns_open_after_close: still_open,
    })
}

fn measured_service_ms(cfg: &SimConfig, servers: &[LiveServer]) -> f64 {
    let (mut ns, mut n) = (0u64, 0u64);
    for (i, s) in servers.iter().enumerate() {
        if cfg.slow_server != Some(i) {
            // Relaxed: statistics, read after the run.
            ns += s.counters().service_ns.load(Ordering::Relaxed);
            n += s.counters().completed.load(Ordering::Relaxed);
        }
    }
    ns as f64 / n.max(1) as f64 / 1e6
}

/// Shared by the arrival tasks.
struct Sink {
    latency: Mutex<Histogram<u64>>,
    failed: AtomicU64,
    in_flight: AtomicUsize,
    measure_start: Instant,
    end: Instant,
}

/// The run itself, inside the client runtime: returns the report and the late samples.
async fn drive(
    cfg: &SimConfig,
    pool: Option<PoolPolicy>,
    servers: &mut [Option<LiveServer>],
) -> Result<(SimReport, u64), LiveError> {
    let k = cfg.servers;
    let members = Arc::new(Membership::default());
    for (i, s) in servers.iter().enumerate() {
        if let Some(s) = s {
            members.join(i as u32, s.addr());
        }
    }
    let roving = Duration::from_secs_f64(cfg.roving_interval_ms / 1e3);
    let mut clients = Vec::with_capacity(cfg.clients);
    for c in 0..cfg.clients {
        clients.push(match &pool {
            Some(policy) => LiveClient::Pool(
                RovingClient::builder()
                    .servers(servers.iter().flatten().map(|s| s.addr().to_string()))
                    .pool_policy(policy.clone())
                    .roving_interval(roving)
                    .acquire_timeout(super::client::EXCHANGE_TIMEOUT)
                    .build()?,
            ),
            None => LiveClient::Baseline(Baseline::new(
                cfg.policy,
                members.clone(),
                k,
                cfg.seed ^ 0x4047_0004 ^ c as u64,
            )),
        });
    }
    let clients = Arc::new(clients);

    let t0 = Instant::now();
    let measure_start = t0 + Duration::from_secs_f64(cfg.warmup_s);
    let end = measure_start + Duration::from_secs_f64(cfg.duration_s);
    // 1 µs to 1 h at 3 significant digits, as the simulator's.
    let latency = Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid");
    let sink = Arc::new(Sink {
        latency: Mutex::new(latency),
        failed: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        measure_start,
        end,
    });
    // The offered rate: `load` × the capacity of the servers present at the start.
    let capacity: f64 = (0..k)
        .filter(|&i| Some(i) != cfg.join_at_s.map(|_| k - 1))
        .map(|i| {
            let spec = service_spec(cfg, i);
            spec.workers as f64 / spec.mean.as_secs_f64()
        })
        .sum();
    let rate = cfg.load * capacity;
    let arrivals = tokio::spawn(arrive(clients.clone(), sink.clone(), rate, cfg.seed, t0));

    // The sampler, on a grid from the start of the window.
    tokio::time::sleep_until(measure_start).await;
    let swaps_before = swaps(&clients);
    let mut m = Metrics::new(k);
    let sample = Duration::from_secs_f64(cfg.sample_ms / 1e3).max(Duration::from_micros(100));
    let window = Duration::from_secs_f64(cfg.window_s).max(sample);
    let mut ticker = tokio::time::interval_at(measure_start, sample);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last: Vec<u64> = servers
        .iter()
        .map(|s| s.as_ref().map_or(0, LiveServer::received))
        .collect();
    let mut next_window = measure_start + window;
    let plot_each = k <= PLOT_EACH_MAX;
    let watch = joiner_id(cfg);
    let join_at = cfg
        .join_at_s
        .map(|s| measure_start + Duration::from_secs_f64(s));
    let leave_at = cfg
        .leave_at_s
        .map(|s| measure_start + Duration::from_secs_f64(s));
    let leaver = cfg.leave_server.min(k - 1);
    let (mut joined_window, mut left, mut drained_at) = (None, None, None);
    let mut late_samples = 0u64;
    let mut ids = members.ids();
    loop {
        let tick = ticker.tick().await;
        if Instant::now().saturating_duration_since(tick) > sample {
            late_samples += 1;
        }
        if tick >= next_window && next_window <= end {
            for (i, s) in servers.iter().enumerate() {
                let now = s.as_ref().map_or(0, LiveServer::received);
                let delta = now.saturating_sub(last[i]);
                last[i] = now;
                m.count_n(i as u32, u32::try_from(delta).unwrap_or(u32::MAX));
            }
            m.close_window(&ids, watch, plot_each);
            next_window += window;
        }
        if tick >= end {
            break;
        }
        if join_at.is_some_and(|t| tick >= t) && joined_window.is_none() {
            let id = k - 1;
            let spec = service_spec(cfg, id);
            let server = tokio::task::spawn_blocking(move || LiveServer::start(spec)).await??;
            let addr = server.addr();
            last[id] = server.received();
            servers[id] = Some(server);
            members.join(id as u32, addr);
            clients.iter().for_each(|c| c.join(addr));
            ids = members.ids();
            let into = tick.saturating_duration_since(measure_start).as_nanos();
            let w = window.as_nanos();
            joined_window = Some((into / w + u128::from(into % w != 0)) as usize);
            tracing::info!(server = id, %addr, "server joined");
        }
        if leave_at.is_some_and(|t| tick >= t) && left.is_none() {
            if let Some(server) = &servers[leaver] {
                members.leave(leaver as u32);
                clients
                    .iter()
                    .for_each(|c| c.leave(leaver as u32, server.addr()));
                server.begin_leave(LEAVE_DRAIN);
                ids = members.ids();
                left = Some(tick);
                tracing::info!(server = leaver, "server left");
            }
        }
        if let (Some(t), None) = (left, drained_at) {
            if servers[leaver].as_ref().is_none_or(|s| s.load() == 0) {
                drained_at = Some(tick.saturating_duration_since(t));
            }
        }
        m.sample(&ids, |s| {
            servers[s]
                .as_ref()
                .map_or(0, |s| u32::try_from(s.load()).unwrap_or(u32::MAX))
        });
    }
    arrivals.await?;
    let conns: Vec<f64> = ids
        .iter()
        .filter_map(|&s| servers[s as usize].as_ref())
        .map(|s| s.active_connections() as f64)
        .collect();
    let swaps_in_window = swaps(&clients).saturating_sub(swaps_before);
    // Let the requests still in flight finish (they are no longer measured).
    let settle = Instant::now() + SETTLE;
    while sink.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(clients);
    m.latency = std::mem::replace(
        &mut *sink.latency.lock().unwrap_or_else(PoisonError::into_inner),
        Histogram::new(1).expect("constant histogram precision is valid"),
    );
    let whole: Vec<u32> = ids.iter().copied().filter(|&s| Some(s) != watch).collect();
    let run_end = RunEnd {
        rules: None,
        whole,
        conns,
        joined_window,
        left: left.map(|t| LeftServer {
            server: leaver,
            at_s: t.saturating_duration_since(measure_start).as_secs_f64(),
            drained_after_s: drained_at.map(|d| d.as_secs_f64()),
        }),
        failed: sink.failed.load(Ordering::Relaxed),
        last_swap_s: None,
        swaps_in_window,
        events: 0,
        errors: 0,
        connects_per_s: Vec::new(),
    };
    Ok((SimReport::build(cfg, m, run_end), late_samples))
}

fn joiner_id(cfg: &SimConfig) -> Option<u32> {
    cfg.join_at_s.map(|_| (cfg.servers - 1) as u32)
}

/// Pool replacements so far, over every roving client.
fn swaps(clients: &[LiveClient]) -> u64 {
    clients
        .iter()
        .map(|c| match c {
            LiveClient::Pool(p) => p.counters().evicted,
            LiveClient::Baseline(_) => 0,
        })
        .sum()
}

/// The open-loop arrival stream: Poisson at `rate` per second from `t0`, each request to a
/// uniformly random client, until the end of the window.
async fn arrive(clients: Arc<Vec<LiveClient>>, sink: Arc<Sink>, rate: f64, seed: u64, t0: Instant) {
    if !(rate > 0.0 && rate.is_finite()) || clients.is_empty() {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xA11A_0001);
    let mean = 1.0 / rate;
    let mut next = t0 + Duration::from_secs_f64(exp(&mut rng, mean));
    while next < sink.end {
        // Arrivals already due go out at once: a timer wait costs a whole tick (1 ms), more
        // than the mean gap at this load, and the stream would fall behind.
        if next > Instant::now() {
            tokio::time::sleep_until(next).await;
        } else {
            // Behind schedule: let the requests already spawned run before the next one.
            tokio::task::yield_now().await;
        }
        let c = rng.random_range(0..clients.len());
        let (clients, sink2) = (clients.clone(), sink.clone());
        // Release: pairs with the Acquire poll at the end of the run.
        sink.in_flight.fetch_add(1, Ordering::Release);
        let arrival = next;
        tokio::spawn(async move {
            let result = clients[c].request().await;
            let done = Instant::now();
            if arrival >= sink2.measure_start {
                match result {
                    Ok(()) if done <= sink2.end => {
                        let ns = done.saturating_duration_since(arrival).as_nanos() as u64;
                        let _ = sink2
                            .latency
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .record(ns.max(1));
                    }
                    Ok(()) => {}
                    Err(err) => {
                        tracing::debug!(%err, "request failed");
                        // Relaxed: a statistic read after the run.
                        sink2.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Release: this request's recorded latency and failure are visible to the end-of-run
            // Acquire poll that sees the count drop.
            sink2.in_flight.fetch_sub(1, Ordering::Release);
        });
        next += Duration::from_secs_f64(exp(&mut rng, mean));
    }
}
