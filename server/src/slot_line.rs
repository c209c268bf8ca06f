//! The handshake the server sends: the slot as ASCII decimal plus CRLF, formatted on the
//! stack (no heap allocation per connection) and sent with one non-blocking `send`.
//!
//! Why a plain `send` and not an io_uring write: a fresh socket's send buffer is empty, so a
//! line of at most 12 bytes is always taken whole at once; the direct call needs no owned
//! buffer, no operation slot in the ring and no extra wake-up of the connection's task
//! before the handler can start. A short or refused send (never seen in practice) falls
//! back to an io_uring `write_all` of the rest, so the protocol holds in every case.

use std::io;
use std::os::fd::RawFd;

/// Longest slot line: `4294967295\r\n`.
pub const MAX_SLOT_LINE: usize = 12;

/// A formatted slot line.
#[derive(Clone, Copy)]
pub struct SlotLine {
    buf: [u8; MAX_SLOT_LINE],
    len: u8,
}

impl SlotLine {
    /// Formats `slot` as `"<digits>\r\n"`.
    pub fn new(slot: u32) -> Self {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(slot).as_bytes();
        let mut buf = [0u8; MAX_SLOT_LINE];
        buf[..text.len()].copy_from_slice(text);
        buf[text.len()..text.len() + 2].copy_from_slice(b"\r\n");
        Self {
            buf,
            len: (text.len() + 2) as u8,
        }
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// How much of a slot line one non-blocking `send` wrote.
pub(crate) enum Sent {
    /// The whole line.
    All,
    /// Only this many bytes (possibly 0, the socket was not writable): the rest must follow.
    Partly(usize),
}

/// Sends `line` on `fd` without blocking and without raising `SIGPIPE`.
pub(crate) fn send_now(fd: RawFd, line: &SlotLine) -> io::Result<Sent> {
    let bytes = line.as_bytes();
    // SAFETY: `bytes` is a live, initialised buffer of `bytes.len()` bytes; `fd` is an open
    // socket owned by the caller for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => Ok(Sent::Partly(0)),
            _ => Err(err),
        };
    }
    let n = n as usize;
    Ok(if n == bytes.len() {
        Sent::All
    } else {
        Sent::Partly(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_digits_and_crlf() {
        assert_eq!(SlotLine::new(0).as_bytes(), b"0\r\n");
        assert_eq!(SlotLine::new(13).as_bytes(), b"13\r\n");
        assert_eq!(SlotLine::new(u32::MAX).as_bytes(), b"4294967295\r\n");
    }
}
