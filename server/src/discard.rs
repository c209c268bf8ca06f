//! Reading and throwing away a held connection's input until its peer closes, cheaply.
//!
//! A held connection must notice its peer's close, which takes a pending read; a read pins
//! its buffer until it completes, which for an idle connection may be hours. Giving each of
//! tens of thousands of held connections its own buffer would cost their size in RSS for
//! nothing, since hold mode throws the bytes away. So all of a shard's discarding reads
//! target one shard-wide area: the kernel may write into it for several reads at once, and
//! no Rust code ever reads it, so those writes race with nothing.
//!
//! The read is a `recv` built on tokio-uring's public `UnsubmittedOneshot` rather than its
//! `read`, for one flag: `IORING_RECVSEND_POLL_FIRST` (Linux 5.19) arms the readiness poll at
//! once instead of first trying a receive that, on a connection just accepted or idle, finds
//! nothing. Kernels that refuse the flag get plain receives from then on. The operation holds
//! the connection's socket (an `Rc`), so the descriptor stays open until the kernel is done
//! with it even if the read is dropped unfinished.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{cqueue, opcode, squeue, types};
use tokio_uring::buf::{IoBuf, IoBufMut};
use tokio_uring::net::TcpStream;
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

use crate::connection::Connection;

/// Bytes one discarding read takes at most.
const AREA_LEN: usize = 16 * 1024;

struct Area(UnsafeCell<[u8; AREA_LEN]>);

thread_local! {
    static AREA: Rc<Area> = Rc::new(Area(UnsafeCell::new([0; AREA_LEN])));
}

/// A handle on this thread's discard area, to pass to an io_uring read.
pub struct DiscardBuf(Rc<Area>);

impl DiscardBuf {
    /// A handle on the calling thread's (shard's) discard area.
    pub fn new() -> Self {
        Self(AREA.with(Rc::clone))
    }
}

impl Default for DiscardBuf {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the pointer is into a heap allocation kept alive by the `Rc` this value holds, so
// it stays valid when the value moves and for as long as the operation holds the value;
// `bytes_init` is 0, so nothing claims the area holds data.
unsafe impl IoBuf for DiscardBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.0.0.get().cast()
    }

    fn bytes_init(&self) -> usize {
        0
    }

    fn bytes_total(&self) -> usize {
        AREA_LEN
    }
}

// SAFETY: as above; the kernel's writes land in memory no Rust reference points to (the area
// is never read), and `set_init` records nothing because the contents are never exposed.
unsafe impl IoBufMut for DiscardBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.0.0.get().cast()
    }

    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// Reads and discards until EOF or an error; returns the bytes discarded. Must run on the
/// connection's shard (as every handler does).
pub async fn discard_until_closed(conn: &Connection) -> io::Result<u64> {
    let mut total = 0;
    loop {
        match recv(conn.shared_stream()).await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Whether receives may ask for poll-first; cleared, for the whole process, the first time
/// the kernel refuses the flag. Relaxed: a hint; a receive that still sets the flag after
/// another shard cleared it only gets refused and retried once more.
static POLL_FIRST: AtomicBool = AtomicBool::new(true);

/// `IORING_RECVSEND_POLL_FIRST`, a flag of the SQE's `ioprio` field for receives and sends.
const RECVSEND_POLL_FIRST: u16 = 1 << 0;

/// One receive into the discard area.
async fn recv(stream: &Rc<TcpStream>) -> io::Result<usize> {
    loop {
        let poll_first = POLL_FIRST.load(Ordering::Relaxed);
        let mut buf = DiscardBuf::new();
        let mut sqe = opcode::Recv::new(
            types::Fd(stream.as_raw_fd()),
            buf.stable_mut_ptr(),
            AREA_LEN as u32,
        )
        .build();
        if poll_first {
            sqe = with_ioprio(sqe, RECVSEND_POLL_FIRST);
        }
        let data = RecvData {
            _stream: Rc::clone(stream),
            _buf: buf,
        };
        match UnsubmittedOneshot::new(data, Received, sqe).submit().await {
            Err(err) if poll_first && err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("io_uring receive refused poll-first ({err}); using plain receives");
                POLL_FIRST.store(false, Ordering::Relaxed);
            }
            result => return result,
        }
    }
}

/// Sets an SQE's `ioprio` field, which io-uring 0.6 offers no setter for on receives.
fn with_ioprio(sqe: squeue::Entry, ioprio: u16) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte `io_uring_sqe`, whose
    // layout is fixed ABI (`opcode: u8, flags: u8, ioprio: u16, ...`), so bytes 2..4 are
    // `ioprio`; any value there is a valid `Entry` (the kernel validates it).
    unsafe {
        let mut raw = std::mem::transmute::<squeue::Entry, [u8; 64]>(sqe);
        raw[2..4].copy_from_slice(&ioprio.to_ne_bytes());
        std::mem::transmute::<[u8; 64], squeue::Entry>(raw)
    }
}

/// What a receive holds while in flight: the socket (kept open) and the area (kept alive).
struct RecvData {
    _stream: Rc<TcpStream>,
    _buf: DiscardBuf,
}

/// Turns a receive's completion into the byte count.
struct Received;

impl OneshotOutputTransform for Received {
    type Output = io::Result<usize>;
    type StoredData = RecvData;

    fn transform_oneshot_output(self, _data: RecvData, cqe: cqueue::Entry) -> io::Result<usize> {
        let n = cqe.result();
        if n < 0 {
            Err(io::Error::from_raw_os_error(-n))
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use io_uring::opcode;

    use super::with_ioprio;

    #[test]
    fn ioprio_lands_in_bytes_2_and_3_only() {
        let plain = opcode::Nop::new().build().user_data(7);
        let flagged = with_ioprio(plain.clone(), 0x0102);
        // SAFETY: test-only look at the entry's 64 bytes (see `with_ioprio`).
        let (a, b) = unsafe {
            (
                std::mem::transmute::<io_uring::squeue::Entry, [u8; 64]>(plain),
                std::mem::transmute::<io_uring::squeue::Entry, [u8; 64]>(flagged),
            )
        };
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 0x0102);
        assert_eq!(a[..2], b[..2]);
        assert_eq!(a[4..], b[4..]);
    }
}
