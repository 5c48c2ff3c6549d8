//! The DNS interface (hickory-server, UDP and TCP): Consul's names under the
//! configured domain (and `alt_domain`), answered from this agent's copy of
//! the catalog; other names (and reverse names of addresses the catalog does
//! not have) go to the configured recursors, or are REFUSED.
//!
//! Answers are shuffled per query. Over UDP an answer is bounded by the
//! client's EDNS0 buffer size (512 bytes without EDNS); one that does not
//! fit is sent truncated with the TC bit set, so the client retries over TCP.
//!
//! **Architecture Invariant:** an answer for the domain never waits on a
//! network round trip: it reads the local state store (a stale read, as
//! Consul's DNS does by default).

mod lookup;
mod recursor;

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Name;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server as DnsServer;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use weft_api::ids::Datacenter;
use weft_server::store::StateStore;

use crate::config::DnsSettings;
pub use lookup::{answer, Answer, LookupOptions};
use recursor::Recursors;

/// Largest UDP answer offered, whatever buffer a client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers DNS queries from the state store.
pub struct CatalogDns {
    store: Arc<StateStore>,
    /// The domain, then `alt_domain` if set.
    domains: Vec<Name>,
    datacenter: Datacenter,
    options: LookupOptions,
    recursors: Recursors,
}

impl CatalogDns {
    /// `domain` like `weft` or `consul`.
    pub fn new(
        store: Arc<StateStore>,
        domain: &str,
        settings: &DnsSettings,
        datacenter: Datacenter,
    ) -> Result<Self, String> {
        let parse = |domain: &str| {
            Name::from_ascii(format!("{}.", domain.trim_matches('.')))
                .map(|n| n.to_lowercase())
                .map_err(|e| format!("invalid DNS domain {domain:?}: {e}"))
        };
        let mut domains = vec![parse(domain)?];
        if let Some(alt) = &settings.alt_domain {
            domains.push(parse(alt)?);
        }
        let seconds = |d: Duration| d.as_secs().min(u32::MAX as u64) as u32;
        let options = LookupOptions {
            only_passing: settings.only_passing,
            node_ttl: seconds(settings.node_ttl),
            service_ttl: settings.service_ttl.iter().map(|(k, v)| (k.to_lowercase(), seconds(*v))).collect(),
        };
        let recursors = Recursors::new(settings.recursors.clone(), settings.recursor_timeout);
        Ok(Self { store, domains, datacenter, options, recursors })
    }
}

#[async_trait::async_trait]
impl RequestHandler for CatalogDns {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        // Echo EDNS0 with the buffer size we will honour: it bounds the UDP answer.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let refuse = |code: ResponseCode| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            metadata
        };
        if request.metadata.op_code != OpCode::Query || request.metadata.message_type != MessageType::Query {
            let reply = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return send(&mut response, reply, &request.metadata).await;
        }
        let Some(query) = request.queries.queries().first() else {
            let reply = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, reply, &request.metadata).await;
        };
        let name: Name = query.name().into();
        let found = {
            let tables = self.store.read();
            let name = name.to_lowercase();
            let datacenter = &self.datacenter;
            self.domains
                .iter()
                .find_map(|domain| answer(&tables, &name, query.query_type(), domain, datacenter, &self.options))
        };
        // A reverse name we do not know is the recursors' to answer, if there are any.
        let found = found.filter(|f| !f.recurse || self.recursors.is_empty());
        let Some(mut found) = found else {
            if self.recursors.is_empty() {
                tracing::debug!(%name, "refusing a query outside the DNS domain");
                let reply = builder.build_no_records(refuse(ResponseCode::Refused));
                return send(&mut response, reply, &request.metadata).await;
            }
            let Some(upstream) = self.recursors.resolve(query.original().clone()).await else {
                let reply = builder.build_no_records(refuse(ResponseCode::ServFail));
                return send(&mut response, reply, &request.metadata).await;
            };
            let mut metadata = refuse(upstream.metadata.response_code);
            metadata.recursion_available = true;
            let reply = builder.build(
                metadata,
                upstream.answers.iter(),
                upstream.authorities.iter(),
                None,
                upstream.additionals.iter(),
            );
            return send(&mut response, reply, &request.metadata).await;
        };
        found.records.shuffle(&mut rand::thread_rng());
        let mut metadata = refuse(if found.no_such_name { ResponseCode::NXDomain } else { ResponseCode::NoError });
        // Authoritative, so forwarders (dnsmasq, unbound stub zones) accept it.
        metadata.authoritative = true;
        metadata.recursion_available = !self.recursors.is_empty();
        let reply = builder.build(metadata, found.records.iter(), None, found.soa.iter(), found.additionals.iter());
        send(&mut response, reply, &request.metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "could not send a DNS response");
            let mut metadata = Metadata::response_from_request(request);
            metadata.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header { metadata, counts: Default::default() }.into()
        }
    }
}

/// Serves DNS on the given sockets until `shutdown` resolves.
pub async fn run(
    handler: CatalogDns,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut server = DnsServer::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
    shutdown.await;
    if let Err(error) = server.shutdown_gracefully().await {
        tracing::warn!(%error, "DNS server stopped with an error");
    }
}
