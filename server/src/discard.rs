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
//! what keeps the connection's descriptor open (a handler's shared socket, or a held
//! connection's own descriptor: see [`crate::held`]), so it stays open until the kernel is done
//! with it even if the receive is dropped unfinished.

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{cqueue, opcode, squeue, types};
use tokio_uring::buf::{IoBuf, IoBufMut};
use tokio_uring::net::TcpStream;
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

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
        let stream = RecvStream {
            stream: Rc::clone(conn.shared_stream()),
            _buf: DiscardBuf::new(),
        };
        match submit_recv(stream).await.0 {
            Received::Bytes(n) => total += n as u64,
            Received::Eof => return Ok(total),
            Received::Failed(err) => return Err(err),
            Received::PollFirstRefused => {}
        }
    }
}

/// What a receive into the discard area keeps while in flight: the socket's descriptor (kept
/// open by whoever implements this) and the area (kept alive).
pub(crate) trait RecvTarget: Unpin + 'static {
    /// The socket to receive from.
    fn fd(&self) -> RawFd;
}

/// A handler's connection as a receive's target: the shared socket and the area.
struct RecvStream {
    stream: Rc<TcpStream>,
    _buf: DiscardBuf,
}

impl RecvTarget for RecvStream {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// How one receive into the discard area ended.
pub(crate) enum Received {
    /// That many bytes arrived (and were thrown away).
    Bytes(usize),
    /// The peer closed the connection.
    Eof,
    /// The socket failed (reset, timed out by keepalive, shut down under it).
    Failed(io::Error),
    /// The kernel refused the poll-first flag; every receive from now on goes without it:
    /// submit it again.
    PollFirstRefused,
}

/// Whether receives may ask for poll-first; cleared, for the whole process, the first time
/// the kernel refuses the flag. Relaxed: a hint; a receive that still sets the flag after
/// another shard cleared it only gets refused and retried once more.
static POLL_FIRST: AtomicBool = AtomicBool::new(true);

/// `IORING_RECVSEND_POLL_FIRST`, a flag of the SQE's `ioprio` field for receives and sends.
const RECVSEND_POLL_FIRST: u16 = 1 << 0;

/// Submits one receive into this thread's discard area from `target`'s socket; the operation
/// resolves to how it ended and hands `target` back.
pub(crate) fn submit_recv<D: RecvTarget>(target: D) -> InFlightOneshot<D, Receive<D>> {
    let poll_first = POLL_FIRST.load(Ordering::Relaxed);
    // The area is the thread's: every `DiscardBuf` points to it, and the target holds one.
    let mut area = DiscardBuf::new();
    let mut sqe = opcode::Recv::new(
        types::Fd(target.fd()),
        area.stable_mut_ptr(),
        AREA_LEN as u32,
    )
    .build();
    if poll_first {
        sqe = with_ioprio(sqe, RECVSEND_POLL_FIRST);
    }
    let receive = Receive {
        poll_first,
        _target: PhantomData,
    };
    UnsubmittedOneshot::new(target, receive, sqe).submit()
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

/// Turns a receive's completion into how it ended, handing its target back.
pub(crate) struct Receive<D> {
    /// Whether this receive asked for poll-first.
    poll_first: bool,
    _target: PhantomData<fn() -> D>,
}

impl<D> OneshotOutputTransform for Receive<D> {
    type Output = (Received, D);
    type StoredData = D;

    fn transform_oneshot_output(self, target: D, cqe: cqueue::Entry) -> (Received, D) {
        let received = match cqe.result() {
            0 => Received::Eof,
            n if n > 0 => Received::Bytes(n as usize),
            n if self.poll_first && -n == libc::EINVAL => {
                tracing::debug!("io_uring receive refused poll-first; using plain receives");
                POLL_FIRST.store(false, Ordering::Relaxed);
                Received::PollFirstRefused
            }
            n => Received::Failed(io::Error::from_raw_os_error(-n)),
        };
        (received, target)
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
