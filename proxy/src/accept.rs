//! The accept loop every listener of the sidecar shares: hand each new
//! connection on, ride out a failed accept (out of descriptors, say) with a
//! short pause, stop when told.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// After a failed accept, the next try comes this soon.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts on `listener` until `shutdown` resolves, giving each connection
/// to `each`; `what` names the listener in logs.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut each: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => each(stream, peer),
            Err(error) => {
                tracing::warn!(%error, listener = what, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}
