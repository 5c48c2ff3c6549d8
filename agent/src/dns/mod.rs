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
mod udp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server as DnsServer;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use weft_api::ids::Datacenter;
use weft_server::store::{StateStore, Table, Tables};

use crate::config::DnsSettings;
pub use lookup::{answer, Answer, LookupOptions};
use recursor::Recursors;

/// Largest UDP answer offered, whatever buffer a client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers DNS queries from the state store.
pub struct CatalogDns {
    store: Arc<StateStore>,
    /// Answers are filtered by what the agent's default token may read.
    acl: Arc<crate::acl::AclState>,
    /// The domain, then `alt_domain` if set.
    domains: Vec<Name>,
    datacenter: Datacenter,
    options: LookupOptions,
    recursors: Recursors,
    /// Forwarded queries in flight, at most [`MAX_RECURSIONS`]: past that,
    /// a query outside the domain gets SERVFAIL at once (the client may ask
    /// again) rather than a task and a socket of its own.
    recursions: Arc<tokio::sync::Semaphore>,
}

/// Forwarded queries in flight at most (unbound's default for outgoing
/// queries per thread is 1024 ports; an agent forwards for one host).
const MAX_RECURSIONS: usize = 256;

impl CatalogDns {
    /// `domain` like `weft` or `consul`.
    pub fn new(
        store: Arc<StateStore>,
        acl: Arc<crate::acl::AclState>,
        domain: &str,
        settings: &DnsSettings,
        datacenter: Datacenter,
        ns_address: IpAddr,
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
            soa: settings.soa,
            ns_address: Some(ns_address),
        };
        let recursors = Recursors::new(settings.recursors.clone(), settings.recursor_timeout);
        let recursions = Arc::new(tokio::sync::Semaphore::new(MAX_RECURSIONS));
        Ok(Self { store, acl, domains, datacenter, options, recursors, recursions })
    }
}

/// Lookups answered since the catalog last changed, by name and type.
#[derive(Default)]
pub struct AnswerCache {
    /// The tables' index and the default token's generation (and whether
    /// it had expired) the answers were made at.
    made_at: (weft_api::ids::RaftIndex, (u64, bool)),
    answers: std::collections::HashMap<(Name, RecordType), Found>,
}

/// What a lookup found: an answer (or nothing: not ours), or a name the
/// default token may not read, answered as if there were none.
#[derive(Clone)]
enum Found {
    Answer(Option<Box<Answer>>),
    Hidden(Name),
}

/// The tables a DNS answer reads (config entries for `<service>.ingress`
/// names, which follow ingress-gateway entries; the ACL tables for what
/// the default token may read).
const DNS_TABLES: &[Table] = &[Table::Nodes, Table::Services, Table::Checks, Table::ConfigEntries, Table::Acl];
/// Lookups kept at most; the cache starts over beyond it.
const ANSWER_CACHE_ENTRIES: usize = 4096;

impl AnswerCache {
    fn get_or_insert(
        &mut self,
        made_at: (weft_api::ids::RaftIndex, (u64, bool)),
        key: (Name, RecordType),
        look_up: impl FnOnce() -> Found,
    ) -> Found {
        if made_at != self.made_at || self.answers.len() >= ANSWER_CACHE_ENTRIES {
            self.answers.clear();
            self.made_at = made_at;
        }
        self.answers.entry(key).or_insert_with(look_up).clone()
    }
}

/// An answer made from the local state (or the recursors), before encoding.
pub struct Reply {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// What to do with a query.
pub enum Outcome {
    Reply(Reply),
    /// Only the recursors can answer it.
    Recurse(Query),
}

impl Reply {
    fn empty(request: &Metadata, code: ResponseCode) -> Reply {
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = code;
        Reply { metadata, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

impl CatalogDns {
    /// The one decision for a query, over UDP and TCP alike: answered from
    /// the local state (shuffled, authoritative), refused, or left to the
    /// recursors.
    pub fn outcome(&self, request: &Metadata, query: Option<&Query>) -> Outcome {
        self.outcome_cached(request, query, None)
    }

    /// [`outcome`](Self::outcome), reusing `cache`'s lookups while the
    /// catalog has not changed (the UDP workers keep one each).
    pub fn outcome_cached(
        &self,
        request: &Metadata,
        query: Option<&Query>,
        cache: Option<&mut AnswerCache>,
    ) -> Outcome {
        if request.op_code != OpCode::Query || request.message_type != MessageType::Query {
            return Outcome::Reply(Reply::empty(request, ResponseCode::NotImp));
        }
        let Some(query) = query else { return Outcome::Reply(Reply::empty(request, ResponseCode::FormErr)) };
        let name = query.name().to_lowercase();
        let found = {
            let tables = self.store.read();
            let look_up = || {
                if let Some(domain) = self.hidden_by_acl(&tables, &name) {
                    return Found::Hidden(domain.clone());
                }
                let datacenter = &self.datacenter;
                // Instances on nodes the default token may not read are left out.
                let authorizer = self.acl.enabled().then(|| self.acl.default_authorizer(&tables).ok());
                let readable_node = |node: &str| match &authorizer {
                    None => true,
                    Some(authorizer) => authorizer.as_ref().is_some_and(|a| {
                        a.named(weft_api::acl::NamedResource::Node, node).grants(weft_api::acl::Access::Read)
                    }),
                };
                let asked = (&name, query.query_type());
                Found::Answer(
                    self.domains
                        .iter()
                        .find_map(|domain| answer(&tables, asked, domain, datacenter, &self.options, &readable_node))
                        .map(Box::new),
                )
            };
            match cache {
                Some(cache) => {
                    let made_at = (tables.max_index(DNS_TABLES), self.acl.default_generation());
                    cache.get_or_insert(made_at, (name.clone(), query.query_type()), look_up)
                }
                None => look_up(),
            }
        };
        let found = match found {
            Found::Answer(found) => found.map(|answer| *answer),
            Found::Hidden(domain) => {
                let mut reply = Reply::empty(request, ResponseCode::NXDomain);
                reply.metadata.authoritative = true;
                reply.authorities.push(lookup::soa(&domain, &self.options.soa));
                return Outcome::Reply(reply);
            }
        };
        // A reverse name we do not know is the recursors' to answer, if there are any.
        let found = found.filter(|f| !f.recurse || self.recursors.is_empty());
        let Some(mut found) = found else {
            if self.recursors.is_empty() {
                tracing::debug!(name = %query.name(), "refusing a query outside the DNS domain");
                return Outcome::Reply(Reply::empty(request, ResponseCode::Refused));
            }
            return Outcome::Recurse(query.clone());
        };
        found.records.shuffle(&mut rand::thread_rng());
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = if found.no_such_name { ResponseCode::NXDomain } else { ResponseCode::NoError };
        // Authoritative, so forwarders (dnsmasq, unbound stub zones) accept it.
        metadata.authoritative = true;
        metadata.recursion_available = !self.recursors.is_empty();
        Outcome::Reply(Reply {
            metadata,
            answers: found.records,
            authorities: found.soa.into_iter().collect(),
            additionals: found.additionals,
        })
    }

    /// The domain of `name` if it asks for a service or node the agent's
    /// default token may not read: it is answered as if there were none.
    fn hidden_by_acl(&self, tables: &Tables, name: &Name) -> Option<&Name> {
        if !self.acl.enabled() {
            return None;
        }
        let (domain, asked) = self.domains.iter().find_map(|d| Some((d, lookup::asked(name, d, &self.datacenter)?)))?;
        let (resource, subject) = asked.subject()?;
        let readable = match self.acl.default_authorizer(tables) {
            Ok(authorizer) => authorizer.named(resource, subject).grants(weft_api::acl::Access::Read),
            Err(_) => false,
        };
        (!readable).then_some(domain)
    }

    /// Asks the recursors; SERVFAIL if none answers.
    /// A place among the forwarded queries in flight, if one is free.
    pub fn recursion_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.recursions.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!(limit = MAX_RECURSIONS, "too many forwarded queries in flight; answering SERVFAIL");
        }
        permit
    }

    /// Forwards `query` to the recursors (the caller holds a [`recursion_permit`](Self::recursion_permit)).
    pub async fn recurse(&self, request: &Metadata, query: Query) -> Reply {
        let Some(upstream) = self.recursors.resolve(query).await else {
            return Reply::empty(request, ResponseCode::ServFail);
        };
        let mut reply = Reply::empty(request, upstream.metadata.response_code);
        reply.metadata.recursion_available = true;
        reply.answers = upstream.answers;
        reply.authorities = upstream.authorities;
        reply.additionals = upstream.additionals;
        reply
    }
}

/// The EDNS0 we answer with: the client's buffer size, within bounds; it
/// also bounds the UDP answer.
fn answer_edns(asked: Option<&Edns>) -> Option<Edns> {
    asked.map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns
    })
}

/// TCP goes through hickory-server (framing, timeouts); UDP has its own
/// loop (see [`udp`]).
#[async_trait::async_trait]
impl RequestHandler for CatalogDns {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = answer_edns(request.edns.as_ref());
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let query = request.queries.queries().first().map(|q| q.original().clone());
        let reply = match self.outcome(&request.metadata, query.as_ref()) {
            Outcome::Reply(reply) => reply,
            Outcome::Recurse(query) => match self.recursion_permit() {
                Some(_permit) => self.recurse(&request.metadata, query).await,
                None => Reply::empty(&request.metadata, ResponseCode::ServFail),
            },
        };
        let message = builder.build(
            reply.metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            None,
            reply.additionals.iter(),
        );
        send(&mut response, message, &request.metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
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
    let handler = Arc::new(handler);
    let udp_workers = udp::serve(handler.clone(), Arc::new(udp));
    let mut server = DnsServer::new(SharedHandler(handler));
    server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
    shutdown.await;
    for worker in udp_workers {
        worker.abort();
    }
    if let Err(error) = server.shutdown_gracefully().await {
        tracing::warn!(%error, "DNS server stopped with an error");
    }
}

/// The handler shared by the UDP loop and hickory's TCP server.
struct SharedHandler(Arc<CatalogDns>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response).await
    }
}
