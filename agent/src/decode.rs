//! Decoding request bodies the way Consul does: field names match whatever
//! their case (`Name`, `name`, `NAME`) and snake_case aliases are accepted
//! (`node_meta` for `NodeMeta`). Keys inside user-data maps (`Meta`,
//! `NodeMeta`, `TaggedAddresses`, a proxy's or upstream's `Config`) are left
//! exactly as sent.
//!
//! Request types name their fields in the normalized form (lower case, no
//! underscores) with `#[serde(rename = "...")]`. Service definitions in
//! config files go through the same decoding, so `service { check { http =
//! ... } }` and `{"Check": {"HTTP": ...}}` mean the same thing.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::http::ApiError;

/// Normalized names of fields whose object value is user data.
const USER_MAPS: &[&str] = &["meta", "nodemeta", "servicemeta", "taggedaddresses", "header", "config"];

/// Decodes a JSON request body into `T`, or a 400 saying what is wrong.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::BadRequest("Request decode failed: the request body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: malformed JSON: {e}")))?;
    decode_value(value).map_err(|e| ApiError::BadRequest(format!("Request decode failed: {e}")))
}

/// Decodes an already parsed value (a request body, or a block of a config
/// file) into `T`; the error names the field that is wrong.
pub fn decode_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(normalize(value)).map_err(|e| e.to_string())
}

/// Whether the object `value` has the field `normalized` (a normalized
/// name: lower case, no underscores), whatever case it was sent in.
pub fn has_key(value: &Value, normalized: &str) -> bool {
    value.as_object().is_some_and(|map| map.keys().any(|key| normalize_key(key) == normalized))
}

/// The normalized form of a field name.
pub fn normalize_key(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// The field in `known` (normalized name, shown name) closest to the
/// normalized `key`, if one is close enough to be what was meant: at most
/// two edits away (one for names of up to four letters).
pub fn closest<'a>(key: &str, known: &[(&str, &'a str)]) -> Option<&'a str> {
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|(name, shown)| (edit_distance(key, name), *shown))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, shown)| shown)
}

/// The field names of a struct deriving `Deserialize`: serde hands them to
/// `deserialize_struct`, where a deserializer that holds nothing records
/// them. For suggesting the field meant by an unknown key.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldRecorder(&mut fields));
    fields
}

struct FieldRecorder<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Recorded;

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields recorded")
    }
}

impl std::error::Error for Recorded {}

impl serde::de::Error for Recorded {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> serde::Deserializer<'de> for FieldRecorder<'_> {
    type Error = Recorded;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Recorded> {
        *self.0 = fields;
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Levenshtein distance: insertions, deletions and substitutions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, value) in map {
                let key = normalize_key(&key);
                let value = if USER_MAPS.contains(&key.as_str()) { value } else { normalize(value) };
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[test]
    fn the_closest_field_is_suggested_only_when_it_is_close() {
        let known = [("check", "Check"), ("checks", "Checks"), ("tags", "Tags"), ("port", "Port")];
        assert_eq!(super::closest("chek", &known), Some("Check"));
        assert_eq!(super::closest("tagz", &known), Some("Tags"));
        assert_eq!(super::closest("prot", &known), None, "two edits is too far for a short name");
        assert_eq!(super::closest("weather", &known), None);
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    }
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Deserialize, Debug)]
    struct Sample {
        #[serde(rename = "nodemeta", default)]
        node_meta: BTreeMap<String, String>,
        #[serde(rename = "name")]
        name: String,
    }

    #[test]
    fn any_case_and_snake_case_decode_but_user_keys_stay() {
        for body in [
            r#"{"Name": "a", "NodeMeta": {"Rack_ID": "1"}}"#,
            r#"{"name": "a", "node_meta": {"Rack_ID": "1"}}"#,
            r#"{"NAME": "a", "nodeMeta": {"Rack_ID": "1"}}"#,
        ] {
            let sample: Sample = decode_body(body.as_bytes()).unwrap();
            assert_eq!(sample.name, "a");
            assert_eq!(sample.node_meta.get("Rack_ID").map(String::as_str), Some("1"));
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let error = decode_body::<Sample>(b"{\"Name\": 5}").unwrap_err().to_string();
        assert!(error.contains("invalid type"), "{error}");
        let error = decode_body::<Sample>(b"{nope").unwrap_err().to_string();
        assert!(error.contains("malformed JSON"), "{error}");
    }
}
