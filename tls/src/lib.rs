//! TLS for Weft's control plane: the RPC between servers, and between
//! client agents and servers. (The mesh's own TLS, SPIFFE leaves from the
//! mesh CA, is the proxy's and the server's `ca` module's; nothing here
//! trusts or signs with the mesh CA.)
//!
//! # Layout
//! - [`names`]: what the certificates name (`server.<dc>.<domain>`, an
//!   agent's node and enrollment) and who a peer is by its certificate.
//! - [`issue`]: making certificates: the operator's RPC CA, server
//!   certificates, agents' certificates from their CSRs.
//! - [`files`]: `weft tls ca create` and `weft tls cert create`.
//! - [`config`]: rustls configurations for serving and dialing RPC, with
//!   Consul's `verify_incoming`, `verify_outgoing` and
//!   `verify_server_hostname`.
//! - [`transport`]: the RPC listener (TLS or plaintext by the first byte,
//!   bounded handshakes and connections per peer) and the dialer.
#![forbid(unsafe_code)]

pub mod config;
pub mod files;
pub mod issue;
pub mod names;
pub mod transport;

pub use config::{web_client_config, AgentRoots, ClientTls, Identity, RpcTlsSettings, ServerTls, TlsError};
pub use names::{AgentName, PeerCert};
pub use transport::{incoming, ConnectError, ListenerLimits, RpcConnector, RpcPeer};
