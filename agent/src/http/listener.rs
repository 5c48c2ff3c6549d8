//! The HTTP listener: at most `limits { http_max_conns_per_client }`
//! connections from one address at once (Consul's, 200 by default; 0 lifts
//! it), and at most `limits { http_max_conns }` in all (Weft's; by default
//! three quarters of the open-files limit, so a flood of connections from
//! many addresses leaves the agent descriptors for its own work; 0 lifts
//! it). A connection over either limit is never served: it is answered with
//! Consul's 429 and closed the way web servers close early (the write side
//! first, then what the client sent is read and dropped, for up to a
//! second, so that closing does not reset the connection before the client
//! reads the 429). At most [`LINGERING`] refusals do that at once; past
//! them a connection is closed at once. So a client that opens connections
//! without end costs the agent a socket for a moment each, never a
//! connection's buffers and task.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_tls::transport::{ConnectionSlot, ConnectionTable};

/// What a refused connection is told (Consul's words).
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\nContent-Length: 81\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n";

/// Refused connections being answered at once, at most.
const LINGERING: usize = 64;
/// How long a refused connection may take to read its 429.
const LINGER: Duration = Duration::from_secs(1);
/// What is read and dropped from a refused connection, at most.
const LINGER_BYTES: usize = 64 * 1024;

pub struct LimitedListener {
    listener: TcpListener,
    table: ConnectionTable,
    /// Per address; `None`: no limit.
    limit: Option<usize>,
    /// In all: a place per open connection; `None`: no cap.
    total: Option<Arc<Semaphore>>,
    lingering: Arc<Semaphore>,
}

impl LimitedListener {
    /// `per_client` and `total` 0 mean none.
    pub fn new(listener: TcpListener, per_client: usize, total: usize) -> Self {
        LimitedListener {
            listener,
            table: ConnectionTable::default(),
            limit: (per_client > 0).then_some(per_client),
            total: (total > 0).then(|| Arc::new(Semaphore::new(total))),
            lingering: Arc::new(Semaphore::new(LINGERING)),
        }
    }

    /// Turns `stream` away (see the module docs).
    fn refuse(&self, stream: TcpStream) {
        if let Ok(permit) = self.lingering.clone().try_acquire_owned() {
            tokio::spawn(async move {
                refuse(stream).await;
                drop(permit);
            });
        }
    }
}

/// Sends the 429 and closes `stream` without resetting it (see the module docs).
async fn refuse(mut stream: TcpStream) {
    let answer = async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => dropped += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
}

/// An accepted connection, holding its places until dropped.
pub struct Limited {
    stream: TcpStream,
    _slot: Option<ConnectionSlot>,
    _place: Option<OwnedSemaphorePermit>,
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
            let place = match &self.total {
                None => None,
                Some(total) => match total.clone().try_acquire_owned() {
                    Ok(place) => Some(place),
                    Err(_) => {
                        tracing::warn!(%addr, "HTTP connection refused: the agent holds limits.http_max_conns connections");
                        self.refuse(stream);
                        continue;
                    }
                },
            };
            let slot = match self.limit {
                None => None,
                Some(limit) => match self.table.take(addr.ip(), limit) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%addr, limit, "HTTP connection refused: too many from this address");
                        self.refuse(stream);
                        continue;
                    }
                },
            };
            return (Limited { stream, _slot: slot, _place: place }, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Limited {
    /// Resolves when the client has sent something (or closed). A peek,
    /// not a wait for readiness, which may wake with nothing to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.peek(&mut [0; 1]).await.map(drop)
    }
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(super::TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    }
}
