//! `LeaseService` (feature `tower`) against `callosum-server`: with its `Echo` handler and
//! a line codec, concurrent callers each get their own response and every connection goes
//! back to the pool; a server that closes mid-response, and a response the codec refuses,
//! cost the caller an error and the pool that connection.

mod support;

use std::collections::HashSet;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use callosum_client::{LeaseService, RovingClient, ServiceError};
use callosum_server::{Connection, Echo, handler_fn};
use tokio_util::codec::{LinesCodec, LinesCodecError};
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
        matches!(error, ServiceError::Closed { received: 3 }),
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
            ServiceError::Codec(LinesCodecError::MaxLineLengthExceeded)
        ),
        "{error:?}"
    );
    assert!(client.pool().is_empty(), "the connection was discarded");
}
