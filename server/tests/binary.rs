//! The `callosum-server` binary: serves, drains on SIGTERM and exits 0 with its counters; a
//! second signal exits at once; the Prometheus endpoint answers.
#![cfg(not(loom))]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use support::*;

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary on a free loopback port; returns once it says it listens.
fn spawn_server(extra: &[&str]) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--shards",
            "2",
            "--no-pin",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn callosum-server");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early"
        );
        if let Some(addr) = line.trim().strip_prefix("callosum-server: listening on ") {
            break addr.parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    ServerProcess { child, addr }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn sigterm_drains_and_exits_zero_with_final_counters() {
    let mut server = spawn_server(&["--drain-timeout", "10"]);
    let (client, slot) = connect_slot(server.addr);
    assert_eq!(slot, 0);
    signal(&server.child, libc::SIGTERM);
    // Stops accepting at once, while the held connection may still finish.
    assert!(eventually(|| TcpStream::connect(server.addr).is_err()));
    drop(client);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut out = String::new();
    server
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    // The probes above may have been accepted before the stop took effect.
    assert!(out.contains("refused 0 active 0"), "{out}");
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
