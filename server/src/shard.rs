//! A shard: one OS thread, pinned to a core, running its own tokio-uring runtime, accepting
//! on its own `SO_REUSEPORT` listener and serving every connection it accepts on the same
//! thread. Shards share nothing but the slot source and their counters' memory.
//!
//! A shard's connections are futures in one `FuturesUnordered`, polled by the shard's single
//! task, which also polls its few pending accepts itself (see [`crate::accept`]): each
//! connection is a task of the shard in all but name (woken and polled alone, its panics
//! caught alone), without the 128-byte-aligned cell a tokio task costs, because a held
//! connection's memory is mostly that cell. A panic of the shard itself (a bug) shuts its
//! listener down, so the kernel stops sending it connections, and is reported by
//! `RunningServer::wait`.
//!
//! The loop never drops a pending accept (the accepted descriptor would leak in the ring); it
//! is stopped by shutting the listening socket down (`SHUT_RD`), which makes the pending
//! accepts fail. What a failed accept does (retry, back off, shed) is [`crate::accept`]'s.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use pin_project_lite::pin_project;
use tokio_uring::net::{TcpListener, TcpStream};

use crate::accept::{Accepts, Completed};
use crate::connection::{Connection, ShardCtx};
use crate::error::ServerError;
use crate::handler::Handler;
use crate::held::{Ended, Held};
use crate::log_limit::LogLimit;
use crate::panics::panic_message;
use crate::shared::Shared;
use crate::slot_line::{self, Sent, SlotLine};
use crate::slots::SlotGuard;
use crate::stats::ShardCounters;

/// After a drain times out and the remaining connections are shut down, how long their
/// handlers get to notice before the shard drops them.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs shard `index` on the calling thread until the server stops and the drain is over.
/// Reports on `ready` once whether its runtime could start.
pub(crate) fn run<H: Handler>(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    handler: H,
    ready: Sender<Result<(), ServerError>>,
) {
    if shared.config.pin {
        pin(index);
    }
    let runtime = match probe_io_uring().and_then(|()| runtime(shared.config.ring_entries)) {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(ServerError::IoUringUnavailable { source }));
            return;
        }
    };
    if let Err(source) = probe_ring(&runtime) {
        // The no-op is still queued, and dropping the runtime would try to submit it again
        // (and panic): the ring is left to the process's exit, as start-up fails anyway.
        std::mem::forget(runtime);
        let _ = ready.send(Err(ServerError::IoUringUnavailable { source }));
        return;
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    let ctx_shared = shared.clone();
    let failed = runtime.block_on(async move {
        // The shard's loop is a task of the runtime's `LocalSet`, beside tokio-uring's
        // completion-dispatch task, not the `block_on` future itself: a completion then wakes
        // it within the same `LocalSet` tick. As the `block_on` future, every wake-up from that
        // task cost tokio one extra non-blocking `epoll_wait` (strace: about one per
        // connection in a churn).
        let shard = tokio_uring::spawn(async move {
            let ctx = Rc::new(ShardCtx::new(index, ctx_shared));
            let listener = TcpListener::from_std(listener);
            serve(&ctx, listener, &Rc::new(handler)).await;
        });
        shard.await.err()
    });
    if let Some(err) = failed {
        // A panic outside a connection (a bug, or tokio-uring failing to submit). Its
        // connections were dropped (each shut down, its slot freed); its listener would still
        // take its share of new connections and never accept them: shut it down, then let the
        // thread end in the panic, for `RunningServer::wait` to report.
        shared.shut_listener(index);
        tracing::error!(shard = index, "shard failed: {err}; its listener is shut down");
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    tracing::debug!(shard = index, "shard stopped");
}

/// The shard's runtime. Its ring is set up for one submitting thread (`SINGLE_ISSUER`) whose
/// completions' task work may wait for its next kernel entry instead of interrupting it
/// (`COOP_TASKRUN`): both cut per-operation overhead. Kernels before 6.0 refuse those flags
/// (EINVAL), and get a plain ring.
fn runtime(entries: u32) -> io::Result<tokio_uring::Runtime> {
    let mut ring = tokio_uring::uring_builder();
    ring.setup_coop_taskrun().setup_single_issuer();
    match tokio_uring::Runtime::new(tokio_uring::builder().entries(entries).uring_builder(&ring)) {
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("io_uring setup flags refused ({err}); using a plain ring");
            tokio_uring::Runtime::new(tokio_uring::builder().entries(entries))
        }
        result => result,
    }
}

/// How long the shard's ring gets to complete its start-up no-op.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks that io_uring works end to end, submission included: some seccomp profiles allow
/// `io_uring_setup` but deny `io_uring_enter`, and tokio-uring ignores a failed submission
/// (its operations then never complete: a server that says it listens and never answers).
/// A ring of its own, a no-op submitted and waited for, reports the system call's error.
fn probe_io_uring() -> io::Result<()> {
    let mut ring = io_uring::IoUring::new(2)?;
    let nop = io_uring::opcode::Nop::new().build();
    // SAFETY: a no-op names no memory, so nothing must outlive its completion.
    unsafe { ring.submission().push(&nop) }.map_err(io::Error::other)?;
    ring.submit_and_wait(1)?;
    Ok(())
}

/// Checks the shard's own ring: a no-op submitted and completed through its runtime, within
/// [`PROBE_TIMEOUT`].
fn probe_ring(runtime: &tokio_uring::Runtime) -> io::Result<()> {
    runtime.block_on(async {
        match tokio::time::timeout(PROBE_TIMEOUT, tokio_uring::no_op()).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the ring did not complete a no-op within {PROBE_TIMEOUT:?}"),
            )),
        }
    })
}

fn pin(index: usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        tracing::warn!(shard = index, "cannot list cores: shard not pinned");
        return;
    }
    let core = cores[index % cores.len()];
    if !core_affinity::set_for_current(core) {
        tracing::warn!(
            shard = index,
            core = core.id,
            "pinning failed: shard not pinned"
        );
    }
}

pin_project! {
    /// A connection's future, with its panics caught: polled by the shard's
    /// `FuturesUnordered`, so that a wake-up polls only the connection that was woken.
    struct Serve<C> {
        #[pin]
        conn: C,
    }
}

/// How a connection's future ended.
enum Done {
    Closed,
    /// It panicked outside its handler (say, the slot source's release while the connection
    /// dropped): unwinding dropped the connection, closing it.
    Panicked(String),
}

impl<C: Future<Output = ()>> Future for Serve<C> {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        let conn = self.project().conn;
        // Caught here, so one connection's panic cannot take the shard's loop (and its
        // pending accepts) down with it. No cost unless it panics.
        match std::panic::catch_unwind(AssertUnwindSafe(|| conn.poll(cx))) {
            Ok(poll) => poll.map(|()| Done::Closed),
            Err(panic) => Poll::Ready(Done::Panicked(panic_message(&*panic))),
        }
    }
}

/// What woke the shard's loop.
enum Event {
    Accepted(Completed),
    /// No accept is left: the server stopped.
    Stopped,
    Ended(Done),
}

/// Accepts and serves until the server stops, then drains. [`crate::accept::IN_FLIGHT`] accepts are
/// pending at all times, except during an accept-error backoff, while the connections keep
/// being served. Once the listener is shut down, failed accepts are not resubmitted, and the
/// loop ends when the last one has completed.
async fn serve<H: Handler>(ctx: &Rc<ShardCtx>, listener: TcpListener, handler: &Rc<H>) {
    let mut work = FuturesUnordered::new();
    let mut held = Held::new(ctx.clone());
    let mut accepts = Accepts::start(ctx.clone(), listener);
    let mut refused_log = LogLimit::new(Duration::from_secs(1));
    loop {
        let event = std::future::poll_fn(|cx| {
            // Accepts first, as the C server does.
            match accepts.poll_accepted(cx) {
                Poll::Ready(Some(completed)) => return Poll::Ready(Event::Accepted(completed)),
                Poll::Ready(None) => return Poll::Ready(Event::Stopped),
                Poll::Pending => {}
            }
            held.poll(cx, |ended| note_held(ctx, ended));
            match work.poll_next_unpin(cx) {
                Poll::Ready(Some(done)) => Poll::Ready(Event::Ended(done)),
                // No connection (an empty set): an accept or its backoff will wake the loop.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Completed { result, buf } = match event {
            Event::Accepted(completed) => completed,
            Event::Stopped => break,
            Event::Ended(Done::Closed) => continue,
            Event::Ended(Done::Panicked(message)) => {
                note_panic(ctx, &message);
                continue;
            }
        };
        let stopping = ctx.shared.is_stopping();
        match result {
            Ok((socket, addr)) => {
                accepts.succeeded(buf, stopping);
                let Some(socket) = accepts.reclaim_spare(socket) else {
                    continue;
                };
                let admitted = admit(ctx, handler, &mut held, socket, addr, &mut refused_log);
                if let Admitted::Served(conn) = admitted {
                    work.push(Serve { conn });
                }
            }
            // The listener was shut down: this accept is over and not resubmitted.
            Err(_) if stopping => {}
            Err(err) => accepts.failed(&err, buf),
        }
    }
    drain(ctx, &mut work, &mut held).await;
}

/// What became of an accepted connection.
enum Admitted<F> {
    /// Refused, or closed at once: nothing left to serve.
    Closed,
    /// Kept in the shard's table of held connections.
    Held,
    /// To be served by the handler: the connection's future.
    Served(F),
}

/// Gives a slot to a freshly accepted connection and sends its slot line; then holds it in
/// the shard's table (a [`Handler::holds_only`] handler, and the whole line sent) or returns
/// the future that serves it. With no slot or descriptor to spare, closes it without a line.
fn admit<H: Handler>(
    ctx: &Rc<ShardCtx>,
    handler: &Rc<H>,
    held: &mut Held,
    socket: OwnedFd,
    peer: SocketAddr,
    refused_log: &mut LogLimit,
) -> Admitted<impl Future<Output = ()> + use<H>> {
    // Beyond the descriptor budget as beyond the last slot: closed at once, while this
    // connection's descriptor is one the server kept free for it. Counted from here until
    // the socket closes (`ShardCtx::close`, or below when it never becomes a connection).
    let descriptors = &ctx.shared.descriptors;
    if !descriptors.try_take() {
        refuse(ctx, peer, refused_log, "out of descriptors");
        return Admitted::Closed; // `socket` drops here: closed without a slot line
    }
    // A slot source is the user's code: its panic refuses this connection (the socket drops,
    // closed without a line), not the shard.
    let acquired = std::panic::catch_unwind(AssertUnwindSafe(|| SlotGuard::acquire(ctx.clone())));
    let slot = match acquired {
        Ok(Some(slot)) => slot,
        Ok(None) => {
            drop(socket);
            descriptors.give_back();
            refuse(ctx, peer, refused_log, "no free slot");
            return Admitted::Closed;
        }
        Err(panic) => {
            drop(socket);
            descriptors.give_back();
            ShardCounters::bump(&ctx.counters().handshake_errors);
            let message = panic_message(&*panic);
            tracing::error!(shard = ctx.index, %peer, %message, "slot source panicked; connection closed");
            return Admitted::Closed;
        }
    };
    ShardCounters::bump(&ctx.counters().accepted);
    let line = SlotLine::new(slot.slot());
    let unsent = match slot_line::send_now(socket.as_raw_fd(), &line) {
        Ok(Sent::All) if handler.holds_only() => {
            if let Some(ended) = held.hold(socket, slot) {
                note_held(ctx, ended);
            }
            return Admitted::Held;
        }
        Ok(Sent::All) => 0,
        Ok(Sent::Partly(n)) => line.as_bytes().len() - n,
        Err(_) => {
            ShardCounters::bump(&ctx.counters().handshake_errors);
            // Counted as opened then closed at once: the connection frees its slot on drop.
            // The slot source is the user's code: a panic in its release closes nothing more
            // and must not take the shard down.
            let conn = Connection::new(stream(socket), peer, slot);
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(conn))) {
                note_panic(ctx, &panic_message(&*panic));
            }
            return Admitted::Closed;
        }
    };
    let conn = Connection::new(stream(socket), peer, slot);
    Admitted::Served(serve_connection(handler.clone(), conn, unsent as u8))
}

fn stream(socket: OwnedFd) -> TcpStream {
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

/// Counts and logs (rate-limited) a connection closed without a slot line.
fn refuse(ctx: &ShardCtx, peer: SocketAddr, log: &mut LogLimit, why: &str) {
    ShardCounters::bump(&ctx.counters().refused);
    if let Some(suppressed) = log.allow() {
        tracing::warn!(shard = ctx.index, %peer, suppressed, "{why}: connection refused");
    }
}

/// A connection's task: finish the slot line if the first send fell short, run the handler,
/// then close. Its size is every held connection's memory, so it keeps little: the rare
/// write is boxed (allocating only when it happens) and the line is rebuilt from the slot.
async fn serve_connection<H: Handler>(handler: Rc<H>, mut conn: Connection, unsent: u8) {
    if unsent > 0 {
        let line = SlotLine::new(conn.slot());
        let bytes = line.as_bytes();
        let rest = bytes[bytes.len() - unsent as usize..].to_vec();
        if Box::pin(conn.stream().write_all(rest)).await.0.is_err() {
            ShardCounters::bump(&conn_counters(&conn).handshake_errors);
            return;
        }
    }
    // The handler's future may panic: caught here, to log the connection's slot and peer. A
    // panic in the call itself (a handler's synchronous part) unwinds through this future,
    // dropping `conn`, and is caught by `Serve`. (Catching the call here too made the future
    // keep its handler's future twice, or at least 16 B more: 485 -> 506..618 B per held
    // connection.)
    let served = AssertUnwindSafe(handler.handle(&mut conn))
        .catch_unwind()
        .await;
    if let Err(panic) = served {
        ShardCounters::bump(&conn_counters(&conn).handler_panics);
        let message = panic_message(&*panic);
        tracing::error!(slot = conn.slot(), peer = %conn.peer_addr(), %message, "handler panicked; connection closed");
    }
    // `conn` drops: shut down, closed, slot freed.
}

/// Notes a held connection's end: only a panic of the slot source's release needs it.
fn note_held(ctx: &ShardCtx, ended: Ended) {
    if let Ended::Panicked(message) = ended {
        note_panic(ctx, &message);
    }
}

/// Counts and logs a panic of a connection's future outside its handler.
fn note_panic(ctx: &ShardCtx, message: &str) {
    ShardCounters::bump(&ctx.counters().handler_panics);
    tracing::error!(shard = ctx.index, %message, "connection panicked; closed");
}

fn conn_counters(conn: &Connection) -> &ShardCounters {
    conn.shard_ctx().counters()
}

/// After the accept loop stopped: let open connections finish for the drain timeout, then
/// shut the rest down and give their handlers a moment to see it; whatever is left is
/// dropped (which shuts it down and frees its slot too).
async fn drain<C: Future<Output = ()>>(
    ctx: &ShardCtx,
    conns: &mut FuturesUnordered<Serve<C>>,
    held: &mut Held,
) {
    let finish_all = async |conns: &mut FuturesUnordered<Serve<C>>, held: &mut Held| {
        std::future::poll_fn(|cx| {
            held.poll(cx, |ended| note_held(ctx, ended));
            while let Poll::Ready(Some(done)) = conns.poll_next_unpin(cx) {
                if let Done::Panicked(message) = done {
                    note_panic(ctx, &message);
                }
            }
            if conns.is_empty() && held.len() == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    };
    let timeout = ctx.shared.drain_timeout();
    if tokio::time::timeout(timeout, finish_all(conns, held))
        .await
        .is_err()
    {
        tracing::info!(
            shard = ctx.index,
            open = conns.len() + held.len(),
            "drain timeout: shutting down the remaining connections"
        );
        ctx.shut_down_all();
        let _ = tokio::time::timeout(FORCE_CLOSE_GRACE, finish_all(conns, held)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Hold;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<F, A, B, C, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_held_connections_future_stays_small() {
        // Every held connection costs this much (plus the `FuturesUnordered` task around it
        // and the socket): catching a panic in the wrong place once made the compiler keep
        // the handler's future twice, 618 instead of 490 B of RSS per held connection.
        // 280 B with Rust 1.95; the margin is one pointer-sized field.
        let size = future_size(&serve_connection::<Hold>);
        assert!(size <= 288, "a held connection's future grew to {size} B");
    }
}
