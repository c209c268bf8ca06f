//! A [`tower::Service`](tower_service::Service) on leases (feature `tower`): each call
//! leases a pooled connection, writes the request and reads one response with a
//! [`tokio_util::codec`] codec, and gives the connection back.
//!
//! Request–response protocols over Callosum connections are the common case, and getting
//! the lease's life right is where hand-written code goes wrong: a connection whose
//! exchange failed half-way (an I/O error, a malformed frame, the server closing before the
//! whole response) holds an unknown amount of unread or unwritten bytes and must never be
//! leased again. So the connection goes back to the pool only when exactly one whole
//! response was read; on any error it is discarded (closed, leaving the pool), and if the
//! server sent bytes past the response the response is returned but the connection is
//! discarded all the same. Each call decodes with a fresh clone of the codec, as each
//! exchange starts on a clean stream. `poll_ready` is always ready: the wait for a
//! connection is the acquire timeout, inside the call.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::pool::{AcquireError, Liveness};
use crate::rover::{Connector, TcpConnector};
use crate::roving::RovingClient;

/// Why a call failed. The connection, if one was leased, was discarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError<E> {
    /// No connection within the acquire timeout.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// The codec refused the request or the response bytes.
    #[error("framing: {0}")]
    Codec(E),
    /// Writing the request or reading the response failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the whole response.
    #[error("connection closed after {received} bytes of the response")]
    Closed {
        /// Bytes of the response received.
        received: usize,
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
}

impl<C, K: Connector> LeaseService<C, K>
where
    K::Stream: Liveness,
{
    /// A service over `client`'s pool, framing with `codec` (cloned for each call).
    pub fn new(client: Arc<RovingClient<K>>, codec: C) -> Self {
        Self { client, codec }
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
        Box::pin(async move {
            let mut lease = client.acquire().await?;
            match exchange(&mut *lease, &mut codec, request).await {
                Ok(Exchange::Clean(response)) => Ok(response),
                Ok(Exchange::Trailing(response, extra)) => {
                    tracing::debug!(extra, "bytes past the response; discarding the connection");
                    lease.discard();
                    Ok(response)
                }
                Err(error) => {
                    lease.discard();
                    Err(error)
                }
            }
        })
    }
}

/// How an exchange ended.
enum Exchange<T> {
    /// One whole response and nothing more: the connection can be reused.
    Clean(T),
    /// A response followed by this many more bytes: the connection is out of step.
    Trailing(T, usize),
}

/// Writes `request` and reads one response.
async fn exchange<S, C, Req, E>(
    stream: &mut S,
    codec: &mut C,
    request: Req,
) -> Result<Exchange<C::Item>, ServiceError<E>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Decoder<Error = E> + Encoder<Req, Error = E>,
{
    let mut buf = BytesMut::new();
    codec
        .encode(request, &mut buf)
        .map_err(ServiceError::Codec)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    buf.clear();
    loop {
        if let Some(response) = codec.decode(&mut buf).map_err(ServiceError::Codec)? {
            return Ok(match buf.len() {
                0 => Exchange::Clean(response),
                extra => Exchange::Trailing(response, extra),
            });
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ServiceError::Closed {
                received: buf.len(),
            });
        }
    }
}
