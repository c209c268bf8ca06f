//! `LeaseService`, the `tower::Service` on leases (feature `tower`): requests and responses
//! framed as lines (`LinesCodec`), each call on a pooled connection leased for the call.
//! Runs against an in-process `callosum-server` with its `Echo` handler on 127.0.0.1 (an
//! ephemeral port), makes a few concurrent calls, prints the answers, then exits.
//!
//! ```sh
//! cargo run -p callosum-client --features tower --example lease_service
//! ```
//!
//! The service is `Clone` (the client is shared), so it fits tower's layers (timeouts,
//! retries, concurrency limits) like any other.

use std::error::Error;
use std::future::poll_fn;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use callosum_client::{LeaseService, RovingClient};
use callosum_server::{Echo, Server};
use tokio_util::codec::LinesCodec;
use tower_service::Service;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // One shard is plenty for an example.
    let server = Server::builder()
        .host(Ipv4Addr::LOCALHOST.into())
        .shards(1)
        .port(0)
        .start_with(Echo)?;
    println!("callosum-server (echo) on {}", server.local_addr());

    let client = RovingClient::builder()
        .server(server.local_addr().to_string())
        .max_slots(4)
        .roving_interval(Duration::from_millis(20))
        .build()?;
    let service = LeaseService::new(Arc::new(client), LinesCodec::new());

    let calls: Vec<_> = (0..4)
        .map(|caller| {
            let mut service = service.clone();
            tokio::spawn(async move {
                poll_fn(|cx| Service::<String>::poll_ready(&mut service, cx)).await?;
                service.call(format!("hello from caller {caller}")).await
            })
        })
        .collect();
    for call in calls {
        println!("answer: {:?}", call.await??);
    }
    let client = service.client();
    println!(
        "held slots {:?}, idle {}",
        client.pool().held_slots(),
        client.pool().idle_len()
    );
    drop(service);
    server.shutdown(Duration::from_secs(1))?;
    Ok(())
}
