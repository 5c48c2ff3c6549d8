//! Generated gRPC code for the server-to-server services (`proto/*.proto`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Raft RPCs: openraft messages carried as opaque payloads.
pub mod raft {
    tonic::include_proto!("weft.raft.v1");
}

/// Cluster management: discovery, join, forwarded writes, read barriers.
pub mod cluster {
    tonic::include_proto!("weft.cluster.v1");
}
