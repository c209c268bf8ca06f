//! Custom transports through `RovingClient::builder().connector(…)`: a TCP connector that
//! binds a source address and sets `TCP_NODELAY`, against `callosum-server`; and a Unix
//! socket connector (ids name socket files, taken as given by `StaticDiscovery`) against a
//! small Callosum server on a Unix socket.

mod support;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callosum_client::rover::connect_tcp;
use callosum_client::{
    ConnectError, Connected, Connector, RovingClient, ServerId, StaticDiscovery,
};
use callosum_server::{Connection, handler_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Connects from `SOURCE` with `TCP_NODELAY`; counts its connects.
#[derive(Debug, Default)]
struct FromSource {
    connects: Arc<AtomicUsize>,
}

impl Connector for FromSource {
    type Stream = TcpStream;

    async fn connect(
        &self,
        server: &ServerId,
        timeout: Duration,
    ) -> Result<Connected<TcpStream>, ConnectError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        connect_tcp(server, timeout, |socket, _addr| {
            socket.bind(SocketAddr::new(SOURCE, 0))?;
            socket.set_nodelay(true)
        })
        .await
    }
}

#[tokio::test]
async fn a_custom_tcp_connector_sets_the_source_address_and_socket_options() {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let (addr, _server) =
        support::start_server_with(handler_fn(async move |conn: &mut Connection| {
            seen.lock().expect("lock").push(conn.peer_addr().ip());
            support::read_until_closed(conn).await;
        }));
    let connector = FromSource::default();
    let connects = connector.connects.clone();
    let client = RovingClient::builder()
        .connector(connector)
        .server(addr.to_string())
        .max_slots(2)
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    let mut lease = client.acquire().await.expect("a connection");
    let stream = lease.stream().get_ref();
    assert_eq!(stream.local_addr().expect("local").ip(), SOURCE);
    assert!(
        stream.nodelay().expect("nodelay"),
        "the option is set on the socket"
    );
    support::until("two connections", || peers.lock().expect("lock").len() >= 2).await;
    let peers = peers.lock().expect("lock").clone();
    assert!(
        peers.iter().all(|ip| *ip == SOURCE),
        "the server saw every connection come from {SOURCE}: {peers:?}"
    );
    assert!(connects.load(Ordering::SeqCst) >= peers.len());
}

/// A Callosum server on a Unix socket: lowest free slot per connection, freed on close.
fn start_unix_server(path: PathBuf) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(&path).expect("bind the socket file");
    let free = Arc::new(Mutex::new(BTreeSet::<u32>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (free, next) = (free.clone(), next.clone());
            tokio::spawn(async move {
                let slot = free.lock().expect("lock").pop_first().unwrap_or_else(|| {
                    u32::try_from(next.fetch_add(1, Ordering::SeqCst)).expect("few slots")
                });
                if stream
                    .write_all(format!("{slot}\r\n").as_bytes())
                    .await
                    .is_ok()
                {
                    let mut buf = [0u8; 64];
                    // Echo until the client closes.
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                free.lock().expect("lock").insert(slot);
            });
        }
    })
}

/// Ids are `name:0`: `name` is a socket file in `dir`.
#[derive(Debug)]
struct UnixConnector {
    dir: PathBuf,
}

impl Connector for UnixConnector {
    type Stream = UnixStream;

    async fn connect(
        &self,
        server: &ServerId,
        timeout: Duration,
    ) -> Result<Connected<UnixStream>, ConnectError> {
        let name = server
            .as_str()
            .rsplit_once(':')
            .map_or("", |(name, _)| name);
        let connect = UnixStream::connect(self.dir.join(name));
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            .map_err(|error| ConnectError { addr: None, error })?;
        Ok(Connected { addr: None, stream })
    }
}

/// A directory removed when the test ends, passed or failed.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_unix_socket_connector_pools_unix_streams() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("callosum-client-test-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let path = dir.0.join("callosum.sock");
    let _ = std::fs::remove_file(&path);
    let _server = start_unix_server(path.clone());
    let client = RovingClient::builder()
        .connector(UnixConnector { dir: dir.0.clone() })
        .discovery(StaticDiscovery)
        .server("callosum.sock:0")
        .max_slots(2)
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    support::until("slots [0, 1]", || client.pool().held_slots() == [0, 1]).await;
    // A pool of 2 spreads its leases over both places under the default policy: both
    // unix streams lease, with their slots.
    let mut leases: Vec<_> = std::iter::from_fn(|| client.try_acquire()).collect();
    leases.sort_by_key(|lease| lease.slot());
    let slots: Vec<u32> = leases.iter().map(|lease| lease.slot()).collect();
    assert_eq!(slots, [0, 1]);
    let mut lease = leases.swap_remove(0);
    drop(leases);
    lease.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    lease.read_exact(&mut pong).await.expect("read");
    assert_eq!(&pong, b"ping");
    drop(lease);
    drop(client);
}
