//! `LeaseService` (feature `tower`) against `callosum-server`: with its `Echo` handler and
//! a line codec, concurrent callers each get their own response and every connection goes
//! back to the pool; a server that closes mid-response, a response the codec refuses, no
//! response within the response timeout, a call dropped half-way and bytes past the
//! response all cost the pool that connection.

mod support;

use std::collections::HashSet;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use callosum_client::{LeaseService, RovingClient, ServiceError};
use callosum_server::{Connection, Echo, handler_fn};
use tokio::sync::Notify;
use tokio_util::codec::{Decoder, Encoder, LinesCodec, LinesCodecError};
use tower_service::Service;

/// `poll_ready`, then `call`: what `tower::ServiceExt::oneshot` does.
async fn call<S: Service<String>>(
    service: &mut S,
    request: String,
) -> Result<S::Response, S::Error> {
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// A client over one server, once it holds `max_slots` connections.
async fn client_of(
    addr: std::net::SocketAddr,
    max_slots: usize,
    interval: Duration,
) -> Arc<RovingClient> {
    let client = RovingClient::builder()
        .server(addr.to_string())
        .max_slots(max_slots)
        .roving_interval(interval)
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    support::until("a full pool", || client.pool().len() == max_slots).await;
    Arc::new(client)
}

/// The local ports of the pool's connections (each leased and given back).
fn held_ports(client: &RovingClient) -> HashSet<u16> {
    let mut leases: Vec<_> = std::iter::from_fn(|| client.try_acquire()).collect();
    leases
        .iter_mut()
        .filter_map(|lease| lease.stream().get_ref().local_addr().ok())
        .map(|addr| addr.port())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_get_their_own_responses_and_the_connections_go_back() {
    let (addr, _server) = support::start_server_with(Echo);
    // Later connections get higher slots and are refused: the pool keeps these four.
    let client = client_of(addr, 4, Duration::from_millis(5)).await;
    let before = held_ports(&client);
    assert_eq!(before.len(), 4);
    let service = LeaseService::new(client.clone(), LinesCodec::new());
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let mut service = service.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let request = format!("caller {caller} request {n}");
                    let response = call(&mut service, request.clone())
                        .await
                        .expect("a response");
                    assert_eq!(response, request);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    assert_eq!(client.pool().idle_len(), 4, "every connection given back");
    assert_eq!(held_ports(&client), before, "and none replaced");
}

#[tokio::test]
async fn a_server_closing_mid_response_costs_an_error_and_the_connection() {
    let (addr, _server) = support::start_server_with(handler_fn(async |conn: &mut Connection| {
        let (read, _) = conn.stream().read(vec![0u8; 64]).await;
        if read.is_ok() {
            let _ = conn.stream().write_all(b"hal".to_vec()).await;
        }
    }));
    let client = client_of(addr, 1, Duration::from_secs(3600)).await;
    let mut service = LeaseService::new(client.clone(), LinesCodec::new());
    let error = call(&mut service, "hello".to_owned())
        .await
        .expect_err("half a response");
    assert!(
        matches!(
            error,
            ServiceError::Closed {
                received: 3,
                slot: 0,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(client.pool().is_empty(), "the connection was discarded");
}

#[tokio::test]
async fn a_response_the_codec_refuses_costs_an_error_and_the_connection() {
    let (addr, _server) = support::start_server_with(Echo);
    let client = client_of(addr, 1, Duration::from_secs(3600)).await;
    let mut service = LeaseService::new(client.clone(), LinesCodec::new_with_max_length(8));
    let error = call(&mut service, "longer than eight bytes".to_owned())
        .await
        .expect_err("the echo is too long");
    assert!(
        matches!(
            error,
            ServiceError::Decode {
                error: LinesCodecError::MaxLineLengthExceeded,
                slot: 0,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(client.pool().is_empty(), "the connection was discarded");
}

/// The next request's bytes (read into `buf`), or `None` once the client closed.
async fn next_request(conn: &mut Connection, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    buf.clear();
    let (read, buf) = conn.stream().read(buf).await;
    matches!(read, Ok(n) if n > 0).then_some(buf)
}

#[tokio::test]
async fn no_response_within_the_response_timeout_costs_an_error_and_the_connection() {
    let (addr, _server) = support::start_server_with(handler_fn(async |conn: &mut Connection| {
        support::read_until_closed(conn).await;
    }));
    let client = client_of(addr, 1, Duration::from_secs(3600)).await;
    let mut service = LeaseService::new(client.clone(), LinesCodec::new())
        .response_timeout(Duration::from_millis(20));
    let error = call(&mut service, "hello".to_owned())
        .await
        .expect_err("the server never answers");
    assert!(
        matches!(
            error,
            ServiceError::Timeout { timeout, slot: 0, .. } if timeout == Duration::from_millis(20)
        ),
        "{error:?}"
    );
    assert!(client.pool().is_empty(), "the connection was discarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_response_never_lends_its_connection_again() {
    // The first request on the first connection is answered only once the test says so,
    // after it dropped the call: that late answer must reach no later caller.
    let request_seen = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (seen, released) = (request_seen.clone(), release.clone());
    let (addr, _server) =
        support::start_server_with(handler_fn(async move |conn: &mut Connection| {
            let mut buf = Vec::with_capacity(256);
            while let Some(request) = next_request(conn, buf).await {
                if request.starts_with(b"slow") {
                    seen.notify_one();
                    released.notified().await;
                }
                let (written, request) = conn.stream().write_all(request).await;
                if written.is_err() {
                    return;
                }
                buf = request;
            }
        }));
    let client = client_of(addr, 1, Duration::from_millis(5)).await;
    let mut service = LeaseService::new(client.clone(), LinesCodec::new());
    tokio::select! {
        answered = call(&mut service, "slow".to_owned()) => {
            panic!("answered before the server was released: {answered:?}")
        }
        () = request_seen.notified() => {}
    }
    // The call is dropped; its connection now receives the late answer.
    release.notify_one();
    let response = tokio::time::timeout(support::BOUND, call(&mut service, "fast".to_owned()))
        .await
        .expect("a response within the bound")
        .expect("a response");
    assert_eq!(
        response, "fast",
        "a fresh connection, not the dropped call's"
    );
}

/// A line codec that, on decoding a response, tells the server and waits until the server
/// wrote one more byte: the byte then arrives after the response was read, not with it.
#[derive(Clone)]
struct WaitForExtra {
    lines: LinesCodec,
    decoded: Arc<Notify>,
    extra_written: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Decoder for WaitForExtra {
    type Item = String;
    type Error = LinesCodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LinesCodecError> {
        let line = self.lines.decode(buf)?;
        if line.is_some() {
            self.decoded.notify_one();
            let waited = self
                .extra_written
                .lock()
                .expect("lock")
                .recv_timeout(support::BOUND);
            assert!(waited.is_ok(), "the server wrote the extra byte");
        }
        Ok(line)
    }
}

impl Encoder<String> for WaitForExtra {
    type Error = LinesCodecError;

    fn encode(&mut self, line: String, buf: &mut BytesMut) -> Result<(), LinesCodecError> {
        self.lines.encode(line, buf)
    }
}

/// Waits (bounded) until the peer acknowledged every byte written on the socket `fd`.
fn acknowledged(fd: RawFd) -> bool {
    let started = Instant::now();
    while started.elapsed() < support::BOUND {
        let mut unacknowledged: libc::c_int = 0;
        // SAFETY: `fd` is the open socket of the connection being served, and the ioctl
        // writes one int through a pointer to a live one.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacknowledged) };
        match (rc, unacknowledged) {
            (0, 0) => return true,
            (0, _) => std::thread::yield_now(),
            _ => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_arriving_after_the_response_was_read_costs_the_connection() {
    let decoded = Arc::new(Notify::new());
    let (written_tx, written_rx) = mpsc::channel();
    let server_decoded = decoded.clone();
    let (addr, _server) =
        support::start_server_with(handler_fn(async move |conn: &mut Connection| {
            if next_request(conn, Vec::with_capacity(64)).await.is_none() {
                return;
            }
            let (written, _) = conn.stream().write_all(b"answer\n".to_vec()).await;
            if written.is_err() {
                return;
            }
            server_decoded.notified().await;
            let (written, _) = conn.stream().write_all(b"x".to_vec()).await;
            // A completed write is not yet a delivered byte: tell the client once its
            // kernel acknowledged it.
            if written.is_ok() && acknowledged(conn.stream().as_raw_fd()) {
                let _ = written_tx.send(());
            }
            support::read_until_closed(conn).await;
        }));
    let client = client_of(addr, 1, Duration::from_secs(3600)).await;
    let codec = WaitForExtra {
        lines: LinesCodec::new(),
        decoded,
        extra_written: Arc::new(Mutex::new(written_rx)),
    };
    let mut service = LeaseService::new(client.clone(), codec);
    let response = call(&mut service, "hello".to_owned())
        .await
        .expect("the response itself is whole");
    assert_eq!(response, "answer");
    assert!(
        client.pool().is_empty(),
        "the connection, out of step, was discarded"
    );
}
