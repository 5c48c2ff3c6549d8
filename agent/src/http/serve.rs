//! The HTTP server's connections: HTTP/1.1 only (as Consul's plaintext
//! API), each on a task of its own, closed gracefully at shutdown.
//!
//! What a connection holds is the agent's memory per client, and a
//! blocking query can hold its connection for minutes, so:
//! - a connection gets hyper's state (two 8 KiB buffers and more) only
//!   once its client has sent something; until then it is its socket and
//!   this task;
//! - a request's URI and header values are copied out of the connection's
//!   read buffer before the router sees it ([`detached`]);
//! - no protocol sniffing: `axum::serve` peeked for HTTP/2 and handed hyper
//!   a rewound prefix, after which the read buffer grew to 16 KiB.

use axum::http::{HeaderValue, Request, Uri};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::listener::{Limited, LimitedListener};

/// Serves `router` on the connections `listener` accepts until `shutdown`
/// resolves; then stops accepting, lets each connection finish the request
/// it is answering, and returns once all are closed.
pub(super) async fn serve(
    mut listener: LimitedListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use axum::serve::Listener;
    let (closing, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(io, router.clone(), closing.subscribe()));
    }
    drop(listener);
    closing.send_replace(true);
    // Each connection holds a receiver until it is closed.
    closing.closed().await;
}

/// Serves one connection (see the module docs).
async fn connection(io: Limited, router: Router, mut closing: watch::Receiver<bool>) {
    tokio::select! {
        ready = io.readable() => {
            if ready.is_err() {
                return;
            }
        }
        _ = closing.wait_for(|closing| *closing) => return,
    }
    // Boxed: a task's allocation is its future's largest state, and hyper's
    // connection is kilobytes that a connection waiting above need not hold.
    Box::pin(http(io, router, closing)).await;
}

/// Serves HTTP/1.1 on `io` until the client leaves or the agent closes.
async fn http(io: Limited, router: Router, mut closing: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        tower_service::Service::call(&mut router.clone(), detached(request))
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => Some(served),
        _ = closing.wait_for(|closing| *closing) => None,
    };
    let served = match served {
        Some(served) => served,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::trace!(%error, "HTTP connection ended");
    }
}

/// `request` with its URI and header values in allocations of their own.
/// hyper's point into the connection's read buffer, which hyper cannot
/// reuse while they live: a request held open (a blocking query) kept that
/// buffer, and hyper allocated another to notice the client leaving.
fn detached<B>(request: Request<B>) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    parts.headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            (name.clone(), copy)
        })
        .collect();
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_request_keeps_its_uri_and_every_header_value() {
        let request = Request::builder()
            .uri("/v1/kv/a%20b?index=7&wait=5s")
            .header("X-Consul-Token", "t1")
            .header("Accept", "a")
            .header("Accept", "b")
            .body(())
            .unwrap();
        let (uri, headers) = (request.uri().clone(), request.headers().clone());
        let copied = detached(request);
        assert_eq!(copied.uri(), &uri);
        assert_eq!(copied.headers(), &headers);
        assert_eq!(copied.headers().get_all("accept").iter().count(), 2);
    }
}
