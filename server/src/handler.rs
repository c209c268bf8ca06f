//! What a server does with a connection once it has its slot: the [`Handler`] trait, and the
//! two handlers the binary offers, [`Hold`] and [`Echo`].
//!
//! A handler is cloned into every shard and called on the shard's own thread for each of its
//! connections, so it need not be `Sync` and its futures need not be `Send`. It borrows the
//! [`Connection`]: the server keeps ownership, so that whatever way the handler ends
//! (returns, panics, is aborted) the server can shut the socket down before it frees the slot.

use std::future::Future;

use crate::connection::Connection;
use crate::discard::discard_until_closed;

/// Serves one connection after its slot line was sent; the connection is closed and its slot
/// freed when the returned future completes.
pub trait Handler: Clone + Send + 'static {
    /// Serves `conn` until the application is done with it.
    fn handle(&self, conn: &mut Connection) -> impl Future<Output = ()>;

    /// Whether this handler only holds each connection open, discarding its input, until the
    /// peer closes it, as [`Hold`] does. The server then keeps those connections in a compact
    /// table of its own (tens of bytes each instead of a future of hundreds) and does not
    /// call [`handle`](Self::handle). Default: `false`.
    fn holds_only(&self) -> bool {
        false
    }
}

/// Keeps each connection open, discarding its input, until the peer closes it: the plain
/// Callosum server. Idle connections share one read buffer per shard (see [`DiscardBuf`](crate::DiscardBuf)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hold;

impl Handler for Hold {
    /// What the server's table of held connections does, as a future: called only where a
    /// slot line had to be finished by a write first.
    async fn handle(&self, conn: &mut Connection) {
        let _ = discard_until_closed(conn).await;
        // Every read above was awaited to its completion: none is in flight.
        conn.settle_io();
    }

    fn holds_only(&self) -> bool {
        true
    }
}

/// Writes back whatever it reads until the peer closes: an example service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn handle(&self, conn: &mut Connection) {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let (read, b) = conn.stream().read(buf).await;
            buf = b;
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let (written, b) = conn.stream().write_all(buf).await;
            buf = b;
            if written.is_err() {
                return;
            }
            buf.clear();
        }
    }
}

/// A handler from an async closure: `handler_fn(async |conn: &mut Connection| { … })`.
pub fn handler_fn<F>(f: F) -> FnHandler<F>
where
    F: AsyncFn(&mut Connection) + Clone + Send + 'static,
{
    FnHandler(f)
}

/// The handler made by [`handler_fn`].
#[derive(Clone)]
pub struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: AsyncFn(&mut Connection) + Clone + Send + 'static,
{
    async fn handle(&self, conn: &mut Connection) {
        (self.0)(conn).await
    }
}
