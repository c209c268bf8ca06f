//! The `callosum-server` binary: serves, drains on SIGTERM and exits 0 with its counters; a
//! second signal exits at once; the Prometheus endpoint answers; keepalive flags reach the
//! accepted sockets; echo mode echoes, `--max-slots` refuses beyond the limit, and `--backlog`
//! reaches every listener.
#![cfg(not(loom))]

#[path = "../../testing/ports.rs"]
mod ports;
#[path = "support/process.rs"]
mod process;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ports::free_port;
use process::{ServerProcess, is_log_message, log_field};
use support::*;

/// Starts the binary on a free loopback port; returns once it says it listens.
fn spawn_server(extra: &[&str]) -> ServerProcess {
    ServerProcess::start(extra)
}

/// [`spawn_server`], with the process's descriptor limit (soft and hard) set to `nofile`.
fn spawn_server_limited(extra: &[&str], nofile: Option<u64>) -> ServerProcess {
    ServerProcess::start_limited(extra, nofile)
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn sigterm_drains_and_exits_zero_with_final_counters() {
    let server = spawn_server(&["--drain-timeout", "10"]);
    let (client, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    server.signal(libc::SIGTERM);
    // Stops accepting at once, while the held connection may still finish.
    assert!(eventually(|| TcpStream::connect(server.addr).is_err()));
    assert!(
        !is_closed_now(&client),
        "the drain closed the held connection early"
    );
    drop(client);
    let (status, _, log) = server.wait_exit(PATIENCE);
    assert!(status.success(), "exit status {status}");
    let stopped = the_one_line(&log, "stopped");
    // The probes above may have been accepted before the stop took effect.
    assert_eq!(log_field(stopped, "refused"), Some("0"), "{stopped}");
    assert_eq!(log_field(stopped, "active"), Some("0"), "{stopped}");
}

/// The one line of `log` whose message is `message` (failing the test if there are more
/// or none).
fn the_one_line<'a>(log: &'a str, message: &str) -> &'a str {
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| is_log_message(line, message))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{message:?} logged {} times: {log}",
        lines.len()
    );
    lines[0]
}

#[test]
fn listening_is_logged_once_and_the_final_counters_in_one_line_without_colour_codes() {
    let server = spawn_server(&["--drain-timeout", "10"]);
    let addr = server.addr.to_string();
    let (client, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    // Closed before the signal: the drain has nothing to wait for.
    drop(client);
    server.signal(libc::SIGTERM);
    let (status, _, log) = server.wait_exit(PATIENCE);
    assert!(status.success(), "exit status {status}");
    assert_eq!(occurrences(&log, "listening"), 1, "{log}");
    let listening = the_one_line(&log, "listening");
    assert_eq!(log_field(listening, "addr"), Some(&*addr), "{listening}");
    assert_eq!(log_field(listening, "shards"), Some("2"), "{listening}");
    let stopped = the_one_line(&log, "stopped");
    assert_eq!(log_field(stopped, "accepted"), Some("1"), "{stopped}");
    for field in [
        "refused",
        "active",
        "high_water",
        "accept_errors",
        "handshake_errors",
        "handler_panics",
    ] {
        let value = log_field(stopped, field).unwrap_or_else(|| panic!("no {field}: {stopped}"));
        assert!(value.parse::<u64>().is_ok(), "{field}={value}: {stopped}");
    }
    assert_eq!(log_field(stopped, "high_water"), Some("1"), "{stopped}");
    // stderr is a pipe, not a terminal.
    assert!(!log.contains('\x1b'), "colour codes in {log:?}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = spawn_server(&["--drain-timeout", "600"]);
    let (_held, _) = connect_slot(server.addr);
    signal(&server.child, libc::SIGINT);
    assert!(eventually(|| TcpStream::connect(server.addr).is_err()));
    signal(&server.child, libc::SIGINT);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_port_in_use_is_a_clear_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
        .args(["--host", "127.0.0.1", "--port", &port, "--no-pin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One line: the error, not a capacity warning of a server that never started (the
    // default max_slots is beyond the descriptor limit here).
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn metrics_are_served_in_the_prometheus_text_format() {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let server = spawn_server(&["--metrics", &metrics.to_string()]);
    let (_client, _) = connect_slot(server.addr);
    let mut body = String::new();
    assert!(
        eventually(|| {
            body.clear();
            let Ok(mut http) = TcpStream::connect(metrics) else {
                return false;
            };
            write!(
                http,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let _ = http.read_to_string(&mut body);
            body.contains("callosum_accepted_total 1")
        }),
        "metrics never showed the connection: {body}"
    );
    assert!(body.contains("callosum_active_connections 1"), "{body}");
}

#[test]
fn keepalive_flags_are_checked_and_reach_the_accepted_sockets() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callosum-server"))
            .args(["--host", "127.0.0.1", "--port", "0", "--no-pin"])
            .args(args)
            .output()
            .unwrap()
    };
    for bad in [
        &["--keepalive-idle", "0"][..],
        &["--keepalive-retries", "0"],
        &["--no-keepalive", "--keepalive-interval", "5"],
    ] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.starts_with("callosum-server: "), "{bad:?}: {stderr}");
        assert!(stderr.contains(bad[bad.len() - 2]), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{bad:?}: {stderr}");
    }
    let server = spawn_server(&[
        "--keepalive-idle",
        "7",
        "--keepalive-interval",
        "3",
        "--keepalive-retries",
        "2",
    ]);
    let (client, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    let accepted = peer_socket(&server.child, client.local_addr().unwrap());
    assert!(accepted.keepalive().unwrap());
    assert_eq!(
        accepted.tcp_keepalive_time().unwrap(),
        Duration::from_secs(7)
    );
    assert_eq!(
        accepted.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(accepted.tcp_keepalive_retries().unwrap(), 2);
}

/// A duplicate of the socket `child` accepted from `client` (pidfd_getfd: a parent may take
/// its child's descriptors), to read the options the server really set.
fn peer_socket(child: &Child, client: SocketAddr) -> socket2::Socket {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) } as RawFd;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `pidfd` was just opened and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    for entry in std::fs::read_dir(format!("/proc/{}/fd", child.id())).unwrap() {
        let Ok(target) = entry
            .unwrap()
            .file_name()
            .into_string()
            .unwrap()
            .parse::<RawFd>()
        else {
            continue;
        };
        // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags;
        // it returns a new descriptor of ours or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            continue; // closed meanwhile
        }
        // SAFETY: `fd` is a new descriptor that only this `OwnedFd` owns.
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if peer == Some(client) {
            return socket;
        }
    }
    panic!("no socket of the server has the peer {client}");
}

#[test]
fn echo_mode_echoes_and_max_slots_refuses_beyond_the_limit() {
    let server = spawn_server(&["--mode", "echo", "--max-slots", "1"]);
    let (mut held, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    held.write_all(b"ping\r\n").unwrap();
    let mut echoed = [0u8; 6];
    held.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping\r\n");

    // The only slot is taken: closed without a slot line.
    let mut refused = connect(server.addr);
    let mut got = Vec::new();
    match refused.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "refused connection got {got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    // Once it frees, the next connection gets it.
    drop(held);
    assert!(eventually(|| {
        let mut probe = connect(server.addr);
        let mut line = [0u8; 3];
        probe.read_exact(&mut line).is_ok() && &line == b"0\r\n"
    }));
}

/// The accept backlog of each listening socket on `port`, from `ss` (Linux reports a
/// listener's backlog only through `sock_diag`; `ss` shows it as Send-Q).
fn listen_backlogs(port: u16) -> Vec<u32> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn backlog_flag_reaches_every_shards_listener() {
    let custom = spawn_server(&["--backlog", "123"]);
    assert_eq!(listen_backlogs(custom.addr.port()), [123, 123]);
    let default = spawn_server(&[]);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The default is 4096; the kernel caps it at net.core.somaxconn.
    let expected = 4096.min(somaxconn);
    assert_eq!(listen_backlogs(default.addr.port()), [expected, expected]);
}

/// Sends `GET /metrics` and returns the response, or `None` when the endpoint closed the
/// connection without one (all its places taken).
fn try_scrape(metrics: SocketAddr) -> Option<String> {
    let mut http = TcpStream::connect(metrics).ok()?;
    http.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(http, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    http.read_to_string(&mut body).ok()?;
    (!body.is_empty()).then_some(body)
}

#[test]
fn idle_connections_to_the_metrics_port_take_nothing_from_the_slot_port() {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let server = spawn_server_limited(&["--metrics", &metrics.to_string()], Some(256));
    assert!(eventually(|| TcpStream::connect(metrics).is_ok()));
    // More idle connections than the server has descriptors.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let (_client, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    let mut answered = None;
    assert!(
        eventually(|| {
            answered = try_scrape(metrics);
            answered.is_some()
        }),
        "/metrics never answered beside {} idle connections",
        idle.len()
    );
    let body = answered.unwrap();
    assert!(body.contains("callosum_active_connections 1"), "{body}");
    let logged = server.stderr_bytes.load(Ordering::Relaxed);
    assert!(logged < 16 * 1024, "{logged} bytes of stderr");
}

/// How often `needle` occurs in `haystack`.
fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn each_startup_error_names_the_os_error_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let free = free_port().to_string();
    for (args, os_error) in [
        (
            &["--host", "127.0.0.1", "--port", &taken_port][..],
            "os error 98",
        ),
        (
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &free,
                "--metrics",
                &taken_addr,
            ],
            "os error 98",
        ),
        // TEST-NET-1: no address of this host.
        (&["--host", "192.0.2.1", "--port", &free], "os error 99"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
            .arg("--no-pin")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(occurrences(&stderr, os_error), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn out_of_range_settings_exit_2_naming_the_option() {
    for (option, value) in [
        ("--keepalive-idle", "40000"),
        ("--keepalive-interval", "32768"),
        ("--keepalive-retries", "200"),
        ("--max-slots", "0"),
        ("--drain-timeout", "-1"),
        ("--drain-timeout", "86401"),
        ("--shards", "0"),
        ("--backlog", "0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-pin",
                option,
                value,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {stderr}");
        assert!(stderr.contains(option), "{option} {value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_metrics_port_in_use_fails_start_up_before_any_client_gets_a_slot_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap().to_string();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let exited = Arc::new(AtomicBool::new(false));
    // Knocks on the slot port for as long as the server runs; a slot line is a failure.
    let knocker = {
        let exited = exited.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while !exited.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(mut c) = TcpStream::connect(addr) {
                    c.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut line = Vec::new();
                    let _ = c.read_to_end(&mut line);
                    assert!(
                        line.is_empty(),
                        "a client got {line:?} from a failing start-up"
                    );
                }
            }
        })
    };
    let out = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
        .args(["--host", "127.0.0.1", "--no-pin", "--metrics", &metrics])
        .args(["--port", &port.to_string()])
        .output()
        .unwrap();
    exited.store(true, Ordering::Relaxed);
    knocker.join().expect("no client got a slot line");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn a_descriptor_limit_below_max_slots_is_warned_of_with_the_real_capacity() {
    let server = spawn_server_limited(&["--max-slots", "1000"], Some(256));
    let log = &server.startup_log;
    let warning = log
        .lines()
        .find(|l| l.contains("descriptor limit (256) holds only "))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warning.contains("fewer than max_slots (1000)"), "{warning}");
    let capacity: u64 = warning
        .split("holds only ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no capacity: {warning}"));
    assert!((1..256).contains(&capacity), "{warning}");
    let fits = spawn_server_limited(&["--max-slots", "100"], Some(256));
    assert!(
        !fits.startup_log.contains("descriptor limit"),
        "{}",
        fits.startup_log
    );
}

#[test]
fn a_backlog_above_somaxconn_is_warned_of_at_start_up() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("net.core.somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let above = (somaxconn + 1).to_string();
    let server = spawn_server(&["--backlog", &above]);
    let warning = server
        .startup_log
        .lines()
        .find(|l| l.contains("above net.core.somaxconn"))
        .unwrap_or_else(|| panic!("no warning: {}", server.startup_log));
    assert!(
        warning.contains(&format!("listen backlog {above}")),
        "{warning}"
    );
    assert!(warning.contains(&format!("({somaxconn})")), "{warning}");
    let within = spawn_server(&["--backlog", &somaxconn.to_string()]);
    assert!(
        !within.startup_log.contains("somaxconn"),
        "{}",
        within.startup_log
    );
}
