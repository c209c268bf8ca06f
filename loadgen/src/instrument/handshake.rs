//! One measured handshake: create a socket (bound to a chosen 127.0.0.x source when asked),
//! connect, read the slot line, and say how long each step took or what went wrong, by kind.
//!
//! The clock starts before the socket is created and stops when the CRLF has been read, so the
//! figure is what an application waits for. The line is read into a small stack buffer and
//! parsed by the client crate's sans-IO parser, so the load generator and the client agree on
//! the grammar; a malformed line is an error value, never a panic. Connections are closed
//! normally (FIN), as real clients do, unless the run asks for resets (`--reset-fraction`):
//! then [`connect_then_reset`] and [`reset`] close with `SO_LINGER 0`, which sends an RST.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use callosum_client::handshake::{LineError, parse_slot_line};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The kinds of failure the load generator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection was refused (`ECONNREFUSED`).
    Refused,
    /// Connect or slot line took longer than the handshake timeout.
    Timeout,
    /// The connection was reset or aborted (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset,
    /// The server sent something that is not a slot line (or closed in the middle of one).
    Protocol,
    /// The server closed the connection without sending any byte: no slot.
    NoSlot,
    /// Anything else (for example `EADDRNOTAVAIL` when ephemeral ports run out, `EMFILE`).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::NoSlot,
        ErrorKind::Other,
    ];

    /// Position in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::NoSlot => "no_slot",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of an I/O error.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            _ => ErrorKind::Other,
        }
    }
}

/// A failed handshake: its kind and what happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A socket call failed.
    #[error("{step}: {source}")]
    Io {
        /// Which step: `socket`, `bind`, `connect` or `read`.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Connect plus slot line took longer than the timeout.
    #[error("no slot line within {0:?}")]
    Timeout(Duration),
    /// The bytes received can never be a slot line.
    #[error("malformed slot line {}: {error}{}", escaped(received), hint(received))]
    Malformed {
        /// What the parser found wrong.
        error: LineError,
        /// The first bytes received (at most 16).
        received: Vec<u8>,
    },
    /// The server closed after part of a line.
    #[error("connection closed after {0} bytes of a slot line")]
    Truncated(usize),
    /// The server closed before sending anything.
    #[error("connection closed before any slot line")]
    NoSlot,
}

impl HandshakeError {
    /// The kind this error is counted as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandshakeError::Io { source, .. } => ErrorKind::of_io(source),
            HandshakeError::Timeout(_) => ErrorKind::Timeout,
            HandshakeError::Malformed { .. } | HandshakeError::Truncated(_) => ErrorKind::Protocol,
            HandshakeError::NoSlot => ErrorKind::NoSlot,
        }
    }
}

/// A completed handshake: the open stream, its slot and the two latencies.
#[derive(Debug)]
pub struct Connected {
    /// The connection, positioned after the slot line (extra bytes already read are dropped).
    pub stream: TcpStream,
    /// The slot the server assigned.
    pub slot: u32,
    /// From `start` to the connection established.
    pub connect: Duration,
    /// From `start` to the slot line's CRLF read.
    pub handshake: Duration,
}

/// Connects to `target` (from `source`, if given) and reads the slot line.
///
/// `start` is when the handshake was meant to start (now, or earlier for an open-loop schedule
/// that fell behind): the latencies are measured from it. The timeout counts from now.
pub async fn handshake(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    start: Instant,
) -> Result<Connected, HandshakeError> {
    match tokio::time::timeout(timeout, connect_and_read(target, source, start)).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout(timeout)),
    }
}

/// Connects to `target` (from `source`, if given) and, as soon as the connection is
/// established, resets it (`SO_LINGER 0`) without reading anything: the server may or may not
/// have sent its slot line yet. Fails like a handshake would if the connect fails or takes
/// longer than `timeout`.
pub async fn connect_then_reset(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let connected = async {
        let stream = connect(target, source).await?;
        match stream.take_error() {
            Ok(None) => Ok(stream),
            Ok(Some(e)) | Err(e) => Err(HandshakeError::Io {
                step: "connect",
                source: e,
            }),
        }
    };
    match tokio::time::timeout(timeout, connected).await {
        Ok(stream) => reset(stream?),
        Err(_) => Err(HandshakeError::Timeout(timeout)),
    }
}

/// Closes `stream` with an RST (`SO_LINGER 0`) instead of a FIN.
pub fn reset(stream: TcpStream) -> Result<(), HandshakeError> {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(|source| HandshakeError::Io {
            step: "reset",
            source,
        })
}

async fn connect_and_read(
    target: SocketAddr,
    source: Option<IpAddr>,
    start: Instant,
) -> Result<Connected, HandshakeError> {
    let io = |step| move |source| HandshakeError::Io { step, source };
    let mut stream = connect(target, source).await?;
    let connect = start.elapsed();
    let mut buf = [0u8; 16];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await.map_err(io("read"))?;
        if n == 0 {
            return Err(if filled == 0 {
                HandshakeError::NoSlot
            } else {
                HandshakeError::Truncated(filled)
            });
        }
        filled += n;
        let malformed = |error| HandshakeError::Malformed {
            error,
            received: buf[..filled].to_vec(),
        };
        match parse_slot_line(&buf[..filled]).map_err(malformed)? {
            Some(line) => {
                return Ok(Connected {
                    stream,
                    slot: line.slot,
                    connect,
                    handshake: start.elapsed(),
                });
            }
            // The parser rejects anything longer than a slot line before the buffer fills.
            None if filled == buf.len() => return Err(malformed(LineError::Overflow)),
            None => {}
        }
    }
}

/// Bytes as a quoted string, non-printable ones escaped (`"HTTP/1.1 400 \\r\\n"`).
fn escaped(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// A hint when the first bytes are another protocol's greeting: the target is not a Callosum
/// server.
fn hint(bytes: &[u8]) -> &'static str {
    const GREETINGS: &[(&[u8], &str)] = &[
        (
            b"HTTP/",
            "; this is an HTTP server, not a Callosum server: check --target",
        ),
        (
            b"SSH-",
            "; this is an SSH server, not a Callosum server: check --target",
        ),
        (
            b"220",
            "; this looks like an SMTP or FTP server, not a Callosum server: check --target",
        ),
        (
            b"-ERR",
            "; this looks like a Redis server, not a Callosum server: check --target",
        ),
    ];
    GREETINGS
        .iter()
        .find(|(greeting, _)| bytes.starts_with(greeting))
        .map_or("", |(_, hint)| hint)
}

/// Creates a non-blocking socket (bound to `source`, if given), connects it to `target` and
/// waits until it is writable: connected, or failed.
async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, HandshakeError> {
    let io = |step| move |source| HandshakeError::Io { step, source };
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(io("socket"))?;
    if let Some(ip) = source {
        bind_no_port(&socket).map_err(io("bind"))?;
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .map_err(io("bind"))?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(io("connect")(e)),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(io("connect"))?;
    // Writable means connected, or failed: for a handshake a failure shows in the read that
    // follows (ECONNREFUSED, ECONNRESET), which spares the `getsockopt(SO_ERROR)` a connect
    // future would make.
    stream.writable().await.map_err(io("connect"))?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`: the source port is chosen at `connect`, per destination, so
/// one source address serves a full port range towards every target.
fn bind_no_port(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is open for the duration of the call and `one` is a valid c_int
    // whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a held connection is still open: peeks without blocking. `Ok(true)`: open (nothing
/// to read, or application bytes); `Ok(false)`: the server closed it; `Err`: it was reset.
pub fn still_open(stream: &TcpStream) -> io::Result<bool> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream)
        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let kind = |k| ErrorKind::of_io(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), ErrorKind::Refused);
        assert_eq!(kind(io::ErrorKind::ConnectionReset), ErrorKind::Reset);
        assert_eq!(kind(io::ErrorKind::BrokenPipe), ErrorKind::Reset);
        assert_eq!(kind(io::ErrorKind::TimedOut), ErrorKind::Timeout);
        assert_eq!(kind(io::ErrorKind::AddrNotAvailable), ErrorKind::Other);
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn handshake_errors_map_to_kinds() {
        assert_eq!(HandshakeError::NoSlot.kind(), ErrorKind::NoSlot);
        assert_eq!(HandshakeError::Truncated(2).kind(), ErrorKind::Protocol);
        let malformed = |bytes: &[u8]| HandshakeError::Malformed {
            error: LineError::Empty,
            received: bytes.to_vec(),
        };
        assert_eq!(malformed(b"\r\n").kind(), ErrorKind::Protocol);
        let http = malformed(b"HTTP/1.1 400 Bad").to_string();
        assert!(http.contains("\"HTTP/1.1 400 Bad\""), "{http}");
        assert!(
            http.contains("an HTTP server, not a Callosum server"),
            "{http}"
        );
        let plain = malformed(b"x\r\n").to_string();
        assert!(plain.contains("\"x\\r\\n\""), "{plain}");
        assert!(!plain.contains("server"), "{plain}");
        assert_eq!(
            HandshakeError::Timeout(Duration::from_secs(1)).kind(),
            ErrorKind::Timeout
        );
    }
}
