//! The Callosum handshake: the slot line a server writes on every new connection.
//!
//! - [`line`](mod@line): the grammar, as a parser without I/O shared by the client and the load
//!   generator.
//! - [`reader`]: reads the line off an async stream under a deadline.
//! - [`prefixed`]: the stream handed back, which yields the bytes read past the line first.

pub mod line;
pub mod prefixed;
pub mod reader;

pub use line::{LineError, MAX_LINE_LEN, SlotLine, parse_slot_line};
pub use prefixed::Prefixed;
pub use reader::{DEFAULT_HANDSHAKE_TIMEOUT, Handshake, HandshakeError, read_handshake};
