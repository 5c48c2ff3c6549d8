//! The server's gRPC side: the Raft transport service, the cluster
//! management service, the one authorization point in front of both, and
//! how servers and agents dial servers.
//!
//! **API Boundary:** protobuf types stop here; the rest of the server works
//! on typed records and openraft types.

pub mod authz;
mod cluster_service;
mod raft_service;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use weft_api::proto::cluster::cluster_client::ClusterClient;
use weft_tls::RpcConnector;

use crate::ServerError;

pub use authz::{RpcAuthLayer, RpcPolicy, MAX_MESSAGE};
pub use cluster_service::{ClusterService, STREAM_KEEPALIVE};
pub use raft_service::{LastContact, RaftService};

/// A lazily connected channel to a server's RPC address, dialed by
/// `connector` (TLS where configured).
pub fn channel_to(rpc_addr: &str, connector: &RpcConnector) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{rpc_addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_with_connector_lazy(connector.clone()))
}

/// One channel per server address, made on first use and kept.
pub struct Channels {
    channels: Mutex<HashMap<String, Channel>>,
    connector: RpcConnector,
}

impl Channels {
    pub fn new(connector: RpcConnector) -> Channels {
        Channels { channels: Mutex::default(), connector }
    }

    /// A cluster-management client for the server at `rpc_addr`.
    pub fn cluster_client(&self, rpc_addr: &str) -> Result<ClusterClient<Channel>, ServerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(rpc_addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel =
                    channel_to(rpc_addr, &self.connector).map_err(|e| ServerError::LeaderUnreachable(e.to_string()))?;
                channels.insert(rpc_addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(ClusterClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
    }

    /// Forgets every channel, so the next calls dial again (with the
    /// certificate presented from now on).
    pub fn reconnect(&self) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use weft_api::proto::cluster::ApplyRequest;

    use super::*;

    #[tokio::test]
    async fn a_call_to_a_server_that_is_not_there_was_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let channels = Channels::new(RpcConnector::new(None));
        let mut client = channels.cluster_client(&format!("127.0.0.1:{port}")).unwrap();
        let status = client.apply(ApplyRequest { command: Vec::new(), acl_token: String::new() }).await.unwrap_err();
        let error = crate::server::forwarded_write_error(status);
        assert!(matches!(error, ServerError::LeaderUnreachable(_)), "{error:?}");
    }
}
