//! Fuzzing of the slot-line grammar on stable Rust: a structure-aware generator, a reference
//! parser written from the grammar, and the checks every input must pass.
//!
//! Why not proptest here: its shrinking machinery makes a hundred million cases take hours;
//! a `SmallRng` generator runs them in minutes, and a failure prints the exact bytes (and the
//! seed), which is all a regression test needs. The generator is biased towards the places
//! where a hand-written parser goes wrong: valid lines with every edge value, near-valid
//! mutations of them (leading zeros, one digit too many, values just over `u32::MAX`, CR or LF
//! missing or alone, bytes inserted, removed or replaced, a tail of application bytes) and
//! plain random bytes over a small alphabet.
//!
//! Every input is checked for:
//! - **no panic** and **the oracle's answer** on the whole buffer (`parse_slot_line` against
//!   [`oracle`], errors included, variant and offset);
//! - **never reading past the line**: the parser says "need more" on every prefix shorter than
//!   the point where the oracle decides, decides there, and never changes its answer as more
//!   bytes arrive (so a line is complete exactly at its LF and the bytes behind it are the
//!   application's);
//! - **splits**: the async reader ([`read_handshake`]) over a stream that delivers the input
//!   in random segments (down to one byte each) gives the same slot or error, and its stream
//!   then yields exactly the bytes after the line, nothing lost, nothing twice.
//!
//! CI runs [`short_run_of_the_fuzzer_finds_nothing`] (100,000 cases). The long run is
//! `FUZZ_CASES=100000000 nice -n 10 cargo test --release -p callosum-client --test
//! fuzz_slot_line -- --ignored --nocapture` (`FUZZ_SEED` picks another sequence).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use callosum_client::handshake::{
    HandshakeError, LineError, MAX_LINE_LEN, SlotLine, parse_slot_line, read_handshake,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The grammar, written the obvious way: `1*10DIGIT CR LF`, the value at most `u32::MAX`, no
/// sign, no space, LF alone is not a line end. A buffer that can no longer become a line is an
/// error as soon as it cannot (ten digits over `u32::MAX` are wrong before the CR arrives).
fn oracle(buf: &[u8]) -> Result<Option<SlotLine>, LineError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 10 || (digits == 10 && &buf[..10] > b"4294967295".as_slice()) {
        return Err(LineError::Overflow);
    }
    let value = || {
        buf[..digits]
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'))
    };
    match &buf[digits..] {
        [] | [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] if digits == 0 => Err(LineError::Empty),
        [b'\r', b'\n', ..] => Ok(Some(SlotLine {
            slot: value(),
            len: digits + 2,
        })),
        [b'\r', ..] => Err(LineError::CrWithoutLf { offset: digits }),
        [b'\n', ..] => Err(LineError::BareLf { offset: digits }),
        [byte, ..] => Err(LineError::InvalidByte {
            byte: *byte,
            offset: digits,
        }),
    }
}

/// Values where decimal formatting and overflow checks change behaviour.
const EDGES: [u32; 12] = [
    0,
    1,
    9,
    10,
    99,
    100,
    999_999_999,
    1_000_000_000,
    4_294_967_294,
    4_294_967_295,
    429_496_729,
    65_535,
];

/// Bytes the parser treats specially, and a few it must refuse.
const ALPHABET: &[u8] = b"0123456789\r\n\r\n\r\n -+x\0\xff";

/// One generated input and where the stream delivering it is cut into segments.
struct Case {
    bytes: Vec<u8>,
    cuts: Vec<usize>,
}

fn slot(rng: &mut SmallRng) -> u32 {
    match rng.random_range(0..4) {
        0 => EDGES[rng.random_range(0..EDGES.len())],
        1 => rng.random_range(0..1000),
        2 => rng.random_range(0..=u32::MAX) >> rng.random_range(0..32),
        _ => rng.random(),
    }
}

/// A valid line, possibly followed by application bytes.
fn valid(rng: &mut SmallRng) -> Vec<u8> {
    let mut bytes = format!("{}\r\n", slot(rng)).into_bytes();
    let tail = rng.random_range(0..6);
    bytes.extend((0..tail).map(|_| rng.random::<u8>()));
    bytes
}

/// A near-valid line: a valid one with one or two of the mistakes servers make.
fn near_valid(rng: &mut SmallRng) -> Vec<u8> {
    let mut bytes = valid(rng);
    for _ in 0..rng.random_range(1..=2) {
        let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        match rng.random_range(0..10) {
            // Leading zeros: valid while there are at most ten digits.
            0 => {
                let zeros = rng.random_range(1..=10 - digits.min(9));
                bytes.splice(0..0, std::iter::repeat_n(b'0', zeros));
            }
            // One digit too many, or a ten-digit value over u32::MAX.
            1 => bytes.insert(digits, b'0' + rng.random_range(0..10)),
            2 => {
                let over = rng.random_range(u64::from(u32::MAX) + 1..=9_999_999_999);
                bytes.splice(0..digits, over.to_string().into_bytes());
            }
            // CR missing (LF only), LF missing (CR only), or the two swapped.
            3 => {
                if bytes.len() > digits {
                    bytes.remove(digits);
                }
            }
            4 => {
                if bytes.len() > digits + 1 {
                    bytes.remove(digits + 1);
                }
            }
            5 => {
                if bytes.len() > digits + 1 {
                    bytes.swap(digits, digits + 1);
                }
            }
            // A byte inserted, replaced or removed anywhere in the line.
            6 => {
                let at = rng.random_range(0..=digits + 2).min(bytes.len());
                bytes.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]);
            }
            7 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            8 => {
                let at = rng.random_range(0..bytes.len());
                bytes.remove(at);
            }
            // Cut short.
            _ => bytes.truncate(rng.random_range(0..=bytes.len())),
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

/// Random bytes, mostly from the alphabet the grammar cares about.
fn random(rng: &mut SmallRng) -> Vec<u8> {
    let len = rng.random_range(0..=16);
    (0..len)
        .map(|_| {
            if rng.random_bool(0.8) {
                ALPHABET[rng.random_range(0..ALPHABET.len())]
            } else {
                rng.random()
            }
        })
        .collect()
}

fn generate(rng: &mut SmallRng) -> Case {
    let bytes = match rng.random_range(0..8) {
        0..=1 => valid(rng),
        2..=5 => near_valid(rng),
        _ => random(rng),
    };
    // Segment boundaries: none, every byte, or a random subset.
    let cuts = match rng.random_range(0..4) {
        0 => Vec::new(),
        1 => (1..bytes.len()).collect(),
        _ => (1..bytes.len()).filter(|_| rng.random_bool(0.3)).collect(),
    };
    Case { bytes, cuts }
}

/// The whole buffer, and every prefix of it: the parser's answer is the oracle's, it asks for
/// more exactly until the oracle decides, and never changes its mind afterwards.
fn check_parser(bytes: &[u8]) -> Result<(), String> {
    let expected = oracle(bytes);
    let got = parse_slot_line(bytes);
    if got != expected {
        return Err(format!("parser {got:?}, oracle {expected:?}"));
    }
    let decided_at = (0..=bytes.len()).find(|&k| oracle(&bytes[..k]) != Ok(None));
    if let Some(k) = decided_at {
        if k > MAX_LINE_LEN {
            return Err(format!("decided only after {k} bytes"));
        }
        if let Ok(Some(line)) = expected
            && line.len != k
        {
            return Err(format!("line of {} bytes decided at {k}", line.len));
        }
    }
    for k in 0..=bytes.len() {
        let got = parse_slot_line(&bytes[..k]);
        let want = match decided_at {
            Some(d) if k >= d => expected.clone(),
            _ => Ok(None),
        };
        if got != want {
            return Err(format!(
                "prefix of {k} bytes: parser {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}

/// A stream that returns `bytes` cut at `cuts`, then the end of the stream.
#[derive(Debug)]
struct Segments<'a> {
    bytes: &'a [u8],
    cuts: &'a [usize],
    pos: usize,
}

impl AsyncRead for Segments<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let end = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.pos)
            .unwrap_or(self.bytes.len())
            .min(self.pos + buf.remaining());
        buf.put_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

/// The async reader over the segmented stream: the oracle's slot or error, then exactly the
/// bytes behind the line.
async fn check_reader(case: &Case) -> Result<(), String> {
    let stream = Segments {
        bytes: &case.bytes,
        cuts: &case.cuts,
        pos: 0,
    };
    let result = read_handshake(stream, Duration::from_secs(1)).await;
    match (oracle(&case.bytes), result) {
        (Ok(Some(line)), Ok(mut handshake)) => {
            if handshake.slot != line.slot {
                return Err(format!("reader slot {}, oracle {line:?}", handshake.slot));
            }
            let mut rest = Vec::new();
            handshake
                .stream
                .read_to_end(&mut rest)
                .await
                .map_err(|e| format!("reading past the line: {e}"))?;
            if rest != case.bytes[line.len..] {
                return Err(format!("application bytes {rest:?} after the line"));
            }
            Ok(())
        }
        (Err(want), Err(HandshakeError::Malformed(got))) if got == want => Ok(()),
        (Ok(None), Err(HandshakeError::Eof { received })) if received == case.bytes.len() => Ok(()),
        (want, got) => Err(format!("reader {got:?}, oracle {want:?}")),
    }
}

/// Runs `cases` generated inputs from `seed`; the reader is run on one input in
/// `reader_every`. Returns the first failure with the input that caused it.
fn fuzz(seed: u64, cases: u64, reader_every: u64) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..cases {
        let case = generate(&mut rng);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_parser(&case.bytes)?;
            if i % reader_every == 0 {
                rt.block_on(check_reader(&case))?;
            }
            Ok::<(), String>(())
        }));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => "panicked".to_owned(),
        };
        return Err(format!(
            "case {i} (seed {seed}): input {:?} (segments cut at {:?}): {failure}",
            case.bytes.escape_ascii().to_string(),
            case.cuts
        ));
    }
    Ok(())
}

#[test]
fn the_oracle_agrees_with_the_grammar_on_known_lines() {
    let o = |s: &[u8]| oracle(s);
    assert_eq!(o(b"13\r\n"), Ok(Some(SlotLine { slot: 13, len: 4 })));
    assert_eq!(
        o(b"0000000007\r\nx"),
        Ok(Some(SlotLine { slot: 7, len: 12 }))
    );
    assert_eq!(
        o(b"4294967295\r\n"),
        Ok(Some(SlotLine {
            slot: u32::MAX,
            len: 12
        }))
    );
    assert_eq!(o(b"4294967296"), Err(LineError::Overflow));
    assert_eq!(o(b"00000000000"), Err(LineError::Overflow));
    assert_eq!(o(b"12\n"), Err(LineError::BareLf { offset: 2 }));
    assert_eq!(o(b"12\r"), Ok(None));
    assert_eq!(o(b"\r\n"), Err(LineError::Empty));
}

#[test]
fn short_run_of_the_fuzzer_finds_nothing() {
    if let Err(failure) = fuzz(0x5107_11e5, 100_000, 1) {
        panic!("{failure}");
    }
}

/// The long run, outside CI: `FUZZ_CASES` inputs (default 100,000,000), `FUZZ_SEED` (default
/// 1); the reader runs on one input in 16.
#[test]
#[ignore = "long run: FUZZ_CASES=100000000 cargo test --release -p callosum-client --test fuzz_slot_line -- --ignored"]
fn long_run_of_the_fuzzer_finds_nothing() {
    let env = |name, default| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    };
    let (cases, seed) = (env("FUZZ_CASES", 100_000_000), env("FUZZ_SEED", 1));
    let started = Instant::now();
    let result = fuzz(seed, cases, 16);
    println!(
        "fuzz_slot_line: {cases} inputs (seed {seed}) in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        match &result {
            Ok(()) => "0 failures".to_owned(),
            Err(e) => format!("failure: {e}"),
        }
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
