//! Forwarding names outside Weft's domains to upstream resolvers
//! (Consul's `recursors`): each upstream in turn, over UDP, and again over
//! TCP when the UDP answer comes back truncated.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The configured upstreams.
pub struct Recursors {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Recursors {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstreams, timeout }
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The first upstream answer to `query`, or `None` if none answered.
    pub async fn resolve(&self, query: Query) -> Option<Message> {
        let mut message = Message::query();
        message.add_query(query.clone());
        message.metadata.recursion_desired = true;
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        message.set_edns(edns);
        let bytes = message.to_vec().ok()?;
        for upstream in &self.upstreams {
            let attempt = async {
                let reply = exchange_udp(*upstream, &bytes).await?;
                if reply.metadata.truncation {
                    return exchange_tcp(*upstream, &bytes).await;
                }
                Ok(reply)
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(reply)) if reply.metadata.id == message.metadata.id => return Some(reply),
                Ok(Ok(_)) => tracing::warn!(%upstream, "recursor answered another query id"),
                Ok(Err(error)) => tracing::warn!(%upstream, %error, name = %query.name(), "recursor failed"),
                Err(_) => {
                    tracing::warn!(%upstream, name = %query.name(), timeout = ?self.timeout, "recursor timed out")
                }
            }
        }
        None
    }
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; 65535];
    let read = socket.recv(&mut buffer).await?;
    Message::from_vec(&buffer[..read]).map_err(std::io::Error::other)
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let length = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let length = stream.read_u16().await? as usize;
    let mut buffer = vec![0u8; length];
    stream.read_exact(&mut buffer).await?;
    Message::from_vec(&buffer).map_err(std::io::Error::other)
}
