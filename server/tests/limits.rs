//! Start-up and resource limits, each in a child process (this test binary run again with
//! `CALLOSUM_TEST_CHILD` set), because they change process-wide state (the descriptor limit,
//! a seccomp filter, a dropped capability) or look at the server's own threads (core pinning).
#![cfg(not(loom))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use callosum_server::{
    Connection, ServerError, SlotError, Slots, discard_until_closed, handler_fn,
};
use support::*;

const CHILD_ENV: &str = "CALLOSUM_TEST_CHILD";

/// In the child process of `test` (this test binary run again with `CHILD_ENV` set to the
/// test's name), runs `child` and returns `None`. Otherwise starts that child, running only
/// `test`, and returns it with its stdout.
fn run_as_child(test: &str, child: fn()) -> Option<(Child, BufReader<ChildStdout>)> {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        child();
        return None;
    }
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let out = BufReader::new(process.stdout.take().unwrap());
    Some((process, out))
}

/// The rest of the child's next line that holds `prefix` (libtest prints its own text too,
/// and its `test name ... ` has no newline, so a child's line may not start the line).
fn child_line(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before saying {prefix:?}"
        );
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim_end().to_string();
        }
    }
}

/// Child to parent: one line on stdout, flushed at once (a pipe is not line-buffered).
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn set_nofile(limit: u64) {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: a valid rlimit; lowering both limits is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
}

/// The descriptor limit of [`low_limit_server`].
const LOW_LIMIT: u64 = 256;

/// Child: a server of two shards under a hard limit of [`LOW_LIMIT`] descriptors. Prints its
/// port, then its stats whenever the parent writes a line; stops at EOF on stdin.
fn low_limit_server() {
    set_nofile(LOW_LIMIT);
    let server = builder()
        .shards(2)
        .start()
        .expect("server starts under the low limit");
    say(format_args!("@port {}", server.local_addr().port()));
    for line in std::io::stdin().lines() {
        if line.is_err() {
            break;
        }
        let s = server.stats();
        say(format_args!(
            "@stats {} {} {}",
            s.accepted, s.accept_errors, s.active
        ));
    }
    server.shutdown(Duration::ZERO).unwrap();
}

/// How long a client of a server out of descriptors may wait for its slot line or its close.
/// A client left in the backlog waits for as long as the served ones stay open, so a bound
/// this generous still tells it apart, and a busy machine does not trip it.
const PROMPT: Duration = PATIENCE;

/// Connects `clients` clients to `addr` at once; each must get its slot line or its close
/// (refused) within `prompt` of the burst, never be left waiting in a backlog. Returns the
/// served clients, still connected, and the number refused.
fn burst_answered_within(
    addr: SocketAddr,
    clients: usize,
    prompt: Duration,
) -> (Vec<TcpStream>, usize) {
    let burst: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let deadline = Instant::now() + prompt;
    let mut served = Vec::new();
    let mut refused = 0;
    for mut c in burst {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match read_line(&mut c) {
            Ok(line) if line.ends_with(b"\r\n") => served.push(c),
            Ok(_) => refused += 1,
            Err(e) => match e.kind() {
                std::io::ErrorKind::ConnectionReset => refused += 1,
                _ => panic!(
                    "a client waited more than {prompt:?} (served {}): {e}",
                    served.len()
                ),
            },
        }
    }
    (served, refused)
}

#[test]
fn server_survives_a_burst_beyond_its_descriptor_limit_and_serves_again() {
    let Some((mut child, mut out)) = run_as_child(
        "server_survives_a_burst_beyond_its_descriptor_limit_and_serves_again",
        low_limit_server,
    ) else {
        return;
    };
    let mut stdin = child.stdin.take().unwrap();
    let port: u16 = child_line(&mut out, "@port ").parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Three times as many connections as the limit, on two shards: each client must get its
    // slot line or its close (refused, out of descriptors) within `PROMPT` of the burst,
    // never be left waiting in a backlog.
    let (served, refused) = burst_answered_within(addr, 3 * LOW_LIMIT as usize, PROMPT);
    assert!(
        !served.is_empty() && refused > 0,
        "served {} refused {refused}",
        served.len()
    );

    writeln!(stdin, "stats").unwrap();
    let stats = child_line(&mut out, "@stats ");
    let errors: u64 = stats.split(' ').nth(1).unwrap().parse().unwrap();
    // Connections beyond the descriptor budget are refused before the process runs out: no
    // accept fails (and a failing one would back off instead of spinning).
    assert!(errors < 5_000, "accept errors: {errors}");

    drop(served);
    assert!(
        eventually(|| {
            writeln!(stdin, "stats").unwrap();
            child_line(&mut out, "@stats ").split(' ').nth(2) == Some("0")
        }),
        "connections not released"
    );
    // A connection counts as closed just before its slot is freed: wait for slot 0 itself.
    assert!(
        eventually(|| {
            let mut c = connect(addr);
            read_line(&mut c).is_ok_and(|line| line == b"0\r\n")
        }),
        "serves again once descriptors free"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Child: io_uring_setup forbidden by a seccomp filter (as Docker's default profile does).
fn server_without_io_uring() {
    forbid_syscall(libc::SYS_io_uring_setup);
    match builder().start() {
        Err(ServerError::IoUringUnavailable { source }) => {
            say(format_args!("@refused {source}"));
            let message = ServerError::IoUringUnavailable { source }.to_string();
            assert!(message.contains("seccomp") && message.contains("io_uring_disabled"));
        }
        Err(other) => panic!("expected IoUringUnavailable, got {other}"),
        Ok(_) => panic!("server started without io_uring"),
    }
}

#[test]
fn io_uring_blocked_by_seccomp_is_a_clear_error() {
    let Some((mut child, mut out)) = run_as_child(
        "io_uring_blocked_by_seccomp_is_a_clear_error",
        server_without_io_uring,
    ) else {
        return;
    };
    let reason = child_line(&mut out, "@refused ");
    assert!(!reason.is_empty());
    assert!(child.wait().unwrap().success());
}

/// The number of threads of this process.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Child: io_uring_enter forbidden, io_uring_setup allowed (some container profiles): rings
/// can be made, but nothing submitted to them ever runs.
fn server_without_io_uring_enter() {
    forbid_syscall(libc::SYS_io_uring_enter);
    let threads = thread_count();
    let started = Instant::now();
    match builder().start() {
        Err(ServerError::IoUringUnavailable { source }) => {
            say(format_args!("@refused {source}"));
        }
        Err(other) => panic!("expected IoUringUnavailable, got {other}"),
        Ok(_) => panic!("server started though its rings cannot submit"),
    }
    let took = started.elapsed();
    assert!(took < PATIENCE, "start took {took:?} to fail");
    assert_eq!(thread_count(), threads, "a thread was left behind");
}

#[test]
fn io_uring_enter_blocked_by_seccomp_is_a_clear_error_and_leaves_no_thread() {
    let Some((mut child, mut out)) = run_as_child(
        "io_uring_enter_blocked_by_seccomp_is_a_clear_error_and_leaves_no_thread",
        server_without_io_uring_enter,
    ) else {
        return;
    };
    let reason = child_line(&mut out, "@refused ");
    assert!(reason.contains("os error 1"), "{reason}");
    assert!(child.wait().unwrap().success());
}

/// Installs a seccomp filter that fails the system call `nr` with EPERM (x86_64 and
/// aarch64).
fn forbid_syscall(nr: libc::c_long) {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut program = [
        stmt(load, 4), // seccomp_data.arch
        jeq(ARCH, 1, 0),
        stmt(ret, RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jeq(nr as u32, 0, 1),
        stmt(ret, RET_ERRNO | libc::EPERM as u32),
        stmt(ret, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; the filter program outlives the
    // prctl call, which copies it into the kernel.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0
        );
    }
}

/// The kernel's descriptor-table size for this process (`FDSize` in /proc/self/status).
fn fd_table_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
    line["FDSize:".len()..].trim().parse().unwrap()
}

/// Child: lowers its soft descriptor limit (the hard one stays), starts a server and reports
/// the soft and hard limits and the table size before and after.
fn limits_child() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    let hard = rl.rlim_max;
    rl.rlim_cur = 256.min(hard);
    // SAFETY: a valid rlimit; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    let table_before = fd_table_size();
    let server = builder().shards(1).start().expect("server starts");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    say(format_args!(
        "@limits {} {} {} {}",
        rl.rlim_cur,
        rl.rlim_max,
        table_before,
        fd_table_size()
    ));
    server.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn start_raises_the_soft_descriptor_limit_and_grows_the_table_up_front() {
    let Some((mut child, mut out)) = run_as_child(
        "start_raises_the_soft_descriptor_limit_and_grows_the_table_up_front",
        limits_child,
    ) else {
        return;
    };
    let line = child_line(&mut out, "@limits ");
    let [soft, hard, before, after]: [u64; 4] = line
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(soft, hard, "soft limit not raised to the hard one");
    // Only meaningful when the hard limit is above the table a fresh process starts with.
    if hard > before {
        assert!(
            after >= hard.min(1 << 21),
            "descriptor table not grown up front: {before} -> {after}, hard limit {hard}"
        );
    }
}

/// Each `callosum-shard-*` thread of this process with its allowed CPUs
/// (`Cpus_allowed_list` in /proc/self/task/TID/status), sorted by name.
fn shard_cpus() -> Vec<(String, String)> {
    let mut shards = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("callosum-shard") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        shards.push((name.to_string(), cpus));
    }
    shards.sort();
    shards
}

/// Child: a pinned server of two shards; reports each shard thread's allowed CPUs.
fn pinned_child() {
    let server = builder()
        .shards(2)
        .pin(true)
        .start()
        .expect("server starts");
    // Each shard pins itself as its thread starts, before it reports ready to `start`.
    for (name, cpus) in shard_cpus() {
        say(format_args!("@shard {name} {cpus}"));
    }
    say(format_args!("@done"));
    server.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn pinned_shards_each_run_on_one_core_of_their_own() {
    let cores = core_affinity::get_core_ids().unwrap_or_default().len();
    let Some((mut child, mut out)) = run_as_child(
        "pinned_shards_each_run_on_one_core_of_their_own",
        pinned_child,
    ) else {
        return;
    };
    let mut cpus = Vec::new();
    loop {
        let line = child_line(&mut out, "@");
        if line == "done" {
            break;
        }
        let cpu = line.rsplit(' ').next().unwrap().to_string();
        cpus.push(cpu);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(cpus.len(), 2, "expected two shard threads, got {cpus:?}");
    for cpu in &cpus {
        assert!(
            cpu.parse::<usize>().is_ok(),
            "shard allowed on {cpu}, not on one core"
        );
    }
    if cores >= 2 {
        assert_ne!(cpus[0], cpus[1], "both shards pinned to the same core");
    }
}

/// `CAP_NET_BIND_SERVICE`: binding ports below `net.ipv4.ip_unprivileged_port_start`.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// Removes `cap` from this process's effective and permitted capability sets.
fn drop_capability(cap: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a version-3 header and the two data words it expects.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

/// Child: without `CAP_NET_BIND_SERVICE`, starts a server on a privileged port and reports
/// the error's variant and message.
fn privileged_port_child() {
    drop_capability(CAP_NET_BIND_SERVICE);
    match builder()
        .host([127, 0, 0, 1].into())
        .port(1023)
        .shards(1)
        .start()
    {
        Ok(server) => {
            say(format_args!("@started"));
            server.shutdown(Duration::ZERO).unwrap();
        }
        Err(err @ ServerError::PermissionDenied { .. }) => {
            say(format_args!("@denied {err}"));
        }
        Err(err) => say(format_args!("@other {err:?}")),
    }
}

#[test]
fn a_privileged_port_without_the_capability_is_a_clear_startup_error() {
    let unprivileged_from: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .map_or(1024, |s| s.trim().parse().unwrap());
    let Some((mut child, mut out)) = run_as_child(
        "a_privileged_port_without_the_capability_is_a_clear_startup_error",
        privileged_port_child,
    ) else {
        return;
    };
    let said = child_line(&mut out, "@");
    assert!(child.wait().unwrap().success());
    if unprivileged_from <= 1023 {
        // Port 1023 needs no capability on this host: nothing to refuse.
        return;
    }
    let message = said
        .strip_prefix("denied ")
        .unwrap_or_else(|| panic!("expected PermissionDenied, got {said}"));
    assert!(message.contains("CAP_NET_BIND_SERVICE"), "{message}");
}

/// Child: a server of two shards with the default settings; reports each shard thread's
/// allowed CPUs and the process's.
fn default_pinning_child() {
    let server = callosum_server::Server::builder()
        .host(std::net::Ipv4Addr::LOCALHOST.into())
        .port(0)
        .shards(2)
        .start()
        .expect("server starts");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let process = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    for (name, cpus) in shard_cpus() {
        say(format_args!("@shard {name} {cpus}"));
    }
    say(format_args!("@process {process}"));
    server.shutdown(Duration::ZERO).unwrap();
}

/// This process's resident memory, in KiB (`VmRSS` in /proc/self/status).
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Child: the largest allocator, then a server with the largest `max_slots`; reports how
/// much resident memory each added.
fn largest_capacity_child() {
    let before = resident_kib();
    let slots = Slots::new(u32::MAX);
    for expected in 0..100_000 {
        assert_eq!(slots.acquire(), Some(expected));
    }
    slots.release(5).unwrap();
    assert_eq!(slots.acquire(), Some(5));
    assert_eq!(
        slots.release(u32::MAX - 1),
        Err(SlotError::NotAllocated { slot: u32::MAX - 1 })
    );
    say(format_args!("@allocator {}", resident_kib() - before));
    drop(slots);

    let before = resident_kib();
    let server = builder()
        .shards(1)
        .max_slots(u32::MAX)
        .start()
        .expect("server starts");
    let (_client, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    say(format_args!(
        "@server {}",
        resident_kib().saturating_sub(before)
    ));
    server.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn shards_are_unpinned_by_default_and_may_run_on_every_core_of_the_process() {
    let Some((mut child, mut out)) = run_as_child(
        "shards_are_unpinned_by_default_and_may_run_on_every_core_of_the_process",
        default_pinning_child,
    ) else {
        return;
    };
    let mut shards = Vec::new();
    let process = loop {
        let line = child_line(&mut out, "@");
        match line.strip_prefix("process ") {
            Some(process) => break process.to_string(),
            None => shards.push(line.rsplit(' ').next().unwrap().to_string()),
        }
    };
    assert!(child.wait().unwrap().success());
    assert_eq!(
        shards.len(),
        2,
        "expected two shard threads, got {shards:?}"
    );
    for cpus in &shards {
        assert_eq!(cpus, &process, "a default shard is confined to {cpus}");
    }
}

#[test]
fn the_largest_capacity_commits_memory_as_slots_are_used_not_up_front() {
    let Some((mut child, mut out)) = run_as_child(
        "the_largest_capacity_commits_memory_as_slots_are_used_not_up_front",
        largest_capacity_child,
    ) else {
        return;
    };
    // A bit per slot would be 512 MiB; 100,000 slots held take 4 pages of leaves.
    let allocator: u64 = child_line(&mut out, "@allocator ").parse().unwrap();
    assert!(
        allocator < 8 * 1024,
        "the allocator made {allocator} KiB resident"
    );
    let server: u64 = child_line(&mut out, "@server ").parse().unwrap();
    assert!(server < 32 * 1024, "the server made {server} KiB resident");
    assert!(child.wait().unwrap().success());
}

/// Child: two shards under a limit of 128 descriptors, whose handler takes every descriptor
/// left for the connection of slot 0 (a handler's own files, which the server's descriptor
/// budget does not count) and gives them back when that client closes.
fn greedy_handler_server() {
    set_nofile(128);
    let server = builder()
        .shards(2)
        .start_with(handler_fn(async |conn: &mut Connection| {
            let mut files = Vec::new();
            if conn.slot() == 0 {
                while let Ok(file) = std::fs::File::open("/dev/null") {
                    files.push(file);
                }
                say(format_args!("@exhausted {}", files.len()));
            }
            let _ = discard_until_closed(conn).await;
        }))
        .expect("server starts");
    say(format_args!("@port {}", server.local_addr().port()));
    let _ = std::io::stdin().lines().count();
    server.shutdown(Duration::ZERO).unwrap();
}

#[test]
fn clients_are_still_answered_promptly_when_a_handler_runs_the_process_out_of_descriptors() {
    let Some((mut child, mut out)) = run_as_child(
        "clients_are_still_answered_promptly_when_a_handler_runs_the_process_out_of_descriptors",
        greedy_handler_server,
    ) else {
        return;
    };
    let stdin = child.stdin.take().unwrap();
    let port: u16 = child_line(&mut out, "@port ").parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut greedy, slot) = connect_slot(addr);
    assert_eq!(slot, 0);
    let _ = child_line(&mut out, "@exhausted ");
    for _round in 0..5 {
        burst_answered_within(addr, 20, PROMPT);
    }
    // Once the server has closed it, the handler has given its descriptors back.
    greedy.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(sees_close(&mut greedy));
    // Serves again (a client arriving while the last shed of a shard runs may still be
    // refused).
    assert!(
        eventually(|| {
            let mut c = connect(addr);
            read_line(&mut c).is_ok_and(|line| line == b"0\r\n")
        }),
        "never served again once the handler gave its descriptors back"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
