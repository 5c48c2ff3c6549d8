//! Join tokens and the credentials they are exchanged for.
//!
//! A server cluster with an RPC key (`rpc_key`) answers only callers that
//! prove who they are: servers with the key, client agents with a
//! credential of their own. A new agent gets its credential by presenting
//! a one-time **join token** (`weft operator join-token create`), which also
//! names the servers and the datacenter: it is all a new host needs.
//!
//! Only SHA-256 hashes of secrets are replicated, among servers only (client
//! agents' copies leave the join tables out, and only servers may write
//! them); a token's secret is shown once, to whoever made it, and a
//! credential's only to the agent it is for.

use serde::{Deserialize, Serialize};

use crate::ids::{Indexes, NodeName};

/// A join token as the servers keep it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// A short public ID (`weft operator join-token list`, `delete`).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    pub description: String,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires_at: i64,
    /// Agents that may still join with it.
    pub uses_left: u32,
    pub indexes: Indexes,
}

/// A client agent's credential, as the servers keep it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredentialRecord {
    pub node: NodeName,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// The join token it was issued for.
    pub token_id: String,
    pub indexes: Indexes,
}

/// What a join token carries: everything a new agent needs to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The servers' RPC addresses.
    pub servers: Vec<String>,
    pub datacenter: String,
    pub secret: String,
}

/// The prefix every join token starts with (and its format version).
const TOKEN_PREFIX: &str = "weftjoin1.";

#[derive(Debug, thiserror::Error)]
#[error("not a Weft join token ({0}); make one with `weft operator join-token create`")]
pub struct BadJoinToken(&'static str);

impl JoinToken {
    /// The token as one copyable string.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<JoinToken, BadJoinToken> {
        use base64::Engine;
        let body = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(BadJoinToken("it does not start with weftjoin1."))?;
        let json =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| BadJoinToken("bad base64"))?;
        let token: JoinToken = serde_json::from_slice(&json).map_err(|_| BadJoinToken("bad contents"))?;
        if token.servers.is_empty() || token.secret.is_empty() {
            return Err(BadJoinToken("it names no server or has no secret"));
        }
        Ok(token)
    }
}

/// The gRPC metadata key a caller's credential travels in.
pub const CREDENTIAL_METADATA: &str = "authorization";

/// Who an RPC caller says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcCredential {
    /// A server: the cluster's RPC key.
    Server { key: String },
    /// A client agent: its node and the secret it was issued.
    Agent { node: NodeName, secret: String },
}

impl RpcCredential {
    /// The metadata value: `Weft-Server <key>` or `Weft-Agent <node> <secret>`.
    pub fn header_value(&self) -> String {
        match self {
            RpcCredential::Server { key } => format!("Weft-Server {key}"),
            RpcCredential::Agent { node, secret } => format!("Weft-Agent {node} {secret}"),
        }
    }

    pub fn parse(value: &str) -> Option<RpcCredential> {
        let mut words = value.split(' ');
        let credential = match words.next()? {
            "Weft-Server" => RpcCredential::Server { key: words.next()?.to_owned() },
            "Weft-Agent" => {
                RpcCredential::Agent { node: NodeName::new(words.next()?), secret: words.next()?.to_owned() }
            }
            _ => return None,
        };
        words.next().is_none().then_some(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_junk_is_refused() {
        let token =
            JoinToken { servers: vec!["10.0.0.1:8300".into()], datacenter: "dc1".into(), secret: "s3cret".into() };
        assert_eq!(JoinToken::decode(&format!(" {}\n", token.encode())).unwrap(), token);
        for junk in ["", "weftjoin1.", "weftjoin1.!!", "abc", "weftjoin1.e30"] {
            assert!(JoinToken::decode(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn credentials_round_trip() {
        for credential in
            [RpcCredential::Server { key: "k".into() }, RpcCredential::Agent { node: "vm1".into(), secret: "s".into() }]
        {
            assert_eq!(RpcCredential::parse(&credential.header_value()), Some(credential));
        }
        assert_eq!(RpcCredential::parse("Weft-Agent vm1"), None);
        assert_eq!(RpcCredential::parse("Bearer x"), None);
    }
}
