//! CPU time and memory readings: the load generator's own (per worker thread and per process,
//! from `getrusage`), an external server's (from `/proc/PID/stat` and `/proc/PID/statm`), and
//! the kernel's memory for TCP connections (`/proc/slabinfo` and `/proc/net/sockstat`).
//!
//! Worker threads read their own `RUSAGE_THREAD`, so the figure is the engine's CPU alone even
//! when an embedded server shares the process.
//!
//! A held connection costs the kernel far more than the server process: its socket, inode,
//! file and dentry objects, its epoll item on the client side, and whatever its socket
//! buffers hold. Read before and at full hold, the difference per held connection is what a
//! deployer sizes a host by. The readings are host-wide: other work creating or closing
//! sockets at the same time moves them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable for the call; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User plus system CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// User plus system CPU time of the whole process.
pub fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of process `pid`, from `/proc/PID/stat` (every thread of it).
pub fn pid_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat, clock_ticks())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

/// utime + stime from the text of a `/proc/PID/stat` file.
fn parse_stat_cpu(stat: &str, ticks_per_s: u64) -> Option<Duration> {
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3, so utime (14) and stime (15) are the 12th and 13th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_s,
    ))
}

/// The slab caches a TCP connection's kernel objects come from.
const TCP_SLABS: &[&str] = &[
    "TCP",
    "TCPv6",
    "tcp_bind_bucket",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
];

/// The kernel's memory for TCP connections, host-wide, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMemory {
    /// Bytes of the `TCP_SLABS` caches' active objects (`/proc/slabinfo`, which needs root).
    pub slab_bytes: Option<u64>,
    /// Bytes held by TCP socket buffers (`mem` of the `TCP:` line of `/proc/net/sockstat`).
    pub socket_buffer_bytes: Option<u64>,
}

impl KernelMemory {
    /// The growth from `before` to `self`, per held connection.
    pub fn per_held(&self, before: &KernelMemory, held: u64) -> Option<KernelShare> {
        let per = |now: Option<u64>, then: Option<u64>| {
            now.zip(then)
                .filter(|_| held > 0)
                .map(|(n, t)| (n as f64 - t as f64) / held as f64)
        };
        let share = KernelShare {
            slab_bytes: per(self.slab_bytes, before.slab_bytes),
            socket_buffer_bytes: per(self.socket_buffer_bytes, before.socket_buffer_bytes),
        };
        (share.slab_bytes.is_some() || share.socket_buffer_bytes.is_some()).then_some(share)
    }
}

/// The kernel's memory per held connection: its growth, host-wide, from before a hold to full
/// hold, over the connections held. On one host it covers both ends of every connection.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KernelShare {
    /// Bytes of kernel objects (socket, inode, file, dentry, epoll item); null if
    /// `/proc/slabinfo` is unreadable (it needs root).
    pub slab_bytes: Option<f64>,
    /// Bytes of TCP socket buffers.
    pub socket_buffer_bytes: Option<f64>,
}

/// Reads [`KernelMemory`] now; a part that cannot be read is `None`.
pub fn kernel_memory() -> KernelMemory {
    KernelMemory {
        slab_bytes: std::fs::read_to_string("/proc/slabinfo")
            .ok()
            .and_then(|text| tcp_slab_bytes(&text)),
        socket_buffer_bytes: std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|text| tcp_buffer_pages(&text))
            .map(|pages| pages * page_size()),
    }
}

/// The bytes of the active objects of the [`TCP_SLABS`] caches in a `/proc/slabinfo` text
/// (version 2.1: `name active_objs num_objs objsize …`).
fn tcp_slab_bytes(slabinfo: &str) -> Option<u64> {
    let mut total = None;
    for line in slabinfo.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        if !TCP_SLABS.contains(&name) {
            continue;
        }
        let active: u64 = fields.next()?.parse().ok()?;
        let objsize: u64 = fields.nth(1)?.parse().ok()?;
        *total.get_or_insert(0) += active * objsize;
    }
    total
}

/// The pages of TCP socket buffers in a `/proc/net/sockstat` text
/// (`TCP: inuse 3 orphan 0 tw 12 alloc 5 mem 418`).
fn tcp_buffer_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|&f| f == "mem")?;
    fields.next()?.parse().ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 { page as u64 } else { 4096 }
}

/// Resident set size of process `pid` (or of this process when `None`), in bytes.
pub fn rss(pid: Option<u32>) -> io::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    let statm = std::fs::read_to_string(path)?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable statm"))?;
    Ok(pages * page_size())
}

/// The TCP addresses process `pid` listens on: the inodes of its sockets (`/proc/PID/fd`)
/// matched against the listening sockets of its network namespace (`/proc/PID/net/tcp`,
/// `tcp6`). Tells which of several targets a `--server-pid` process serves.
pub fn listening(pid: u32) -> io::Result<Vec<SocketAddr>> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue; // closed since the listing
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue; // no IPv6 on this host
        };
        out.extend(
            listening_sockets(&text)
                .filter(|(_, inode)| inodes.contains(*inode))
                .map(|(addr, _)| addr),
        );
    }
    Ok(out)
}

/// Whether process `pid` shares this process's network namespace (so that the addresses it
/// listens on are the ones this process connects to); false when it cannot be read.
pub fn same_network_namespace(pid: u32) -> bool {
    match (
        std::fs::read_link("/proc/self/ns/net"),
        std::fs::read_link(format!("/proc/{pid}/ns/net")),
    ) {
        (Ok(own), Ok(theirs)) => own == theirs,
        _ => false,
    }
}

/// The listening sockets of a `/proc/net/tcp` or `tcp6` table: (local address, inode).
fn listening_sockets(text: &str) -> impl Iterator<Item = (SocketAddr, &str)> {
    const LISTEN: &str = "0A";
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != LISTEN {
            return None;
        }
        Some((parse_proc_addr(f[1])?, f[9]))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as the kernel prints them: each
/// 32-bit word in host byte order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each word's bytes are in memory order once the printed value is read back natively.
    let word = |i: usize| {
        u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    let ip: IpAddr = match ip.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a socket listening on `listen` receives connections made to `target`.
pub fn serves(listen: SocketAddr, target: SocketAddr) -> bool {
    listen.port() == target.port()
        && (listen.ip() == target.ip()
            || listen.ip().is_unspecified()
            || matches!((listen.ip(), target.ip()), (IpAddr::V6(l), IpAddr::V4(t))
                if l.to_ipv4_mapped() == Some(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_gives_the_listening_sockets_and_their_inodes() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 20 4 30 10 -1\n\
            2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        let got: Vec<_> = listening_sockets(text).collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:8080".parse().unwrap(), "4242"),
                ("0.0.0.0:80".parse().unwrap(), "77")
            ]
        );
        let v6 = "00000000000000000000000001000000:1F90";
        assert_eq!(parse_proc_addr(v6), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn a_wildcard_listener_serves_every_address_on_its_port() {
        let t: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert!(serves("0.0.0.0:7000".parse().unwrap(), t));
        assert!(serves("[::]:7000".parse().unwrap(), t));
        assert!(serves("127.0.0.1:7000".parse().unwrap(), t));
        assert!(!serves("127.0.0.1:7001".parse().unwrap(), t));
        assert!(!serves("127.0.0.2:7000".parse().unwrap(), t));
    }

    #[test]
    fn this_process_listening_sockets_are_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let found = listening(std::process::id()).unwrap();
        assert!(found.contains(&l.local_addr().unwrap()), "{found:?}");
    }

    #[test]
    fn this_process_shares_its_own_network_namespace() {
        assert!(same_network_namespace(std::process::id()));
        assert!(!same_network_namespace(u32::MAX), "no such process");
    }

    #[test]
    fn stat_cpu_skips_a_command_with_spaces() {
        let stat = "1234 (my (odd) server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn slabinfo_sums_the_tcp_caches_active_objects_only() {
        let text = "slabinfo - version: 2.1\n\
            # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables\n\
            TCP                   68    117   2368   13    8 : tunables    0    0    0 : slabdata      9      9      0\n\
            eventpoll_epi      49410  68608    128   32    1 : tunables    0    0    0 : slabdata   2144   2144      0\n\
            kmalloc-64          9999   9999     64   64    1 : tunables    0    0    0 : slabdata      1      1      0\n";
        assert_eq!(tcp_slab_bytes(text), Some(68 * 2368 + 49410 * 128));
        assert_eq!(tcp_slab_bytes("slabinfo - version: 2.1\n"), None);
    }

    #[test]
    fn sockstat_gives_the_tcp_memory_pages() {
        let text = "sockets: used 24\nTCP: inuse 3 orphan 0 tw 35125 alloc 3 mem 418\nUDP: inuse 0 mem 7\n";
        assert_eq!(tcp_buffer_pages(text), Some(418));
        assert_eq!(tcp_buffer_pages("UDP: inuse 0 mem 7\n"), None);
    }

    #[test]
    fn own_readings_work() {
        let before = thread_cpu();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() >= before);
        assert!(process_cpu() >= thread_cpu());
        assert!(rss(None).is_ok_and(|b| b > 0));
        assert!(pid_cpu(std::process::id()).is_ok());
    }
}
