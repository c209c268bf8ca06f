//! A [`tower::Service`](tower_service::Service) on leases (feature `tower`): each call
//! leases a pooled connection, writes the request and reads one response with a
//! [`tokio_util::codec`] codec, and gives the connection back.
//!
//! Request–response protocols over Callosum connections are the common case, and getting
//! the lease's life right is where hand-written code goes wrong: a connection whose
//! exchange did not end cleanly (an I/O error, a malformed frame, the server closing before
//! the whole response, no response within the response timeout, or the caller dropping the
//! call's future half-way, as a `tower` timeout or a `select!` does) holds an unknown
//! amount of unread or unwritten bytes and must never be leased again. So the lease lives
//! in a guard that discards the connection (closed, leaving the pool) when it is dropped,
//! and only a clean exchange, exactly one whole response read, disarms it and gives the
//! connection back. Each call decodes with a fresh clone of the codec, as each exchange
//! starts on a clean stream. `poll_ready` is always ready: the wait for a connection is the
//! acquire timeout, inside the call.
//!
//! Bytes past the response make the connection out of step too: the response is returned
//! but the connection is discarded. The check sees the bytes read with the response and
//! those already waiting in the socket when the response is decoded
//! ([`Liveness::has_unread`], a peek that consumes nothing); bytes that arrive after the
//! call returned cannot be seen. If the server then closes, the pool's liveness check at
//! the next lease drops the connection; if it stays open, the next caller reads the
//! stray bytes, so a server must answer each request with exactly one response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::pool::{AcquireError, Lease, Liveness};
use crate::rover::{Connector, ServerId, TcpConnector};
use crate::roving::RovingClient;

/// Default of [`LeaseService::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed. The connection, if one was leased, was discarded; the variants that
/// had one name its server and slot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError<E> {
    /// No connection within the acquire timeout.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// The codec refused the request; nothing was sent and no connection was leased.
    #[error("encoding the request")]
    Encode(#[source] E),
    /// The codec refused the response bytes.
    #[error("decoding the response of {server} (slot {slot})")]
    Decode {
        /// The server of the discarded connection.
        server: ServerId,
        /// Its slot.
        slot: u32,
        /// What the codec said.
        #[source]
        error: E,
    },
    /// Writing the request or reading the response failed.
    #[error("I/O with {server} (slot {slot})")]
    Io {
        /// The server of the discarded connection.
        server: ServerId,
        /// Its slot.
        slot: u32,
        /// What failed.
        #[source]
        error: io::Error,
    },
    /// The server closed the connection before the whole response.
    #[error("{server} (slot {slot}) closed the connection after {received} bytes of the response")]
    Closed {
        /// The server of the discarded connection.
        server: ServerId,
        /// Its slot.
        slot: u32,
        /// Bytes of the response received.
        received: usize,
    },
    /// No whole response within the response timeout.
    #[error("no response from {server} (slot {slot}) within {timeout:?}")]
    Timeout {
        /// The server of the discarded connection.
        server: ServerId,
        /// Its slot.
        slot: u32,
        /// The timeout that expired.
        timeout: Duration,
    },
}

/// A `tower::Service` that leases a connection of `client` per call and frames requests
/// and responses with `codec`. Cheap to clone (the client is shared).
pub struct LeaseService<C, K: Connector = TcpConnector>
where
    K::Stream: Liveness,
{
    client: Arc<RovingClient<K>>,
    codec: C,
    response_timeout: Duration,
}

impl<C, K: Connector> LeaseService<C, K>
where
    K::Stream: Liveness,
{
    /// A service over `client`'s pool, framing with `codec` (cloned for each call).
    pub fn new(client: Arc<RovingClient<K>>, codec: C) -> Self {
        Self {
            client,
            codec,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// How long a call may take from writing the request to reading the whole response,
    /// once it has a connection (the wait for one is the client's acquire timeout). On
    /// expiry the call fails with [`ServiceError::Timeout`] and the connection is
    /// discarded. Default: 30 s.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The client whose connections the service leases.
    pub fn client(&self) -> &Arc<RovingClient<K>> {
        &self.client
    }
}

impl<C: Clone, K: Connector> Clone for LeaseService<C, K>
where
    K::Stream: Liveness,
{
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            codec: self.codec.clone(),
            response_timeout: self.response_timeout,
        }
    }
}

impl<C: std::fmt::Debug, K: Connector> std::fmt::Debug for LeaseService<C, K>
where
    K::Stream: Liveness,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseService")
            .field("client", &self.client)
            .field("codec", &self.codec)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl<Req, C, E, K> tower_service::Service<Req> for LeaseService<C, K>
where
    Req: Send + 'static,
    C: Decoder<Error = E> + Encoder<Req, Error = E> + Clone + Send + 'static,
    C::Item: Send + 'static,
    E: Send + 'static,
    K: Connector,
    K::Stream: Liveness,
{
    type Response = C::Item;
    type Error = ServiceError<E>;
    type Future = Pin<Box<dyn Future<Output = Result<C::Item, ServiceError<E>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let client = self.client.clone();
        let mut codec = self.codec.clone();
        let timeout = self.response_timeout;
        Box::pin(async move {
            let mut request_bytes = BytesMut::new();
            codec
                .encode(request, &mut request_bytes)
                .map_err(ServiceError::Encode)?;
            let mut lease = Exchanging(Some(client.acquire().await?));
            let conn = lease.conn();
            let (server, slot) = (conn.server().clone(), conn.slot());
            let exchanged =
                tokio::time::timeout(timeout, exchange(conn, &mut codec, &request_bytes));
            match exchanged.await {
                Ok(Ok(Exchange::Clean(response))) if !lease.conn().has_unread() => {
                    lease.give_back();
                    Ok(response)
                }
                // From here on, dropping `lease` discards the connection.
                Ok(Ok(Exchange::Clean(response))) => {
                    tracing::debug!(%server, slot, "bytes waiting past the response; discarding the connection");
                    Ok(response)
                }
                Ok(Ok(Exchange::Trailing(response, extra))) => {
                    tracing::debug!(%server, slot, extra, "bytes past the response; discarding the connection");
                    Ok(response)
                }
                Ok(Err(failed)) => Err(match failed {
                    Failed::Decode(error) => ServiceError::Decode {
                        server,
                        slot,
                        error,
                    },
                    Failed::Io(error) => ServiceError::Io {
                        server,
                        slot,
                        error,
                    },
                    Failed::Closed(received) => ServiceError::Closed {
                        server,
                        slot,
                        received,
                    },
                }),
                Err(_elapsed) => Err(ServiceError::Timeout {
                    server,
                    slot,
                    timeout,
                }),
            }
        })
    }
}

/// A lease during an exchange: discarded when dropped (an error, a timeout, or the call's
/// future dropped half-way), given back to the pool only by [`give_back`](Self::give_back)
/// after a clean exchange.
struct Exchanging<C: Liveness>(Option<Lease<C>>);

impl<C: Liveness> Exchanging<C> {
    fn conn(&mut self) -> &mut C {
        match &mut self.0 {
            Some(lease) => lease,
            None => unreachable!("the lease is held until the guard ends"),
        }
    }

    /// The exchange ended cleanly: the connection goes back to the pool.
    fn give_back(mut self) {
        drop(self.0.take());
    }
}

impl<C: Liveness> Drop for Exchanging<C> {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take() {
            lease.discard();
        }
    }
}

/// How an exchange failed, before the connection's name is attached.
enum Failed<E> {
    Decode(E),
    Io(io::Error),
    Closed(usize),
}

impl<E> From<io::Error> for Failed<E> {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// How an exchange ended.
enum Exchange<T> {
    /// One whole response and nothing more read: the connection can be reused unless
    /// bytes are waiting in the socket.
    Clean(T),
    /// A response followed by this many more bytes: the connection is out of step.
    Trailing(T, usize),
}

/// Writes `request` (already encoded) and reads one response.
async fn exchange<S, C>(
    stream: &mut S,
    codec: &mut C,
    request: &[u8],
) -> Result<Exchange<C::Item>, Failed<C::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Decoder,
{
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(response) = codec.decode(&mut buf).map_err(Failed::Decode)? {
            return Ok(match buf.len() {
                0 => Exchange::Clean(response),
                extra => Exchange::Trailing(response, extra),
            });
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Failed::Closed(buf.len()));
        }
    }
}
