//! Interoperability with the original design: the roving client against the Node.js server
//! in `tests/fixtures/node-server.js` (a min-heap of freed slots, as the original
//! JavaScript server). Needs `node` on the PATH (CI installs it).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use callosum_client::RovingClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BOUND: Duration = Duration::from_secs(60);

/// A running Node server, killed on drop.
struct NodeServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A free loopback port: bound by the OS, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").port()
}

/// Starts the Node server and waits for its ready line on stderr.
async fn node_server() -> NodeServer {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node-server.js");
    let mut child = Command::new("node")
        .arg(script)
        .arg("--port")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node on the PATH (CI installs it)");
    let stderr = child.stderr.take().expect("piped stderr");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready = format!("node-server: {addr}");
    let mut lines = BufReader::new(stderr).lines();
    let waited = tokio::time::timeout(BOUND, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.trim() == ready {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(waited, Ok(true), "node server ready line");
    NodeServer { child, addr }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(BOUND, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within {BOUND:?}");
}

#[tokio::test]
async fn the_roving_client_fills_its_pool_from_one_node_server() {
    let node = node_server().await;
    let client = RovingClient::builder()
        .server(node.addr.to_string())
        .max_slots(3)
        .roving_interval(Duration::from_millis(5))
        .build()
        .expect("valid settings");
    until("slots [0, 1, 2]", || {
        client.pool().held_slots() == [0, 1, 2]
    })
    .await;
    let lease = client.acquire().await.expect("a connection");
    assert_eq!(lease.slot(), 0);
}

#[tokio::test]
async fn two_node_servers_and_four_slots_converge_to_the_low_slots_on_both() {
    let (a, b) = (node_server().await, node_server().await);
    let client = RovingClient::builder()
        .servers([a.addr.to_string(), b.addr.to_string()])
        .max_slots(4)
        .roving_interval(Duration::from_millis(5))
        .build()
        .expect("valid settings");
    until("slots [0, 0, 1, 1]", || {
        client.pool().held_slots() == [0, 0, 1, 1]
    })
    .await;
}
