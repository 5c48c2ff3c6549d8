//! The Weft sidecar's data plane.
//!
//! Every connection between services crosses two sidecars over mutual TLS
//! (1.3 only), each side proving its service with a leaf from the mesh CA
//! whose URI SAN is a SPIFFE ID. Inbound, the sidecar reads the caller's
//! service from its certificate and asks the intentions whether it may
//! connect; outbound, it checks that the sidecar it reached serves the
//! service it meant to reach.
//!
//! # Layout
//! - [`identity`]: SPIFFE IDs, and reading them out of certificates.
//! - [`tls`]: rustls configurations from PEM material: the inbound side
//!   requires a client certificate chained to a mesh root; the outbound side
//!   verifies the chain and the expected SPIFFE service instead of a DNS name.
//! - [`inbound`]: the public listener: handshake, identify, authorize, splice
//!   to the local application.
//! - [`outbound`]: an upstream's local listener: pick an endpoint, handshake,
//!   verify, splice.
//! - [`sidecar`]: a sidecar run from its local agent: configuration, leaf,
//!   roots and endpoints followed through the agent's HTTP API.
//!
//! **Architecture Invariant:** the proxy talks to nothing but its peers and
//! its local application; configuration reaches it from its local agent, as
//! values pushed through `watch` channels, and a routing or authorization
//! decision never waits on the network.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balancer;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod runtime;
pub mod sidecar;
pub mod tls;

pub use identity::SpiffeId;
pub use tls::{TlsError, TlsMaterial};
