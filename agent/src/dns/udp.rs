//! DNS over UDP without a task per query: a few workers (one per core)
//! share the socket, and each receives, answers from the local state and
//! sends in one loop, reusing its lookups while the catalog is unchanged. Only a query for the recursors leaves the loop, in a
//! task of its own, so a slow upstream never holds a worker.
//!
//! hickory-server's UDP path spawned a task for every query and sent each
//! answer through a channel back to the socket's task; this loop answers
//! the same queries with a fraction of the CPU (bench/dns.sh).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::Message;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{answer_edns, AnswerCache, CatalogDns, Outcome, Reply, MAX_UDP_PAYLOAD};

/// Starts the workers; they run until aborted.
pub fn serve(handler: Arc<CatalogDns>, socket: Arc<UdpSocket>) -> Vec<JoinHandle<()>> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    (0..workers).map(|_| tokio::spawn(worker(handler.clone(), socket.clone()))).collect()
}

async fn worker(handler: Arc<CatalogDns>, socket: Arc<UdpSocket>) {
    let mut buffer = vec![0u8; usize::from(MAX_UDP_PAYLOAD)];
    let mut cache = AnswerCache::default();
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "DNS receive failed");
                continue;
            }
        };
        // Garbage gets no answer (and costs nothing more).
        let Ok(request) = Message::from_vec(&buffer[..len]) else { continue };
        if request.metadata.message_type != hickory_proto::op::MessageType::Query {
            continue;
        }
        match handler.outcome_cached(&request.metadata, request.queries.first(), Some(&mut cache)) {
            Outcome::Reply(reply) => send(&socket, &request, reply, peer).await,
            Outcome::Recurse(query) => {
                let (handler, socket) = (handler.clone(), socket.clone());
                tokio::spawn(async move {
                    let reply = handler.recurse(&request.metadata, query).await;
                    send(&socket, &request, reply, peer).await;
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, request: &Message, reply: Reply, peer: SocketAddr) {
    let Some(bytes) = encode(request, reply) else { return };
    if let Err(error) = socket.send_to(&bytes, peer).await {
        tracing::debug!(%error, %peer, "DNS send failed");
    }
}

/// `reply` to `request` as bytes that fit the client's UDP buffer (its
/// EDNS0 size, else 512): an answer that does not fit is sent without its
/// records and with the TC bit, so the client asks again over TCP.
fn encode(request: &Message, reply: Reply) -> Option<Vec<u8>> {
    let mut message = Message::new(request.metadata.id, request.metadata.message_type, request.metadata.op_code);
    message.metadata = reply.metadata;
    message.queries = request.queries.clone();
    message.answers = reply.answers;
    message.authorities = reply.authorities;
    message.additionals = reply.additionals;
    let edns = answer_edns(request.edns.as_ref());
    let limit = edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    message.truncate().to_vec().ok()
}
