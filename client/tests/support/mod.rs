//! Test servers for the client's behaviour tests, on loopback ports chosen by the OS.
//!
//! `start_server` runs the real `callosum-server` (io_uring shards) with the allocator
//! handed in, so a test can look at the slots in use; `start_server_on` does so on a given
//! loopback address (two instances on one port, as behind one name), and
//! `start_server_with` with a handler. `start_replying` answers every connection with
//! fixed bytes, for handshake and protocol-error cases. `until` waits for a condition.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use callosum_client::{PoolPolicy, RovingClient, RovingClientBuilder};
use callosum_server::{Connection, Handler, Hold, RunningServer, Server, Slots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running `callosum-server`; dropping it stops the server.
pub struct ServerHandle {
    _server: RunningServer,
    /// The server's allocator, to look at the slots in use.
    pub slots: Arc<Slots>,
}

/// Upper bound on anything a test waits for; a test failing it is a bug, not slowness.
pub const BOUND: Duration = Duration::from_secs(60);

/// Re-checks `done` every few milliseconds until it holds; fails the test after `BOUND`.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(BOUND, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within {BOUND:?}");
}

/// Builds `builder` with the original rules, `max_slots = 4` and a 5 ms roving interval
/// over two servers, and waits until it holds the two lowest slots on each: `[0, 0, 1, 1]`
/// (the original's steady state; the improved policy keeps rotating by age).
pub async fn two_on_each(builder: RovingClientBuilder) -> RovingClient {
    let client = builder
        .pool_policy(PoolPolicy::original().max_slots(4))
        .roving_interval(Duration::from_millis(5))
        .build()
        .expect("valid settings");
    until("slots [0, 0, 1, 1]", || {
        client.pool().held_slots() == [0, 0, 1, 1]
    })
    .await;
    client
}

/// Starts a `callosum-server` (one unpinned shard, hold mode) on `127.0.0.1:0`.
pub fn start_server() -> (SocketAddr, ServerHandle) {
    start_server_on(Ipv4Addr::LOCALHOST.into(), 0, Hold)
}

/// Starts a `callosum-server` running `handler` on `127.0.0.1:0`.
pub fn start_server_with<H: Handler>(handler: H) -> (SocketAddr, ServerHandle) {
    start_server_on(Ipv4Addr::LOCALHOST.into(), 0, handler)
}

/// Starts a `callosum-server` (one unpinned shard) running `handler` on `host:port`
/// (`host` a loopback address).
pub fn start_server_on<H: Handler>(
    host: IpAddr,
    port: u16,
    handler: H,
) -> (SocketAddr, ServerHandle) {
    try_start_server_on(host, port, handler).expect("callosum-server starts")
}

/// [`start_server_on`], or `None` when the server does not start (the port is taken).
pub fn try_start_server_on<H: Handler>(
    host: IpAddr,
    port: u16,
    handler: H,
) -> Option<(SocketAddr, ServerHandle)> {
    assert!(host.is_loopback(), "tests use loopback only");
    let slots = Arc::new(Slots::new(1 << 16));
    let server = Server::builder()
        .host(host)
        .port(port)
        .shards(1)
        .pin(false)
        .slot_source(slots.clone())
        .start_with(handler)
        .ok()?;
    Some((
        server.local_addr(),
        ServerHandle {
            _server: server,
            slots,
        },
    ))
}

/// Two servers on one port at two loopback addresses (`host_a`, `host_b`), as behind a
/// headless Service's name. The port is free on `host_a` when chosen but may be taken on
/// `host_b`: then it tries another.
pub fn start_two_on_one_port(
    host_a: IpAddr,
    host_b: IpAddr,
) -> ((SocketAddr, ServerHandle), (SocketAddr, ServerHandle)) {
    for _ in 0..20 {
        let a = start_server_on(host_a, 0, Hold);
        if let Some(b) = try_start_server_on(host_b, a.0.port(), Hold) {
            return (a, b);
        }
    }
    panic!("no port free on both {host_a} and {host_b} in 20 tries");
}

/// Reads and drops whatever the client sends until it closes: a handler's way to hold a
/// connection.
pub async fn read_until_closed(conn: &mut Connection) {
    let mut buf = Vec::with_capacity(256);
    loop {
        let (read, b) = conn.stream().read(buf).await;
        buf = b;
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        buf.clear();
    }
}

/// Starts a server on `127.0.0.1:0` that writes `bytes` on every connection, then keeps
/// it open until EOF (or closes it at once if `close` is set).
pub async fn start_replying(bytes: &'static [u8], close: bool) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let accept = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(bytes).await.is_err() || close {
                    return;
                }
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accept)
}

/// A loopback address nothing listens on (bound, then released).
pub fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}
