//! Helpers shared by the server's socket tests: start a server on `127.0.0.1:0`, connect,
//! read slot lines, wait for conditions with a deadline.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use callosum_server::{Handler, RunningServer, Server, ServerBuilder};

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A builder for a test server: loopback, any port, two unpinned shards.
pub fn builder() -> ServerBuilder {
    Server::builder()
        .host(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(0)
        .shards(2)
        .pin(false)
}

/// A hold-mode test server.
pub fn start_server() -> RunningServer {
    builder().start().expect("test server starts")
}

/// A test server with `handler`.
pub fn start_server_with<H: Handler>(handler: H) -> RunningServer {
    builder().start_with(handler).expect("test server starts")
}

/// Connects with a read timeout of [`PATIENCE`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to test server");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads bytes until CRLF or EOF; returns them (without interpreting).
pub fn read_line(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte)? {
            0 => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(line)
}

/// Reads the slot line and parses it.
pub fn read_slot(stream: &mut TcpStream) -> u32 {
    let line = read_line(stream).expect("read slot line");
    let text = std::str::from_utf8(&line).expect("ascii slot line");
    text.strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("slot line {text:?} lacks CRLF"))
        .parse()
        .unwrap_or_else(|_| panic!("slot line {text:?} is not a number"))
}

/// Connects and reads the slot.
pub fn connect_slot(addr: SocketAddr) -> (TcpStream, u32) {
    let mut stream = connect(addr);
    let slot = read_slot(&mut stream);
    (stream, slot)
}

/// Whether the peer has closed `stream` (EOF or reset) — waits up to [`PATIENCE`].
pub fn sees_close(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

/// Whether `stream` is already closed by the peer, without waiting.
pub fn is_closed_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out; returns whether it held.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
