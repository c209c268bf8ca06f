//! How the rover opens a connection to a server id: a trait, so tests drive the rover with
//! in-memory streams under paused time, and [`TcpConnector`], the real one.
//!
//! `TcpConnector` resolves the id's host at every connect (DNS changes are followed) and
//! tries each address in turn, the whole under the connect timeout; a failure names the
//! address it was trying, for the unreachable event. Under the default discovery every id
//! is already one address, so the lookup is a parse. [`connect_tcp`] is the same with a
//! socket the caller configures (options, a source address), for custom TCP connectors. It
//! makes the socket itself, of the family of the address tried, so a configuration never
//! has to guess it: a name may resolve to IPv4 and IPv6 addresses alike.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use super::ServerId;

/// An open connection, before the handshake.
#[derive(Debug)]
pub struct Connected<S> {
    /// The address connected to, when the connector knows it.
    pub addr: Option<SocketAddr>,
    /// The stream.
    pub stream: S,
}

/// A failed connect: refused, timed out (`ErrorKind::TimedOut`), or the name did not
/// resolve (then `addr` is `None`).
#[derive(Debug, thiserror::Error)]
#[error("connecting to {}: {error}", addr.map_or_else(|| "(unresolved)".to_owned(), |a| a.to_string()))]
pub struct ConnectError {
    /// The address being tried when it failed, if resolution got that far.
    pub addr: Option<SocketAddr>,
    /// What went wrong.
    #[source]
    pub error: io::Error,
}

/// Opens connections to servers by id.
pub trait Connector: Send + Sync + 'static {
    /// The stream a connect yields.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `server`, giving up after `timeout`.
    fn connect(
        &self,
        server: &ServerId,
        timeout: Duration,
    ) -> impl Future<Output = Result<Connected<Self::Stream>, ConnectError>> + Send;
}

/// Connects over TCP, resolving the host at every connect (under the default discovery
/// the host is already an address).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(
        &self,
        server: &ServerId,
        timeout: Duration,
    ) -> Result<Connected<TcpStream>, ConnectError> {
        connect_tcp(server, timeout, |_socket, _addr| Ok(())).await
    }
}

/// What [`TcpConnector`] does, with each socket passed to `configure` before it connects:
/// the building block of a TCP connector that sets socket options or binds a source
/// address. Resolves `server`'s host, then tries each address in turn until one connects,
/// the whole under `timeout`; a failure names the address it was trying. The socket is of
/// the address's family (IPv4 or IPv6); `configure` gets both, so it can bind a source
/// address of the same family.
pub async fn connect_tcp<F>(
    server: &ServerId,
    timeout: Duration,
    mut configure: F,
) -> Result<Connected<TcpStream>, ConnectError>
where
    F: FnMut(&TcpSocket, SocketAddr) -> io::Result<()> + Send,
{
    let mut trying = None;
    let attempt = async {
        let addrs = tokio::net::lookup_host(server.as_str())
            .await
            .map_err(|error| ConnectError { addr: None, error })?;
        let mut last = None;
        for addr in addrs {
            trying = Some(addr);
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            };
            let configured = socket.and_then(|socket| configure(&socket, addr).map(|()| socket));
            let connected = match configured {
                Ok(socket) => socket.connect(addr).await,
                Err(error) => Err(error),
            };
            match connected {
                Ok(stream) => {
                    return Ok(Connected {
                        addr: Some(addr),
                        stream,
                    });
                }
                Err(error) => {
                    last = Some(ConnectError {
                        addr: Some(addr),
                        error,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError {
            addr: None,
            error: io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"),
        }))
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    result.unwrap_or_else(|_elapsed| {
        Err(ConnectError {
            addr: trying,
            error: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ),
        })
    })
}
