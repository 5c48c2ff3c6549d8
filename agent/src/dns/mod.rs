//! The DNS interface (hickory-server, UDP and TCP): Consul's names under the
//! configured domain, answered from this agent's copy of the catalog.
//!
//! **Architecture Invariant:** an answer never waits on a network round trip:
//! it reads the local state store (a stale read, as Consul's DNS does by
//! default).

mod lookup;

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Name;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server as DnsServer;
use tokio::net::{TcpListener, UdpSocket};
use weft_api::ids::Datacenter;
use weft_server::store::StateStore;

pub use lookup::{answer, Answer};

/// Answers DNS queries from the state store.
pub struct CatalogDns {
    store: Arc<StateStore>,
    domain: Name,
    datacenter: Datacenter,
}

impl CatalogDns {
    /// `domain` like `weft` or `consul`.
    pub fn new(store: Arc<StateStore>, domain: &str, datacenter: Datacenter) -> Result<Self, String> {
        let domain = Name::from_ascii(format!("{}.", domain.trim_matches('.')))
            .map_err(|e| format!("invalid DNS domain {domain:?}: {e}"))?;
        Ok(Self { store, domain, datacenter })
    }
}

#[async_trait::async_trait]
impl RequestHandler for CatalogDns {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
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
            answer(&tables, &name.to_lowercase(), query.query_type(), &self.domain, &self.datacenter)
        };
        let Some(found) = found else {
            tracing::debug!(%name, "refusing a query outside the DNS domain");
            let reply = builder.build_no_records(refuse(ResponseCode::Refused));
            return send(&mut response, reply, &request.metadata).await;
        };
        let mut metadata = refuse(if found.no_such_name { ResponseCode::NXDomain } else { ResponseCode::NoError });
        // Authoritative, so forwarders (dnsmasq, unbound stub zones) accept it.
        metadata.authoritative = true;
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
