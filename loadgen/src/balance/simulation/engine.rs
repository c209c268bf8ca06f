//! The discrete-event loop: arrivals, service, rovers, joins and leaves, sampling.
//!
//! Why this shape: the three regular streams (Poisson arrivals, sample ticks, window ticks)
//! each have exactly one next time, so they live outside the heap and are compared with its
//! top; only service completions, rover probes and the rare join/leave go through the
//! [`EventQueue`]. State is struct-of-arrays ([`Servers`], [`Clients`], the request
//! slab here) and nothing allocates per event once the run is warm. Each random stream has its
//! own seeded generator (arrivals, service times, rovers, routing), so every policy sees the
//! same arrivals and service demands for a seed, and only routing differs.

use callosum_client::pool::decide::{Admission, Left};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::client::{Clients, NO_CONN, close_now};
use super::event::{Controls, EventQueue, Kind, Periodic};
use super::server::Servers;
use crate::balance::metrics::Metrics;
use crate::balance::model::SimConfig;
use crate::balance::model::router;
use crate::balance::model::{Policy, PoolRules, ServiceDist};
use crate::balance::report::{LeftServer, RunEnd, SimReport};

const NS: f64 = 1e9;
/// Requests plotted one line per server up to this many servers; above, min/mean/max.
pub const PLOT_EACH_MAX: usize = 16;

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqState {
    Free,
    AtClient,
    Queued,
    InService,
    /// Failed by a crash while in service: its completion event is ignored.
    Dead,
    /// Served (or connected); the response is on its way back to the client (`--rtt`).
    Returning,
    /// At the fail-fast server, about to be answered with an error; holds no worker.
    Failing,
}

/// What a [`Req`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// A client's request.
    Request,
    /// A rover's new connection being accepted (`--connect-cost`) or on its way to the
    /// client (`--rtt`); `conn` holds its slot.
    Connect,
}

/// One request (40 bytes: what an event touches is in one cache line).
#[derive(Clone, Copy, Debug)]
struct Req {
    /// When it arrived at its client, ns.
    arrival: u64,
    /// When it was sent to its server, ns.
    sent: u64,
    /// Its service demand at a normal-speed server, ns.
    service: f64,
    client: u32,
    /// The pool connection it travels on, an entry of its client's pool (`NO_CONN` under the
    /// baselines).
    conn: u32,
    server: u32,
    state: ReqState,
    work: Work,
}

/// Draws an exponential variate with the given mean, by inversion.
#[inline]
fn exp(rng: &mut SmallRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// Draws a service demand of `dist` with the given mean (`shape`: σ for lognormal, α for
/// Pareto): lognormal by Box–Muller with μ = ln(mean) − σ²/2; Pareto by inversion with scale
/// mean·(α−1)/α.
fn service(rng: &mut SmallRng, mean: f64, dist: ServiceDist, shape: f64) -> f64 {
    match dist {
        ServiceDist::Exp => exp(rng, mean),
        ServiceDist::Lognormal => {
            let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (mean.ln() - shape * shape / 2.0 + shape * z).exp()
        }
        ServiceDist::Pareto => {
            let scale = mean * (shape - 1.0) / shape;
            scale / (1.0 - rng.random::<f64>()).powf(1.0 / shape)
        }
    }
}

/// One simulation run.
struct Sim<'a> {
    cfg: &'a SimConfig,
    rules: PoolRules,
    q: EventQueue,
    servers: Servers,
    clients: Clients,
    reqs: Vec<Req>,
    req_free: Vec<u32>,
    rng_arrival: SmallRng,
    rng_service: SmallRng,
    rng_rover: SmallRng,
    rng_route: SmallRng,
    /// Whether each request at the fail-fast server fails.
    rng_fail: SmallRng,
    m: Metrics,
    now: u64,
    measure_start: u64,
    end: u64,
    mean_interarrival: f64,
    service_ns: f64,
    roving_ns: u64,
    /// `--rtt`, ns.
    rtt_ns: u64,
    /// `--connect-cost`, ns.
    connect_ns: f64,
    /// `--fail-fast-time`, ns.
    fail_ns: u64,
    /// Connections opened per server in the measured window.
    connects: Vec<u64>,
    /// Requests arriving in the measured window that were answered with an error.
    errors: u64,
    /// Per (client, server), the client's peak-EWMA response time (p2c-peak-ewma only).
    ewma: Vec<router::PeakEwma>,
    /// Connections that left a pool, reused between rover ticks and leaves.
    closing: Vec<Left>,
    events: u64,
    last_swap: Option<u64>,
    swaps_in_window: u64,
    failed: u64,
    left: Option<(u32, u64)>,
    drained_at: Option<u64>,
    joined_window: Option<usize>,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let s = cfg.servers;
        let rules = match cfg.policy {
            Policy::Original => PoolRules::ORIGINAL,
            _ => cfg.rules,
        };
        let pool_policy = rules.policy(cfg.max_slots.max(1));
        let workers = if cfg.no_queue {
            u32::MAX
        } else {
            cfg.workers.max(1)
        };
        let mut servers = Servers::new(s, workers, cfg.policy == Policy::Jsq);
        if let Some(slow) = cfg.slow_server {
            if slow < s {
                servers.slowdown[slow] = cfg.slow_factor;
            }
        }
        let joiner = cfg.join_at_s.map(|_| s - 1);
        for i in 0..s {
            if Some(i) != joiner {
                servers.activate(i as u32);
            }
        }
        // Capacity of the servers present at the start: the offered load is a fraction of it.
        let service_ns = cfg.service_ms * 1e6;
        let capacity: f64 = servers
            .members
            .iter()
            .map(|&i| cfg.workers.max(1) as f64 / (service_ns * servers.slowdown[i as usize]))
            .sum();
        let rate = cfg.load * capacity;
        let seed = cfg.seed;
        let p2c_servers = if cfg.policy.counts_outstanding() {
            s
        } else {
            0
        };
        let ewma_len = if cfg.policy == Policy::P2cPeakEwma {
            cfg.clients * s
        } else {
            0
        };
        let warmup = (cfg.warmup_s * NS) as u64;
        Sim {
            cfg,
            rules,
            q: EventQueue::default(),
            servers,
            clients: Clients::new(cfg.clients, &pool_policy, p2c_servers),
            reqs: Vec::new(),
            req_free: Vec::new(),
            rng_arrival: SmallRng::seed_from_u64(seed ^ 0xA11A_0001),
            rng_service: SmallRng::seed_from_u64(seed ^ 0x5E4F_0002),
            rng_rover: SmallRng::seed_from_u64(seed ^ 0x40FE_0003),
            rng_route: SmallRng::seed_from_u64(seed ^ 0x4047_0004),
            rng_fail: SmallRng::seed_from_u64(seed ^ 0xFA11_0005),
            m: Metrics::new(s),
            now: 0,
            measure_start: warmup,
            end: warmup + (cfg.duration_s * NS) as u64,
            mean_interarrival: if rate > 0.0 {
                1.0 / rate
            } else {
                f64::INFINITY
            },
            service_ns,
            roving_ns: ((cfg.roving_interval_ms * 1e6) as u64).max(1),
            rtt_ns: (cfg.model.rtt_ms * 1e6) as u64,
            connect_ns: cfg.model.connect_cost_ms * 1e6,
            fail_ns: ((cfg.model.fail_fast_ms * 1e6) as u64).max(1),
            connects: vec![0; s],
            errors: 0,
            ewma: vec![router::PeakEwma::default(); ewma_len],
            closing: Vec::new(),
            events: 0,
            last_swap: None,
            swaps_in_window: 0,
            failed: 0,
            left: None,
            drained_at: None,
            joined_window: None,
        }
    }

    fn run(mut self) -> SimReport {
        let cfg = self.cfg;
        let mut rovers = Periodic::new(
            if cfg.policy.uses_pool() {
                (0..cfg.clients as u32)
                    .map(|c| (self.rng_rover.random_range(0..self.roving_ns), c))
                    .collect()
            } else {
                Vec::new()
            },
            self.roving_ns,
        );
        let mut controls = Vec::new();
        if let Some(at) = cfg.join_at_s {
            let t = self.measure_start + (at * NS) as u64;
            controls.push((t, Kind::Join, (cfg.servers - 1) as u32));
        }
        if let Some(at) = cfg.leave_at_s {
            let t = self.measure_start + (at * NS) as u64;
            controls.push((t, Kind::Leave, cfg.leave_server.min(cfg.servers - 1) as u32));
        }
        let mut controls = Controls::new(controls);
        let sample_ns = ((cfg.sample_ms * 1e6) as u64).max(1);
        let window_ns = ((cfg.window_s * NS) as u64).max(1);
        let mut next_arrival = exp(&mut self.rng_arrival, self.mean_interarrival) as u64;
        let mut next_sample = self.measure_start;
        let mut next_window = self.measure_start + window_ns;
        let plot_each = cfg.servers <= PLOT_EACH_MAX;
        let watch = cfg.join_at_s.map(|_| (cfg.servers - 1) as u32);
        loop {
            let t_heap = self.q.next_time();
            let t_rove = rovers.next_time();
            let t_control = controls.next_time();
            let t = t_heap
                .min(t_rove)
                .min(t_control)
                .min(next_arrival)
                .min(next_sample)
                .min(next_window);
            if t >= self.end {
                if next_window <= self.end {
                    self.now = next_window;
                    self.m.close_window(&self.servers.members, watch, plot_each);
                }
                break;
            }
            self.now = t;
            self.events += 1;
            if t == next_window {
                self.m.close_window(&self.servers.members, watch, plot_each);
                next_window += window_ns;
            } else if t == next_sample {
                let servers = &self.servers;
                self.m.sample(&servers.members, |s| servers.load(s));
                next_sample += sample_ns;
            } else if t == t_control {
                match controls.pop() {
                    Some((Kind::Join, server)) => {
                        self.servers.activate(server);
                        // The first whole window the joined server is in.
                        let into = self.now.saturating_sub(self.measure_start);
                        let w = (into / window_ns) as usize;
                        self.joined_window = Some(if into % window_ns == 0 { w } else { w + 1 });
                    }
                    Some((Kind::Leave, server)) => self.leave(server),
                    None => {}
                }
            } else if t == t_heap {
                if let Some((_, r)) = self.q.pop() {
                    self.complete(r);
                }
            } else if t == t_rove {
                if let Some(c) = rovers.pop() {
                    self.rove(c as usize);
                }
            } else {
                self.arrive();
                let gap = exp(&mut self.rng_arrival, self.mean_interarrival);
                next_arrival = t + (gap as u64).max(1);
            }
        }
        self.report()
    }

    fn in_window(&self) -> bool {
        self.now >= self.measure_start
    }

    fn new_request(&mut self, client: u32) -> u32 {
        let m = &self.cfg.model;
        let service = service(
            &mut self.rng_service,
            self.service_ns,
            m.service_dist,
            m.service_shape,
        );
        self.new_req(Req {
            arrival: self.now,
            sent: 0,
            service,
            client,
            conn: NO_CONN,
            server: 0,
            state: ReqState::AtClient,
            work: Work::Request,
        })
    }

    fn new_req(&mut self, req: Req) -> u32 {
        if let Some(id) = self.req_free.pop() {
            self.reqs[id as usize] = req;
            id
        } else {
            self.reqs.push(req);
            self.reqs.len() as u32 - 1
        }
    }

    fn free_request(&mut self, r: u32) {
        self.reqs[r as usize].state = ReqState::Free;
        self.req_free.push(r);
    }

    fn arrive(&mut self) {
        let c = self.rng_arrival.random_range(0..self.cfg.clients) as u32;
        let r = self.new_request(c);
        if self.cfg.policy.uses_pool() {
            let ci = c as usize;
            if !self.clients.has_waiting(ci) {
                if let Some(conn) = self.lease(ci) {
                    self.send_on(r, conn);
                    return;
                }
            }
            self.clients.push_waiting(ci, r);
        } else {
            let Some(s) = self.route(c as usize) else {
                self.failed += 1;
                self.free_request(r);
                return;
            };
            if self.cfg.policy.counts_outstanding() {
                self.clients.outstanding[c as usize * self.cfg.servers + s as usize] += 1;
            }
            self.send(r, s);
        }
    }

    /// Picks the server for a baseline policy; `None` if the cluster is empty.
    fn route(&mut self, c: usize) -> Option<u32> {
        let members = &self.servers.members;
        let rng = &mut self.rng_route;
        if self.cfg.policy == Policy::Jsq {
            let least = self.servers.jsq.as_mut().and_then(|j| j.least_loaded())?;
            return Some(least[rng.random_range(0..least.len())]);
        }
        // This client's counts (P2C only; empty otherwise).
        let outstanding = self
            .clients
            .outstanding
            .get(c * self.cfg.servers..)
            .unwrap_or(&[]);
        let ewma = self.ewma.get(c * self.cfg.servers..).unwrap_or(&[]);
        let cursor = &mut self.clients.cursor[c];
        let (policy, now) = (self.cfg.policy, self.now);
        let none = router::PeakEwma::default();
        let i = router::pick(policy, members.len(), cursor, rng, |i| {
            let s = members[i] as usize;
            let pending = u32::from(outstanding.get(s).copied().unwrap_or(0));
            router::load(policy, pending, ewma.get(s).unwrap_or(&none), now)
        })?;
        Some(members[i])
    }

    /// Leases client `c`'s best idle connection: `(connection, server)`.
    fn lease(&mut self, c: usize) -> Option<(u32, u32)> {
        self.clients.lease(c, &mut self.rng_route)
    }

    fn send_on(&mut self, r: u32, (conn, server): (u32, u32)) {
        self.reqs[r as usize].conn = conn;
        self.send(r, server);
    }

    fn send(&mut self, r: u32, s: u32) {
        let (ri, si) = (r as usize, s as usize);
        self.reqs[ri].server = s;
        self.reqs[ri].sent = self.now;
        if self.in_window() {
            self.m.count(s);
        }
        let ff = &self.cfg.model;
        if ff.fail_fast_server == Some(si) && self.rng_fail.random::<f64>() < ff.fail_fast_share {
            self.reqs[ri].state = ReqState::Failing;
            self.q.push(self.now + self.fail_ns, r);
            return;
        }
        self.enqueue(r, s);
    }

    /// Request (or connect) `r` takes a worker of server `s`, or queues for one.
    fn enqueue(&mut self, r: u32, s: u32) {
        let (ri, si) = (r as usize, s as usize);
        self.servers.load_up(s);
        if self.servers.busy[si] < self.servers.workers {
            self.servers.busy[si] += 1;
            self.start(r, s);
        } else {
            self.reqs[ri].state = ReqState::Queued;
            self.servers.queue[si].push_back(r);
        }
    }

    fn start(&mut self, r: u32, s: u32) {
        self.reqs[r as usize].state = ReqState::InService;
        let d = match self.reqs[r as usize].work {
            Work::Request => self.reqs[r as usize].service * self.servers.slowdown[s as usize],
            Work::Connect => self.reqs[r as usize].service,
        };
        self.q.push(self.now + (d as u64).max(1), r);
    }

    /// An event of request (or connect) `r`: its service ends, its error is answered, or
    /// its response reaches the client.
    fn complete(&mut self, r: u32) {
        let ri = r as usize;
        let s = self.reqs[ri].server;
        let si = s as usize;
        match self.reqs[ri].state {
            ReqState::Dead => {
                self.free_request(r);
                return;
            }
            ReqState::Failing => {
                if self.reqs[ri].arrival >= self.measure_start {
                    self.errors += 1;
                }
                return self.respond(r, false);
            }
            ReqState::Returning => return self.respond(r, true),
            _ => {}
        }
        if let Some(next) = self.servers.queue[si].pop_front() {
            self.start(next, s);
        } else {
            self.servers.busy[si] -= 1;
        }
        self.servers.load_down(s);
        if !self.servers.active[si] && self.drained_at.is_none() && self.servers.load(si) == 0 {
            self.drained_at = Some(self.now);
        }
        if self.rtt_ns > 0 {
            self.reqs[ri].state = ReqState::Returning;
            self.q.push(self.now + self.rtt_ns, r);
        } else {
            self.respond(r, true);
        }
    }

    /// The response to `r` reaches its client now (`ok`: a success, else an error): the
    /// latency is recorded (successes only), the connection given back, the router's counts
    /// and averages updated. A connect instead joins the rover's offer.
    fn respond(&mut self, r: u32, ok: bool) {
        let ri = r as usize;
        let req = self.reqs[ri];
        self.free_request(r);
        let (c, si) = (req.client as usize, req.server as usize);
        if req.work == Work::Connect {
            return self.connected(c, req.server, req.conn);
        }
        if ok && req.arrival >= self.measure_start {
            let _ = self.m.latency.record((self.now - req.arrival).max(1));
        }
        // Errors teach the latency averages too: a client sees a fast answer either way.
        let response = self.now - req.sent;
        if req.conn != NO_CONN {
            self.give_back(c, req.conn, Some(response));
        } else if self.cfg.policy.counts_outstanding() {
            self.clients.outstanding[c * self.cfg.servers + si] -= 1;
            if let Some(e) = self.ewma.get_mut(c * self.cfg.servers + si) {
                e.observe(self.now, response as f64);
            }
        }
    }

    /// A request's connection comes back to client `c` (`response`: its response time, ns;
    /// `None` for a failed request).
    fn give_back(&mut self, c: usize, conn: u32, response: Option<u64>) {
        let (server, slot) = self.clients.conn(c, conn);
        if !self.clients.give_back(c, conn, response) {
            self.servers.release_slot(server as usize, slot);
        }
        self.serve_waiters(c);
    }

    fn serve_waiters(&mut self, c: usize) {
        while self.clients.has_waiting(c) {
            let Some(conn) = self.lease(c) else { return };
            if let Some(r) = self.clients.pop_waiting(c) {
                self.send_on(r, conn);
            }
        }
    }

    /// Closes the idle ones of the connections `retire` takes out of pools (the leased ones
    /// close when their requests complete).
    fn close_each(&mut self, retire: impl FnOnce(&mut Clients, &mut Vec<Left>)) {
        let mut closing = std::mem::take(&mut self.closing);
        retire(&mut self.clients, &mut closing);
        for (server, slot) in closing.drain(..).filter_map(close_now) {
            self.servers.release_slot(server as usize, slot);
        }
        self.closing = closing;
    }

    fn rove(&mut self, c: usize) {
        let now = self.now;
        let n = self.servers.members.len();
        if n == 0 {
            return;
        }
        let s = self.servers.members[self.rng_rover.random_range(0..n)];
        let slot = self.servers.acquire_slot(s as usize);
        if self.in_window() {
            self.connects[s as usize] += 1;
        }
        if self.connect_ns <= 0.0 && self.rtt_ns == 0 {
            return self.connected(c, s, slot);
        }
        // The connection reaches the pool once accepted (a worker's work) and back.
        let r = self.new_req(Req {
            arrival: now,
            sent: now,
            service: self.connect_ns,
            client: c as u32,
            conn: slot,
            server: s,
            state: ReqState::Returning,
            work: Work::Connect,
        });
        if self.connect_ns > 0.0 {
            self.enqueue(r, s);
        } else {
            self.q.push(now + self.rtt_ns, r);
        }
    }

    /// Client `c`'s rover connection to `s` with `slot` is ready: it is offered to the pool
    /// (refused or closed at once if `s` left meanwhile).
    fn connected(&mut self, c: usize, s: u32, slot: u32) {
        let now = self.now;
        if !self.servers.active[s as usize] {
            self.servers.release_slot(s as usize, slot);
            return;
        }
        match self.clients.offer(c, s, slot, now, &mut self.rng_rover) {
            Admission::Refused => {
                self.servers.release_slot(s as usize, slot);
                return;
            }
            Admission::Kept { .. } => {}
            Admission::Replaced { evicted, .. } => {
                if let Some((server, slot)) = close_now(evicted) {
                    self.servers.release_slot(server as usize, slot);
                }
                self.last_swap = Some(self.now);
                if self.in_window() {
                    self.swaps_in_window += 1;
                }
            }
        }
        self.serve_waiters(c);
    }

    fn leave(&mut self, s: u32) {
        self.servers.deactivate(s);
        self.left = Some((s, self.now));
        for c in 0..self.cfg.clients {
            self.close_each(|clients, closing| {
                clients.evict_server(c, s, closing);
            });
        }
        if self.cfg.crash {
            // Every request at the crashed server fails now; their connections close.
            for r in 0..self.reqs.len() as u32 {
                let ri = r as usize;
                let state = self.reqs[ri].state;
                if self.reqs[ri].server != s
                    || !matches!(state, ReqState::Queued | ReqState::InService)
                {
                    continue;
                }
                if self.reqs[ri].work == Work::Connect {
                    // A connection being accepted dies with its server.
                    self.servers.release_slot(s as usize, self.reqs[ri].conn);
                    if state == ReqState::InService {
                        self.reqs[ri].state = ReqState::Dead;
                    } else {
                        self.free_request(r);
                    }
                    continue;
                }
                self.failed += 1;
                let c = self.reqs[ri].client as usize;
                let conn = self.reqs[ri].conn;
                if state == ReqState::InService {
                    self.reqs[ri].state = ReqState::Dead;
                } else {
                    self.free_request(r);
                }
                if conn != NO_CONN {
                    // A failed request: no response time to learn from.
                    self.give_back(c, conn, None);
                } else if self.cfg.policy.counts_outstanding() {
                    self.clients.outstanding[c * self.cfg.servers + s as usize] -= 1;
                }
            }
            self.servers.queue[s as usize].clear();
            self.servers.busy[s as usize] = 0;
        }
        if self.servers.load(s as usize) == 0 {
            self.drained_at = Some(self.now);
        }
    }

    fn report(self) -> SimReport {
        let cfg = self.cfg;
        // Long-run rates over servers in the cluster for the whole window.
        let whole: Vec<u32> = (0..cfg.servers as u32)
            .filter(|&s| {
                self.servers.active[s as usize]
                    && cfg.join_at_s.is_none_or(|_| s as usize != cfg.servers - 1)
            })
            .collect();
        let conns: Vec<f64> = self
            .servers
            .members
            .iter()
            .map(|&s| self.servers.conns[s as usize] as f64)
            .collect();
        let end = RunEnd {
            rules: cfg.policy.uses_pool().then_some(self.rules),
            whole,
            conns,
            joined_window: self.joined_window,
            left: self.left.map(|(s, t)| LeftServer {
                server: s as usize,
                at_s: (t - self.measure_start) as f64 / NS,
                drained_after_s: self.drained_at.map(|d| (d - t) as f64 / NS),
            }),
            failed: self.failed,
            last_swap_s: self.last_swap.map(|t| t as f64 / NS),
            swaps_in_window: self.swaps_in_window,
            events: self.events,
            errors: self.errors,
            connects_per_s: self
                .servers
                .members
                .iter()
                .map(|&s| self.connects[s as usize] as f64 / cfg.duration_s)
                .collect(),
        };
        SimReport::build(cfg, self.m, end)
    }
}

/// Runs one simulation to completion.
pub fn simulate(cfg: &SimConfig) -> SimReport {
    Sim::new(cfg).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_distribution_has_the_asked_mean() {
        let mut rng = SmallRng::seed_from_u64(11);
        let n = 400_000;
        for (dist, shape, tolerance) in [
            (ServiceDist::Exp, 1.0, 0.01),
            (ServiceDist::Lognormal, 1.0, 0.02),
            (ServiceDist::Pareto, 2.5, 0.03),
        ] {
            let draws: Vec<f64> = (0..n)
                .map(|_| service(&mut rng, 10.0, dist, shape))
                .collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            assert!(
                (mean - 10.0).abs() < 10.0 * tolerance,
                "{dist:?}: mean {mean}"
            );
            assert!(draws.iter().all(|&d| d > 0.0 && d.is_finite()));
        }
        // Pareto never goes below its scale, mean·(α−1)/α.
        assert!((0..1000).all(|_| service(&mut rng, 10.0, ServiceDist::Pareto, 2.5) >= 6.0));
    }
}
