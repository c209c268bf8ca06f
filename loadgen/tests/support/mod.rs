//! Test servers for the load generator's behaviour tests: the C reference server of
//! `benches/baselines/` (built once per test binary) and small misbehaving tokio servers.
#![allow(dead_code)]

#[path = "../../../testing/ports.rs"]
mod ports;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use ports::free_port;

/// Runs `f` on a thread and fails the test if it does not finish within `limit`.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// The C epoll reference server, as a child process killed on drop.
pub struct CServer {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for CServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn c_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/baselines/c-epoll-server.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("c-epoll-server-{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success(), "cc failed on {}", src.display());
        out
    })
}

/// Starts the C server on a free port and waits until it accepts.
pub fn c_server() -> CServer {
    let port = free_port();
    let child = Command::new(c_binary())
        .args(["--port", &port.to_string(), "--threads", "2"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the C server");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = CServer { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "the C server did not start");
        std::thread::yield_now();
    }
    server
}

/// How a misbehaving server treats each connection.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Sends a line that is not a slot line.
    Garbage,
    /// Closes at once, without a byte.
    CloseEarly,
    /// Sends part of a slot line, then closes.
    Truncated,
    /// Accepts and never writes.
    NeverAnswer,
    /// Resets the connection (SO_LINGER 0).
    Reset,
    /// Answers as an HTTP server would to a request it cannot read.
    Http,
}

/// Starts a misbehaving server on 127.0.0.1:0; it runs until the test process exits.
pub fn misbehaving(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    match how {
                        Misbehaviour::Garbage => {
                            let _ = sock.write_all(b"hello\r\n").await;
                        }
                        Misbehaviour::CloseEarly => return,
                        Misbehaviour::Truncated => {
                            let _ = sock.write_all(b"12").await;
                            return;
                        }
                        Misbehaviour::NeverAnswer => {}
                        Misbehaviour::Http => {
                            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                            return;
                        }
                        Misbehaviour::Reset => {
                            let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                            return;
                        }
                    }
                    // Keep the connection until the client closes it.
                    let mut buf = [0u8; 64];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// A hold of `connections`, 64 opening at a time, no warmup.
pub fn hold(connections: u64) -> callosum_loadgen::Phase {
    callosum_loadgen::Phase {
        kind: callosum_loadgen::PhaseKind::Hold {
            connections,
            hold_for: Duration::ZERO,
        },
        pacing: callosum_loadgen::Pacing::Closed { concurrency: 64 },
        warmup: Duration::ZERO,
    }
}
