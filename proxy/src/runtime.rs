//! A snapshot made ready for use: TLS configurations built from its PEM
//! material (one server configuration, and one client configuration per
//! protocol for every upstream) and its intention rules compiled, once per
//! snapshot rather than once per connection or request.
//!
//! Every listener reads the current [`Runtime`] from a `watch` channel: a
//! new snapshot applies to the next handshake, connection and request, and
//! open connections are judged again by the intentions it carries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use weft_api::access_log::TemplateError;
use weft_api::chain::{ChainError, CompiledChain};
use weft_api::ids::ServiceName;
use weft_api::intentions::{IntentionError, IntentionSet};
use weft_api::proxy::{IngressListener, ProxySnapshot, UpstreamSnapshot};

use crate::access_log::AccessLogConfig;
use crate::rate_limit::CompiledRateLimit;
use crate::tls::{ClientTls, TlsError, TlsMaterial};

/// The current runtime; `None` until the first usable snapshot.
pub type RuntimeWatch = watch::Receiver<Option<Arc<Runtime>>>;

pub struct Runtime {
    pub snapshot: ProxySnapshot,
    pub server_tls: Arc<ServerConfig>,
    pub intentions: IntentionSet,
    /// The service's request rate limit, regexes compiled.
    pub rate_limit: Option<CompiledRateLimit>,
    /// proxy-defaults' access logs, if enabled.
    pub access_logs: Option<Arc<AccessLogConfig>>,
    /// By local bind address.
    pub upstreams: BTreeMap<SocketAddr, UpstreamRuntime>,
    /// An ingress gateway's listeners, by bind address.
    pub ingress: BTreeMap<SocketAddr, IngressRuntime>,
    /// A transparent sidecar's implicit upstreams, by destination service.
    pub transparent: BTreeMap<ServiceName, UpstreamRuntime>,
}

/// Which of a runtime's upstreams an [`crate::outbound::Upstream`] serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamKey {
    /// An explicit upstream, by its local listener.
    Listener(SocketAddr),
    /// A transparent sidecar's implicit upstream, by its service.
    Transparent(ServiceName),
}

impl Runtime {
    /// The upstream `key` names, if this runtime has it.
    pub fn upstream(&self, key: &UpstreamKey) -> Option<&UpstreamRuntime> {
        match key {
            UpstreamKey::Listener(bind) => self.upstreams.get(bind),
            UpstreamKey::Transparent(service) => self.transparent.get(service),
        }
    }
}

/// One ingress listener: the services it exposes, each as an upstream.
pub struct IngressRuntime {
    pub listener: IngressListener,
    pub services: Vec<UpstreamRuntime>,
}

impl IngressRuntime {
    /// The exposed service a request for `host` goes to.
    pub fn service_for(&self, host: &str) -> Option<&UpstreamRuntime> {
        self.listener.services.iter().zip(&self.services).find(|(s, _)| s.serves_host(host)).map(|(_, u)| u)
    }
}

pub struct UpstreamRuntime {
    pub snapshot: UpstreamSnapshot,
    /// The runtime's client TLS, shared by all its upstreams.
    client_tls: Arc<ClientTls>,
    /// The snapshot's discovery chain, regexes compiled.
    pub chain: Option<CompiledChain>,
}

impl UpstreamRuntime {
    /// The client configuration for connections to this upstream (and to
    /// any service its chain sends to): the right ALPN, and a peer checked
    /// against the service in each connection's server name.
    pub fn client_tls(&self) -> Arc<ClientConfig> {
        self.client_tls.for_protocol(self.snapshot.protocol)
    }
}

/// A snapshot that cannot be used (the sidecar keeps its last good one).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unusable TLS material: {0}")]
    Tls(#[from] TlsError),
    #[error("unusable intentions: {0}")]
    Intentions(#[from] IntentionError),
    #[error("unusable discovery chain: {0}")]
    Chain(#[from] ChainError),
    #[error("unusable rate limit: {0}")]
    RateLimit(#[from] regex::Error),
    #[error("unusable access log format: {0}")]
    AccessLog(#[from] TemplateError),
}

impl Runtime {
    pub fn compile(snapshot: ProxySnapshot) -> Result<Runtime, RuntimeError> {
        let material = TlsMaterial {
            cert_chain_pem: snapshot.tls.cert_chain_pem.clone(),
            private_key_pem: snapshot.tls.private_key_pem.clone(),
            roots_pem: snapshot.tls.roots_pem.clone(),
        };
        let client_tls = Arc::new(material.client_tls()?);
        let upstream_runtime = |upstream: &UpstreamSnapshot| -> Result<UpstreamRuntime, RuntimeError> {
            let chain = upstream.chain.clone().map(CompiledChain::new).transpose()?;
            Ok(UpstreamRuntime { snapshot: upstream.clone(), client_tls: client_tls.clone(), chain })
        };
        let upstreams = snapshot
            .upstreams
            .iter()
            .map(|upstream| Ok((upstream.local_bind, upstream_runtime(upstream)?)))
            .collect::<Result<_, RuntimeError>>()?;
        let ingress = snapshot
            .ingress
            .iter()
            .flat_map(|ingress| &ingress.listeners)
            .map(|listener| {
                let services =
                    listener.services.iter().map(|s| upstream_runtime(&s.upstream)).collect::<Result<_, _>>()?;
                Ok((listener.bind, IngressRuntime { listener: listener.clone(), services }))
            })
            .collect::<Result<_, RuntimeError>>()?;
        let transparent = snapshot
            .transparent
            .iter()
            .flat_map(|transparent| &transparent.upstreams)
            .map(|upstream| Ok((upstream.destination.clone(), upstream_runtime(upstream)?)))
            .collect::<Result<_, RuntimeError>>()?;
        let access_logs = match &snapshot.access_logs {
            Some(logs) => Some(Arc::new(AccessLogConfig {
                sink: logs.sink.clone(),
                format: logs.format.templates()?,
                listener_logs: logs.listener_logs,
            })),
            None => None,
        };
        Ok(Runtime {
            server_tls: material.server_config()?,
            intentions: snapshot.intentions.compile()?,
            rate_limit: snapshot.inbound.rate_limit.clone().map(CompiledRateLimit::new).transpose()?,
            access_logs,
            upstreams,
            ingress,
            transparent,
            snapshot,
        })
    }
}

/// The runtime now, if there is one.
pub fn current(runtime: &RuntimeWatch) -> Option<Arc<Runtime>> {
    runtime.borrow().clone()
}
