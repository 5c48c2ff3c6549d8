//! End-to-end tests of the public API: parse an expression, run it over JSON.
//!
//! The parser's and lexer's own tests check trees and error messages; these check
//! what users see, i.e. which items a filter keeps.

use serde_json::{json, Value};

use crate::{Filter, FilterError};

/// A health-endpoint-like item, the shape most filters are written against.
fn item() -> Value {
    json!({
        "Node": "n1",
        "Address": "10.0.0.1",
        "Service": {
            "ID": "web-1",
            "Service": "web",
            "Tags": ["v1", "primary"],
            "Meta": {"version": "2", "git-sha": "abc123", "empty": ""},
            "Port": 80,
            "Weight": 1.5,
            "EnableTagOverride": false,
            "Proxy": null,
            "Connect": {},
            "TaggedAddresses": []
        },
        "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]
    })
}

#[track_caller]
fn check(expression: &str, expected: bool) {
    let filter = Filter::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
    assert_eq!(filter.matches(&item()), expected, "{expression}");
}

#[test]
fn the_issues_examples() {
    let items = [
        json!({"Node": "n1", "Service": {"Tags": ["v1"], "Meta": {"version": "1"}, "Port": 80}}),
        json!({"Node": "n2", "Service": {"Tags": ["v2"], "Meta": {"version": "2"}, "Port": 80}}),
    ];
    let kept = |expression: &str| {
        let mut kept = items.to_vec();
        Filter::parse(expression).unwrap().retain(&mut kept);
        kept.iter().map(|item| item["Node"].to_string()).collect::<Vec<_>>().join(",")
    };
    assert_eq!(kept(r#"Service.Tags contains "v2""#), r#""n2""#);
    assert_eq!(kept(r#"Service.Meta.version == "2""#), r#""n2""#);
    assert_eq!(kept(r#"Service.Meta.version == "1" or Service.Tags contains "v2""#), r#""n1","n2""#);
    assert_eq!(kept(r#"Service.Port == 80 and not Service.Tags contains "v2""#), r#""n1""#);
    assert_eq!(kept(r#"Service.Tags contains "v2" and Service.Meta.version == "1""#), "");
}

#[test]
fn equality_on_strings() {
    check(r#"Node == "n1""#, true);
    check("Node == n1", true);
    check("Node == `n1`", true);
    check(r#"Node == "N1""#, false);
    check(r#"Node != "n2""#, true);
    check(r#"Node != "n1""#, false);
    check("Address == 10.0.0.1", true);
    check(r#"Service.Meta.version == 2"#, true);
}

#[test]
fn equality_on_numbers() {
    check("Service.Port == 80", true);
    check(r#"Service.Port == "80""#, true);
    check("Service.Port == 80.0", true);
    check("Service.Port != 81", true);
    check("Service.Port == eighty", false);
    check("Service.Port != eighty", true);
    check("Service.Weight == 1.5", true);
    check("Service.Weight == 1", false);
}

#[test]
fn equality_on_bools() {
    check("Service.EnableTagOverride == false", true);
    check(r#"Service.EnableTagOverride == "false""#, true);
    check("Service.EnableTagOverride == true", false);
    check("Service.EnableTagOverride != true", true);
    check("Service.EnableTagOverride == no", false);
}

#[test]
fn null_equals_nothing() {
    check("Service.Proxy == null", false);
    check(r#"Service.Proxy == """#, false);
    check("Service.Proxy != null", true);
    check("Service.Tags == v1", false);
    check("Service.Connect != x", true);
}

#[test]
fn contains_and_in() {
    // Arrays: any element equal.
    check("Service.Tags contains v1", true);
    check(r#""primary" in Service.Tags"#, true);
    check("Service.Tags contains v", false);
    check("Service.Tags not contains v3", true);
    check("v1 not in Service.Tags", false);
    // Objects: a key.
    check("Service.Meta contains version", true);
    check(r#""git-sha" in Service.Meta"#, true);
    check("Service.Meta contains abc123", false);
    // Strings: a substring.
    check("Service.ID contains eb-", true);
    check(r#""web" in Service.ID"#, true);
    check("Service.ID contains db", false);
    // Other types: never.
    check("Service.Port contains 8", false);
    check("Service.Port not contains 8", true);
    check("Service.Proxy contains x", false);
}

#[test]
fn contains_compares_elements_by_type() {
    let item = json!({"Ports": [80, 443], "Flags": [true], "Mixed": ["a", 1, null, {"b": 2}]});
    let matches = |expression: &str| Filter::parse(expression).unwrap().matches(&item);
    assert!(matches("Ports contains 443"));
    assert!(matches(r#""80" in Ports"#));
    assert!(!matches("Ports contains 8"));
    assert!(matches("Flags contains true"));
    assert!(matches("Mixed contains 1"));
    assert!(matches("Mixed contains a"));
    assert!(!matches("Mixed contains b"));
    assert!(!matches("Mixed contains null"));
}

#[test]
fn emptiness() {
    for empty in ["Service.Proxy", "Service.Connect", "Service.TaggedAddresses", "Service.Meta.empty", "Nope"] {
        check(&format!("{empty} is empty"), true);
        check(&format!("{empty} is not empty"), false);
    }
    for full in ["Node", "Service.Tags", "Service.Meta", "Service.Port", "Service.EnableTagOverride"] {
        check(&format!("{full} is empty"), false);
        check(&format!("{full} is not empty"), true);
    }
}

#[test]
fn regular_expressions() {
    check(r#"Node matches "^n[0-9]+$""#, true);
    check(r"Service.ID matches `^web-\d$`", true);
    check(r#"Node matches "^m""#, false);
    check(r#"Node not matches "^m""#, true);
    check("Service.Meta.version matches 2", true);
    // Only strings match; numbers, arrays and the rest do not.
    check("Service.Port matches 80", false);
    check("Service.Port not matches 80", true);
    check("Service.Tags matches v1", false);
}

#[test]
fn missing_selectors() {
    for missing in ["Nope", "Service.Nope", "Node.Deeper", "Service.Tags.7", "Service.Proxy.Upstreams"] {
        check(&format!("{missing} == x"), false);
        check(&format!("{missing} != x"), true);
        check(&format!("{missing} contains x"), false);
        check(&format!("{missing} not contains x"), true);
        check(&format!("x in {missing}"), false);
        check(&format!("x not in {missing}"), true);
        check(&format!("{missing} matches x"), false);
        check(&format!("{missing} not matches x"), true);
        check(&format!("{missing} is empty"), true);
        check(&format!("{missing} is not empty"), false);
    }
}

#[test]
fn selector_forms() {
    check(r#"Service.Meta["version"] == "2""#, true);
    check(r#"Service.Meta.["version"] == "2""#, true);
    check(r#"Service.Meta["git-sha"] == abc123"#, true);
    check("Service.Meta.git-sha == abc123", true);
    check("Service.Tags.1 == primary", true);
    check("Checks.0.Status == passing", true);
    check(r#"Checks.0["CheckID"] == serfHealth"#, true);
    // Keys fall back to a case-insensitive match, as Consul's struct fields do.
    check("service.port == 80", true);
    check(r#"Service.META["VERSION"] == 2"#, true);
}

#[test]
fn logic_and_precedence() {
    check("Node == n1 and Service.Port == 80", true);
    check("Node == n1 and Service.Port == 81", false);
    check("Node == n2 or Service.Port == 80", true);
    check("Node == n2 or Service.Port == 81", false);
    check("not Node == n2", true);
    check("not not Node == n1", true);
    // `and` binds tighter than `or`: true or (false and false).
    check("Node == n1 or Node == x and Node == y", true);
    // Parentheses regroup: (true or false) and false.
    check("(Node == n1 or Node == x) and Node == y", false);
    // `not` binds tighter than `and`: (not false) and true.
    check("not Node == x and Node == n1", true);
    check("not (Node == x or Node == n1)", false);
}

#[test]
fn quoting() {
    let item = json!({"Name": "say \"hi\"\n", "Path": r"C:\dir", "Key": "a b"});
    let matches = |expression: &str| Filter::parse(expression).unwrap().matches(&item);
    assert!(matches(r#"Name == "say \"hi\"\n""#));
    assert!(matches(r#"Path == "C:\\dir""#));
    assert!(matches(r"Path == `C:\dir`"));
    assert!(matches(r#"Key == "a b""#));
    assert!(matches(r#"Key == "\x61 \u0062""#));
    assert!(!matches("Key == a"));
}

#[test]
fn non_objects_only_match_negations() {
    let filter = Filter::parse("Node == n1").unwrap();
    let negated = Filter::parse("Node != n1").unwrap();
    for value in [json!(null), json!("n1"), json!(1), json!([{"Node": "n1"}])] {
        assert!(!filter.matches(&value));
        assert!(negated.matches(&value));
    }
}

#[test]
fn retain_keeps_order() {
    let filter = Filter::parse("Port != 2").unwrap();
    let mut items: Vec<Value> = (1..=4).map(|port| json!({"Port": port})).collect();
    filter.retain(&mut items);
    assert_eq!(items, [json!({"Port": 1}), json!({"Port": 3}), json!({"Port": 4})]);
}

#[test]
fn errors_carry_offsets() {
    let err = Filter::parse("Service.Port == ").unwrap_err();
    assert_eq!(err, FilterError::Syntax { message: "expected a value after \"==\"".into(), offset: 16 });
    assert_eq!(err.to_string(), "filter: expected a value after \"==\" at offset 16");
    let err = Filter::parse("Node matches `a(`").unwrap_err();
    assert!(matches!(err, FilterError::Regex { offset: 13, .. }), "{err:?}");
}

/// A tiny deterministic generator (xorshift), so junk inputs are reproducible.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // Truncation is fine: this only picks among a handful of choices.
        self.0 as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.next() % from.len()]
    }
}

/// Parses `expression` and, if it parses, evaluates it: neither may panic, and an
/// error's offset must point into the expression.
fn parse_and_run(expression: &str, item: &Value) -> bool {
    match Filter::parse(expression) {
        Ok(filter) => {
            filter.matches(item);
            true
        }
        Err(FilterError::Syntax { offset, .. } | FilterError::Regex { offset, .. }) => {
            assert!(offset <= expression.len(), "{expression:?}: offset {offset}");
            assert!(expression.is_char_boundary(offset), "{expression:?}: offset {offset}");
            false
        }
    }
}

/// What junk is made of: pieces of the grammar, broken escapes, multi-byte characters.
const PIECES: &[&str] = &[
    "Service", ".", "Meta", "Tags", "0", "[", "]", "(", ")", "\"", "`", "\\", "\"v\"", "`x`", "==", "!=", "=", "!",
    "and", "or", "not", "in", "is", "empty", "contains", "matches", " ", "\t", "-1.5", "é", "😀", "\\u", "\\x4",
    "\"(\"", "`[`", ".[", "\"k\"]", "#", "AND", "80", "\u{0}", "\"\\u{", "*", "?", "+", "^$",
];

#[test]
fn junk_never_panics() {
    let item = item();
    let mut junk = Junk(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = junk.next() % 12;
        let expression: String = (0..len).map(|_| junk.pick(PIECES)).collect();
        parse_and_run(&expression, &item);
    }
}

#[test]
fn mutated_expressions_never_panic() {
    // Random junk mostly fails on its first token; mutating valid expressions
    // reaches the deeper corners of the parser too.
    const VALID: &[&str] = &[
        r#"(Service.Meta["v"] == "2" or not `x` in Tags) and Node matches "^n\u00e9" and Port is not empty"#,
        r#"Service.Tags not contains v2 or Service.Meta.["k"].x != -1.5 and "a" not in Checks.0.Status"#,
        r#"not (A is empty) and (B not matches `[a-z]+` or C == true)"#,
    ];
    let item = item();
    let mut junk = Junk(0x2545_F491_4F6C_DD1D);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut pieces: Vec<&str> = junk.pick(VALID).split(' ').collect();
        for _ in 0..1 + junk.next() % 3 {
            let at = junk.next() % pieces.len();
            match junk.next() % 3 {
                0 => {
                    pieces.remove(at);
                }
                1 => pieces.insert(at, junk.pick(PIECES)),
                _ => pieces[at] = junk.pick(PIECES),
            }
            if pieces.is_empty() {
                break;
            }
        }
        parsed += usize::from(parse_and_run(&pieces.join(" "), &item));
    }
    assert!(parsed > 100, "only {parsed} mutants parsed; the generator has stopped exercising evaluation");
}

#[test]
fn every_prefix_of_a_valid_expression_is_handled() {
    let expression =
        r#"(Service.Meta["v"] == "2" or not `x` in Tags) and Node matches "^n\u00e9" and Port is not empty"#;
    let item = item();
    assert!(parse_and_run(expression, &item));
    for (end, _) in expression.char_indices() {
        parse_and_run(&expression[..end], &item);
    }
}
