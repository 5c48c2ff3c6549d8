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
            Outcome::Recurse(query) => match handler.recursion_permit() {
                Some(permit) => {
                    let (handler, socket) = (handler.clone(), socket.clone());
                    tokio::spawn(async move {
                        let reply = handler.recurse(&request.metadata, query).await;
                        send(&socket, &request, reply, peer).await;
                        drop(permit);
                    });
                }
                None => {
                    let reply = Reply::empty(&request.metadata, hickory_proto::op::ResponseCode::ServFail);
                    send(&socket, &request, reply, peer).await;
                }
            },
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
/// EDNS0 size, else 512), as full as it can be (RFC 2181 §9): the
/// additional records go first, then answer records from the end, with the
/// TC bit set only when answers were left out, so the client may ask again
/// over TCP; a name that has records never gets an empty answer (one
/// record always fits).
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
    let fitting = |message: &Message| message.to_vec().ok().filter(|bytes| bytes.len() <= limit);
    if let Some(bytes) = fitting(&message) {
        return Some(bytes);
    }
    message.additionals.clear();
    if let Some(bytes) = fitting(&message) {
        return Some(bytes);
    }
    // The most answers that fit: a binary search over how many to keep.
    let answers = std::mem::take(&mut message.answers);
    message.metadata.truncation = true;
    let (mut fits, mut too_many) = (0, answers.len());
    while too_many - fits > 1 {
        let keep = (fits + too_many) / 2;
        message.answers = answers[..keep].to_vec();
        match fitting(&message) {
            Some(_) => fits = keep,
            None => too_many = keep,
        }
    }
    message.answers = answers[..fits].to_vec();
    fitting(&message).or_else(|| message.truncate().to_vec().ok())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Edns, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn reply_of(request: &Message, answers: usize, additionals: usize) -> Reply {
        let name = Name::from_str("big.service.weft.").unwrap();
        let record =
            |i: usize| Record::from_rdata(name.clone(), 0, RData::A(A::new(10, 0, (i / 250) as u8, (i % 250) as u8)));
        let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        Reply {
            metadata,
            answers: (0..answers).map(record).collect(),
            authorities: Vec::new(),
            additionals: (0..additionals).map(|i| record(i + 1000)).collect(),
        }
    }

    fn request(edns: Option<u16>) -> Message {
        let mut request = Message::new(7, hickory_proto::op::MessageType::Query, OpCode::Query);
        request.add_query(Query::query(Name::from_str("big.service.weft.").unwrap(), RecordType::A));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            request.set_edns(e);
        }
        request
    }

    #[test]
    fn an_answer_too_big_keeps_as_many_records_as_fit_and_says_so() {
        let request = request(None);
        let bytes = encode(&request, reply_of(&request, 200, 0)).unwrap();
        let sent = Message::from_vec(&bytes).unwrap();
        assert!(bytes.len() <= 512 && sent.metadata.truncation);
        assert!(sent.answers.len() > 20, "{} answers in 512 bytes", sent.answers.len());
        let request = self::request(Some(1232));
        let sent = Message::from_vec(&encode(&request, reply_of(&request, 200, 0)).unwrap()).unwrap();
        assert!(sent.metadata.truncation && sent.answers.len() > 60);
    }

    #[test]
    fn additionals_go_first_and_alone_do_not_set_tc() {
        let request = request(None);
        let sent = Message::from_vec(&encode(&request, reply_of(&request, 10, 40)).unwrap()).unwrap();
        assert_eq!(sent.answers.len(), 10);
        assert!(sent.additionals.is_empty() && !sent.metadata.truncation);
        let small = Message::from_vec(&encode(&request, reply_of(&request, 2, 2)).unwrap()).unwrap();
        assert_eq!((small.answers.len(), small.additionals.len(), small.metadata.truncation), (2, 2, false));
    }
}
