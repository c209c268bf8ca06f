//! The Callosum handshake: the slot line a server writes on every new connection.
//!
//! - [`line`]: the grammar, as a parser without I/O shared by the client and the load
//!   generator.

pub mod line;

pub use line::{LineError, MAX_LINE_LEN, SlotLine, parse_slot_line};
