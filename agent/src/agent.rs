//! Starting and stopping an agent: the caller binds the listeners (so tests
//! can use port 0), [`Agent::run`] serves until the shutdown signal.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use weft_server::{Server, ServerConfig, StartError};

use crate::config::AgentConfig;
use crate::dns::CatalogDns;
use crate::http::{self, AppState};

/// The sockets an agent serves on, bound by the caller.
pub struct Listeners {
    pub rpc: TcpListener,
    pub http: TcpListener,
    /// DNS over UDP and TCP, on the same port.
    pub dns_udp: UdpSocket,
    pub dns_tcp: TcpListener,
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Server(#[from] StartError),
    #[error("HTTP API failed: {0}")]
    Http(std::io::Error),
    #[error("{0}")]
    Dns(String),
}

/// A configured agent.
pub struct Agent {
    config: Arc<AgentConfig>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Self { config: Arc::new(config) }
    }

    /// Runs the agent until `shutdown` resolves, then drains and returns.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let config = self.config;
        let rpc_addr = listeners.rpc.local_addr().map_err(AgentError::Http)?;
        let http_addr = listeners.http.local_addr().map_err(AgentError::Http)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let server = Server::start(
            ServerConfig {
                node_name: config.node_name.clone(),
                datacenter: config.datacenter.clone(),
                data_dir: config.data_dir.clone(),
                rpc_addr: rpc_addr.to_string(),
                http_addr: http_addr.to_string(),
                bootstrap_expect: config.bootstrap_expect,
                retry_join: config.retry_join.clone(),
                raft: config.raft.clone(),
            },
            listeners.rpc,
            stopped(stop_rx.clone()),
        )
        .await?;
        tracing::info!(http = %http_addr, rpc = %rpc_addr, node = %config.node_name, "agent ready");
        let store = server.store().clone();
        let dns = CatalogDns::new(store.clone(), &config.domain, config.datacenter.clone()).map_err(AgentError::Dns)?;
        let dns = tokio::spawn(crate::dns::run(dns, listeners.dns_udp, listeners.dns_tcp, stopped(stop_rx.clone())));
        let state = AppState { server, config: config.clone() };
        let http = tokio::spawn(http::run(state, listeners.http, stopped(stop_rx)));
        shutdown.await;
        tracing::info!("shutting down");
        // Wake blocking queries first, so the HTTP drain does not wait out their `?wait`.
        store.close();
        let _ = stop_tx.send(true);
        let _ = dns.await;
        match http.await {
            Ok(result) => result.map_err(AgentError::Http),
            Err(join) => Err(AgentError::Http(std::io::Error::other(join))),
        }
    }
}
