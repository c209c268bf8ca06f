//! The Prometheus endpoint: answers `GET /metrics` and nothing else, drops slow and surplus
//! peers instead of serving them, and keeps counting while the server drains.
#![cfg(not(loom))]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use callosum_server::prometheus::{HEADER_TIMEOUT, MAX_CONNECTIONS, MetricsEndpoint};
use callosum_server::{RunningServer, ServerHandle};
use support::*;

/// Serves `server`'s counters on a free loopback port; returns the endpoint's address.
fn metrics_for(server: ServerHandle) -> SocketAddr {
    let endpoint = MetricsEndpoint::bind(([127, 0, 0, 1], 0).into()).expect("bind metrics");
    let addr = endpoint.local_addr();
    endpoint.serve(server).expect("serve metrics");
    addr
}

/// Sends `request` and reads the whole response (the endpoint closes after each).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut http = connect(addr);
    http.write_all(request).unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    response
}

fn scrape(addr: SocketAddr) -> String {
    exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
}

#[test]
fn get_metrics_answers_in_the_text_format_and_other_requests_are_refused() {
    let server = start_server();
    let metrics = metrics_for(server.handle());
    let (_client, _) = connect_slot(server.local_addr());

    let ok = scrape(metrics);
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{ok}"
    );
    assert!(ok.contains("callosum_accepted_total 1"), "{ok}");
    // Every family is described and typed, with the capacity, the build and the process.
    for family in [
        "callosum_accepted_total",
        "callosum_refused_total",
        "callosum_accept_errors_total",
        "callosum_handshake_errors_total",
        "callosum_handler_panics_total",
        "callosum_active_connections",
        "callosum_slot_high_water",
        "callosum_max_slots",
        "callosum_descriptor_capacity",
        "callosum_build_info",
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            ok.contains(&format!("# HELP {family} ")),
            "no HELP for {family}: {ok}"
        );
        assert!(
            ok.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}: {ok}"
        );
    }
    assert!(
        ok.contains("# TYPE callosum_active_connections gauge"),
        "{ok}"
    );
    assert!(
        ok.contains("# TYPE callosum_accepted_total counter"),
        "{ok}"
    );
    let version = format!(
        "callosum_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(ok.contains(&version), "{ok}");
    let max_slots = format!("callosum_max_slots {}", server.handle().max_slots());
    assert!(ok.contains(&max_slots), "{ok}");

    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "405",
        ),
        (b"hello\r\n\r\n", "400"),
    ] {
        let response = exchange(metrics, request);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} answered {response}",
            String::from_utf8_lossy(request)
        );
    }
}

/// Whether the endpoint has closed `stream`, writing one more header byte between reads
/// (every `tick`) as a slowloris does; gives up after [`PATIENCE`].
fn dripping_until_closed(stream: &mut TcpStream, tick: Duration) -> bool {
    stream.set_read_timeout(Some(tick)).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut buf = [0u8; 64];
    while std::time::Instant::now() < deadline {
        if stream.write_all(b"x").is_err() {
            return true;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_slowloris_on_the_metrics_port_is_dropped_after_the_header_timeout() {
    let server = start_server();
    let metrics = metrics_for(server.handle());
    let mut slow = connect(metrics);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        dripping_until_closed(&mut slow, Duration::from_millis(100)),
        "a peer dripping its header was kept for {PATIENCE:?}"
    );
    assert!(
        started.elapsed() >= HEADER_TIMEOUT / 2,
        "dropped before its timeout"
    );
    // And the endpoint still answers.
    assert!(scrape(metrics).starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let server = start_server();
    let metrics = metrics_for(server.handle());
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(metrics)).collect();
    // Accepted in order: the idle ones hold every place until their header timeout.
    let mut surplus = connect(metrics);
    assert!(
        sees_close(&mut surplus),
        "a connection beyond the cap was kept"
    );
    assert!(
        idle.iter().all(|c| !is_closed_now(c)),
        "the surplus connection was closed only when the idle ones timed out"
    );
}

/// `callosum_active_connections` as the endpoint reports it now.
fn active(metrics: SocketAddr) -> Option<u64> {
    scrape(metrics)
        .lines()
        .find_map(|l| l.strip_prefix("callosum_active_connections "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_keep_counting_while_the_server_drains() {
    let server: RunningServer = start_server();
    let metrics = metrics_for(server.handle());
    let mut clients: Vec<TcpStream> = (0..10)
        .map(|_| connect_slot(server.local_addr()).0)
        .collect();
    assert!(eventually(|| active(metrics) == Some(10)));

    server.handle().shutdown(PATIENCE * 6);
    assert!(eventually(
        || TcpStream::connect(server.local_addr()).is_err()
    ));
    clients.truncate(5);
    assert!(
        eventually(|| active(metrics) == Some(5)),
        "closing clients during the drain did not show: {:?}",
        active(metrics)
    );
    drop(clients);
    let stats = server.wait().unwrap();
    assert_eq!(stats.active, 0);
    assert_eq!(
        active(metrics),
        Some(0),
        "the counters froze once the server stopped"
    );
}
