//! Where a proxy's connections run.
//!
//! A proxy's `main` thread runs a current-thread runtime with its
//! listeners and its snapshot follower. With one thread (`--threads 1`)
//! connections run there too. With N > 1 (a sidecar's default is 2),
//! [`start`] starts N worker threads, each with its own current-thread
//! runtime, and every accepted connection (the admin port's too) moves to
//! one of them (round robin) for its whole life: its tasks, timers and
//! socket readiness stay on that thread, as in the thread-per-core model
//! of Envoy and HAProxy, without the hand-offs of a work-stealing runtime.
//! The exception: an `http2`/`grpc` upstream's HTTP/2 connection to an
//! endpoint is shared by every worker (`http::H2Pool`), and runs on the
//! worker that opened it.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The workers, once started; none means connections stay where they
/// were accepted.
static WORKERS: OnceLock<Workers> = OnceLock::new();

struct Workers {
    runtimes: Vec<Handle>,
    /// The next connection's worker, modulo their number.
    next: AtomicUsize,
}

/// Starts `threads` worker threads for this process's connections. Call it
/// once, before serving; it fails if a thread cannot start or workers are
/// already running.
pub fn start(threads: NonZeroUsize) -> std::io::Result<()> {
    let mut runtimes = Vec::with_capacity(threads.get());
    for index in 0..threads.get() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtimes.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("weft-worker-{index}"))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    }
    WORKERS
        .set(Workers { runtimes, next: AtomicUsize::new(0) })
        .map_err(|_| std::io::Error::other("the connection workers are already running"))
}

/// Runs `serve` on the accepted connection `stream`: on the next worker if
/// there are workers, else here.
pub(crate) fn spawn_connection<S, F>(stream: TcpStream, peer: SocketAddr, serve: S)
where
    S: FnOnce(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = WORKERS.get() else {
        tokio::spawn(serve(stream, peer));
        return;
    };
    // The socket leaves this thread's reactor and joins the worker's.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => return tracing::warn!(%peer, %error, "cannot hand a connection to a worker; closing it"),
    };
    let index = workers.next.fetch_add(1, Ordering::Relaxed) % workers.runtimes.len();
    workers.runtimes[index].spawn(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve(stream, peer).await,
            Err(error) => tracing::warn!(%peer, %error, "a worker cannot take a connection; closing it"),
        }
    });
}
