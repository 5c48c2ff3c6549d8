//! Join tokens, and the enrollments they are exchanged for.
//!
//! Servers with TLS (`verify_incoming`) answer only callers that prove who
//! they are with a certificate: servers with one from the operator's CA,
//! client agents with one the servers' agent CA signed for their node
//! (auto-encrypt). A new agent gets its certificate by presenting a
//! one-time **join token** (`weft operator join-token create`), which also
//! names the servers, the datacenter and the CA that signs the servers'
//! certificates: it is all a new host needs. Redeeming it records the
//! agent's **enrollment** (the hash of a secret the agent made); the agent
//! then asks for its certificate, and later renews it, with that secret.
//!
//! Only SHA-256 hashes of secrets are replicated, among servers only (client
//! agents' copies leave the join tables out, and only servers may write
//! them); a token's secret is shown once, to whoever made it, and an
//! enrollment's only to the agent it is for.

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

/// A client agent's enrollment, as the servers keep it. Its hash's first
/// [`ENROLLMENT_ID_LEN`] characters are the enrollment ID that the agent's
/// certificates carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredentialRecord {
    pub node: NodeName,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// The join token it was issued for.
    pub token_id: String,
    pub indexes: Indexes,
}

impl AgentCredentialRecord {
    /// The ID certificates issued under this enrollment carry.
    pub fn enrollment_id(&self) -> &str {
        self.secret_sha256.get(..ENROLLMENT_ID_LEN).unwrap_or(&self.secret_sha256)
    }
}

/// Hex characters of an enrollment's hash that name it in certificates.
pub const ENROLLMENT_ID_LEN: usize = 24;

/// The servers' agent CA (auto-encrypt), made by the first leader: it signs
/// client agents' certificates. Its key stays on servers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCaRecord {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for AgentCaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCaRecord").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// What a join token carries: everything a new agent needs to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The servers' RPC addresses.
    pub servers: Vec<String>,
    pub datacenter: String,
    pub secret: String,
    /// The CA the servers' certificates chain to (PEM), when they serve TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_junk_is_refused() {
        let token = JoinToken {
            servers: vec!["10.0.0.1:8300".into()],
            datacenter: "dc1".into(),
            secret: "s3cret".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
        };
        assert_eq!(JoinToken::decode(&format!(" {}\n", token.encode())).unwrap(), token);
        for junk in ["", "weftjoin1.", "weftjoin1.!!", "abc", "weftjoin1.e30"] {
            assert!(JoinToken::decode(junk).is_err(), "{junk}");
        }
    }
}
