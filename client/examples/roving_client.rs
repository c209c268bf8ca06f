//! A roving client against local Callosum servers: keeps the lowest slots across them and
//! prints what it holds once a second, for a bounded time.
//!
//! ```sh
//! cargo run --release -p callosum-server -- --port 7000 &   # or any Callosum server,
//! cargo run --release -p callosum-server -- --port 7001 &   # e.g. node client/tests/fixtures/node-server.js --port 7000
//! cargo run -p callosum-client --example roving_client -- 127.0.0.1:7000 127.0.0.1:7001
//! ```
//!
//! Arguments: server ids (`host:port`, default `127.0.0.1:7000`). Environment:
//! `MAX_SLOTS` (default 4), `RUN_SECONDS` (how long to run, default 10), `POLICY`
//! (`improved`, the default: the improved Callosum policy, or `original`: the original rules).

use std::error::Error;
use std::time::Duration;

use callosum_client::{PoolPolicy, RovingClient};
use tokio::io::AsyncWriteExt;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a valid number").into()),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut servers: Vec<String> = std::env::args().skip(1).collect();
    if servers.is_empty() {
        servers.push("127.0.0.1:7000".to_owned());
    }
    let max_slots: usize = env_or("MAX_SLOTS", 4)?;
    let seconds: u64 = env_or("RUN_SECONDS", 10)?;
    let policy = match std::env::var("POLICY").as_deref() {
        Err(_) | Ok("improved") => PoolPolicy::improved(),
        Ok("original") => PoolPolicy::original(),
        Ok(other) => return Err(format!("POLICY={other:?}: original or improved").into()),
    };

    let client = RovingClient::builder()
        .servers(servers.iter().cloned())
        .pool_policy(policy.max_slots(max_slots))
        .roving_interval(Duration::from_millis(100))
        .acquire_timeout(Duration::from_secs(2))
        .build()?;
    println!("roving over {servers:?} with max_slots = {max_slots} for {seconds} s");

    for second in 1..=seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match client.acquire().await {
            Ok(mut lease) => {
                let (server, slot) = (lease.server().to_string(), lease.slot());
                if let Err(error) = lease.stream().write_all(b"hello\n").await {
                    println!("  write to {server} failed ({error}); discarding it");
                    lease.discard();
                } else {
                    println!("  leased slot {slot} on {server}, wrote, returned it");
                }
            }
            Err(error) => println!("  no connection: {error}"),
        }
        println!(
            "{second:>3} s: held slots {:?}, {:?}",
            client.pool().held_slots(),
            client.counters()
        );
    }
    Ok(())
}
