//! A JSON Patch (RFC 6902) applier for the tests, as strict as the API
//! server about paths: `add` and `replace` (the webhook emits only `add`),
//! where a parent that does not exist, an index past the end or a
//! `replace` of nothing is an error.

use serde_json::Value;

/// Applies `patch` (a list of operations) to `document`, in order.
pub fn apply(document: &mut Value, patch: &Value) -> Result<(), String> {
    for operation in patch.as_array().ok_or("a patch is a list of operations")? {
        let op = operation["op"].as_str().ok_or_else(|| format!("no op in {operation}"))?;
        let path = operation["path"].as_str().ok_or_else(|| format!("no path in {operation}"))?;
        let value = operation.get("value").cloned().ok_or_else(|| format!("no value in {operation}"))?;
        let mut segments = parse_pointer(path)?;
        let Some(last) = segments.pop() else {
            *document = value;
            continue;
        };
        let parent = resolve(document, &segments).ok_or_else(|| format!("{path}: the parent does not exist"))?;
        match (op, parent) {
            ("add", Value::Object(map)) => {
                map.insert(last, value);
            }
            ("replace", Value::Object(map)) => {
                let slot = map.get_mut(&last).ok_or_else(|| format!("{path}: nothing to replace"))?;
                *slot = value;
            }
            ("add", Value::Array(list)) if last == "-" => list.push(value),
            ("add", Value::Array(list)) => {
                let index = parse_index(&last).filter(|index| *index <= list.len());
                list.insert(index.ok_or_else(|| format!("{path}: no such index"))?, value);
            }
            ("replace", Value::Array(list)) => {
                let slot = parse_index(&last).and_then(|index| list.get_mut(index));
                *slot.ok_or_else(|| format!("{path}: nothing to replace"))? = value;
            }
            (op, parent) => return Err(format!("{path}: cannot {op} into {parent}")),
        }
    }
    Ok(())
}

/// RFC 6901: `/a~1b/c` is `["a/b", "c"]`.
fn parse_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path.strip_prefix('/').ok_or_else(|| format!("{path:?} does not start with '/'"))?;
    Ok(rest.split('/').map(|segment| segment.replace("~1", "/").replace("~0", "~")).collect())
}

fn parse_index(segment: &str) -> Option<usize> {
    let canonical = segment == "0" || (!segment.starts_with('0') && segment.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| segment.parse().ok()).flatten()
}

fn resolve<'a>(document: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    segments.iter().try_fold(document, |node, segment| match node {
        Value::Object(map) => map.get_mut(segment),
        Value::Array(list) => list.get_mut(parse_index(segment)?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_applier_is_strict_about_paths() {
        let mut doc = json!({"metadata": {"annotations": {"a/b": "1"}}, "spec": {"list": [1, 2]}});
        let patch = json!([
            {"op": "add", "path": "/metadata/annotations/c~1d", "value": "2"},
            {"op": "add", "path": "/spec/list/0", "value": 0},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "one"},
        ]);
        apply(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"a/b": "one", "c/d": "2"}}, "spec": {"list": [0, 1, 2, 3]}})
        );

        for bad in [
            json!([{"op": "add", "path": "/spec/volumes/-", "value": 1}]),
            json!([{"op": "add", "path": "/spec/list/9", "value": 1}]),
            json!([{"op": "add", "path": "/spec/list/01", "value": 1}]),
            json!([{"op": "replace", "path": "/metadata/labels", "value": {}}]),
            json!([{"op": "add", "path": "spec", "value": 1}]),
        ] {
            assert!(apply(&mut doc.clone(), &bad).is_err(), "{bad}");
        }
    }
}
