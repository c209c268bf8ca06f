//! Serves the server's counters in the Prometheus text format (`GET /metrics`), from threads
//! of their own: shards never touch a metrics registry.
//!
//! The endpoint is a small blocking HTTP/1 responder of our own, not an HTTP stack, because
//! whatever its peers do it must never take descriptors or CPU from the slot port (a
//! general-purpose listener, retrying failed accepts at once with no connection cap and no
//! header timeout, let 300 idle connections to the metrics port use every descriptor of a
//! server under a 256-descriptor limit, and spin a core logging the failed accepts):
//! - at most [`MAX_CONNECTIONS`] connections are served at once, each on a thread of its
//!   own; one beyond is closed as soon as it is accepted;
//! - a request's header must arrive within [`HEADER_TIMEOUT`] of the accept (a deadline,
//!   not a per-read timeout, so a slowloris is dropped too), and the response is written
//!   within [`WRITE_TIMEOUT`]; every response closes its connection (no keep-alive, so
//!   there is no idle connection to time out);
//! - a failed accept backs off (10 ms doubling to 1 s) and is logged at most once a second.
//!
//! Its descriptors (the listener and the capped connections) are part of the reserve that
//! the server's descriptor budget keeps. Every scrape renders the counters as they are at
//! that moment (a [`ServerHandle`] snapshot), so they keep moving while the server drains
//! and after it has stopped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::accept::is_client_side;
use crate::log_limit::LogLimit;
use crate::server::ServerHandle;
use crate::stats::Stats;

/// Connections served at once; one beyond is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 4;
/// Time from the accept to the end of the request's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a response's write may block (a peer that does not read).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A request header longer than this is malformed.
const MAX_HEADER: usize = 8 * 1024;
/// Backoff after a failed accept, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A connection's thread needs little: it reads a header into a small buffer and writes the
/// rendered text.
const CONNECTION_STACK: usize = 256 * 1024;

/// Why the endpoint could not start. The OS error is the `source`, not part of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrometheusError {
    /// The address could not be bound (in use, not permitted, not local).
    #[error("binding the Prometheus endpoint on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The endpoint's thread could not be started.
    #[error("starting the Prometheus endpoint's thread")]
    Spawn {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound Prometheus endpoint, not yet serving: bind it before starting the server, so that
/// an address in use fails start-up before any client is served.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> Result<Self, PrometheusError> {
        let bound = TcpListener::bind(addr).and_then(|listener| {
            let addr = listener.local_addr()?;
            Ok(Self { listener, addr })
        });
        bound.map_err(|source| PrometheusError::Bind { addr, source })
    }

    /// The address bound (with the port resolved when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `GET /metrics` for the server behind `handle` on a thread of its own, until
    /// the process exits (the counters stay readable after the server has stopped).
    pub fn serve(self, handle: ServerHandle) -> Result<(), PrometheusError> {
        let scrape = Arc::new(Scrape::new(handle));
        std::thread::Builder::new()
            .name("callosum-metrics".into())
            .spawn(move || accept_loop(&self.listener, &scrape))
            .map(drop)
            .map_err(|source| PrometheusError::Spawn { source })
    }
}

/// Binds `addr` and serves the counters of the server behind `handle` there; see
/// [`MetricsEndpoint`], which lets the address be bound before the server starts.
pub fn serve(addr: SocketAddr, handle: ServerHandle) -> Result<(), PrometheusError> {
    MetricsEndpoint::bind(addr)?.serve(handle)
}

/// What a scrape needs: the server's counters and a recorder to render them with.
struct Scrape {
    server: ServerHandle,
    recorder: PrometheusRecorder,
    rendered: PrometheusHandle,
    /// Concurrent scrapes render one at a time, each its own snapshot.
    lock: Mutex<()>,
}

impl Scrape {
    fn new(server: ServerHandle) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let rendered = recorder.handle();
        Self {
            server,
            recorder,
            rendered,
            lock: Mutex::new(()),
        }
    }

    /// The counters now, in the Prometheus text format.
    fn render(&self) -> String {
        // A panic while rendering leaves nothing half-done that the next scrape would see.
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = self.server.stats();
        metrics::with_local_recorder(&self.recorder, || {
            describe();
            publish(&stats);
            metrics::gauge!("callosum_max_slots").set(f64::from(self.server.max_slots()));
            let descriptors = self.server.descriptor_capacity();
            metrics::gauge!("callosum_descriptor_capacity").set(descriptors as f64);
            publish_process();
        });
        self.rendered.render()
    }
}

/// `# HELP` for every family (the text format's `# TYPE` lines come with every metric).
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("callosum_accepted_total", "Connections accepted and given a slot.");
    describe_counter!(
        "callosum_refused_total",
        "Connections closed without a slot line: no slot or no descriptor to spare."
    );
    describe_counter!(
        "callosum_accept_errors_total",
        "Accepts that failed (resource exhaustion, connections lost before the accept)."
    );
    describe_counter!(
        "callosum_handshake_errors_total",
        "Connections whose slot line could not be sent."
    );
    describe_counter!(
        "callosum_handler_panics_total",
        "Connections whose handler (or slot source) panicked; each was closed, its slot freed."
    );
    describe_gauge!("callosum_active_connections", "Connections open now.");
    describe_gauge!("callosum_slot_high_water", "Highest slot handed out plus one.");
    describe_gauge!("callosum_max_slots", "Slots of the default allocator (--max-slots).");
    describe_gauge!(
        "callosum_descriptor_capacity",
        "Connections the descriptor limit lets the server hold at once."
    );
    describe_gauge!("callosum_build_info", "Always 1; the labels say which build runs.");
    describe_gauge!("process_open_fds", "Descriptors the process has open.");
    describe_gauge!("process_max_fds", "The process's descriptor limit (RLIMIT_NOFILE, soft).");
    describe_gauge!("process_resident_memory_bytes", "Resident memory of the process.");
}

/// The build, and the process's descriptors and memory, read from `/proc/self`.
fn publish_process() {
    metrics::gauge!("callosum_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(dir.count() as f64);
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, writable `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        metrics::gauge!("process_max_fds").set(limit.rlim_cur as f64);
    }
    let resident_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if let (Some(pages), true) = (resident_pages, page > 0) {
        metrics::gauge!("process_resident_memory_bytes").set((pages * page as u64) as f64);
    }
}

fn publish(stats: &Stats) {
    metrics::counter!("callosum_accepted_total").absolute(stats.accepted);
    metrics::counter!("callosum_refused_total").absolute(stats.refused);
    metrics::counter!("callosum_accept_errors_total").absolute(stats.accept_errors);
    metrics::counter!("callosum_handshake_errors_total").absolute(stats.handshake_errors);
    metrics::counter!("callosum_handler_panics_total").absolute(stats.handler_panics);
    metrics::gauge!("callosum_active_connections").set(stats.active as f64);
    metrics::gauge!("callosum_slot_high_water").set(f64::from(stats.high_water));
}

/// Accepts forever: each connection gets a thread of its own while fewer than
/// [`MAX_CONNECTIONS`] are served, and is closed at once otherwise.
fn accept_loop(listener: &TcpListener, scrape: &Arc<Scrape>) {
    let serving = Arc::new(AtomicUsize::new(0));
    let mut backoff = BACKOFF_MIN;
    let mut error_log = LogLimit::new(Duration::from_secs(1));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if is_client_side(&err) => continue,
            Err(err) => {
                if let Some(suppressed) = error_log.allow() {
                    tracing::warn!(error = %err, suppressed, "metrics endpoint: accept failed");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        // Relaxed: a count of threads, read and raised by this thread alone; the decrement
        // of a finishing thread may be seen late, which only refuses one more connection.
        if serving.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // `stream` drops: closed at once
        }
        serving.fetch_add(1, Ordering::Relaxed);
        let slot = Serving(serving.clone());
        let scrape = scrape.clone();
        // A thread that cannot start drops its closure: the stream closes, the count drops.
        let _ = std::thread::Builder::new()
            .name("callosum-metrics-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _slot = slot;
                respond(stream, &scrape);
            });
    }
}

/// One of the [`MAX_CONNECTIONS`] places, given back on drop.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        // Relaxed: see `accept_loop`.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads one request's header (within [`HEADER_TIMEOUT`]) and answers it; the connection
/// closes when `stream` drops. A peer that is too slow or gone gets no answer.
fn respond(mut stream: TcpStream, scrape: &Scrape) {
    let Some(header) = read_header(&mut stream) else {
        return;
    };
    let (status, text, head) = match parse(&header) {
        Request::Metrics { head } => ("200 OK", scrape.render(), head),
        Request::MethodNotAllowed => ("405 Method Not Allowed", String::new(), false),
        Request::NotFound => ("404 Not Found", String::new(), false),
        Request::Malformed => ("400 Bad Request", String::new(), false),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    // A HEAD answer has the GET answer's length, without its body.
    let body = if head { "" } else { text.as_str() };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        text.len()
    );
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
        && stream.write_all(response.as_bytes()).is_ok()
    {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// The request's header up to its blank line, or `None` when the peer closes, errs or is
/// too slow. A header too long to be a scrape comes back whole, to be answered 400.
fn read_header(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + HEADER_TIMEOUT;
    let mut header = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None, // timed out, or reset
        };
        // Resume the search a few bytes back: the blank line may straddle two reads.
        let from = header.len().saturating_sub(3);
        header.extend_from_slice(&chunk[..n]);
        if header[from..].windows(4).any(|w| w == b"\r\n\r\n") || header.len() > MAX_HEADER {
            return Some(header);
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (or `HEAD`: the same without a body).
    Metrics { head: bool },
    MethodNotAllowed,
    NotFound,
    Malformed,
}

/// Reads the request line: `METHOD TARGET HTTP/1.x`.
fn parse(header: &[u8]) -> Request {
    if header.len() > MAX_HEADER {
        return Request::Malformed;
    }
    let Some(line) = header
        .split(|&b| b == b'\n')
        .next()
        .and_then(|line| line.strip_suffix(b"\r"))
        .and_then(|line| std::str::from_utf8(line).ok())
    else {
        return Request::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (path, method) {
        ("/metrics", "GET") => Request::Metrics { head: false },
        ("/metrics", "HEAD") => Request::Metrics { head: true },
        ("/metrics", _) => Request::MethodNotAllowed,
        _ => Request::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_map_to_their_answers() {
        let cases: [(&[u8], Request); 9] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Request::Metrics { head: false }),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", Request::Metrics { head: false }),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Request::Metrics { head: true }),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Request::MethodNotAllowed),
            (b"GET / HTTP/1.1\r\n\r\n", Request::NotFound),
            (b"GET /metrics\r\n\r\n", Request::Malformed),
            (b"GET /metrics HTTP/2\r\n\r\n", Request::Malformed),
            (b"get /metrics HTTP/1.1\r\n\r\n", Request::Malformed),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", Request::Malformed),
        ];
        for (request, expected) in cases {
            assert_eq!(parse(request), expected, "{:?}", String::from_utf8_lossy(request));
        }
        assert_eq!(parse(&[b'A'; MAX_HEADER + 1]), Request::Malformed);
    }
}
