//! The public keys a method's JWTs may be signed with: from PEM
//! (`JWTValidationPubKeys`) or from a JWKS document. Fetching a JWKS is the
//! server's business; this module only reads one.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Keys to verify JWT signatures with, each with its `kid` if it has one.
#[derive(Clone, Default)]
pub struct VerifyingKeys {
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for VerifyingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(kid, _)| kid)).finish()
    }
}

impl VerifyingKeys {
    /// RSA, ECDSA or Ed25519 public keys, PEM (`PUBLIC KEY` or
    /// `RSA PUBLIC KEY`). The error is Consul's text.
    pub fn from_pems(pems: &[String]) -> Result<VerifyingKeys, String> {
        let keys = pems
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                let pem = pem.as_bytes();
                DecodingKey::from_rsa_pem(pem)
                    .or_else(|_| DecodingKey::from_ec_pem(pem))
                    .or_else(|_| DecodingKey::from_ed_pem(pem))
                    .map(|key| (None, key))
                    .map_err(|_| {
                        format!(
                            "error parsing public key JWTValidationPubKeys[{i}]: data does not contain any valid RSA, ECDSA, or ED25519 public keys"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(VerifyingKeys { keys })
    }

    /// The signing keys of a JWKS document (RFC 7517). Keys of a type this
    /// cannot use, and symmetric keys, are skipped; a document with none
    /// left is an error.
    pub fn from_jwks(document: &[u8]) -> Result<VerifyingKeys, String> {
        let document: Value =
            serde_json::from_slice(document).map_err(|e| format!("the JWKS document is not JSON: {e}"))?;
        let listed = document.get("keys").and_then(Value::as_array).ok_or("the JWKS document has no \"keys\" list")?;
        let keys: Vec<(Option<String>, DecodingKey)> = listed
            .iter()
            .filter(|key| key.get("use").and_then(Value::as_str).is_none_or(|usage| usage == "sig"))
            .filter(|key| key.get("kty").and_then(Value::as_str) != Some("oct"))
            .filter_map(|key| {
                let jwk: Jwk = serde_json::from_value(key.clone()).ok()?;
                Some((jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk).ok()?))
            })
            .collect();
        if keys.is_empty() {
            return Err("the JWKS document has no usable signing keys".into());
        }
        Ok(VerifyingKeys { keys })
    }

    /// The keys to try for a JWT whose header names `kid`: the key with
    /// that ID if there is one, else every key.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        let named = kid.is_some() && self.keys.iter().any(|(id, _)| id.as_deref() == kid);
        self.keys.iter().filter(move |(id, _)| !named || id.as_deref() == kid).map(|(_, key)| key)
    }

    /// Whether a key has the ID `kid` (a JWT naming another one may mean
    /// the issuer rotated its keys, and the JWKS is worth fetching again).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(id, _)| id.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
