//! Test servers for the client's behaviour tests, on loopback ports chosen by the OS.
//!
//! `start_server` runs the real `callosum-server` (io_uring shards) with the allocator
//! handed in, so a test can look at the slots in use. `start_replying` answers every
//! connection with fixed bytes, for handshake and protocol-error cases.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use callosum_server::{RunningServer, Server, Slots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running `callosum-server`; dropping it stops the server.
pub struct ServerHandle {
    _server: RunningServer,
    /// The server's allocator, to look at the slots in use.
    pub slots: Arc<Slots>,
}

/// Starts a `callosum-server` (one unpinned shard, hold mode) on `127.0.0.1:0`.
pub async fn start_server() -> (SocketAddr, ServerHandle) {
    let slots = Arc::new(Slots::new(1 << 16));
    let server = Server::builder()
        .host(Ipv4Addr::LOCALHOST.into())
        .port(0)
        .shards(1)
        .pin(false)
        .slot_source(slots.clone())
        .start()
        .expect("callosum-server starts");
    (
        server.local_addr(),
        ServerHandle {
            _server: server,
            slots,
        },
    )
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
