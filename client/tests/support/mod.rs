//! Test servers for the client's behaviour tests, on loopback ports chosen by the OS.
//!
//! `start_server` is a tiny lowest-first Callosum server on tokio using the real allocator
//! (`callosum_server::Slots`): one accept loop, the slot line on connect, the connection
//! held until EOF, then the slot released. It stands in for the io_uring server until the
//! lead switches these tests to it. `start_replying` answers every connection with fixed
//! bytes, for handshake and protocol-error cases.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::sync::Arc;

use callosum_server::{SlotGuard, Slots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running test server; dropping it stops accepting (held connections stay open until
/// their clients close them).
pub struct ServerHandle {
    accept: JoinHandle<()>,
    /// The server's allocator, to look at the slots in use.
    pub slots: Arc<Slots>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts a lowest-first Callosum server on `127.0.0.1:0`.
pub async fn start_server() -> (SocketAddr, ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let slots = Arc::new(Slots::new(1 << 16));
    let source = slots.clone();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Some(guard) = SlotGuard::acquire(source.clone()) else {
                continue; // full: close without a slot line
            };
            tokio::spawn(hold(stream, guard));
        }
    });
    (addr, ServerHandle { accept, slots })
}

/// Writes the slot line, then discards input until EOF; the guard releases the slot.
async fn hold(mut stream: TcpStream, guard: SlotGuard<Arc<Slots>>) {
    let line = format!("{}\r\n", guard.slot());
    if stream.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let mut sink = [0u8; 256];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
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
