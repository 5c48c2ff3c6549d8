//! A JWT checked as Consul's `jwt` auth method checks it: the signature
//! against the method's keys, then the times (with Consul's defaults for a
//! missing `exp` or `nbf`, and its leeways), the issuer and the audiences.
//! The clock is an argument.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use weft_api::acl::JwtConfig;

use super::config::ALGORITHMS;
use super::keys::VerifyingKeys;
use super::LoginError;

/// Consul's defaults for its leeways, in seconds.
const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;
const DEFAULT_CLOCK_SKEW_LEEWAY: i64 = 60;

fn invalid(reason: impl Into<String>) -> LoginError {
    LoginError::InvalidToken(reason.into())
}

/// A leeway in seconds: 0 is the default, negative none.
fn leeway(nanos: i64, default: i64) -> i64 {
    match nanos {
        0 => default,
        n if n < 0 => 0,
        n => n / 1_000_000_000,
    }
}

/// The key ID (`kid`) a JWT's header names, if it parses and names one;
/// nothing is verified.
pub fn key_id(bearer: &str) -> Option<String> {
    jsonwebtoken::decode_header(bearer.trim()).ok()?.kid
}

/// Verifies `bearer` at `now` (seconds since the Unix epoch) and returns
/// its claims.
pub fn verify(config: &JwtConfig, keys: &VerifyingKeys, bearer: &str, now: i64) -> Result<Value, LoginError> {
    let bearer = bearer.trim();
    if bearer.is_empty() {
        return Err(invalid("missing jwt"));
    }
    let header = jsonwebtoken::decode_header(bearer).map_err(|e| invalid(format!("error parsing token: {e}")))?;
    let alg = format!("{:?}", header.alg);
    let allowed = match config.supported_algs.is_empty() {
        true => ALGORITHMS.contains(&alg.as_str()),
        false => config.supported_algs.contains(&alg),
    };
    if !allowed {
        return Err(invalid(format!("error parsing token: signing algorithm {alg} is not allowed")));
    }
    let claims = verified_claims(keys, bearer, &header, &alg)?;
    check_claims(config, &claims, now)?;
    Ok(claims)
}

/// The claims, once one of `keys` verified the signature.
fn verified_claims(
    keys: &VerifyingKeys,
    bearer: &str,
    header: &jsonwebtoken::Header,
    alg: &str,
) -> Result<Value, LoginError> {
    let mut validation = Validation::new(Algorithm::from_str(alg).map_err(|e| invalid(e.to_string()))?);
    // Times, issuer and audiences are checked below, Consul's way.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in keys.candidates(header.kid.as_deref()) {
        if let Ok(data) = jsonwebtoken::decode::<Value>(bearer, key, &validation) {
            return match data.claims {
                claims @ Value::Object(_) => Ok(claims),
                _ => Err(invalid("error parsing token: the claims are not a JSON object")),
            };
        }
    }
    Err(invalid("no known key successfully validated the token signature"))
}

fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, LoginError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        Some(_) => Err(invalid(format!("error parsing token: the {name} claim is not a number"))),
    }
}

/// Consul's claim checks (vault-plugin-auth-jwt's, with go-jose's texts).
fn check_claims(config: &JwtConfig, claims: &Value, now: i64) -> Result<(), LoginError> {
    let (iat, nbf, exp) = (time_claim(claims, "iat")?, time_claim(claims, "nbf")?, time_claim(claims, "exp")?);
    if iat.is_none() && nbf.is_none() && exp.is_none() {
        return Err(invalid("no issue time, notbefore, or expiration time encoded in token"));
    }
    let expiration_leeway = leeway(config.expiration_leeway_ns, DEFAULT_EXPIRATION_LEEWAY);
    let not_before_leeway = leeway(config.not_before_leeway_ns, DEFAULT_NOT_BEFORE_LEEWAY);
    let skew = leeway(config.clock_skew_leeway_ns, DEFAULT_CLOCK_SKEW_LEEWAY);
    let exp = exp.unwrap_or_else(|| iat.max(nbf).unwrap_or(0).saturating_add(expiration_leeway));
    let nbf = nbf.or(iat).unwrap_or_else(|| exp.saturating_sub(not_before_leeway));

    let failed = |what: &str| invalid(format!("error validating claims: validation failed, {what}"));
    if !config.bound_issuer.is_empty() && claims.get("iss").and_then(Value::as_str) != Some(&config.bound_issuer) {
        return Err(failed("invalid issuer claim (iss)"));
    }
    if now.saturating_add(skew) < nbf {
        return Err(failed("token not valid yet (nbf)"));
    }
    if now.saturating_sub(skew) > exp {
        return Err(failed("token is expired (exp)"));
    }
    if iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
        return Err(failed("token issued in the future (iat)"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if config.bound_audiences.is_empty() {
        if !audiences.is_empty() {
            return Err(invalid("error validating claims: audience claim found in JWT but no audiences are bound"));
        }
    } else if !audiences.iter().any(|aud| config.bound_audiences.iter().any(|bound| bound == aud)) {
        return Err(invalid("error validating claims: aud claim does not match any bound audience"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> JwtConfig {
        JwtConfig { bound_issuer: "https://issuer".into(), bound_audiences: vec!["weft".into()], ..Default::default() }
    }

    fn check(claims: Value, now: i64) -> Result<(), String> {
        check_claims(&config(), &claims, now).map_err(|e| e.to_string())
    }

    fn key_pair() -> (jsonwebtoken::EncodingKey, String) {
        let pair = rcgen::KeyPair::generate().unwrap();
        (jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), pair.public_key_pem())
    }

    #[test]
    fn only_a_known_key_s_signature_counts() {
        let (signer, public) = key_pair();
        let (stranger, _) = key_pair();
        let keys = VerifyingKeys::from_pems(std::slice::from_ref(&public)).unwrap();
        let claims = json!({"iss": "https://issuer", "aud": "weft", "iat": 1000, "exp": 1600, "sub": "web"});
        let sign = |key: &jsonwebtoken::EncodingKey, alg| {
            jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
        };
        let good = sign(&signer, Algorithm::ES256);
        assert_eq!(verify(&config(), &keys, &good, 1200).unwrap()["sub"], "web");
        let forged = sign(&stranger, Algorithm::ES256);
        assert_eq!(
            verify(&config(), &keys, &forged, 1200).unwrap_err().to_string(),
            "no known key successfully validated the token signature"
        );
        // The public key used as an HMAC secret: refused before any check.
        let confused = sign(&jsonwebtoken::EncodingKey::from_secret(public.as_bytes()), Algorithm::HS256);
        assert!(verify(&config(), &keys, &confused, 1200).unwrap_err().to_string().contains("HS256 is not allowed"));
        let mut tampered = good.clone();
        tampered.insert_str(good.find('.').unwrap() + 1, "e30");
        assert!(verify(&config(), &keys, &tampered, 1200).is_err());
        assert_eq!(verify(&config(), &keys, " ", 1200).unwrap_err().to_string(), "missing jwt");
    }

    #[test]
    fn times_issuer_and_audience_as_consul_checks_them() {
        let good = json!({"iss": "https://issuer", "aud": ["other", "weft"], "iat": 1000, "exp": 1600});
        assert_eq!(check(good.clone(), 1200), Ok(()));
        // 60 s of clock skew either way.
        assert_eq!(check(good.clone(), 1660), Ok(()));
        assert!(check(good.clone(), 1661).unwrap_err().ends_with("token is expired (exp)"));
        assert!(check(good.clone(), 900).unwrap_err().ends_with("token not valid yet (nbf)"));
        let mut wrong = good.clone();
        wrong["iss"] = json!("https://elsewhere");
        assert!(check(wrong, 1200).unwrap_err().ends_with("invalid issuer claim (iss)"));
        let mut wrong = good.clone();
        wrong["aud"] = json!("someone-else");
        assert!(check(wrong, 1200).unwrap_err().ends_with("aud claim does not match any bound audience"));
        // No exp: it expires 150 s after it was issued.
        let no_exp = json!({"iss": "https://issuer", "aud": "weft", "iat": 1000});
        assert_eq!(check(no_exp.clone(), 1200), Ok(()));
        assert!(check(no_exp, 1211).is_err());
        assert!(check(json!({"iss": "https://issuer", "aud": "weft"}), 1200)
            .unwrap_err()
            .starts_with("no issue time, notbefore, or expiration time"));
        let unbound = JwtConfig { bound_audiences: Vec::new(), ..config() };
        let refused = check_claims(&unbound, &good, 1200).unwrap_err().to_string();
        assert!(refused.ends_with("audience claim found in JWT but no audiences are bound"), "{refused}");
    }
}
