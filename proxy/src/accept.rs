//! The accept loop every listener of the sidecar shares: hand each new
//! connection to its own task (on a worker thread, if there are any), ride out a failed accept (out of descriptors, say) with a
//! short pause, stop when told. And the set of listeners a gateway keeps
//! open as its snapshot changes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// After a failed accept, the next try comes this soon.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts on `listener` until `shutdown` resolves, and runs `serve` on
/// each connection (on a worker thread if the proxy has them, see
/// [`crate::workers`]); `what` names the listener in logs.
pub(crate) async fn accept_until<S, F>(
    listener: &TcpListener,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => crate::workers::spawn_connection(stream, peer, serve.clone()),
            Err(error) => {
                tracing::warn!(%error, listener = what, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// A gateway's listeners, kept equal to the addresses its snapshot names:
/// a listener opens when its address appears and stops accepting when it
/// goes (connections it accepted run on).
#[derive(Default)]
pub(crate) struct ListenerSet {
    running: BTreeMap<SocketAddr, oneshot::Sender<()>>,
    /// Addresses that are not this host's (a mesh gateway's WAN address
    /// behind NAT or a load balancer): not tried again.
    foreign: BTreeSet<SocketAddr>,
}

impl ListenerSet {
    /// Closes the listeners not in `wanted` and opens the missing ones that
    /// `open` accepts, serving each with `serve(listener, bind, stopped)`.
    pub(crate) async fn reconcile<F>(
        &mut self,
        what: &'static str,
        wanted: &[SocketAddr],
        open: impl Fn(SocketAddr) -> bool,
        serve: impl Fn(TcpListener, SocketAddr, oneshot::Receiver<()>) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.retain(|bind, _| {
            let keep = wanted.contains(bind);
            if !keep {
                tracing::info!(%bind, listener = what, "listener removed; closing it");
            }
            keep
        });
        for &bind in wanted {
            if self.running.contains_key(&bind) || self.foreign.contains(&bind) || !open(bind) {
                continue;
            }
            match TcpListener::bind(bind).await {
                Ok(socket) => {
                    let (stop, stopped) = oneshot::channel();
                    tokio::spawn(serve(socket, bind, stopped));
                    self.running.insert(bind, stop);
                    tracing::info!(%bind, listener = what, "listener ready");
                }
                Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    tracing::info!(%bind, listener = what, "not an address of this host (NAT or a load balancer in front?): not listening on it");
                    self.foreign.insert(bind);
                }
                Err(error) => tracing::error!(%bind, %error, listener = what, "cannot listen"),
            }
        }
    }
}
