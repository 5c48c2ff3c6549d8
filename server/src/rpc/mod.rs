//! The server's gRPC side: the Raft transport service, the cluster
//! management service, and how servers dial each other.
//!
//! **API Boundary:** protobuf types stop here; the rest of the server works
//! on typed records and openraft types.

mod cluster_service;
mod raft_service;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use weft_api::join::{RpcCredential, CREDENTIAL_METADATA};
use weft_api::proto::cluster::cluster_client::ClusterClient;

use crate::ServerError;

pub use cluster_service::{ClusterService, STREAM_KEEPALIVE};
pub use raft_service::{LastContact, RaftService};

/// A lazily connected channel to another server's RPC address.
pub fn channel_to(rpc_addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{rpc_addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

/// A channel whose every call carries the caller's credential, if it has one.
pub type AuthChannel = InterceptedService<Channel, Credential>;

/// Adds a [`RpcCredential`] to each call (see `crate::join`).
#[derive(Clone, Default)]
pub struct Credential(Option<MetadataValue<Ascii>>);

impl Credential {
    pub fn new(credential: Option<&RpcCredential>) -> Credential {
        Credential(credential.and_then(|c| c.header_value().parse().ok()))
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(CREDENTIAL_METADATA, value.clone());
        }
        Ok(request)
    }
}

/// One channel per server address, made on first use and kept; every call
/// carries `credential`.
#[derive(Default)]
pub struct Channels {
    channels: Mutex<HashMap<String, Channel>>,
    credential: Credential,
}

impl Channels {
    pub fn with_credential(credential: Option<&RpcCredential>) -> Channels {
        Channels { channels: Mutex::default(), credential: Credential::new(credential) }
    }

    /// A cluster-management client for the server at `rpc_addr`.
    pub fn cluster_client(&self, rpc_addr: &str) -> Result<ClusterClient<AuthChannel>, ServerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(rpc_addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = channel_to(rpc_addr).map_err(|e| ServerError::LeaderUnreachable(e.to_string()))?;
                channels.insert(rpc_addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(ClusterClient::with_interceptor(channel, self.credential.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }
}
