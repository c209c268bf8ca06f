//! The original `callosum-client-tcp-rover` suite (new, addServer, dropServer, start),
//! ported, plus backoff and stopping; driven through an in-memory connector under paused
//! time so schedules are checked exactly. Real-socket cases live in `tests/rover.rs`.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

#[derive(Debug, Clone)]
enum Behaviour {
    Refuse,
    Reply(&'static [u8]),
}

/// Connects by table lookup; records every attempt with its (virtual) time.
#[derive(Default)]
struct Mock {
    table: Mutex<HashMap<String, Behaviour>>,
    attempts: Mutex<Vec<(String, Instant)>>,
    /// Server halves of replied connections, kept open.
    peers: Mutex<Vec<DuplexStream>>,
}

impl Mock {
    fn with(entries: &[(&str, Behaviour)]) -> Self {
        let mock = Self::default();
        for (id, b) in entries {
            mock.table
                .lock()
                .expect("lock")
                .insert((*id).to_owned(), b.clone());
        }
        mock
    }
}

impl Connector for Arc<Mock> {
    type Stream = DuplexStream;

    async fn connect(
        &self,
        server: &ServerId,
        _timeout: Duration,
    ) -> Result<Connected<DuplexStream>, ConnectError> {
        self.attempts
            .lock()
            .expect("lock")
            .push((server.to_string(), Instant::now()));
        let behaviour = self
            .table
            .lock()
            .expect("lock")
            .get(server.as_str())
            .cloned();
        match behaviour {
            Some(Behaviour::Reply(bytes)) => {
                let (client, mut peer) = tokio::io::duplex(256);
                peer.write_all(bytes).await.expect("duplex write");
                self.peers.lock().expect("lock").push(peer);
                Ok(Connected {
                    addr: None,
                    stream: client,
                })
            }
            _ => Err(ConnectError {
                addr: None,
                error: io::ErrorKind::ConnectionRefused.into(),
            }),
        }
    }
}

/// A rover over a mock answering as `entries` say, with every entry added as a server.
fn setup(entries: &[(&str, Behaviour)], options: RoverOptions) -> (Arc<Mock>, Rover<Arc<Mock>>) {
    let mock = Arc::new(Mock::with(entries));
    let rover = Rover::with_connector(options, mock.clone());
    for (id, _) in entries {
        rover.add_server(id).expect("valid id");
    }
    (mock, rover)
}

async fn next(events: &mut RoverEvents<DuplexStream>) -> RoverEvent<DuplexStream> {
    tokio::time::timeout(Duration::from_secs(600), events.recv())
        .await
        .expect("an event within the bound")
        .expect("the rover is running")
}

fn offsets(mock: &Mock, start: Instant) -> Vec<Duration> {
    let attempts = mock.attempts.lock().expect("lock");
    attempts.iter().map(|(_, at)| *at - start).collect()
}

fn close_to(got: Duration, want_secs: f64) -> bool {
    (got.as_secs_f64() - want_secs).abs() < 1e-3
}

// --- new, addServer, dropServer ---

#[test]
fn new_configures_the_roving_interval() {
    let options = RoverOptions::default().roving_interval(Duration::from_secs(5));
    assert_eq!(options.get_roving_interval(), Duration::from_secs(5));
    assert_eq!(
        RoverOptions::default().get_roving_interval(),
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn add_server_adds_by_id_and_the_same_id_replaces() {
    let rover = Rover::new(RoverOptions::default());
    let id = rover.add_server("localhost:1234").expect("valid");
    assert_eq!(rover.servers(), vec![id.clone()]);
    rover.add_server("localhost:1234").expect("valid");
    assert_eq!(rover.servers(), vec![id]);
    assert!(rover.add_server("no-port").is_err());
}

#[tokio::test]
async fn drop_server_removes_by_id() {
    let rover = Rover::new(RoverOptions::default());
    rover.add_server("localhost:1234").expect("valid");
    assert!(rover.drop_server("localhost:1234"));
    assert!(rover.servers().is_empty());
    assert!(!rover.drop_server("localhost:1234"));
}

// --- start ---

#[tokio::test(start_paused = true)]
async fn start_tries_a_server_immediately_then_every_roving_interval() {
    let options = RoverOptions::default()
        .roving_interval(Duration::from_millis(100))
        .backoff(None);
    let (mock, rover) = setup(&[("first:4040", Behaviour::Refuse)], options);
    let start = Instant::now();
    let mut events = rover.start();
    for _ in 0..3 {
        match next(&mut events).await {
            RoverEvent::Unreachable { server, error, .. } => {
                assert_eq!(server.as_str(), "first:4040");
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
    let at = offsets(&mock, start);
    assert_eq!(
        at,
        [0, 100, 200].map(Duration::from_millis).to_vec(),
        "immediately, then every 100 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_started_rover_emits_connection_with_the_slot_and_the_leftover_bytes() {
    let (_mock, rover) = setup(
        &[("first:4040", Behaviour::Reply(b"173\r\nHELLO"))],
        RoverOptions::default().roving_interval(Duration::from_secs(20)),
    );
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Connected {
            server,
            slot,
            mut stream,
            ..
        } => {
            assert_eq!((server.as_str(), slot), ("first:4040", 173));
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).await.expect("leftover bytes");
            assert_eq!(&hello, b"HELLO");
        }
        other => panic!("expected a connection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_started_rover_emits_an_error_when_the_server_breaks_the_protocol() {
    let (_mock, rover) = setup(
        &[("first:4040", Behaviour::Reply(b"foo\r\n"))],
        RoverOptions::default().roving_interval(Duration::from_secs(20)),
    );
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Error(RoverError::Protocol { server, source, .. }) => {
            assert_eq!(server.as_str(), "first:4040");
            assert!(matches!(source, HandshakeError::Malformed(_)), "{source:?}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_set_is_an_error_each_tick_and_the_rover_keeps_going() {
    let (mock, rover) = setup(&[], RoverOptions::default());
    mock.table
        .lock()
        .expect("lock")
        .insert("a:1".to_owned(), Behaviour::Reply(b"0\r\n"));
    let mut events = rover.start();
    for _ in 0..2 {
        assert!(matches!(
            next(&mut events).await,
            RoverEvent::Error(RoverError::NoServers)
        ));
    }
    rover.add_server("a:1").expect("valid");
    loop {
        match next(&mut events).await {
            RoverEvent::Connected { slot: 0, .. } => break,
            RoverEvent::Error(RoverError::NoServers) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_handshake_times_out_as_a_protocol_error() {
    let options = RoverOptions::default()
        .roving_interval(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(2));
    let (_mock, rover) = setup(&[("slow:1", Behaviour::Reply(b"12"))], options);
    let mut events = rover.start();
    match next(&mut events).await {
        RoverEvent::Error(RoverError::Protocol {
            source: HandshakeError::Timeout { received: 2, .. },
            ..
        }) => {}
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
}

// --- backoff ---

#[tokio::test(start_paused = true)]
async fn a_lone_refusing_server_is_tried_every_interval_rather_than_idling() {
    let options = RoverOptions::default()
        .roving_interval(Duration::from_secs(1))
        .backoff(Some(Backoff::default().jitter(0.0)));
    let (mock, rover) = setup(&[("down:1", Behaviour::Refuse)], options);
    let start = Instant::now();
    let mut events = rover.start();
    for _ in 0..5 {
        assert!(matches!(
            next(&mut events).await,
            RoverEvent::Unreachable { .. }
        ));
    }
    // Every server is backing off, so the one whose backoff ends first is tried each tick.
    let at = offsets(&mock, start);
    for (got, want) in at.iter().zip([0.0, 1.0, 2.0, 3.0, 4.0]) {
        assert!(close_to(*got, want), "attempts at {at:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reachable_server_keeps_being_picked_while_the_other_backs_off() {
    let options = RoverOptions::default().backoff(Some(Backoff::default().jitter(0.0)));
    let (mock, rover) = setup(
        &[
            ("down:1", Behaviour::Refuse),
            ("up:1", Behaviour::Reply(b"3\r\n")),
        ],
        options,
    );
    let start = Instant::now();
    let mut events = rover.start();
    for _ in 0..60 {
        next(&mut events).await;
    }
    let attempts = mock.attempts.lock().expect("lock").clone();
    let down: Vec<f64> = attempts
        .iter()
        .filter(|(id, _)| id == "down:1")
        .map(|(_, at)| (*at - start).as_secs_f64())
        .collect();
    // Never tried again before its backoff (1, 1.6, 2.56… s) is over.
    let mut backoff = 1.0;
    for pair in down.windows(2) {
        assert!(
            pair[1] - pair[0] >= backoff - 1e-3,
            "down tried at {down:?}"
        );
        backoff *= 1.6;
    }
    assert!(down.len() < 15, "down tried at {down:?}");
}

// --- stopping ---

#[tokio::test(start_paused = true)]
async fn dropping_the_rover_ends_its_events() {
    let (_mock, rover) = setup(
        &[("a:1", Behaviour::Refuse)],
        RoverOptions::default().backoff(None),
    );
    let mut events = rover.start();
    next(&mut events).await;
    drop(rover);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "events ended");
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_events_and_start_resumes() {
    let (_mock, rover) = setup(
        &[("a:1", Behaviour::Refuse)],
        RoverOptions::default().backoff(None),
    );
    let mut events = rover.start();
    next(&mut events).await;
    rover.stop();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "events ended");
    let mut events = rover.start();
    assert!(matches!(
        next(&mut events).await,
        RoverEvent::Unreachable { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_consumer_pauses_the_schedule_without_a_burst_after() {
    let options = RoverOptions::default()
        .roving_interval(Duration::from_secs(1))
        .backoff(None)
        .event_capacity(1);
    let (mock, rover) = setup(&[("a:1", Behaviour::Refuse)], options);
    let start = Instant::now();
    let mut events = rover.start();
    // Nobody reads for 10 s: one event waits in the channel, and no other attempt starts.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(offsets(&mock, start), vec![Duration::ZERO]);
    for _ in 0..4 {
        next(&mut events).await;
    }
    // Then one attempt at once, and one per interval after it: no catching up.
    let at = offsets(&mock, start);
    assert_eq!(
        at,
        [0, 10, 11, 12].map(Duration::from_secs).to_vec(),
        "attempts at {at:?}"
    );
}
