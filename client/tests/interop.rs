//! Interoperability with the original design, both ways: the roving client against the
//! Node.js server in `tests/fixtures/node-server.js` (a min-heap of freed slots, as the
//! original JavaScript server), and the Node.js client in `tests/fixtures/node-client.js`
//! (a rover and a dual-heap pool, as the original JavaScript libraries) against a
//! `callosum-server`. Needs `node` on the PATH (CI installs it).

#[path = "../../testing/ports.rs"]
mod ports;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use callosum_client::{Prefixed, RovingClient, read_handshake};
use ports::free_port;
use support::{BOUND, until};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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
    // A pool of 3 spreads its leases over its places under the default policy.
    let leases: Vec<_> = std::iter::from_fn(|| client.try_acquire()).collect();
    let mut slots: Vec<u32> = leases.iter().map(|lease| lease.slot()).collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2]);
}

#[tokio::test]
async fn two_node_servers_and_four_slots_converge_to_the_low_slots_on_both() {
    let (a, b) = (node_server().await, node_server().await);
    support::two_on_each(RovingClient::builder().servers([a.addr.to_string(), b.addr.to_string()]))
        .await;
}

/// A running Node client: commands on its stdin, JSON lines on its stdout.
struct NodeClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl NodeClient {
    fn start(server: SocketAddr, max_slots: usize, interval_ms: u64) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node-client.js");
        let mut child = Command::new("node")
            .arg(script)
            .args(["--servers", &server.to_string()])
            .args(["--max-slots", &max_slots.to_string()])
            .args(["--interval", &interval_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node on the PATH (CI installs it)");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    async fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to node");
    }

    /// Reads lines until one has `key`; returns its value.
    async fn next_with(&mut self, key: &str) -> serde_json::Value {
        let read = tokio::time::timeout(BOUND, async {
            loop {
                let line = self.stdout.next_line().await.expect("read node");
                let line = line.expect("node client still running");
                let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
                if let Some(found) = value.get(key) {
                    return found.clone();
                }
            }
        });
        read.await
            .unwrap_or_else(|_| panic!("{key} from node within {BOUND:?}"))
    }

    /// Waits until the client reports holding exactly `slots`.
    async fn holds(&mut self, slots: &[u64]) {
        let want = serde_json::json!(slots);
        let waited = tokio::time::timeout(BOUND, async {
            while self.next_with("held").await != want {}
        });
        assert!(
            waited.await.is_ok(),
            "node client holds {slots:?} within {BOUND:?}"
        );
    }
}

/// Connects and reads the slot line.
async fn connect_slot(addr: SocketAddr) -> (Prefixed<TcpStream>, u32) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let handshake = read_handshake(stream, BOUND).await.expect("a slot line");
    (handshake.stream, handshake.slot)
}

#[tokio::test]
async fn the_node_client_keeps_the_lowest_slots_of_a_callosum_server_and_frees_them_on_close() {
    let (addr, server) = support::start_server();
    // Slots 0 to 4 taken first, so the Node client starts on higher ones.
    let mut early = Vec::new();
    for expected in 0..5 {
        let (stream, slot) = connect_slot(addr).await;
        assert_eq!(slot, expected);
        early.push(stream);
    }
    let mut node = NodeClient::start(addr, 3, 5);
    node.holds(&[5, 6, 7]).await;
    // The test's 0..4 freed up to 2: lower slots replace the Node pool's worst.
    drop(early.drain(..3));
    node.holds(&[0, 1, 2]).await;
    node.send("lease").await;
    assert_eq!(node.next_with("leased").await, serde_json::json!(0));

    // The server agrees: with roving stopped, 0..4 are held (the Node client's 0, 1, 2 and
    // the test's 3, 4), so the next connection gets 5.
    node.send("stop").await;
    node.next_with("stopped").await;
    until("the Node client's rejected connections freed", || {
        server.slots.in_use() == 5
    })
    .await;
    let (probe, slot) = connect_slot(addr).await;
    assert_eq!(slot, 5);
    drop(probe);

    // Closing the client frees its slots.
    drop(node.stdin.take());
    let status = tokio::time::timeout(BOUND, node.child.wait())
        .await
        .expect("node exits within the bound")
        .expect("wait for node");
    assert!(status.success(), "{status}");
    until("the Node client's slots freed", || {
        server.slots.in_use() == 2
    })
    .await;
    let (_probe, slot) = connect_slot(addr).await;
    assert_eq!(slot, 0);
}
