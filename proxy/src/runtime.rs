//! A snapshot made ready for use: TLS configurations built from its PEM
//! material and its intention rules compiled, once per snapshot rather than
//! once per connection or request.
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
use weft_api::intentions::{IntentionError, IntentionSet};
use weft_api::proxy::{ProxySnapshot, UpstreamSnapshot};

use crate::access_log::AccessLogConfig;
use crate::rate_limit::CompiledRateLimit;
use crate::tls::{TlsError, TlsMaterial};

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
}

pub struct UpstreamRuntime {
    pub snapshot: UpstreamSnapshot,
    /// Verifies that the peer serves `snapshot.destination`.
    pub client_tls: Arc<ClientConfig>,
    /// The snapshot's discovery chain, regexes compiled.
    pub chain: Option<CompiledChain>,
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
        let upstreams = snapshot
            .upstreams
            .iter()
            .map(|upstream| {
                let client_tls = material.client_config(&upstream.destination, upstream.protocol)?;
                let chain = upstream.chain.clone().map(CompiledChain::new).transpose()?;
                Ok((upstream.local_bind, UpstreamRuntime { snapshot: upstream.clone(), client_tls, chain }))
            })
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
            snapshot,
        })
    }
}

/// The runtime now, if there is one.
pub fn current(runtime: &RuntimeWatch) -> Option<Arc<Runtime>> {
    runtime.borrow().clone()
}
