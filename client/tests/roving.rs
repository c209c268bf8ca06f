//! The roving client end to end on loopback: two lowest-first servers and a client with
//! `max_slots = 4` converge to holding the lowest slots on both; connections the server
//! closes while idle are never handed out; under the improved policy, connections are
//! replaced by age and the client keeps serving.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use callosum_client::rover::Backoff;
use callosum_client::{AcquireError, Connection, Failure, Lease, PoolPolicy, RovingClient};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn two_servers_and_four_slots_converge_to_the_low_slots_on_both() {
    let (a, _server_a) = support::start_server();
    let (b, _server_b) = support::start_server();
    let client =
        support::two_on_each(RovingClient::builder().servers([a.to_string(), b.to_string()])).await;
    // Two on each server: lease all four and look.
    let leases = lease_all(&client);
    let mut held: Vec<(String, u32)> = leases
        .iter()
        .map(|l| (l.server().to_string(), l.slot()))
        .collect();
    held.sort();
    let mut expected = vec![
        (a.to_string(), 0),
        (a.to_string(), 1),
        (b.to_string(), 0),
        (b.to_string(), 1),
    ];
    expected.sort();
    assert_eq!(held, expected);
    for mut lease in leases {
        lease.stream().write_all(b"hello").await.expect("usable");
    }
    let counters = client.counters();
    assert!(counters.kept >= 4, "{counters:?}");
    assert_eq!(counters.kept - counters.evicted, 4, "{counters:?}");
}

#[tokio::test]
async fn acquire_returns_the_lowest_slot_lease() {
    let (a, _server) = support::start_server();
    // The original rules lease the lowest slot (the improved policy spreads a pool this small
    // over its places at random), and a full pool has both slots to choose from: on a busy
    // machine both handshakes may complete before the first acquire looks.
    let client = RovingClient::builder()
        .server(a.to_string())
        .pool_policy(PoolPolicy::original().max_slots(2))
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    support::until("slots [0, 1]", || client.pool().held_slots() == [0, 1]).await;
    let first = client.acquire().await.expect("a connection");
    assert_eq!(first.slot(), 0);
    let counters = client.counters();
    assert_eq!((counters.unreachable, counters.protocol_errors), (0, 0));
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_never_handed_out() {
    let (addr, _server) = support::start_replying(b"0\r\n", true).await;
    let client = RovingClient::builder()
        .server(addr.to_string())
        .max_slots(1)
        .roving_interval(Duration::from_secs(3600))
        .build()
        .expect("valid settings");
    support::until("the connection kept", || client.counters().kept == 1).await;
    // The server closed it at once; once the FIN is in, it is dropped, not leased.
    support::until("the closed connection dropped", || {
        client.try_acquire().is_none() && client.pool().is_empty()
    })
    .await;
}

#[tokio::test]
async fn unreachable_and_protocol_errors_are_counted() {
    let refusing = support::refusing_addr();
    let (garbage, _server) = support::start_replying(b"foo\r\n", false).await;
    let client = RovingClient::builder()
        .servers([refusing.to_string(), garbage.to_string()])
        .roving_interval(Duration::from_millis(5))
        .backoff(Some(Backoff::default().initial(Duration::from_millis(1))))
        .build()
        .expect("valid settings");
    support::until("both kinds counted", || {
        let c = client.counters();
        c.unreachable > 0 && c.protocol_errors > 0
    })
    .await;
    assert!(client.pool().is_empty());
    assert!(RovingClient::builder().max_slots(0).build().is_err());
}

#[tokio::test]
async fn the_builder_configures_the_servers_and_the_pool() {
    let (a, b) = (support::refusing_addr(), support::refusing_addr());
    let client = RovingClient::builder()
        .servers([a.to_string(), b.to_string()])
        .max_slots(5000)
        .build()
        .expect("valid settings");
    let mut expected = vec![a.to_string(), b.to_string()];
    expected.sort();
    let got: Vec<String> = client.servers().iter().map(ToString::to_string).collect();
    assert_eq!(got, expected);
    assert_eq!(client.pool().max_slots(), 5000);
    // The improved policy by default, its maximum age settled at one roving interval
    // (1 s) per place, and spread pools' at 10 intervals, without that floor.
    assert_eq!(
        client.pool().policy(),
        &PoolPolicy::improved()
            .max_slots(5000)
            .max_age(Some(Duration::from_secs(5000)))
            .rotate_spread_pools(Some(Duration::from_secs(10)))
    );
    assert!(client.drop_server(&a.to_string()));
    assert_eq!(client.servers().len(), 1);
    assert!(RovingClient::builder().server("no-port").build().is_err());
}

/// Leases every idle connection the client holds now.
fn lease_all(client: &RovingClient) -> Vec<Lease<Connection>> {
    std::iter::from_fn(|| client.try_acquire()).collect()
}

/// The local ports of the connections the client holds idle now (leased and given back).
fn held_ports(client: &RovingClient) -> HashSet<u16> {
    lease_all(client)
        .iter_mut()
        .filter_map(|l| l.stream().get_ref().local_addr().ok())
        .map(|addr| addr.port())
        .collect()
}

#[tokio::test]
async fn the_improved_policy_replaces_connections_by_age_and_keeps_serving() {
    let (a, server_a) = support::start_server();
    let (b, server_b) = support::start_server();
    let interval = Duration::from_millis(5);
    // Five places: a pool of four or fewer keeps slots on expiry, and over two servers
    // with one client its newcomers never beat the slots it holds. Maximum age: 10
    // intervals = 50 ms (at least 5 intervals): lifetimes 25–75 ms.
    let client = RovingClient::builder()
        .servers([a.to_string(), b.to_string()])
        .pool_policy(PoolPolicy::improved().max_slots(5))
        .roving_interval(interval)
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    let settled = client.pool().policy().get_max_age();
    assert_eq!(settled, Some(Duration::from_millis(50)));
    support::until("a full pool", || client.pool().len() == 5).await;
    let first = held_ports(&client);
    assert!(!first.is_empty());
    support::until("every first connection replaced", || {
        held_ports(&client).is_disjoint(&first)
    })
    .await;
    let counters = client.counters();
    assert!(counters.retired > 0, "{counters:?}");
    assert_eq!(counters.protocol_errors, 0, "{counters:?}");
    // Still serving, never above max_slots, and the servers get the retired slots back.
    for _ in 0..20 {
        let mut lease = client.acquire().await.expect("a connection");
        lease.stream().write_all(b"hello").await.expect("usable");
        assert!(client.pool().len() <= 5);
    }
    support::until("retired slots freed at the servers", || {
        server_a.slots.in_use() + server_b.slots.in_use() <= 7
    })
    .await;
}

#[tokio::test]
async fn an_acquire_against_a_closed_port_says_why_it_timed_out() {
    let refusing = support::refusing_addr();
    let timeout = Duration::from_millis(500);
    let client = RovingClient::builder()
        .server(refusing.to_string())
        .roving_interval(Duration::from_millis(50))
        // After its first refusal the server backs off for the rest of the test.
        .backoff(Some(Backoff::default().initial(Duration::from_secs(3600))))
        .acquire_timeout(timeout)
        .build()
        .expect("valid settings");
    support::until("a refused connect", || client.counters().unreachable >= 1).await;
    let error = client.acquire().await.expect_err("nothing listens");
    match &error {
        AcquireError::Unavailable {
            timeout: waited,
            servers,
            backing_off,
            last_error: Some(Failure::Connect { addr, error, .. }),
        } => {
            assert_eq!(*waited, timeout);
            assert_eq!((*backing_off, *servers), (1, 1));
            assert_eq!(*addr, Some(refusing));
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected the cause, got {other:?}"),
    }
    let message = error.to_string();
    let expected = format!(
        "no idle connection within 500ms; 1 of 1 servers backing off; last error: connect {refusing}: Connection refused"
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[tokio::test]
async fn an_acquire_that_times_out_with_healthy_servers_says_none_is_backing_off() {
    let (a, _server) = support::start_server();
    let client = RovingClient::builder()
        .server(a.to_string())
        .max_slots(1)
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(Duration::from_millis(200))
        .build()
        .expect("valid settings");
    support::until("one connection", || client.pool().len() == 1).await;
    let lease = client.try_acquire().expect("the idle connection");
    let error = client
        .acquire()
        .await
        .expect_err("the only connection is leased");
    assert_eq!(
        error.to_string(),
        "no idle connection within 200ms; 0 of 1 servers backing off; no connect error since the last connection"
    );
    drop(lease);
}
