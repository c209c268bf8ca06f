//! The server's behaviour over real sockets on loopback: the original server's test cases,
//! then slot reuse, exhaustion, closing on every path, and shutdown.

#![cfg(not(loom))]

mod support;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use callosum_server::{
    Connection, Echo, Handler, Keepalive, ServerError, SlotError, SlotSource, Slots,
    discard_until_closed, handler_fn,
};
use futures::FutureExt;
use support::*;

// --- The original server's cases ------------------------------------------------------------

#[test]
fn listens_on_the_configured_host_and_port() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = builder().port(port).start().unwrap();
    assert_eq!(
        server.local_addr(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    );
    let (_c, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
}

/// Answers a fixed slot and counts every call.
#[derive(Default)]
struct FixedSource {
    acquires: AtomicU64,
    releases: AtomicU64,
}

impl SlotSource for FixedSource {
    fn acquire(&self) -> Option<u32> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        Some(13)
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        assert_eq!(slot, 13);
        self.releases.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn client_receives_exactly_the_slot_the_source_answers() {
    let source = Arc::new(FixedSource::default());
    let server = builder().slot_source(source.clone()).start().unwrap();
    let mut client = connect(server.local_addr());
    assert_eq!(read_line(&mut client).unwrap(), b"13\r\n");
    client.set_nonblocking(true).unwrap();
    let mut extra = [0u8; 8];
    assert!(
        client.read(&mut extra).is_err(),
        "nothing follows the slot line"
    );
}

#[test]
fn custom_source_sees_one_release_per_acquire() {
    let source = Arc::new(FixedSource::default());
    let server = builder().slot_source(source.clone()).start().unwrap();
    for _ in 0..3 {
        let (client, slot) = connect_slot(server.local_addr());
        assert_eq!(slot, 13);
        drop(client);
    }
    let mut reset = connect(server.local_addr());
    read_slot(&mut reset);
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    assert!(eventually(|| source.releases.load(Ordering::SeqCst) == 4));
    server.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(source.acquires.load(Ordering::SeqCst), 4);
    assert_eq!(source.releases.load(Ordering::SeqCst), 4);
}

#[test]
fn handler_sees_the_connection_with_its_slot() {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let server = start_server_with(handler_fn(async move |conn: &mut Connection| {
        let _ = tx
            .lock()
            .unwrap()
            .send((conn.slot(), conn.peer_addr(), conn.shard()));
        let _ = discard_until_closed(conn).await;
    }));
    let (client, slot) = connect_slot(server.local_addr());
    let (seen_slot, peer, shard) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(seen_slot, slot);
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(shard < 2);
}

#[test]
fn slot_is_freed_after_the_client_ends_the_connection() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let (a, slot_a) = connect_slot(server.local_addr());
    let (_b, slot_b) = connect_slot(server.local_addr());
    assert_eq!((slot_a, slot_b), (0, 1));
    drop(a);
    // The connection counts as closed just before its slot is freed, and the next client
    // may land on the other shard meanwhile: wait for the slot itself.
    assert!(eventually(|| slots.in_use() == 1));
    let (_c, slot_c) = connect_slot(server.local_addr());
    assert_eq!(slot_c, 0);
}

#[test]
fn slot_is_freed_after_the_connection_errors() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let (a, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    // SO_LINGER 0: close sends a reset, the server's read fails with ECONNRESET.
    socket2::SockRef::from(&a)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(a);
    // As above: the slot itself, not the count of open connections.
    assert!(eventually(|| slots.in_use() == 0));
    let (_b, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
}

#[test]
fn a_held_connection_discards_a_megabyte_then_frees_its_slot_when_closed() {
    // Hold keeps connections in the shard's table of held connections: its receives must
    // keep going after data (each one resubmitted) and end at the close.
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let (mut a, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..16 {
        a.write_all(&chunk).unwrap();
    }
    // Still held after all that input: the next client gets slot 1.
    let (_b, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 1);
    a.shutdown(std::net::Shutdown::Write).unwrap();
    // The server closes its side once it has read everything and the end of stream.
    assert!(
        sees_close(&mut a),
        "the server did not close the held connection"
    );
    // The socket closes before the slot is freed: wait for the slot itself.
    assert!(eventually(|| slots.in_use() == 1));
    let (_c, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
}

#[test]
fn held_connections_on_every_shard_are_freed_in_any_order() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let addr = server.local_addr();
    let mut held: Vec<_> = (0..200).map(|_| connect_slot(addr)).collect();
    assert_eq!(server.stats().active, 200);
    // Close every other one, from the highest slot down, then the rest.
    held.sort_by_key(|(_, slot)| std::cmp::Reverse(*slot));
    let (odd, even): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, s)| s % 2 == 1);
    drop(odd);
    assert!(eventually(|| slots.in_use() == 100));
    let (_x, slot) = connect_slot(addr);
    assert_eq!(slot, 1, "the lowest slot freed is reissued first");
    drop(even);
    assert!(eventually(|| slots.in_use() == 1));
    let stats = server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.active, 0);
}

// --- Slots over sockets -------------------------------------------------------------------

#[test]
fn first_connection_reads_zero() {
    let server = start_server();
    let mut client = connect(server.local_addr());
    assert_eq!(read_line(&mut client).unwrap(), b"0\r\n");
}

#[test]
fn a_thousand_concurrent_connections_get_slots_0_to_999_each_once() {
    let server = start_server();
    let addr = server.local_addr();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || (0..125).map(|_| connect_slot(addr)).collect::<Vec<_>>())
        })
        .collect();
    let held: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let mut slots: Vec<u32> = held.iter().map(|(_, s)| *s).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..1000).collect::<Vec<_>>());
    assert_eq!(server.stats().high_water, 1000);
    assert_eq!(server.stats().active, 1000);
}

#[test]
fn after_closing_slot_5_the_next_connection_gets_5() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let mut held: Vec<_> = (0..10).map(|_| connect_slot(server.local_addr())).collect();
    let index = held.iter().position(|(_, s)| *s == 5).unwrap();
    drop(held.remove(index));
    // The slot itself: the connection counts as closed just before its slot is freed.
    assert!(eventually(|| slots.in_use() == 9));
    let (_c, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 5);
}

#[test]
fn max_slots_two_refuses_the_third_until_one_closes() {
    let server = builder().max_slots(2).start().unwrap();
    let (a, slot_a) = connect_slot(server.local_addr());
    let (_b, _) = connect_slot(server.local_addr());
    let mut third = connect(server.local_addr());
    assert_eq!(
        read_line(&mut third).unwrap(),
        b"",
        "closed without a slot line"
    );
    assert!(eventually(|| server.stats().refused == 1));
    drop(a);
    assert!(eventually(|| server.stats().active == 1));
    // The connection counts as closed just before its slot is freed: a client in between is
    // still refused. Only `slot_a` can come free, so the first slot line must be it.
    let mut slot = None;
    assert!(
        eventually(|| {
            let mut d = connect(server.local_addr());
            let line = read_line(&mut d).unwrap_or_default();
            if line.is_empty() {
                return false; // refused: the slot is not free yet
            }
            slot = Some(String::from_utf8_lossy(&line).trim_end().to_owned());
            std::mem::forget(d); // keep it held until the test ends
            true
        }),
        "no slot line once a connection closed"
    );
    assert_eq!(slot, Some(slot_a.to_string()));
}

// --- Every way a handler can end frees the slot only after the socket is shut -----------------

/// Connects probes until one gets `slot`; asserts the first client was closed by then. Call it
/// before anything reads the first client's close: once the EOF is read, the check always passes.
fn slot_is_reissued_only_after(first: &std::net::TcpStream, addr: SocketAddr, slot: u32) {
    let reissued = eventually(|| {
        let (probe, got) = connect_slot(addr);
        if got == slot {
            assert!(
                is_closed_now(first),
                "slot {slot} was reissued while its first connection was still open"
            );
            std::mem::forget(probe); // keep it held until the test ends
            return true;
        }
        false
    });
    assert!(reissued, "slot {slot} was never reissued");
}

#[test]
fn a_handler_aborted_mid_read_closes_its_client_and_then_frees_the_slot() {
    // The timeout drops a read whose io_uring operation is still in flight: the operation
    // keeps the socket open unless the server shuts it down.
    let server = start_server_with(handler_fn(async |conn: &mut Connection| {
        let read = conn.stream().read(vec![0u8; 16]);
        let _ = tokio::time::timeout(Duration::from_millis(100), read).await;
    }));
    let (mut first, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    slot_is_reissued_only_after(&first, server.local_addr(), 0);
    assert!(sees_close(&mut first), "client not closed after abort");
}

#[test]
fn a_discarding_read_aborted_mid_flight_closes_its_client_and_then_frees_the_slot() {
    // The server's own receive (poll-first, holding the socket) dropped while in flight.
    let server = start_server_with(handler_fn(async |conn: &mut Connection| {
        let _ = tokio::time::timeout(Duration::from_millis(100), discard_until_closed(conn)).await;
    }));
    let (mut first, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    slot_is_reissued_only_after(&first, server.local_addr(), 0);
    assert!(sees_close(&mut first), "client not closed after abort");
}

#[test]
fn a_handler_panicking_mid_read_closes_its_client_and_then_frees_the_slot() {
    let server = start_server_with(handler_fn(async |conn: &mut Connection| {
        tokio::select! {
            _ = conn.stream().read(vec![0u8; 16]) => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => panic!("handler fails mid-read"),
        }
    }));
    let (mut first, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    slot_is_reissued_only_after(&first, server.local_addr(), 0);
    assert!(sees_close(&mut first), "client not closed after panic");
    assert!(eventually(|| server.stats().handler_panics == 1));
}

/// Panics in its synchronous part (before it returns a future), the first time only.
#[derive(Clone, Default)]
struct PanicsOnceBeforeItsFuture(Arc<AtomicBool>);

impl Handler for PanicsOnceBeforeItsFuture {
    fn handle(&self, conn: &mut Connection) -> impl Future<Output = ()> {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("handler fails before returning its future");
        }
        discard_until_closed(conn).map(drop)
    }
}

#[test]
fn a_handler_panicking_before_returning_its_future_closes_its_client_and_frees_the_slot() {
    let server = start_server_with(PanicsOnceBeforeItsFuture::default());
    let (mut first, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    // The slot line goes out before the handler is called: wait for the panic before the
    // probes, or a probe's handler could be the one that panics.
    assert!(eventually(|| server.stats().handler_panics == 1));
    slot_is_reissued_only_after(&first, server.local_addr(), 0);
    assert!(sees_close(&mut first), "client not closed after panic");
}

/// The allocator, except that its first acquire, or its first release, panics.
struct PanicsOnce {
    slots: Slots,
    in_acquire: bool,
    panicked: AtomicBool,
}

impl PanicsOnce {
    fn new(in_acquire: bool) -> Arc<Self> {
        Arc::new(Self {
            slots: Slots::new(1000),
            in_acquire,
            panicked: AtomicBool::new(false),
        })
    }

    fn panic_once(&self, now: bool) {
        if now && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("slot source fails");
        }
    }
}

impl SlotSource for PanicsOnce {
    fn acquire(&self) -> Option<u32> {
        self.panic_once(self.in_acquire);
        self.slots.acquire()
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        self.panic_once(!self.in_acquire);
        self.slots.release(slot)
    }
}

/// Both shards serve: 64 connections (about half on each) get the slots `first..first + 64`.
fn every_shard_serves(addr: SocketAddr, first: u32) {
    let clients: Vec<_> = (0..64).map(|_| connect_slot(addr)).collect();
    let mut slots: Vec<u32> = clients.iter().map(|(_, slot)| *slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, (first..first + 64).collect::<Vec<_>>());
}

#[test]
fn a_slot_source_panicking_in_acquire_refuses_that_connection_and_the_shard_serves_on() {
    let source = PanicsOnce::new(true);
    let server = builder().slot_source(source.clone()).start().unwrap();
    let mut first = connect(server.local_addr());
    assert!(
        read_line(&mut first).map_or(true, |line| line.is_empty()),
        "the connection whose slot request panicked gets no slot line"
    );
    every_shard_serves(server.local_addr(), 0);
    let stats = server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.handshake_errors, 1);
    assert_eq!(source.slots.in_use(), 0);
}

#[test]
fn a_slot_source_panicking_in_release_closes_that_connection_and_the_shard_serves_on() {
    // The panic unwinds out of the connection's drop, outside its handler.
    let source = PanicsOnce::new(false);
    let server = builder().slot_source(source.clone()).start().unwrap();
    let (first, slot) = connect_slot(server.local_addr());
    assert_eq!(slot, 0);
    drop(first);
    assert!(eventually(|| server.stats().handler_panics == 1));
    // Slot 0 stays taken: the source panicked instead of releasing it.
    every_shard_serves(server.local_addr(), 1);
    let stats = server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.active, 0);
}

/// The allocator, with an acquire slow enough for a peer to reset before its slot line goes
/// out, and a first release that panics.
struct SlowAcquirePanickyRelease {
    slots: Slots,
    panicked: AtomicBool,
}

impl SlotSource for SlowAcquirePanickyRelease {
    fn acquire(&self) -> Option<u32> {
        std::thread::sleep(Duration::from_millis(300));
        self.slots.acquire()
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("slot source fails");
        }
        self.slots.release(slot)
    }
}

#[test]
fn a_slot_source_panicking_in_release_after_a_failed_slot_line_leaves_the_shard_serving() {
    // The peer resets while its slot is acquired, so the slot line's send fails and the
    // connection is dropped at once, its release panicking there: held and served alike.
    for hold in [true, false] {
        let source = Arc::new(SlowAcquirePanickyRelease {
            slots: Slots::new(100),
            panicked: AtomicBool::new(false),
        });
        let b = builder().shards(1).slot_source(source.clone());
        let server = if hold {
            b.start().unwrap()
        } else {
            b.start_with(Echo).unwrap()
        };
        let peer = std::net::TcpStream::connect(server.local_addr()).unwrap();
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        assert!(
            eventually(|| server.stats().handler_panics == 1),
            "hold {hold}: {:?}",
            server.stats()
        );
        let (_next, slot) = connect_slot(server.local_addr());
        // Slot 0 stays taken: the source panicked instead of releasing it.
        assert_eq!(slot, 1, "hold {hold}");
        let stats = server.shutdown(Duration::from_secs(5));
        assert!(stats.is_ok(), "hold {hold}: {stats:?}");
    }
}

#[test]
fn a_failing_listener_backs_off_instead_of_spinning() {
    // Shut one shard's listening socket down behind the server's back: its accepts fail at
    // once (EINVAL) for good. Retried at once, they would fail tens of thousands of times per
    // second; backing off (5 ms doubling to 100 ms) they fail a few dozen times in 300 ms.
    let server = start_server();
    let addr = server.local_addr();
    let listener = (0..1024)
        .find(|&fd| {
            // SAFETY: a descriptor number is only inspected (getsockopt: EBADF if unused), and
            // the one shut down is this server's listener, open until the server stops.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            socket.is_listener().unwrap_or(false)
                && socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
        })
        .expect("a listening socket of the server");
    // SAFETY: `listener` is an open listening socket of this process.
    unsafe { libc::shutdown(listener, libc::SHUT_RD) };
    let started = std::time::Instant::now();
    assert!(
        eventually(|| server.stats().accept_errors >= 1),
        "the failing accepts are counted"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Backing off, its four pending accepts fail a few dozen times a second; retried at once,
    // tens of thousands of times. A slow machine only lowers the count for the time taken.
    let (errors, took) = (server.stats().accept_errors, started.elapsed());
    assert!(
        errors < 1000,
        "{errors} accept errors in {took:?}: spinning"
    );
    // The other shard serves on.
    let clients: Vec<_> = (0..16).map(|_| connect_slot(addr)).collect();
    assert_eq!(clients.len(), 16);
}

// --- Shutdown and start-up errors --------------------------------------------------------------

#[test]
fn shutdown_drains_open_connections_then_returns_with_no_slot_in_use() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = (0..20).map(|_| connect_slot(addr)).collect();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // Shutdown began meanwhile: the drain must have left every connection open...
        let still_open = clients.iter().filter(|(c, _)| !is_closed_now(c)).count();
        drop(clients); // ... for them to finish now
        still_open
    });
    // Returning before its connections finished would leave them active in `stats`.
    let stats = server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        closer.join().unwrap(),
        20,
        "the drain closed connections early"
    );
    assert_eq!(stats.accepted, 20);
    assert_eq!(stats.active, 0);
    assert_eq!(slots.in_use(), 0);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn drain_timeout_shuts_the_remaining_connections_down() {
    let slots = Arc::new(Slots::new(1000));
    let server = builder().slot_source(slots.clone()).start().unwrap();
    let (mut client, _) = connect_slot(server.local_addr());
    let stats = server.shutdown(Duration::from_millis(100)).unwrap();
    assert!(
        sees_close(&mut client),
        "held connection closed by the drain"
    );
    assert_eq!(stats.active, 0);
    assert_eq!(slots.in_use(), 0);
}

#[test]
fn a_later_shutdown_does_not_shorten_the_first_ones_drain() {
    let server = start_server();
    let (mut client, _) = connect_slot(server.local_addr());
    server.handle().shutdown(Duration::from_secs(10));
    // Stopped again at once with no drain (as dropping the server does): the first drain
    // must stand.
    server.handle().shutdown(Duration::ZERO);
    let dropper = std::thread::spawn(move || drop(server));
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    match client.read(&mut buf) {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the held connection was closed during its drain: {other:?}"),
    }
    drop(client); // the connection finishes: the drain ends
    dropper.join().unwrap();
}

#[test]
fn binding_a_port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    match builder().port(port).start() {
        Err(ServerError::AddrInUse { .. }) => {}
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    // A second Callosum server (whose listeners use SO_REUSEPORT) is refused too.
    let first = start_server();
    match builder().port(first.local_addr().port()).start() {
        Err(ServerError::AddrInUse { .. }) => {}
        other => panic!("expected AddrInUse, got {other:?}"),
    }
}

#[test]
fn invalid_settings_are_errors() {
    assert!(matches!(
        builder().shards(0).start(),
        Err(ServerError::Config(_))
    ));
    assert!(matches!(
        builder().ring_entries(1000).start(),
        Err(ServerError::Config(_))
    ));
    assert!(matches!(
        builder().max_slots(0).start(),
        Err(ServerError::Config(_))
    ));
}

#[test]
fn keepalive_outside_the_kernels_ranges_is_an_error_naming_the_field() {
    let secs = Duration::from_secs;
    let fine = Keepalive::default();
    for (keepalive, named) in [
        (
            Keepalive {
                idle: secs(40_000),
                ..fine
            },
            "idle",
        ),
        (
            Keepalive {
                idle: secs(0),
                ..fine
            },
            "idle",
        ),
        (
            Keepalive {
                interval: secs(32_768),
                ..fine
            },
            "interval",
        ),
        (
            Keepalive {
                retries: 200,
                ..fine
            },
            "retries",
        ),
        (Keepalive { retries: 0, ..fine }, "retries"),
    ] {
        match builder().keepalive(Some(keepalive)).start() {
            Err(ServerError::Keepalive { field, .. }) => assert_eq!(field, named),
            Err(other) => panic!("{keepalive:?}: expected a keepalive error, got {other}"),
            Ok(_) => panic!("{keepalive:?} was accepted"),
        }
    }
    let edges = Keepalive {
        idle: secs(32_767),
        interval: secs(1),
        retries: 127,
    };
    assert_eq!(edges.validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn accepted_sockets_inherit_keepalive() {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let server = start_server_with(handler_fn(async move |conn: &mut Connection| {
        let fd = conn.stream().as_raw_fd();
        // SAFETY: `fd` is the connection's open socket for the duration of this borrow.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&sock);
        let _ = tx.lock().unwrap().send((
            sock.keepalive().unwrap(),
            sock.tcp_keepalive_time().unwrap(),
        ));
        let _ = discard_until_closed(conn).await;
    }));
    let (_client, _) = connect_slot(server.local_addr());
    let (on, idle) = rx.recv_timeout(PATIENCE).unwrap();
    assert!(on);
    assert_eq!(idle, Duration::from_secs(120));
}
