//! Evaluates a parsed expression against one JSON item.
//!
//! Consul evaluates filters over its Go structs; Weft evaluates them over the JSON
//! an endpoint is about to return, which has the same shape and key names. Nothing
//! here can fail: a selector that leads nowhere, or a value of the wrong type,
//! simply does not match (and so its negated form does).

use serde_json::{Map, Value};

use crate::ast::{Expr, Literal, Match, Number, Test};

impl Expr {
    pub(crate) fn eval(&self, item: &Value) -> bool {
        match self {
            Expr::Match(m) => m.eval(item),
            Expr::Not(expr) => !expr.eval(item),
            Expr::And(exprs) => exprs.iter().all(|e| e.eval(item)),
            Expr::Or(exprs) => exprs.iter().any(|e| e.eval(item)),
        }
    }
}

impl Match {
    fn eval(&self, item: &Value) -> bool {
        let selected = select(item, &self.path);
        let hit = match (&self.test, selected) {
            (Test::Empty, value) => value.is_none_or(is_empty),
            (_, None) => false,
            (Test::Equal(literal), Some(value)) => literal.equals(value),
            (Test::Contains(literal), Some(value)) => contains(value, literal),
            (Test::Matches(regex), Some(Value::String(s))) => regex.is_match(s),
            (Test::Matches(_), Some(_)) => false,
        };
        hit != self.negated
    }
}

/// Follows `path` from `item`: object keys, or indexes into arrays.
fn select<'v>(item: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(item, |value, key| match value {
        Value::Object(map) => field(map, key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|index| items.get(index)),
        _ => None,
    })
}

/// The exact key if present, else the first key equal to it ignoring case, so that
/// `service.port` finds `Service.Port` as it does in Consul's struct lookup.
fn field<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| eq_ignore_case(k, key)).map(|(_, v)| v))
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// `contains` and `in`: membership in an array, a key of an object, or a substring.
fn contains(haystack: &Value, needle: &Literal) -> bool {
    match haystack {
        Value::Array(items) => items.iter().any(|item| needle.equals(item)),
        Value::Object(map) => map.contains_key(&needle.text),
        Value::String(s) => s.contains(needle.text.as_str()),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl Literal {
    /// `==`, reading the literal as the type of the JSON value it meets.
    fn equals(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => *s == self.text,
            Value::Number(n) => self.number.is_some_and(|literal| literal.equals(n)),
            Value::Bool(b) => self.boolean == Some(*b),
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        }
    }
}

impl Number {
    fn equals(self, json: &serde_json::Number) -> bool {
        let int = json.as_i64().map(i128::from).or_else(|| json.as_u64().map(i128::from));
        match (self, int) {
            (Number::Int(literal), Some(int)) => literal == int,
            (literal, _) => json.as_f64().is_some_and(|f| literal.as_f64() == f),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            // Rounds beyond 2^53, as comparing with a float must.
            Number::Int(int) => int as f64,
            Number::Float(float) => float,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let item = json!({"Service": {"Tags": ["a", "b"], "Meta": {"0": "zero"}}});
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(select(&item, &path(&["Service", "Tags", "1"])), Some(&json!("b")));
        assert_eq!(select(&item, &path(&["Service", "Meta", "0"])), Some(&json!("zero")));
        assert_eq!(select(&item, &path(&["service", "tags", "0"])), Some(&json!("a")));
        assert_eq!(select(&item, &path(&["Service", "Tags", "2"])), None);
        assert_eq!(select(&item, &path(&["Service", "Tags", "x"])), None);
        assert_eq!(select(&item, &path(&["Service", "Tags", "0", "deeper"])), None);
        assert_eq!(select(&item, &path(&[])), Some(&item));
    }

    #[test]
    fn exact_key_wins_over_case_insensitive_match() {
        let item = json!({"Name": "upper", "name": "lower"});
        assert_eq!(select(&item, &["name".to_owned()]), Some(&json!("lower")));
        assert!(select(&item, &["NAME".to_owned()]).is_some());
    }

    #[test]
    fn numbers_compare_by_value() {
        let lit = |s: &str| Literal::new(s.to_owned());
        assert!(lit("80").equals(&json!(80)));
        assert!(lit("80.0").equals(&json!(80)));
        assert!(lit("80").equals(&json!(80.0)));
        assert!(lit("-1").equals(&json!(-1)));
        assert!(lit("18446744073709551615").equals(&json!(u64::MAX)));
        assert!(!lit("18446744073709551614").equals(&json!(u64::MAX)));
        assert!(lit("0.5").equals(&json!(0.5)));
        assert!(!lit("81").equals(&json!(80)));
        assert!(!lit("eighty").equals(&json!(80)));
    }
}
