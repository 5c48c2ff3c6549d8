//! RFC 6902 JSON Patch, the few operations injection needs, written by hand.
//!
//! A patch is checked by the API server against the object as it stands, so
//! a path must name a parent that exists: a list or map the pod lacks is
//! added whole, one it has is added to. Pointers (RFC 6901) are built from
//! segments, so a key such as `weft.io/connect-inject-status` is escaped
//! (`weft.io~1connect-inject-status`) in one place.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// An RFC 6901 JSON Pointer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

/// One operation. Only `add` is needed: it creates a member, replaces an
/// existing one, inserts into a list at an index, or appends at `-`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    Add { path: Pointer, value: Value },
}

/// A JSON Patch: operations applied in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct JsonPatch(Vec<Operation>);

impl Pointer {
    /// The pointer to `/segment/segment/...`.
    pub fn at(segments: &[&str]) -> Self {
        Pointer(segments.iter().map(|segment| (*segment).to_owned()).collect())
    }

    /// The pointer to a member (or index) below this one.
    pub fn child(&self, segment: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment.into());
        Pointer(segments)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            // `~` first, so the `~` of an escaped `/` is not escaped again.
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

impl Serialize for Pointer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonPatch {
    /// Sets `key` in the map at `map`: the whole map when the object has none.
    pub fn set_in_map(&mut self, map: Pointer, exists: bool, key: &str, value: Value) {
        if exists {
            self.add(map.child(key), value);
        } else {
            self.add(map, Value::Object(Map::from_iter([(key.to_owned(), value)])));
        }
    }

    /// Appends `values` to the list at `list`: the whole list when the object has none.
    pub fn append(&mut self, list: Pointer, exists: bool, values: Vec<Value>) {
        if exists {
            for value in values {
                self.add(list.child("-"), value);
            }
        } else {
            self.add(list, Value::Array(values));
        }
    }

    /// Puts `values` first in the list at `list`, in order, ahead of what it holds.
    pub fn prepend(&mut self, list: Pointer, exists: bool, values: Vec<Value>) {
        if exists {
            for (index, value) in values.into_iter().enumerate() {
                self.add(list.child(index.to_string()), value);
            }
        } else {
            self.add(list, Value::Array(values));
        }
    }

    pub fn operations(&self) -> &[Operation] {
        &self.0
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a JSON Patch serializes")
    }

    fn add(&mut self, path: Pointer, value: Value) {
        self.0.push(Operation::Add { path, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_escape_slashes_and_tildes() {
        let pointer = Pointer::at(&["metadata", "annotations"]).child("weft.io/connect-inject-status");
        assert_eq!(pointer.to_string(), "/metadata/annotations/weft.io~1connect-inject-status");
        assert_eq!(Pointer::at(&["a~/b"]).to_string(), "/a~0~1b");
        assert_eq!(Pointer::default().to_string(), "");
    }

    #[test]
    fn a_missing_map_or_list_is_added_whole() {
        let mut patch = JsonPatch::default();
        patch.set_in_map(Pointer::at(&["metadata", "annotations"]), false, "a/b", json!("c"));
        patch.append(Pointer::at(&["spec", "volumes"]), false, vec![json!(1), json!(2)]);
        patch.prepend(Pointer::at(&["spec", "initContainers"]), false, vec![json!(3)]);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
                {"op": "add", "path": "/spec/volumes", "value": [1, 2]},
                {"op": "add", "path": "/spec/initContainers", "value": [3]},
            ])
        );
    }

    #[test]
    fn an_existing_map_or_list_is_added_to() {
        let mut patch = JsonPatch::default();
        patch.set_in_map(Pointer::at(&["metadata", "annotations"]), true, "a/b", json!("c"));
        patch.append(Pointer::at(&["spec", "volumes"]), true, vec![json!(1), json!(2)]);
        patch.prepend(Pointer::at(&["spec", "initContainers"]), true, vec![json!(3), json!(4)]);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "add", "path": "/metadata/annotations/a~1b", "value": "c"},
                {"op": "add", "path": "/spec/volumes/-", "value": 1},
                {"op": "add", "path": "/spec/volumes/-", "value": 2},
                {"op": "add", "path": "/spec/initContainers/0", "value": 3},
                {"op": "add", "path": "/spec/initContainers/1", "value": 4},
            ])
        );
    }
}
