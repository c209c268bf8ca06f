//! The rover over real loopback sockets: the original suite's connection (slot 173) and
//! invalid-protocol cases, plus unreachable servers (refused, unresolvable name).

mod support;

use std::io;
use std::time::Duration;

use callosum_client::handshake::{HandshakeError, LineError};
use callosum_client::rover::{Rover, RoverError, RoverEvent, RoverEvents, RoverOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Upper bound on waiting for one event; a test failing it is a bug, not slowness.
const EVENT_BOUND: Duration = Duration::from_secs(30);

async fn next(events: &mut RoverEvents<TcpStream>) -> RoverEvent<TcpStream> {
    tokio::time::timeout(EVENT_BOUND, events.recv())
        .await
        .expect("an event within the bound")
        .expect("the rover is running")
}

fn slow_rover() -> Rover {
    Rover::new(
        RoverOptions::default()
            .roving_interval(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(10)),
    )
}

#[tokio::test]
async fn a_started_rover_emits_connection_with_slot_173() {
    let (addr, _server) = support::start_replying(b"173\r\n", false).await;
    let rover = slow_rover();
    let id = rover.add_server(&addr.to_string()).expect("valid");
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Connected {
            server,
            addr: connected,
            slot,
            mut stream,
        } => {
            assert_eq!((server, connected, slot), (id, Some(addr), 173));
            stream.write_all(b"app data").await.expect("usable stream");
        }
        other => panic!("expected a connection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_started_rover_emits_an_error_when_the_server_answers_foo() {
    let (addr, _server) = support::start_replying(b"foo\r\n", false).await;
    let rover = slow_rover();
    rover.add_server(&addr.to_string()).expect("valid");
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Error(RoverError::Protocol {
            source: HandshakeError::Malformed(LineError::InvalidByte { byte: b'f', .. }),
            ..
        }) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusing_server_is_unreachable_with_its_address() {
    let addr = support::refusing_addr();
    let rover = slow_rover();
    rover.add_server(&addr.to_string()).expect("valid");
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Unreachable {
            addr: tried, error, ..
        } => {
            assert_eq!(tried, Some(addr));
            assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unresolvable_name_is_unreachable_without_an_address() {
    let rover = Rover::new(
        RoverOptions::default()
            .roving_interval(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5)),
    );
    rover.add_server("callosum-test.invalid:1").expect("valid");
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Unreachable { addr: None, .. } => {}
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn durations_of_max_mean_never_not_a_panic() {
    // A roving interval of `Duration::MAX`: one attempt at start, none after, and the rover
    // keeps running.
    let (addr, _server) = support::start_replying(b"7\r\n", false).await;
    let rover = Rover::new(RoverOptions::default().roving_interval(Duration::MAX));
    rover.add_server(&addr.to_string()).expect("valid");
    let mut events = rover.start();
    assert!(matches!(
        next(&mut events).await,
        RoverEvent::Connected { slot: 7, .. }
    ));
    let later = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(
        later.is_err(),
        "no second attempt, and the rover still runs"
    );

    // A backoff of `Duration::MAX` after a refused connect: every server backing off, the
    // rover tries the one whose backoff ends first on the next tick instead of dying.
    let rover = Rover::new(
        RoverOptions::default()
            .roving_interval(Duration::from_millis(50))
            .backoff(Some(
                callosum_client::rover::Backoff::default()
                    .initial(Duration::MAX)
                    .max(Duration::MAX),
            )),
    );
    rover
        .add_server(&support::refusing_addr().to_string())
        .expect("valid");
    let mut events = rover.start();
    assert!(matches!(
        next(&mut events).await,
        RoverEvent::Unreachable { .. }
    ));
    assert!(matches!(
        next(&mut events).await,
        RoverEvent::Unreachable { .. }
    ));
}
