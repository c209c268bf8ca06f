//! A roving client over a custom [`Connector`]: TCP keepalive, `TCP_NODELAY` and a fixed
//! source address (127.0.0.2) on every connection, set with `socket2` before the connect.
//! Runs against an in-process `callosum-server` on 127.0.0.1 (an ephemeral port), leases a
//! few connections and prints what they are, then exits.
//!
//! ```sh
//! cargo run -p callosum-client --example custom_connector
//! ```
//!
//! The same shape serves Unix sockets (a `Connector` with `type Stream = UnixStream`, ids
//! naming socket files, and `.discovery(StaticDiscovery)`), or a proxy (connect to the proxy,
//! speak its handshake, hand back the stream).

use std::error::Error;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use callosum_client::rover::connect_tcp;
use callosum_client::{ConnectError, Connected, Connector, RovingClient, ServerId};
use callosum_server::Server;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// Opens TCP connections with keepalive and no Nagle delay, from one source address.
#[derive(Debug, Clone)]
struct TunedTcp {
    source: IpAddr,
    keepalive: Duration,
}

impl TunedTcp {
    /// Sets the options on `socket` (made by `connect_tcp` for `server`'s family) and binds
    /// it to the source address (any port) when that is of the same family.
    fn configure(&self, socket: &TcpSocket, server: SocketAddr) -> io::Result<()> {
        SockRef::from(socket).set_tcp_keepalive(&TcpKeepalive::new().with_time(self.keepalive))?;
        socket.set_nodelay(true)?;
        if self.source.is_ipv4() == server.is_ipv4() {
            socket.bind(SocketAddr::new(self.source, 0))?;
        }
        Ok(())
    }
}

impl Connector for TunedTcp {
    type Stream = TcpStream;

    async fn connect(
        &self,
        server: &ServerId,
        timeout: Duration,
    ) -> Result<Connected<TcpStream>, ConnectError> {
        connect_tcp(server, timeout, |socket, addr| self.configure(socket, addr)).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = Server::builder()
        .host(Ipv4Addr::LOCALHOST.into())
        .port(0)
        .shards(1)
        .pin(false)
        .start()?;
    let addr = server.local_addr();
    println!("callosum-server on {addr}");

    let client = RovingClient::builder()
        .connector(TunedTcp {
            source: Ipv4Addr::new(127, 0, 0, 2).into(),
            keepalive: Duration::from_secs(30),
        })
        .server(addr.to_string())
        .max_slots(3)
        .roving_interval(Duration::from_millis(20))
        .acquire_timeout(Duration::from_secs(5))
        .build()?;

    // Three leases held at once: three connections, each from the source address.
    let mut leases = Vec::new();
    for _ in 0..3 {
        let mut lease = client.acquire().await?;
        let slot = lease.slot();
        let stream = lease.stream().get_ref();
        println!(
            "slot {slot}: {} -> {}, nodelay {}",
            stream.local_addr()?,
            stream.peer_addr()?,
            stream.nodelay()?
        );
        leases.push(lease);
    }
    drop(leases);
    println!(
        "held slots {:?}, {:?}",
        client.pool().held_slots(),
        client.counters()
    );
    drop(client);
    server.shutdown(Duration::from_secs(1))?;
    Ok(())
}
