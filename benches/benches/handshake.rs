//! The handshake path, piece by piece and end to end, each beside what a user would write
//! instead, in the same run.
//!
//! `cargo bench -p callosum-benches --bench handshake`
//!
//! - `format`: the server's slot line (`SlotLine`, on the stack) vs `format!("{slot}\r\n")`.
//! - `parse`: the client's sans-IO parser vs `str::parse` after a UTF-8 check and a CRLF split.
//! - `read`: the client's async reader over an in-memory stream (the line in one read).
//! - `loopback`: connect, read the slot line, close, against `callosum-server` (two io_uring
//!   shards) and against a plain tokio server (one accept loop, a task per connection), from
//!   one tokio client. The cross-process, many-connection comparison with the C and Node
//!   servers is `benches/handshake.sh` (the load generator).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use callosum_client::handshake::{parse_slot_line, read_handshake};
use callosum_server::{Server, SlotLine, SlotSource, Slots};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const SLOTS: [u32; 3] = [0, 4_567, 4_000_000_000];

fn format(c: &mut Criterion) {
    let mut group = c.benchmark_group("format");
    for slot in SLOTS {
        group.bench_with_input(BenchmarkId::new("slot-line", slot), &slot, |b, &s| {
            b.iter(|| black_box(SlotLine::new(black_box(s))).as_bytes().len())
        });
        group.bench_with_input(BenchmarkId::new("format!", slot), &slot, |b, &s| {
            b.iter(|| format!("{}\r\n", black_box(s)).len())
        });
    }
    group.finish();
}

fn naive_parse(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (digits, _) = text.split_once("\r\n")?;
    digits.parse().ok()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for slot in SLOTS {
        let line = format!("{slot}\r\n").into_bytes();
        group.bench_with_input(BenchmarkId::new("parse_slot_line", slot), &line, |b, l| {
            b.iter(|| parse_slot_line(black_box(l)))
        });
        group.bench_with_input(BenchmarkId::new("utf8+split+parse", slot), &line, |b, l| {
            b.iter(|| naive_parse(black_box(l)))
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    c.bench_function("read/read_handshake", |b| {
        b.to_async(&runtime).iter(|| async {
            let stream: &[u8] = b"4567\r\nhello";
            let handshake = read_handshake(stream, Duration::from_secs(5))
                .await
                .expect("valid line");
            handshake.slot
        })
    });
}

/// The plain tokio server a user would write instead (the reference tokio server's design,
/// with our allocator so only the runtime differs): returns its address.
fn start_tokio_server(runtime: &Runtime) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slots = std::sync::Arc::new(Slots::new(1 << 20));
    runtime.spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let Some(slot) = slots.acquire() else {
                continue;
            };
            let slots = slots.clone();
            tokio::spawn(async move {
                if sock
                    .write_all(format!("{slot}\r\n").as_bytes())
                    .await
                    .is_ok()
                {
                    let mut buf = [0u8; 64];
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                }
                let _ = slots.release(slot);
            });
        }
    });
    addr
}

async fn connect_read_close(addr: SocketAddr) -> u32 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let handshake = read_handshake(stream, Duration::from_secs(5))
        .await
        .expect("slot line");
    handshake.slot
}

fn loopback(c: &mut Criterion) {
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let callosum = Server::builder()
        .host(Ipv4Addr::LOCALHOST.into())
        .port(0)
        .shards(2)
        .pin(false)
        .start()
        .expect("callosum-server");
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let tokio_addr = start_tokio_server(&server_runtime);

    let mut group = c.benchmark_group("loopback");
    group.sample_size(50);
    let addr = callosum.local_addr();
    group.bench_function("callosum-server", |b| {
        b.to_async(&client).iter(|| connect_read_close(addr))
    });
    group.bench_function("plain-tokio-server", |b| {
        b.to_async(&client).iter(|| connect_read_close(tokio_addr))
    });
    group.finish();
}

criterion_group!(benches, format, parse, read, loopback);
criterion_main!(benches);
