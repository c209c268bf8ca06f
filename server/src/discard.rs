//! A read buffer that every idle connection of a shard shares, for input that is discarded.
//!
//! A held connection must notice its peer's close, which takes a pending read; a read pins
//! its buffer until it completes, which for an idle connection may be hours. Giving each of
//! tens of thousands of held connections its own buffer would cost their size in RSS for
//! nothing, since hold mode throws the bytes away. So all of a shard's discarding reads
//! target one shard-wide area: the kernel may write into it for several reads at once, and
//! no Rust code ever reads it, so those writes race with nothing.

use std::cell::UnsafeCell;
use std::rc::Rc;

use tokio_uring::buf::{IoBuf, IoBufMut};

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
