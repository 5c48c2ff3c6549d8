//! `http-backend`: the application at the end of every chain `bench/mesh.sh`
//! measures, so the chains differ only in what sits between the load
//! generator and it.
//!
//! An HTTP/1.1 server (hyper) that answers every request with `200 OK` and
//! the same body, `--body-size` bytes (1 KiB by default), keeping
//! connections alive unless the client asks otherwise (`Connection: close`,
//! after which it closes first, as `http-load connect` expects). It listens
//! on a loopback address only, and runs until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use weft_bench::net::resolve_loopback;

/// A client gets this long to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Answers every HTTP/1.1 request with the same body, for the mesh benchmark.
#[derive(Debug, Parser)]
#[command(name = "http-backend", version)]
struct Args {
    /// Where to listen (HOST:PORT, a loopback address).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,

    /// Size of every response body, in bytes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=16 * 1024 * 1024))]
    body_size: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http-backend: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let addr = resolve_loopback("--listen", &args.listen).await?;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let size = usize::try_from(args.body_size).context("--body-size is too large")?;
    let body = Bytes::from(body_of(size));
    eprintln!("http-backend: listening on {addr}, {size}-byte bodies");

    let serve = async {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("http-backend: accept failed: {error}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| answer(request, body.clone()));
                // Errors are the client's business (a reset, a closed connection).
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => bail!("the accept loop ended"),
        () = shutdown_signal() => Ok(()),
    }
}

/// Reads (and drops) the request's body, then sends `body`.
async fn answer(request: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, hyper::Error> {
    request.into_body().collect().await?;
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// `size` bytes of printable text, ending in a newline.
fn body_of(size: usize) -> Vec<u8> {
    let mut body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    if let Some(last) = body.last_mut() {
        *last = b'\n';
    }
    body
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_size() {
        assert_eq!(body_of(1024).len(), 1024);
        assert_eq!(body_of(1024).last(), Some(&b'\n'));
        assert!(body_of(0).is_empty());
    }
}
