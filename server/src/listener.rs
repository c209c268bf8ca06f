//! The shards' listening sockets: one per shard on the same address, joined by
//! `SO_REUSEPORT` so the kernel spreads new connections across shards and no shard ever hands
//! a connection to another thread.
//!
//! Built with `socket2` rather than tokio-uring's `bind`, which silently turns on
//! `SO_REUSEPORT` with a fixed backlog of 1024: a second server on the same port would then
//! start without error and steal half the connections. Here the address is first probed with
//! a plain socket (no `SO_REUSEPORT`), so a port in use by anyone is an error.
//!
//! Keepalive is set on the listeners: Linux copies `SO_KEEPALIVE` and the `TCP_KEEP*` settings
//! to every accepted socket, so it costs no system call per connection.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use crate::config::ServerConfig;
use crate::error::ServerError;

/// Binds `config.shards` listeners on `config.addr()` (with port 0, on one free port).
pub(crate) fn bind_shard_listeners(config: &ServerConfig) -> Result<Vec<TcpListener>, ServerError> {
    if let Some(cap) = somaxconn().filter(|&cap| u64::from(config.backlog) > cap) {
        // The kernel cuts the backlog down silently: say so once, at start-up.
        tracing::warn!(
            "listen backlog {} is above net.core.somaxconn ({cap}): the kernel caps each \
             shard's backlog at {cap}; raise the sysctl for a longer one",
            config.backlog
        );
    }
    let wanted = config.addr();
    let addr = probe(wanted)?;
    (0..config.shards)
        .map(|_| listener(addr, config).map_err(|source| bind_error(addr, source)))
        .collect()
}

/// Checks that nothing listens on `addr` yet; returns the address to use (port 0 resolved to
/// the free port the probe got).
fn probe(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| bind_error(addr, source))?;
    // SO_REUSEADDR only: a port in TIME_WAIT is fine, a port someone listens on is not.
    socket
        .set_reuse_address(true)
        .map_err(|source| bind_error(addr, source))?;
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| bind_error(addr, source))?;
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bind_error(addr, io::Error::other("probe socket has no address")))
}

fn listener(addr: SocketAddr, config: &ServerConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Non-blocking so io_uring arms a poll for accept instead of parking a kernel worker.
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if let Some(k) = config.keepalive {
        socket.set_keepalive(true)?;
        socket.set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval)
                .with_retries(k.retries),
        )?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(config.backlog as i32)?;
    Ok(socket.into())
}

/// `net.core.somaxconn`, the kernel's cap on every listen backlog, if it can be read.
fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn bind_error(addr: SocketAddr, source: io::Error) -> ServerError {
    match source.kind() {
        io::ErrorKind::AddrInUse => ServerError::AddrInUse { addr, source },
        io::ErrorKind::PermissionDenied => ServerError::PermissionDenied { addr, source },
        _ => ServerError::Listen { addr, source },
    }
}
