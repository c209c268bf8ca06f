//! The slot line parser, without I/O: feed it the bytes received so far, it says "need more",
//! "here is the slot and where the application's bytes start", or exactly what is wrong.
//!
//! Kept free of I/O so the async reader, the load generator's hot path and the fuzz/property
//! tests all run the same grammar. Grammar (see the README): `1*10DIGIT CR LF`, the value
//! fits in a `u32`; no sign, no spaces; LF alone is not a line end.

/// Longest valid slot line: 10 digits (`4294967295`) plus CRLF.
pub const MAX_LINE_LEN: usize = 12;

/// What is wrong with a slot line. Every variant names the offending bytes' position or kind,
/// so a log line says what the server actually sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line ended (CRLF) before any digit.
    #[error("empty slot line")]
    Empty,
    /// A byte that is not a digit, CR or LF, at this offset.
    #[error("unexpected byte {byte:#04x} at offset {offset} of the slot line")]
    InvalidByte {
        /// The byte received.
        byte: u8,
        /// Its offset from the start of the line.
        offset: usize,
    },
    /// More than 10 digits, or a value over `u32::MAX`.
    #[error("slot value out of range (more than 10 digits or over 4294967295)")]
    Overflow,
    /// An LF with no CR before it.
    #[error("bare LF without CR at offset {offset} of the slot line")]
    BareLf {
        /// Offset of the LF.
        offset: usize,
    },
    /// A CR followed by something other than LF.
    #[error("CR not followed by LF at offset {offset} of the slot line")]
    CrWithoutLf {
        /// Offset of the CR.
        offset: usize,
    },
}

/// A complete slot line found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLine {
    /// The slot number the server assigned.
    pub slot: u32,
    /// Bytes the line took, CRLF included: application data starts at this offset.
    pub len: usize,
}

/// Parses the slot line at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid prefix of a slot line, read more. `Ok(Some(line))`: the
/// line is complete and `buf[line.len..]` belongs to the application. `Err`: `buf` can never
/// become a valid slot line. Never panics, whatever the bytes.
pub fn parse_slot_line(buf: &[u8]) -> Result<Option<SlotLine>, LineError> {
    let mut value: u64 = 0;
    for (offset, &byte) in buf.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                if offset >= 10 {
                    return Err(LineError::Overflow);
                }
                value = value * 10 + u64::from(byte - b'0');
                // Ten digits over u32::MAX can never become a line: say so now rather than
                // wait for a CR that changes nothing.
                if value > u64::from(u32::MAX) {
                    return Err(LineError::Overflow);
                }
            }
            b'\r' => {
                if offset == 0 {
                    // "\r\n" alone is an empty line; "\r" then anything else is malformed.
                    return match buf.get(1) {
                        None => Ok(None),
                        Some(b'\n') => Err(LineError::Empty),
                        Some(_) => Err(LineError::CrWithoutLf { offset }),
                    };
                }
                // At most u32::MAX: checked at every digit.
                let slot = u32::try_from(value).map_err(|_| LineError::Overflow)?;
                return match buf.get(offset + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(SlotLine {
                        slot,
                        len: offset + 2,
                    })),
                    Some(_) => Err(LineError::CrWithoutLf { offset }),
                };
            }
            b'\n' => return Err(LineError::BareLf { offset }),
            _ => return Err(LineError::InvalidByte { byte, offset }),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> Result<Option<SlotLine>, LineError> {
        parse_slot_line(s.as_bytes())
    }

    #[test]
    fn complete_lines_give_the_slot_and_length() {
        assert_eq!(parse("0\r\n"), Ok(Some(SlotLine { slot: 0, len: 3 })));
        assert_eq!(parse("13\r\n"), Ok(Some(SlotLine { slot: 13, len: 4 })));
        assert_eq!(
            parse("4294967295\r\nHELLO"),
            Ok(Some(SlotLine {
                slot: u32::MAX,
                len: 12
            }))
        );
        assert_eq!(parse("007\r\n"), Ok(Some(SlotLine { slot: 7, len: 5 })));
    }

    #[test]
    fn prefixes_ask_for_more() {
        for prefix in ["", "1", "17", "17\r", "4294967295", "4294967295\r", "\r"] {
            assert_eq!(parse(prefix), Ok(None), "{prefix:?}");
        }
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        assert_eq!(parse("\r\n"), Err(LineError::Empty));
        assert_eq!(
            parse("foo\r\n"),
            Err(LineError::InvalidByte {
                byte: b'f',
                offset: 0
            })
        );
        assert_eq!(
            parse("-1\r\n"),
            Err(LineError::InvalidByte {
                byte: b'-',
                offset: 0
            })
        );
        assert_eq!(
            parse("+1\r\n"),
            Err(LineError::InvalidByte {
                byte: b'+',
                offset: 0
            })
        );
        assert_eq!(
            parse(" 1\r\n"),
            Err(LineError::InvalidByte {
                byte: b' ',
                offset: 0
            })
        );
        assert_eq!(
            parse("1 \r\n"),
            Err(LineError::InvalidByte {
                byte: b' ',
                offset: 1
            })
        );
        assert_eq!(parse("12\n"), Err(LineError::BareLf { offset: 2 }));
        assert_eq!(parse("12\rx"), Err(LineError::CrWithoutLf { offset: 2 }));
        assert_eq!(parse("\rx"), Err(LineError::CrWithoutLf { offset: 0 }));
        assert_eq!(parse("4294967296\r\n"), Err(LineError::Overflow));
        assert_eq!(parse("12345678901"), Err(LineError::Overflow));
        assert_eq!(parse("99999999999\r\n"), Err(LineError::Overflow));
    }

    #[test]
    fn a_value_over_u32_max_is_refused_before_its_line_ends() {
        assert_eq!(parse("4294967296"), Err(LineError::Overflow));
        assert_eq!(parse("9999999999x"), Err(LineError::Overflow));
        assert_eq!(parse("0004294967296"), Err(LineError::Overflow));
    }

    proptest! {
        #[test]
        fn never_panics_and_accepts_exactly_the_grammar(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
            let result = parse_slot_line(&bytes);
            // The reference grammar, written the slow and obvious way.
            let crlf = bytes.windows(2).position(|w| w == b"\r\n");
            let expected_complete = crlf.and_then(|end| {
                let digits = &bytes[..end];
                let ok = !digits.is_empty() && digits.len() <= 10 && digits.iter().all(u8::is_ascii_digit);
                ok.then(|| std::str::from_utf8(digits).ok()?.parse::<u32>().ok()).flatten()
                    .map(|slot| SlotLine { slot, len: end + 2 })
            });
            match result {
                Ok(Some(line)) => prop_assert_eq!(Some(line), expected_complete),
                Ok(None) => {
                    prop_assert!(expected_complete.is_none());
                    prop_assert!(bytes.len() <= 11, "a prefix is at most 10 digits and CR");
                }
                Err(_) => prop_assert!(expected_complete.is_none()),
            }
        }

        #[test]
        fn every_u32_round_trips(slot in any::<u32>(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut line = format!("{slot}\r\n").into_bytes();
            let len = line.len();
            line.extend_from_slice(&tail);
            prop_assert_eq!(parse_slot_line(&line), Ok(Some(SlotLine { slot, len })));
            for cut in 0..len {
                prop_assert_eq!(parse_slot_line(&line[..cut]), Ok(None));
            }
        }
    }
}
