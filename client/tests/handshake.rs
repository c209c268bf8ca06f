//! The handshake reader over real loopback sockets and over streams that deliver bytes in
//! arbitrary pieces: every malformed input, fragmentation down to one byte per read, bytes
//! after the CRLF kept, and a property test over arbitrary byte strings.

mod support;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use callosum_client::handshake::{
    DEFAULT_HANDSHAKE_TIMEOUT, HandshakeError, LineError, read_handshake,
};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Replays `chunks`, one per read (a read never crosses a chunk), each after a `Pending`,
/// then EOF — or, with `hang`, stays pending forever instead of EOF.
#[derive(Debug)]
struct Chunked {
    chunks: Vec<Vec<u8>>,
    next: usize,
    offset: usize,
    yielded: bool,
    hang: bool,
}

impl Chunked {
    fn new(chunks: Vec<Vec<u8>>) -> Self {
        Self {
            chunks,
            next: 0,
            offset: 0,
            yielded: false,
            hang: false,
        }
    }

    fn bytewise(bytes: &[u8]) -> Self {
        Self::new(bytes.iter().map(|&b| vec![b]).collect())
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        let Some(chunk) = self.chunks.get(self.next).cloned() else {
            return if self.hang {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        };
        let n = buf.remaining().min(chunk.len() - self.offset);
        buf.put_slice(&chunk[self.offset..self.offset + n]);
        self.offset += n;
        if self.offset == chunk.len() {
            self.next += 1;
            self.offset = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl Unpin for Chunked {}

/// Connects to a server that sends `bytes` (and keeps the connection open).
async fn connect_to(bytes: &'static [u8]) -> TcpStream {
    let (addr, _server) = support::start_replying(bytes, false).await;
    TcpStream::connect(addr).await.expect("connect")
}

async fn over_loopback(bytes: &'static [u8]) -> Result<u32, HandshakeError> {
    let stream = connect_to(bytes).await;
    read_handshake(stream, Duration::from_secs(30))
        .await
        .map(|h| h.slot)
}

#[tokio::test]
async fn a_valid_line_over_loopback_gives_the_slot() {
    assert_eq!(over_loopback(b"0\r\n").await.expect("valid"), 0);
    assert_eq!(
        over_loopback(b"4294967295\r\n").await.expect("valid"),
        u32::MAX
    );
    assert_eq!(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs(5));
}

#[tokio::test]
async fn every_malformed_line_is_a_typed_error_over_loopback() {
    let cases: [(&'static [u8], LineError); 8] = [
        (b"\r\n", LineError::Empty),
        (
            b"1x\r\n",
            LineError::InvalidByte {
                byte: b'x',
                offset: 1,
            },
        ),
        (
            b"-1\r\n",
            LineError::InvalidByte {
                byte: b'-',
                offset: 0,
            },
        ),
        (
            b"+1\r\n",
            LineError::InvalidByte {
                byte: b'+',
                offset: 0,
            },
        ),
        (
            b" 1\r\n",
            LineError::InvalidByte {
                byte: b' ',
                offset: 0,
            },
        ),
        (b"12345678901\r\n", LineError::Overflow),
        (b"4294967296\r\n", LineError::Overflow),
        (b"12\n", LineError::BareLf { offset: 2 }),
    ];
    for (bytes, expected) in cases {
        match over_loopback(bytes).await {
            Err(HandshakeError::Malformed(got)) => assert_eq!(got, expected, "{bytes:?}"),
            other => panic!("{bytes:?}: expected {expected:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn eof_before_the_crlf_is_an_error() {
    let (addr, _server) = support::start_replying(b"12\r", true).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    match read_handshake(stream, Duration::from_secs(30)).await {
        Err(HandshakeError::Eof { received: 3 }) => {}
        other => panic!("expected EOF after 3 bytes, got {other:?}"),
    }
    let (addr, _server) = support::start_replying(b"", true).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    assert!(matches!(
        read_handshake(stream, Duration::from_secs(30)).await,
        Err(HandshakeError::Eof { received: 0 })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_finishes_the_line_times_out() {
    let mut stream = Chunked::bytewise(b"17\r");
    stream.hang = true;
    let timeout = Duration::from_secs(5);
    match read_handshake(stream, timeout).await {
        Err(HandshakeError::Timeout {
            timeout: t,
            received: 3,
        }) => assert_eq!(t, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn one_byte_per_read_parses_the_same_and_keeps_what_follows() {
    let handshake = read_handshake(Chunked::bytewise(b"173\r\nHELLO"), Duration::from_secs(5))
        .await
        .expect("valid");
    assert_eq!(handshake.slot, 173);
    let mut rest = Vec::new();
    let mut stream = handshake.stream;
    stream.read_to_end(&mut rest).await.expect("read");
    assert_eq!(rest, b"HELLO");
}

#[tokio::test]
async fn application_bytes_in_the_same_segment_are_not_lost_over_loopback() {
    let stream = connect_to(b"9\r\nfirst bytes").await;
    let handshake = read_handshake(stream, Duration::from_secs(30))
        .await
        .expect("valid");
    assert_eq!(handshake.slot, 9);
    let mut stream = handshake.stream;
    let mut got = [0u8; 11];
    stream.read_exact(&mut got).await.expect("leftover");
    assert_eq!(&got, b"first bytes");
    // Writes go to the socket: the server discards them, the connection stays usable.
    stream.write_all(b"ping").await.expect("write");
}

/// The grammar, written the slow and obvious way: the slot and the line length if `bytes`
/// starts with a complete valid line.
fn reference(bytes: &[u8]) -> Option<(u32, usize)> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let digits = &bytes[..end];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let slot = std::str::from_utf8(digits).ok()?.parse::<u32>().ok()?;
    Some((slot, end + 2))
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Splits `bytes` at `cuts` (positions, any order, out of range ignored).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < bytes.len()).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut start = 0;
    let mut chunks = Vec::new();
    for cut in cuts {
        if cut > start {
            chunks.push(bytes[start..cut].to_vec());
            start = cut;
        }
    }
    chunks
}

proptest! {
    #[test]
    fn any_bytes_in_any_pieces_match_the_grammar(
        bytes in prop::collection::vec(prop_oneof![
            4 => b'0'..=b'9',
            1 => Just(b'\r'),
            1 => Just(b'\n'),
            1 => any::<u8>(),
        ], 0..40),
        cuts in prop::collection::vec(0usize..40, 0..8),
    ) {
        let chunks = split(&bytes, &cuts);
        let result = run(async move {
            match read_handshake(Chunked::new(chunks), Duration::from_secs(5)).await {
                Ok(handshake) => {
                    let mut rest = Vec::new();
                    let mut stream = handshake.stream;
                    stream.read_to_end(&mut rest).await.expect("read");
                    Ok((handshake.slot, rest))
                }
                Err(e) => Err(e),
            }
        });
        match (reference(&bytes), result) {
            (Some((slot, len)), Ok((got, rest))) => {
                prop_assert_eq!(got, slot);
                prop_assert_eq!(rest, bytes[len..].to_vec(), "leftover kept");
            }
            (None, Err(HandshakeError::Malformed(_) | HandshakeError::Eof { .. })) => {}
            (expected, got) => prop_assert!(false, "expected {:?}, got {:?}", expected, got),
        }
    }
}
