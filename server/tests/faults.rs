//! Faults over real sockets: peers that vanish without a word, shutdown in the middle of a
//! churn, and hostile peers (slowloris, never reading an echo, flooding a hold, connect-and-close
//! storms).
//!
//! Why: the server sits in front of every service call, so whatever its peers, the network or
//! its host do, it must keep handing out slot lines promptly, free every slot exactly once, and
//! keep its memory and descriptors bounded. Each test injects one fault, bounded in count and
//! time, and then checks exactly that: a fresh client gets its line, every slot comes back
//! (the next connection gets slot 0, or the allocator says none is in use), and for the binary
//! its RSS and descriptors (`/proc/PID`) are where they were. The vanished-peer test builds a
//! network namespace and a veth pair of its own (link-local 169.254.0.0/16 addresses, which never
//! leave the machine); where that is not permitted (not root, no `ip`) it is skipped with the
//! reason printed. What `server.rs` and `binary.rs` already pin (a drain with idle connections,
//! a second signal with one held connection) is not repeated here; these add the load.
#![cfg(not(loom))]

#[path = "support/process.rs"]
mod process;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use callosum_server::{Keepalive, Slots};
use process::{ServerProcess, is_log_message, log_field};
use support::*;

/// A fresh client must get its slot line within this, whatever the other peers do.
const PROMPT: Duration = Duration::from_secs(5);

/// Connects and reads a slot line within [`PROMPT`]; fails the test otherwise.
fn fresh_client_served(addr: SocketAddr) -> (TcpStream, u32) {
    let mut stream = TcpStream::connect_timeout(&addr, PROMPT).expect("a fresh client connects");
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    let slot = read_slot(&mut stream);
    (stream, slot)
}

/// Waits (bounded) until a fresh connection gets slot 0: every other slot has been freed.
fn every_slot_comes_back(addr: SocketAddr) {
    assert!(
        eventually(|| fresh_client_served(addr).1 == 0),
        "a slot was never freed"
    );
}

/// A churn of connect, read the line, close, on `threads` threads, each bounded by `max`
/// connections, until `stop`; `lines` counts the slot lines received.
struct Churn {
    stop: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Churn {
    fn start(addr: SocketAddr, threads: usize, max: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, lines) = (stop.clone(), lines.clone());
                std::thread::spawn(move || {
                    for _ in 0..max {
                        // Relaxed: a stop flag; no data is published through it.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(mut stream) = TcpStream::connect_timeout(&addr, PATIENCE) else {
                            continue;
                        };
                        stream.set_read_timeout(Some(PATIENCE)).unwrap();
                        if read_line(&mut stream).is_ok_and(|l| l.ends_with(b"\r\n")) {
                            // Relaxed: a count, read after the threads are joined.
                            lines.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            lines,
            threads,
        }
    }

    /// Slot lines received so far.
    fn lines(&self) -> u64 {
        // Relaxed: a count; exact once the threads are joined (`stop`).
        self.lines.load(Ordering::Relaxed)
    }

    /// Stops the churn and returns the slot lines it received in all.
    fn stop(mut self) -> u64 {
        // Relaxed: see `start`.
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().expect("churn thread");
        }
        self.lines()
    }
}

// --- A peer that vanishes -----------------------------------------------------------------------

/// A network namespace with a veth pair to the test's own namespace, deleted (with the pair)
/// on drop.
struct Netns {
    name: String,
    /// The end inside the namespace.
    inner_if: String,
    /// 169.254.N.1 on this side, 169.254.N.2 inside.
    host: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates it, or says why it cannot be created here.
    fn create() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("creating a network namespace needs root".into());
        }
        let pid = std::process::id();
        let ns = Netns {
            name: format!("callosum-fault-{pid}"),
            inner_if: format!("cfn{}", pid % 1_000_000),
            host: Ipv4Addr::new(169, 254, (pid % 250) as u8 + 1, 1),
        };
        ip(&["netns", "add", &ns.name])?;
        let outer_if = format!("cfh{}", pid % 1_000_000);
        let inner = Ipv4Addr::from(u32::from(ns.host) + 1);
        ip(&[
            "link",
            "add",
            &outer_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.inner_if,
            "netns",
            &ns.name,
        ])?;
        ip(&["addr", "add", &format!("{}/30", ns.host), "dev", &outer_if])?;
        ip(&["link", "set", &outer_if, "up"])?;
        let inner_addr = format!("{inner}/30");
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &inner_addr,
            "dev",
            &ns.inner_if,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &ns.inner_if, "up"])?;
        Ok(ns)
    }

    /// Connects to `addr` from inside the namespace: a thread joins it (`setns` moves only the
    /// calling thread), makes the socket there, and hands it back.
    fn connect(&self, addr: SocketAddr) -> TcpStream {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace's handle");
            // SAFETY: `ns` is an open namespace descriptor; setns changes only this thread's
            // network namespace, and the thread ends right after making its one socket.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpStream::connect_timeout(&addr, PATIENCE).expect("connect from the namespace")
        })
        .join()
        .expect("the namespace thread")
    }

    /// The namespace's end of the link goes down: nothing it sent or would send gets through.
    fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "down"]).expect("link down");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_peer_that_vanishes_behind_a_downed_link_loses_its_slot_to_keepalive() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let slots = Arc::new(Slots::new(1000));
    // Idle 1 s, then 2 probes 1 s apart: a silent peer is dropped about 3 s after it went.
    let keepalive = Keepalive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        retries: 2,
    };
    let server = builder()
        .host(IpAddr::V4(ns.host))
        .keepalive(Some(keepalive))
        .slot_source(slots.clone())
        .start()
        .expect("the server starts on the veth address");
    let addr = server.local_addr();
    let mut peer = ns.connect(addr);
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_slot(&mut peer), 0);
    assert_eq!(slots.in_use(), 1);

    ns.cut();
    // Far beyond keepalive's ~3 s, far below its default of over two minutes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while slots.in_use() != 0 {
        assert!(
            Instant::now() < deadline,
            "the vanished peer's slot was not freed by keepalive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_fresh, slot) = fresh_client_served(addr);
    assert_eq!(slot, 0, "the freed slot is handed out again");
    drop(peer);
    assert_eq!(server.shutdown(Duration::ZERO).expect("stops").active, 0);
}

// --- Shutdown under load ------------------------------------------------------------------------

#[test]
fn shutdown_under_a_churn_closes_held_connections_at_the_drain_timeout_with_counters_consistent() {
    let slots = Arc::new(Slots::new(1 << 16));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let addr = server.local_addr();
    let mut held: Vec<_> = (0..50).map(|_| connect_slot(addr).0).collect();
    let churn = Churn::start(addr, 4, 50_000);
    assert!(eventually(|| churn.lines() > 500), "the churn is running");

    let stats = server.shutdown(Duration::from_secs(1)).expect("clean stop");
    let lines = churn.stop();
    for c in &mut held {
        assert!(sees_close(c), "a held connection outlived the drain");
    }
    assert_eq!(stats.active, 0);
    assert_eq!(stats.refused, 0);
    assert_eq!(
        stats.accepted,
        50 + lines,
        "every connection accepted sent exactly one slot line"
    );
    assert_eq!(slots.in_use(), 0);
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn sigterm_under_a_churn_exits_at_the_drain_timeout_and_a_second_signal_exits_at_once() {
    let server = ServerProcess::start(&["--drain-timeout", "1"]);
    let addr = server.addr;
    let mut held: Vec<_> = (0..50).map(|_| connect_slot(addr).0).collect();
    let churn = Churn::start(addr, 4, 50_000);
    assert!(eventually(|| churn.lines() > 500), "the churn is running");
    server.signal(libc::SIGTERM);
    let (status, _, log) = server.wait_exit(PATIENCE);
    let lines = churn.stop();
    assert!(status.success(), "exit status {status}");
    for c in &mut held {
        assert!(sees_close(c), "a held connection outlived the drain");
    }
    let stopped = log
        .lines()
        .find(|line| is_log_message(line, "stopped"))
        .unwrap_or_else(|| panic!("no final counters in {log:?}"));
    assert_eq!(log_field(stopped, "refused"), Some("0"), "{stopped}");
    assert_eq!(log_field(stopped, "active"), Some("0"), "{stopped}");
    let accepted: u64 = log_field(stopped, "accepted")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in {stopped:?}"));
    assert_eq!(accepted, 50 + lines, "{stopped}");

    // Again with a drain far longer than the test: the second signal must not wait for it.
    let server = ServerProcess::start(&["--drain-timeout", "600"]);
    let addr = server.addr;
    let _held: Vec<_> = (0..50).map(|_| connect_slot(addr).0).collect();
    let churn = Churn::start(addr, 4, 50_000);
    assert!(eventually(|| churn.lines() > 500), "the churn is running");
    server.signal(libc::SIGTERM);
    assert!(eventually(|| TcpStream::connect(addr).is_err()));
    server.signal(libc::SIGTERM);
    let (status, _, _) = server.wait_exit(PATIENCE);
    churn.stop();
    assert_eq!(status.code(), Some(130));
}

// --- Hostile peers ------------------------------------------------------------------------------

#[test]
fn slowloris_peers_sending_a_byte_at_a_time_do_not_delay_a_fresh_client() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let addr = server.local_addr();
    let mut slow: Vec<_> = (0..100).map(|_| connect_slot(addr).0).collect();
    // 200 rounds of one byte from each: slow, endless-looking, bounded.
    for round in 0..200u32 {
        for s in &mut slow {
            s.write_all(&[b'a' + (round % 26) as u8])
                .expect("a slow byte");
        }
        if round % 50 == 0 {
            let (_fresh, slot) = fresh_client_served(addr);
            assert!(slot >= 100, "slot {slot} is a slow peer's");
        }
    }
    drop(slow);
    assert!(eventually(|| slots.in_use() == 0), "slots not all freed");
    assert_eq!(fresh_client_served(addr).1, 0);
}

/// Bytes each peer that never reads its echo tries to push: more than the socket buffers of
/// both ends can hold, so a server that kept reading would have to buffer the rest.
const ECHO_PUSH: usize = 64 << 20;
/// Bytes each flooding peer of a hold pushes.
const FLOOD_PUSH: usize = 32 << 20;
/// How much the server's RSS may grow while they push (its buffers are fixed per shard or
/// per connection; what the peers push must stay in the kernel's socket buffers).
const RSS_BOUND_KIB: u64 = 32 << 10;

/// Peers pushing `push` bytes each without ever reading, non-blocking, for at most `limit`;
/// returns the bytes the kernel took from them in all.
fn push_without_reading(peers: &mut [TcpStream], push: usize, limit: Duration) -> u64 {
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut sent = vec![0usize; peers.len()];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && sent.iter().any(|&s| s < push) {
        let mut progress = false;
        for (p, s) in peers.iter_mut().zip(&mut sent) {
            match p.write(&chunk[..chunk.len().min(push - *s)]) {
                Ok(n) => {
                    *s += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("pushing: {e}"),
            }
        }
        if !progress {
            // Every peer is blocked by the server's back-pressure: pace the retries.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent.iter().map(|&s| s as u64).sum()
}

fn peers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let (s, _) = connect_slot(addr);
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// `n` peers connected to a fresh server started with `flags` push `push` bytes each for at
/// most `limit` without reading: the server's RSS must stay within [`RSS_BOUND_KIB`], a fresh
/// client is served beside them, and once they close every slot comes back. Returns the bytes
/// the kernel took from them.
fn push_at_a_server(flags: &[&str], n: usize, push: usize, limit: Duration) -> u64 {
    let server = ServerProcess::start(flags);
    let addr = server.addr;
    let mut hostile = peers(addr, n);
    let before = server.rss_kib();
    let pushed = push_without_reading(&mut hostile, push, limit);
    let grown = server.rss_kib().saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
        "RSS grew {grown} KiB while {pushed} bytes were pushed"
    );
    let (_fresh, slot) = fresh_client_served(addr);
    assert_eq!(slot, n as u32, "the lowest free slot");
    drop(hostile);
    every_slot_comes_back(addr);
    pushed
}

#[test]
fn peers_that_never_read_their_echo_do_not_grow_the_servers_memory() {
    let pushed = push_at_a_server(&["--mode", "echo"], 16, ECHO_PUSH, Duration::from_secs(3));
    // Back-pressure, not buffering: far less than asked for got through.
    assert!(
        pushed < (16 * ECHO_PUSH) as u64,
        "the server took everything: {pushed}"
    );
}

#[test]
fn a_flood_of_input_in_hold_mode_is_discarded_without_growing_the_servers_memory() {
    let pushed = push_at_a_server(&[], 8, FLOOD_PUSH, Duration::from_secs(30));
    assert_eq!(
        pushed,
        (8 * FLOOD_PUSH) as u64,
        "the hold read and discarded it all"
    );
}

#[test]
fn connect_and_close_storms_leave_no_slot_and_no_descriptor_behind() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr;
    // The baseline, taken with 32 connections open: by then both shards have accepted some
    // (shards finish starting after the server says it listens), so it counts whatever they
    // keep for good; the 32 are closed before the comparison.
    let warm: Vec<_> = (0..32).map(|_| connect_slot(addr).0).collect();
    let baseline = server.open_fds() - warm.len();
    drop(warm);
    let storm: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let Ok(s) = TcpStream::connect_timeout(&addr, PATIENCE) else {
                        continue;
                    };
                    match (i + t) % 4 {
                        // Gone before the server could write its line: reset or FIN.
                        0 => {
                            socket2::SockRef::from(&s)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                        }
                        1 => {}
                        // Half-close: no more input, but still reading.
                        2 => {
                            let _ = s.shutdown(Shutdown::Write);
                            let _ = (&s).read(&mut [0u8; 16]);
                        }
                        _ => {
                            let _ = (&s).read(&mut [0u8; 16]);
                            socket2::SockRef::from(&s)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    let (_fresh, _) = fresh_client_served(addr);
    for t in storm {
        t.join().expect("storm thread");
    }
    drop(_fresh);
    every_slot_comes_back(addr);
    assert!(
        eventually(|| server.open_fds() <= baseline),
        "descriptors {} after the storm, {baseline} before",
        server.open_fds()
    );
}
