//! A login's identity: the claims the method maps, as the attributes
//! binding rules select on (`value.<attribute>`, `list.<attribute>`) and
//! fill bind names from (`${value.<attribute>}`).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_api::acl::JwtConfig;

use super::LoginError;

/// What binding rules see of a login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// From `ClaimMappings`; a claim the JWT lacks is `""`.
    pub values: BTreeMap<String, String>,
    /// From `ListClaimMappings`; a claim the JWT lacks is empty.
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// Every mapped attribute empty: what a rule is checked against before
    /// it is written.
    pub fn blank(config: &JwtConfig) -> Identity {
        Identity {
            values: config.claim_mappings.values().map(|a| (a.clone(), String::new())).collect(),
            lists: config.list_claim_mappings.values().map(|a| (a.clone(), Vec::new())).collect(),
        }
    }

    /// The identity `claims` (a verified JWT's) give through `config`'s
    /// mappings. A claim is a top-level name, or a JSON pointer from `/`
    /// (`/kubernetes.io/serviceaccount/name`).
    pub fn from_claims(config: &JwtConfig, claims: &Value) -> Result<Identity, LoginError> {
        let mut identity = Identity::blank(config);
        for (claim, attribute) in &config.claim_mappings {
            if let Some(value) = lookup(claims, claim) {
                identity.values.insert(attribute.clone(), scalar(claim, value)?);
            }
        }
        for (claim, attribute) in &config.list_claim_mappings {
            let items = match lookup(claims, claim) {
                None => continue,
                Some(Value::Array(items)) => items.iter().map(|item| scalar(claim, item)).collect::<Result<_, _>>()?,
                Some(one) => vec![scalar(claim, one)?],
            };
            let items: Vec<String> = items.into_iter().filter(|item: &String| !item.is_empty()).collect();
            identity.lists.insert(attribute.clone(), items);
        }
        Ok(identity)
    }

    /// The JSON a selector is evaluated over.
    pub fn selectable(&self) -> Value {
        json!({"value": self.values, "list": self.lists})
    }
}

fn lookup<'a>(claims: &'a Value, claim: &str) -> Option<&'a Value> {
    match claim.starts_with('/') {
        true => claims.pointer(claim),
        false => claims.get(claim),
    }
    .filter(|value| !value.is_null())
}

/// A claim's value as Consul turns it into a string.
fn scalar(claim: &str, value: &Value) -> Result<String, LoginError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number
            .as_i64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| (number.as_f64().unwrap_or(0.0) as i64).to_string())),
        other => Err(LoginError::InvalidToken(format!(
            "error converting claim '{claim}' to string from unknown type {}",
            match other {
                Value::Array(_) => "[]interface {}",
                _ => "map[string]interface {}",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_map_by_name_or_pointer_and_missing_ones_are_empty() {
        let config = JwtConfig {
            claim_mappings: [
                ("/kubernetes.io/serviceaccount/name".to_owned(), "sa".to_owned()),
                ("admin".to_owned(), "admin".to_owned()),
                ("missing".to_owned(), "gone".to_owned()),
            ]
            .into(),
            list_claim_mappings: [("groups".to_owned(), "groups".to_owned())].into(),
            ..Default::default()
        };
        let claims = json!({"kubernetes.io": {"serviceaccount": {"name": "web"}}, "admin": true, "groups": ["a", ""]});
        let identity = Identity::from_claims(&config, &claims).unwrap();
        assert_eq!(identity.values["sa"], "web");
        assert_eq!(identity.values["admin"], "true");
        assert_eq!(identity.values["gone"], "");
        assert_eq!(identity.lists["groups"], ["a"]);
        let nested = json!({"admin": {"x": 1}});
        assert!(Identity::from_claims(&config, &nested).is_err());
    }
}
