//! The server's gRPC side: the Raft transport service, the cluster
//! management service, and how servers dial each other.
//!
//! **API Boundary:** protobuf types stop here; the rest of the server works
//! on typed records and openraft types.

mod cluster_service;
mod raft_service;

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub use cluster_service::ClusterService;
pub use raft_service::{LastContact, RaftService};

/// A lazily connected channel to another server's RPC address.
pub fn channel_to(rpc_addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{rpc_addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}
