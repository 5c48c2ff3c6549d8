//! Reading Consul's JSON request bodies the way Consul does: Go's JSON
//! decoder matches an object's keys to field names in any case.

use serde_json::{Map, Value};

/// `object`'s field `name` (Consul's spelling), its key matched in any
/// case. A JSON null counts as absent.
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value).filter(|v| !v.is_null())
}
