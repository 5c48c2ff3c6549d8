//! The RPC listener and dialer: TCP, then TLS where configured.
//!
//! [`incoming`] accepts connections for tonic's `serve_with_incoming`:
//! each one's first byte tells a TLS handshake from plaintext HTTP/2;
//! plaintext is served only where no TLS is configured or
//! `verify_incoming` is off. Handshakes run concurrently, each bounded in
//! time, so a peer that opens a connection and says nothing holds no one
//! else up; a peer address may hold at most `max_conns_per_client`
//! connections at once (Consul's `limits { rpc_max_conns_per_client }`).
//! Every accepted connection carries its [`RpcPeer`] (its address and what
//! its certificate proves), which tonic puts in each request's extensions
//! for the authorization layer.
//!
//! [`RpcConnector`] dials for tonic's `connect_with_connector`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tonic::transport::Uri;

use crate::config::{ClientTls, ServerTls};
use crate::names::{validity, PeerCert};

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// Bounds on what connecting peers may hold.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Connections one peer address may hold at once.
    pub max_conns_per_client: usize,
    /// How long a new connection may take to send its first byte and
    /// finish its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits { max_conns_per_client: 100, handshake_timeout: Duration::from_secs(5) }
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Debug)]
pub struct RpcPeer {
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// What the peer's verified certificate proves, if it presented one.
    pub cert: Option<PeerCert>,
    /// When that certificate expires (seconds since the Unix epoch): a
    /// request on a connection that outlived it is treated as made without it.
    pub cert_not_after: Option<i64>,
}

/// One accepted connection, plaintext or TLS.
pub struct RpcStream {
    io: tokio_util::either::Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>,
    peer: RpcPeer,
    _slot: ConnectionSlot,
}

impl Connected for RpcStream {
    type ConnectInfo = RpcPeer;

    fn connect_info(&self) -> RpcPeer {
        self.peer.clone()
    }
}

impl AsyncRead for RpcStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for RpcStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connections per peer address, for a per-address limit (the RPC
/// listener's here, the agent's HTTP listener's too); a slot gives its
/// place back when dropped.
#[derive(Clone, Default)]
pub struct ConnectionTable(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in a [`ConnectionTable`].
pub struct ConnectionSlot {
    table: ConnectionTable,
    ip: IpAddr,
}

impl ConnectionTable {
    /// A place for one more connection from `ip`, unless it holds `limit`.
    pub fn take(&self, ip: IpAddr, limit: usize) -> Option<ConnectionSlot> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { table: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until the returned stream is dropped
/// (see the module docs). With `tls`, connections are TLS unless it allows
/// plaintext; without, plaintext only.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ListenerLimits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<RpcStream>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, limits, sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ListenerLimits,
    sender: mpsc::Sender<io::Result<RpcStream>>,
) {
    let table = ConnectionTable::default();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: back off rather than spin.
                    tracing::warn!(%error, "RPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sender.closed() => return,
        };
        let Some(slot) = table.take(addr.ip(), limits.max_conns_per_client) else {
            tracing::debug!(%addr, limit = limits.max_conns_per_client, "RPC connection refused: too many from this address");
            continue;
        };
        let (tls, sender) = (tls.clone(), sender.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, admit(stream, addr, tls.as_deref(), slot)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(stream)).await;
                }
                Ok(Err(reason)) => tracing::info!(%addr, %reason, "RPC connection refused"),
                Err(_) => tracing::info!(%addr, "RPC connection refused: no TLS handshake in time"),
            }
        });
    }
}

/// Reads a new connection's first byte and serves it as TLS or plaintext,
/// or refuses it.
async fn admit(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    slot: ConnectionSlot,
) -> Result<RpcStream, String> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.map_err(|e| e.to_string())? == 0 {
        return Err("closed before sending anything".into());
    }
    let tls = match tls {
        Some(tls) if first[0] == TLS_HANDSHAKE => tls,
        Some(tls) if tls.verify_incoming() => {
            return Err("plaintext, and this server requires TLS (verify_incoming)".into());
        }
        _ => {
            return Ok(RpcStream {
                io: tokio_util::either::Either::Left(stream),
                peer: RpcPeer { addr, tls: false, cert: None, cert_not_after: None },
                _slot: slot,
            })
        }
    };
    let stream = TlsAcceptor::from(tls.config()).accept(stream).await.map_err(|e| format!("TLS handshake: {e}"))?;
    let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
    let (cert, cert_not_after) = match chain.first() {
        Some(leaf) => (Some(tls.identify(chain)), validity(leaf).map(|(_, not_after)| not_after)),
        None => (None, None),
    };
    Ok(RpcStream {
        io: tokio_util::either::Either::Right(Box::new(stream)),
        peer: RpcPeer { addr, tls: true, cert, cert_not_after },
        _slot: slot,
    })
}

/// Dialing a server failed (TCP or the TLS handshake): a call that meets
/// this error was never sent, so it may safely be made again.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to server {addr}: {source}")]
pub struct ConnectError {
    addr: String,
    #[source]
    source: io::Error,
}

impl ConnectError {
    /// Whether `error` (a failed call's error, or any error it came from)
    /// is, or was caused by, a failure to connect.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<ConnectError>() {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// Dials a server: TCP (no Nagle: small RPCs must not wait for a delayed
/// ACK), then TLS with `tls`.
#[derive(Clone)]
pub struct RpcConnector {
    tls: Option<Arc<ClientTls>>,
}

impl RpcConnector {
    pub fn new(tls: Option<Arc<ClientTls>>) -> RpcConnector {
        RpcConnector { tls }
    }

    /// The TLS it dials with, if any.
    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.tls.as_ref()
    }
}

impl std::fmt::Debug for RpcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConnector").field("tls", &self.tls.is_some()).finish()
    }
}

/// A dialed connection.
pub type ClientStream = TokioIo<tokio_util::either::Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>>;

impl tower_service::Service<Uri> for RpcConnector {
    type Response = ClientStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<ClientStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let addr = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let failed = |source| ConnectError { addr: addr.clone(), source };
            let stream = TcpStream::connect(addr.as_str()).await.map_err(failed)?;
            let _ = stream.set_nodelay(true);
            let Some(tls) = tls else { return Ok(TokioIo::new(tokio_util::either::Either::Left(stream))) };
            let stream = TlsConnector::from(tls.config()).connect(tls.server_name(), stream).await.map_err(failed)?;
            Ok(TokioIo::new(tokio_util::either::Either::Right(Box::new(stream))))
        })
    }
}
