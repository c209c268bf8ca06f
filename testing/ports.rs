//! Loopback ports for tests that start a server process on a port of their choosing (the C
//! and Node reference servers, the server binary's `--metrics`). Included with `#[path]` by
//! the test files of every crate that needs it, so the rule lives in one place.
//!
//! Why not "bind port 0, read it, release it": that port comes from the ephemeral range,
//! where the kernel also picks the source port of every outgoing connection, and the load
//! tests running beside it open thousands; one of them can take the port between the check
//! and the server's bind. These ports lie below that range (32768 and up on Linux).

use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port free now, below the ephemeral range; no port is handed out twice in one
/// test process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Relaxed: a counter that only has to be unique; nothing else is read through it.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test processes of one run start at different points of the span.
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + start.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}
