//! Why the client could not reach its servers, kept so that an `acquire` that times out can
//! say it: the last failed connect, broken handshake or failed discovery.
//!
//! A timeout alone ("no idle connection within 2s") hides the cause when every server is
//! down; the roving client records each failure as it happens (cleared by the next
//! successful connect) and puts the last one in [`AcquireError::Unavailable`]. The errors
//! are shared (`Arc`) so the failure is cheap to clone into every waiting caller's error.
//!
//! [`AcquireError::Unavailable`]: crate::AcquireError::Unavailable

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::discovery::DiscoveryError;
use crate::handshake::HandshakeError;
use crate::rover::ServerId;

/// One failure to reach a server.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The connect failed (refused, timed out, name not resolved).
    #[error("connect {}: {error}", target(server, addr))]
    Connect {
        /// The server's id.
        server: ServerId,
        /// The address tried, if known.
        addr: Option<SocketAddr>,
        /// Why.
        error: Arc<io::Error>,
    },
    /// The server did not send a valid slot line.
    #[error("handshake with {}: {error}", target(server, addr))]
    Protocol {
        /// The server's id.
        server: ServerId,
        /// The address connected to, if known.
        addr: Option<SocketAddr>,
        /// What was wrong.
        error: Arc<HandshakeError>,
    },
    /// Discovery could not say which servers there are.
    #[error("discovery: {0}")]
    Discovery(Arc<DiscoveryError>),
}

/// The address when known (it says which instance), else the id.
fn target(server: &ServerId, addr: &Option<SocketAddr>) -> String {
    addr.map_or_else(|| server.to_string(), |a| a.to_string())
}
