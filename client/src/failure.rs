//! Why the client could not reach its servers, kept so that an `acquire` that times out can
//! say it: the last failed connect, broken handshake or failed discovery.
//!
//! A timeout alone ("no idle connection within 2s") hides the cause when every server is
//! down; the roving client records each failure as it happens (cleared by the next
//! successful connect) and puts the last one in [`AcquireError::Unavailable`]. The errors
//! are shared (`Arc`) so the failure is cheap to clone into every waiting caller's error.
//!
//! Failures compare equal when they are the same kind of failure of the same server with
//! the same details; I/O errors, which cannot be compared, compare by their kind, and a
//! discovery source's own error ([`DiscoveryError::Other`]) by its message. That is what a
//! test or a caller deduplicating failures needs, and it keeps [`AcquireError`] comparable.
//!
//! [`AcquireError`]: crate::AcquireError
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

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Connect {
                    server,
                    addr,
                    error,
                },
                Self::Connect {
                    server: other_server,
                    addr: other_addr,
                    error: other_error,
                },
            ) => server == other_server && addr == other_addr && error.kind() == other_error.kind(),
            (
                Self::Protocol {
                    server,
                    addr,
                    error,
                },
                Self::Protocol {
                    server: other_server,
                    addr: other_addr,
                    error: other_error,
                },
            ) => server == other_server && addr == other_addr && same_handshake(error, other_error),
            (Self::Discovery(error), Self::Discovery(other)) => same_discovery(error, other),
            _ => false,
        }
    }
}

impl Eq for Failure {}

fn same_handshake(a: &HandshakeError, b: &HandshakeError) -> bool {
    use HandshakeError::{Eof, Io, Malformed, Timeout};
    match (a, b) {
        (Malformed(a), Malformed(b)) => a == b,
        (Eof { received: a }, Eof { received: b }) => a == b,
        (
            Timeout {
                timeout: a,
                received: a_received,
            },
            Timeout {
                timeout: b,
                received: b_received,
            },
        ) => a == b && a_received == b_received,
        (Io(a), Io(b)) => a.kind() == b.kind(),
        _ => false,
    }
}

fn same_discovery(a: &DiscoveryError, b: &DiscoveryError) -> bool {
    use DiscoveryError::{Other, Resolve, Timeout};
    match (a, b) {
        (
            Resolve { name, error },
            Resolve {
                name: other_name,
                error: other_error,
            },
        ) => name == other_name && error.kind() == other_error.kind(),
        (Timeout { timeout: a }, Timeout { timeout: b }) => a == b,
        (Other(a), Other(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(port: u16) -> Failure {
        let server = ServerId::new(&format!("127.0.0.1:{port}")).expect("valid id");
        Failure::Connect {
            addr: server.as_str().parse().ok(),
            server,
            error: Arc::new(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    #[test]
    fn failures_compare_by_kind_server_and_details() {
        assert_eq!(refused(1), refused(1));
        assert_ne!(refused(1), refused(2));
        let timeout = |ms| {
            Failure::Discovery(Arc::new(DiscoveryError::Timeout {
                timeout: std::time::Duration::from_millis(ms),
            }))
        };
        assert_eq!(timeout(5), timeout(5));
        assert_ne!(timeout(5), timeout(6));
        assert_ne!(refused(1), timeout(5));
    }
}
