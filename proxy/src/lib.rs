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
//! - [`sidecar`]: a sidecar run from its local agent: follows its snapshot
//!   and runs the listeners and the admin port on it.
//! - [`runtime`]: a snapshot compiled for use (TLS configurations, intention
//!   rules), shared with every listener through a `watch` channel.
//! - [`inbound`]: the public mTLS listener: identify, judge, splice or serve HTTP.
//! - [`outbound`]: an upstream's local listener: pick an endpoint, handshake,
//!   verify the peer's SPIFFE ID, splice or serve HTTP.
//! - [`http`]: the L7 path: per-request intentions inbound, keep-alive
//!   HTTP/1.1 or multiplexed HTTP/2 between sidecars outbound.
//! - `routing`: an HTTP upstream's requests through its discovery chain
//!   (routes, faults, splits, failover, retries, timeouts, header edits).
//! - [`ingress_gateway`]: an ingress gateway's edge listeners: `Host` to
//!   service, then the service's chain, from the same snapshot machinery.
//! - [`mesh_gateway`]: a mesh gateway: relays mTLS from other networks to
//!   the sidecar each connection's SNI names, without terminating it.
//! - [`transparent`]: the outbound listener redirected connections arrive
//!   at: by original destination into the mesh, or passed through.
//! - [`rate_limit`]: the inbound request rate limit (token buckets).
//! - [`access_log`]: access log lines, written off the request path.
//! - [`balancer`]: round robin and least request (power of two choices).
//! - [`tls`], [`identity`]: rustls configurations and SPIFFE IDs.
//! - [`metrics`], [`admin`]: Prometheus metrics and the admin port.
//! - [`resident`]: gives back the pages start-up touched, once serving.
//! - [`workers`]: the worker threads connections run on with `--threads N`.
//!
//! **Architecture Invariant:** the proxy talks to nothing but its peers, its
//! local application and its local agent; a routing or authorization
//! decision never waits on the network.
// One `unsafe` block, in `resident`, gives pages back to the kernel.
#![deny(unsafe_code)]

mod accept;
pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod ingress_gateway;
pub mod mesh_gateway;
pub mod metrics;
pub mod outbound;
pub mod rate_limit;
pub mod resident;
mod routing;
pub mod runtime;
pub mod sidecar;
pub mod tls;
pub mod transparent;
pub mod workers;

pub use identity::SpiffeId;
pub use tls::{TlsError, TlsMaterial};
