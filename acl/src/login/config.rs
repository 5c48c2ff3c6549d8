//! A `jwt` auth method's `Config`, as Consul takes it (PascalCase JSON),
//! into a typed [`JwtConfig`], and back. Strict as Consul's decoder: an
//! unknown key, a second key source or a key that does not parse is refused
//! before the method is written.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use weft_api::acl::{JwtConfig, JwtKeySource};

use super::keys::VerifyingKeys;

/// The keys Consul's `jwt` type takes.
const KEYS: [&str; 13] = [
    "JWTValidationPubKeys",
    "JWKSURL",
    "JWKSCACert",
    "OIDCDiscoveryURL",
    "OIDCDiscoveryCACert",
    "BoundIssuer",
    "BoundAudiences",
    "ClaimMappings",
    "ListClaimMappings",
    "JWTSupportedAlgs",
    "ExpirationLeeway",
    "NotBeforeLeeway",
    "ClockSkewLeeway",
];

/// Keys of Consul's `oidc` type (Enterprise), refused for `jwt` by name.
const OIDC_ONLY: [&str; 6] =
    ["OIDCClientID", "OIDCClientSecret", "OIDCScopes", "OIDCACRValues", "AllowedRedirectURIs", "VerboseOIDCLogging"];

/// The signing algorithms a JWT may use: asymmetric ones only, so a public
/// key can never be mistaken for an HMAC secret.
pub const ALGORITHMS: [&str; 10] =
    ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"];

/// Parses and checks a `jwt` method's `Config`. The error is Consul's text,
/// which the caller prefixes with `Invalid Auth Method: `.
pub fn parse_jwt_config(config: &Value) -> Result<JwtConfig, String> {
    let object = match config {
        Value::Object(object) => object,
        Value::Null => &Map::new(),
        _ => return Err("error decoding config: Config must be a JSON object".into()),
    };
    if let Some(key) = object.keys().find(|k| OIDC_ONLY.contains(&k.as_str())) {
        return Err(format!("'{key}' must not be set for type \"jwt\""));
    }
    let unknown: Vec<&str> = object.keys().map(String::as_str).filter(|k| !KEYS.contains(k)).collect();
    if !unknown.is_empty() {
        return Err(format!("error decoding config: '' has invalid keys: {}", unknown.join(", ")));
    }
    let string = |key: &str| -> Result<String, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(format!("error decoding config: '{key}' expected a string, got {other}")),
        }
    };
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            // Consul's decoder is weakly typed: one string is a list of one.
            Some(Value::String(text)) => Ok(vec![text.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(format!("error decoding config: '{key}' expected strings, got {other}")),
                })
                .collect(),
            Some(other) => Err(format!("error decoding config: '{key}' expected a list of strings, got {other}")),
        }
    };
    let mappings = |key: &str| -> Result<BTreeMap<String, String>, String> {
        let map: BTreeMap<String, String> = match object.get(key) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(claim, attribute)| match attribute {
                    Value::String(attribute) => Ok((claim.clone(), attribute.clone())),
                    other => Err(format!("error decoding config: '{key}[{claim}]' expected a string, got {other}")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => Err(format!("error decoding config: '{key}' expected an object, got {other}"))?,
        };
        let mut targets = std::collections::BTreeSet::new();
        if let Some(twice) = map.values().find(|attribute| !targets.insert(attribute.as_str())) {
            return Err(format!("{key} contains multiple mappings for key {twice:?}"));
        }
        Ok(map)
    };
    let leeway = |key: &str| -> Result<i64, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(0),
            // Consul's form: nanoseconds.
            Some(Value::Number(number)) => number
                .as_i64()
                .or_else(|| number.as_f64().map(|f| f as i64))
                .ok_or_else(|| format!("error decoding config: '{key}' is not a duration")),
            // Weft also takes Go's duration strings ("150s"; "-1" for none).
            Some(Value::String(text)) if text.trim().starts_with('-') => Ok(-1),
            Some(Value::String(text)) => weft_api::duration::parse(text)
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
                .map_err(|e| format!("error decoding config: '{key}': {e}")),
            Some(other) => Err(format!("error decoding config: '{key}' expected a duration, got {other}")),
        }
    };

    let pub_keys = strings("JWTValidationPubKeys")?;
    let (jwks_url, jwks_ca) = (string("JWKSURL")?, string("JWKSCACert")?);
    let (discovery_url, discovery_ca) = (string("OIDCDiscoveryURL")?, string("OIDCDiscoveryCACert")?);
    let sources = [!pub_keys.is_empty(), !jwks_url.is_empty(), !discovery_url.is_empty()];
    if sources.iter().filter(|set| **set).count() != 1 {
        return Err(
            "exactly one of 'JWTValidationPubKeys', 'JWKSURL', or 'OIDCDiscoveryURL' must be set for type \"jwt\""
                .into(),
        );
    }
    if !jwks_ca.is_empty() && jwks_url.is_empty() {
        return Err("'JWKSCACert' should not be set unless 'JWKSURL' is set".into());
    }
    if !discovery_ca.is_empty() && discovery_url.is_empty() {
        return Err("'OIDCDiscoveryCACert' should not be set unless 'OIDCDiscoveryURL' is set".into());
    }
    let keys = if !pub_keys.is_empty() {
        VerifyingKeys::from_pems(&pub_keys)?;
        JwtKeySource::Static(pub_keys)
    } else if !jwks_url.is_empty() {
        check_url("JWKSURL", &jwks_url)?;
        check_ca("JWKSCACert", &jwks_ca)?;
        JwtKeySource::Jwks { url: jwks_url, ca_cert: jwks_ca }
    } else {
        check_url("OIDCDiscoveryURL", &discovery_url)?;
        check_ca("OIDCDiscoveryCACert", &discovery_ca)?;
        JwtKeySource::OidcDiscovery { url: discovery_url, ca_cert: discovery_ca }
    };
    let supported_algs = strings("JWTSupportedAlgs")?;
    if let Some(bad) = supported_algs.iter().find(|alg| !ALGORITHMS.contains(&alg.as_str())) {
        return Err(format!("Invalid supported algorithm: {bad}"));
    }
    Ok(JwtConfig {
        keys,
        bound_issuer: string("BoundIssuer")?,
        bound_audiences: strings("BoundAudiences")?,
        claim_mappings: mappings("ClaimMappings")?,
        list_claim_mappings: mappings("ListClaimMappings")?,
        supported_algs,
        expiration_leeway_ns: leeway("ExpirationLeeway")?,
        not_before_leeway_ns: leeway("NotBeforeLeeway")?,
        clock_skew_leeway_ns: leeway("ClockSkewLeeway")?,
    })
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        _ => Err(format!("error checking {key}: {url:?} is not an http:// or https:// URL")),
    }
}

fn check_ca(key: &str, pem: &str) -> Result<(), String> {
    if pem.is_empty() || pem.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(());
    }
    Err(format!("error checking {key}: could not parse CA PEM value successfully"))
}

/// A `jwt` method's `Config` as Consul shows it.
pub fn jwt_config_json(config: &JwtConfig) -> Value {
    let mut object = Map::new();
    let mut put = |key: &str, value: Value| {
        let empty = match &value {
            Value::String(text) => text.is_empty(),
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            _ => false,
        };
        if !empty {
            object.insert(key.to_owned(), value);
        }
    };
    match &config.keys {
        JwtKeySource::Static(pems) => put("JWTValidationPubKeys", json!(pems)),
        JwtKeySource::Jwks { url, ca_cert } => {
            put("JWKSURL", json!(url));
            put("JWKSCACert", json!(ca_cert));
        }
        JwtKeySource::OidcDiscovery { url, ca_cert } => {
            put("OIDCDiscoveryURL", json!(url));
            put("OIDCDiscoveryCACert", json!(ca_cert));
        }
    }
    put("BoundIssuer", json!(config.bound_issuer));
    put("BoundAudiences", json!(config.bound_audiences));
    put("ClaimMappings", json!(config.claim_mappings));
    put("ListClaimMappings", json!(config.list_claim_mappings));
    put("JWTSupportedAlgs", json!(config.supported_algs));
    put("ExpirationLeeway", json!(config.expiration_leeway_ns));
    put("NotBeforeLeeway", json!(config.not_before_leeway_ns));
    put("ClockSkewLeeway", json!(config.clock_skew_leeway_ns));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_source_known_keys_and_distinct_targets() {
        let jwks = json!({"JWKSURL": "https://k8s/openid/v1/jwks", "BoundAudiences": "weft",
            "ClaimMappings": {"/kubernetes.io/namespace": "namespace"}, "ClockSkewLeeway": "30s"});
        let config = parse_jwt_config(&jwks).unwrap();
        assert_eq!(config.keys, JwtKeySource::Jwks { url: "https://k8s/openid/v1/jwks".into(), ca_cert: "".into() });
        assert_eq!(config.bound_audiences, ["weft"]);
        assert_eq!(config.clock_skew_leeway_ns, 30_000_000_000);
        assert_eq!(parse_jwt_config(&jwt_config_json(&config)).unwrap(), config, "shown back as it parses");

        let refused = |config: Value| parse_jwt_config(&config).unwrap_err();
        assert!(refused(json!({})).starts_with("exactly one of"));
        assert!(refused(json!({"JWKSURL": "https://a", "OIDCDiscoveryURL": "https://b"})).starts_with("exactly one"));
        assert_eq!(
            refused(json!({"JWKSURL": "https://a", "Bogus": 1})),
            "error decoding config: '' has invalid keys: Bogus"
        );
        assert_eq!(refused(json!({"OIDCClientID": "x"})), "'OIDCClientID' must not be set for type \"jwt\"");
        assert!(refused(json!({"JWTValidationPubKeys": ["nope"]})).starts_with("error parsing public key"));
        assert_eq!(
            refused(json!({"JWKSURL": "https://a", "ClaimMappings": {"a": "x", "b": "x"}})),
            "ClaimMappings contains multiple mappings for key \"x\""
        );
        assert_eq!(
            refused(json!({"JWKSURL": "https://a", "JWTSupportedAlgs": ["HS256"]})),
            "Invalid supported algorithm: HS256"
        );
        assert!(refused(json!({"JWKSURL": "file:///etc/passwd"})).starts_with("error checking JWKSURL"));
    }
}
