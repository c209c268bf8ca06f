//! Reads the slot line off a freshly connected stream, under a deadline, keeping whatever
//! the server sent after it.
//!
//! Built on [`parse_slot_line`] so the grammar lives in one place.
//! Reads go into a small stack buffer and the parser runs over everything received so far,
//! so a line split into any number of segments (down to one byte each) parses the same, and
//! bytes that arrived behind the CRLF are handed back inside [`Handshake::stream`].

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::line::{LineError, parse_slot_line};
use super::prefixed::{Prefixed, READ_BUFFER_LEN};

/// How long a server has to send its whole slot line when no timeout is configured.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A completed handshake: the slot the server assigned and the stream, positioned at the
/// first application byte (bytes already read past the CRLF come first).
#[derive(Debug)]
pub struct Handshake<S> {
    /// The slot number the server assigned to this connection.
    pub slot: u32,
    /// The connection, reading from the first byte after the slot line.
    pub stream: Prefixed<S>,
}

/// Why a handshake failed. The stream is dropped (closed) with the error: a server that
/// breaks the protocol gets no second chance on the same connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes received can never form a slot line: empty line, non-digit (a sign or a
    /// space included), more than 10 digits or a value over `u32::MAX`, LF without CR.
    #[error("malformed slot line: {0}")]
    Malformed(#[from] LineError),
    /// The server closed the connection before the CRLF.
    #[error("connection closed after {received} bytes, before the end of the slot line")]
    Eof {
        /// Bytes received before the end of the stream.
        received: usize,
    },
    /// The server did not finish the line within the handshake timeout.
    #[error("no complete slot line within {timeout:?} ({received} bytes received)")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
        /// Bytes received before it expired.
        received: usize,
    },
    /// Reading from the stream failed.
    #[error("reading the slot line: {0}")]
    Io(#[from] io::Error),
}

/// Reads the slot line from `stream`, failing with [`HandshakeError::Timeout`] if the server
/// has not sent the whole line within `timeout`.
pub async fn read_handshake<S>(stream: S, timeout: Duration) -> Result<Handshake<S>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut reader = Reader {
        stream: Some(stream),
        buf: [0; READ_BUFFER_LEN],
        filled: 0,
    };
    match tokio::time::timeout(timeout, reader.read()).await {
        Ok(result) => result,
        Err(_elapsed) => Err(HandshakeError::Timeout {
            timeout,
            received: reader.filled,
        }),
    }
}

/// The reader's state, outside the timed future so a timeout can still say how many bytes
/// arrived.
struct Reader<S> {
    stream: Option<S>,
    buf: [u8; READ_BUFFER_LEN],
    filled: usize,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    async fn read(&mut self) -> Result<Handshake<S>, HandshakeError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("handshake reader polled after completion").into());
        };
        loop {
            // The parser decides within MAX_LINE_LEN (12) bytes, so the buffer never fills
            // without an answer; the check keeps that an error rather than a panic.
            let Some(free) = self.buf.get_mut(self.filled..).filter(|b| !b.is_empty()) else {
                return Err(LineError::Overflow.into());
            };
            let n = stream.read(free).await?;
            if n == 0 {
                return Err(HandshakeError::Eof {
                    received: self.filled,
                });
            }
            self.filled += n;
            if let Some(line) = parse_slot_line(&self.buf[..self.filled])? {
                let Some(stream) = self.stream.take() else {
                    return Err(io::Error::other("handshake stream taken twice").into());
                };
                return Ok(Handshake {
                    slot: line.slot,
                    stream: Prefixed::new(stream, self.buf, line.len, self.filled),
                });
            }
        }
    }
}
