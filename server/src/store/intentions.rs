//! Intentions' rules: which names an intention may hold, Consul's precedence
//! between them, and the one decision for a connection from one service to
//! another (the matching intention, or the mesh-wide default).
//!
//! They live beside the tables, as pure functions of them, so that every
//! caller decides the same way: the HTTP API (`check`, `match`, the agent's
//! `authorize`), and the proxies and certificate checks the Connect work
//! builds. Weft has no namespaces, so of Consul's nine precedence levels only
//! the four with the default namespace on both sides exist.

use std::cmp::Ordering;

use weft_api::ids::ServiceName;
use weft_api::mesh::{Intention, IntentionAction};

use super::mesh::MeshTables;

/// The name that matches every service.
pub const WILDCARD: &str = "*";

/// The config entry (kind and name) holding mesh-wide settings.
pub const MESH_CONFIG_KIND: &str = "mesh";
pub const MESH_CONFIG_NAME: &str = "mesh";
/// The field of the `mesh` config entry's body that sets the action for
/// traffic no intention matches (`"allow"` or `"deny"`; deny if absent).
pub const DEFAULT_ACTION_FIELD: &str = "DefaultIntentionAction";

/// Consul's limits on an intention's free-form fields.
const MAX_DESCRIPTION_BYTES: usize = 512;
const MAX_META_PAIRS: usize = 64;
const MAX_META_KEY_BYTES: usize = 128;
const MAX_META_VALUE_BYTES: usize = 512;

/// Which side of intentions a match query looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchBy {
    Source,
    Destination,
}

/// What decides a connection from one service to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The highest-precedence intention that applies.
    Intention(&'a Intention),
    /// No intention applies: the mesh-wide default action.
    Default(IntentionAction),
}

impl Decision<'_> {
    pub fn action(&self) -> IntentionAction {
        match self {
            Decision::Intention(intention) => intention.action,
            Decision::Default(action) => *action,
        }
    }

    pub fn allowed(&self) -> bool {
        self.action() == IntentionAction::Allow
    }
}

pub fn is_wildcard(name: &ServiceName) -> bool {
    name.as_str() == WILDCARD
}

/// Consul's precedence (higher is evaluated first): exact source and
/// destination 9, any source to an exact destination 8, an exact source to
/// any destination 6, any to any 5. Computed, never stored, so it cannot
/// disagree with the names.
pub fn precedence(intention: &Intention) -> u8 {
    match (is_wildcard(&intention.source), is_wildcard(&intention.destination)) {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

/// Consul's evaluation order: precedence, highest first, then the source
/// name and the destination name in lexical order (the order among equal
/// precedences is arbitrary in Consul too, but deterministic).
pub fn evaluation_order(a: &Intention, b: &Intention) -> Ordering {
    precedence(b)
        .cmp(&precedence(a))
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.destination.cmp(&b.destination))
        .then_with(|| a.id.cmp(&b.id))
}

/// Checks what an intention may hold; the error names the field (Consul's
/// field names). The state store refuses a write that fails this, and the
/// HTTP API checks first to answer with a 400.
pub fn validate_intention(intention: &Intention) -> Result<(), String> {
    validate_name("SourceName", &intention.source)?;
    validate_name("DestinationName", &intention.destination)?;
    if intention.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!("Description exceeds maximum length {MAX_DESCRIPTION_BYTES}"));
    }
    if intention.meta.len() > MAX_META_PAIRS {
        return Err(format!("Meta exceeds maximum element count {MAX_META_PAIRS}"));
    }
    for (key, value) in &intention.meta {
        if key.is_empty() {
            return Err("Meta keys must not be empty".into());
        }
        if key.len() > MAX_META_KEY_BYTES {
            return Err(format!("Meta key {key:?} exceeds maximum length {MAX_META_KEY_BYTES}"));
        }
        if value.len() > MAX_META_VALUE_BYTES {
            return Err(format!("Meta value for key {key:?} exceeds maximum length {MAX_META_VALUE_BYTES}"));
        }
    }
    Ok(())
}

/// A service name, or `*` alone. `field` names it in the error.
pub fn validate_name(field: &str, name: &ServiceName) -> Result<(), String> {
    let text = name.as_str();
    if text.is_empty() {
        return Err(format!("{field} must be set"));
    }
    if text != WILDCARD && text.contains(WILDCARD) {
        return Err(format!("{field} {text:?}: wildcard character '*' cannot be used with partial values"));
    }
    if text.contains('/') {
        return Err(format!("{field} {text:?}: Weft has no namespaces or partitions; give the service name alone"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field} {text:?} contains a control character"));
    }
    Ok(())
}

impl MeshTables {
    /// Every intention in evaluation order.
    pub fn intentions_by_precedence(&self) -> Vec<&Intention> {
        let mut found: Vec<&Intention> = self.intentions().collect();
        found.sort_by(|a, b| evaluation_order(a, b));
        found
    }

    /// The intentions that apply to `name` on one side (its own and the
    /// wildcard's), in evaluation order: Consul's match query.
    pub fn intention_match(&self, by: MatchBy, name: &ServiceName) -> Vec<&Intention> {
        let mut found: Vec<&Intention> = self
            .intentions()
            .filter(|i| {
                let side = match by {
                    MatchBy::Source => &i.source,
                    MatchBy::Destination => &i.destination,
                };
                side == name || is_wildcard(side)
            })
            .collect();
        found.sort_by(|a, b| evaluation_order(a, b));
        found
    }

    /// The highest-precedence intention that applies to a connection from
    /// `source` to `destination`, if any does.
    pub fn decide(&self, source: &ServiceName, destination: &ServiceName) -> Option<&Intention> {
        let any = ServiceName::new(WILDCARD);
        // The four pairs that can apply, in precedence order (9, 8, 6, 5).
        let found = [(source, destination), (&any, destination), (source, &any), (&any, &any)]
            .into_iter()
            .find_map(|(s, d)| self.intention_exact(s, d));
        found
    }

    /// The action for traffic no intention matches: the `mesh` config
    /// entry's `DefaultIntentionAction` (its name matched as Consul decodes
    /// fields: any case, `_` and `-` ignored), else deny. A value other than
    /// allow or deny is deny.
    pub fn default_intention_action(&self) -> IntentionAction {
        let Some(entry) = self.config_entry(MESH_CONFIG_KIND, MESH_CONFIG_NAME) else {
            return IntentionAction::Deny;
        };
        let Ok(serde_json::Value::Object(body)) = serde_json::from_str::<serde_json::Value>(&entry.body) else {
            return IntentionAction::Deny;
        };
        let normalized = |key: &str| key.chars().filter(|c| *c != '_' && *c != '-').collect::<String>();
        let value = body
            .iter()
            .find(|(key, _)| normalized(key).eq_ignore_ascii_case(DEFAULT_ACTION_FIELD))
            .map(|(_, value)| value);
        match value.and_then(serde_json::Value::as_str) {
            Some(action) if action.eq_ignore_ascii_case("allow") => IntentionAction::Allow,
            _ => IntentionAction::Deny,
        }
    }

    /// Whether `source` may connect to `destination`, and why: the one
    /// authorization decision of the mesh.
    pub fn authorize(&self, source: &ServiceName, destination: &ServiceName) -> Decision<'_> {
        match self.decide(source, destination) {
            Some(intention) => Decision::Intention(intention),
            None => Decision::Default(self.default_intention_action()),
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::command::{Command, CommandOutcome};
    use weft_api::ids::{Indexes, RaftIndex};
    use weft_api::mesh::ConfigEntry;

    use super::super::{Table, Tables};
    use super::*;

    fn intention(id: &str, source: &str, destination: &str, action: IntentionAction) -> Intention {
        Intention {
            id: id.into(),
            source: source.into(),
            destination: destination.into(),
            action,
            ..Intention::default()
        }
    }

    fn tables_with(intentions: &[Intention]) -> Tables {
        let mut tables = Tables::default();
        for (i, intention) in intentions.iter().enumerate() {
            let outcome = tables.apply(RaftIndex(i as u64 + 1), &Command::IntentionUpsert(intention.clone())).0;
            assert_eq!(outcome, CommandOutcome::Done, "{intention:?}");
        }
        tables
    }

    fn ids(found: &[&Intention]) -> Vec<String> {
        found.iter().map(|i| i.id.clone()).collect()
    }

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text)
    }

    use IntentionAction::{Allow, Deny};

    #[test]
    fn precedence_follows_consul_without_namespaces() {
        assert_eq!(precedence(&intention("a", "web", "api", Allow)), 9);
        assert_eq!(precedence(&intention("a", "*", "api", Allow)), 8);
        assert_eq!(precedence(&intention("a", "web", "*", Allow)), 6);
        assert_eq!(precedence(&intention("a", "*", "*", Allow)), 5);
    }

    #[test]
    fn the_most_specific_intention_decides() {
        let tables = tables_with(&[
            intention("any-any", "*", "*", Allow),
            intention("any-api", "*", "api", Deny),
            intention("web-api", "web", "api", Allow),
            intention("web-any", "web", "*", Deny),
        ]);
        let mesh = tables.mesh();
        let decided = |s: &str, d: &str| mesh.decide(&name(s), &name(d)).map(|i| i.id.as_str());
        assert_eq!(decided("web", "api"), Some("web-api"));
        assert_eq!(decided("other", "api"), Some("any-api"));
        assert_eq!(decided("web", "db"), Some("web-any"));
        assert_eq!(decided("other", "db"), Some("any-any"));

        let only_wildcard_destination = tables_with(&[intention("web-any", "web", "*", Allow)]);
        assert_eq!(only_wildcard_destination.mesh().decide(&name("other"), &name("db")), None);
    }

    #[test]
    fn match_lists_own_and_wildcard_intentions_in_evaluation_order() {
        let tables = tables_with(&[
            intention("5", "*", "*", Allow),
            intention("8", "*", "api", Deny),
            intention("9b", "web", "api", Allow),
            intention("9a", "admin", "api", Allow),
            intention("6", "web", "*", Deny),
            intention("x", "web", "db", Deny),
        ]);
        let mesh = tables.mesh();
        assert_eq!(ids(&mesh.intention_match(MatchBy::Destination, &name("api"))), ["9a", "9b", "8", "6", "5"]);
        assert_eq!(ids(&mesh.intention_match(MatchBy::Source, &name("web"))), ["9b", "x", "8", "6", "5"]);
        assert_eq!(ids(&mesh.intention_match(MatchBy::Source, &name("nobody"))), ["8", "5"]);
        assert_eq!(ids(&mesh.intentions_by_precedence()), ["9a", "9b", "x", "8", "6", "5"]);
    }

    /// Tables holding a `mesh` entry with `body`. Through a snapshot, not a
    /// write: the store refuses a body that is not allow or deny, but one from
    /// before config entries were validated must still decide safely.
    fn with_mesh_entry(body: &str) -> Tables {
        let mut data = tables_with(&[intention("web-api", "web", "api", Deny)]).to_data();
        let entry = ConfigEntry { kind: "mesh".into(), name: "mesh".into(), body: body.into(), ..Default::default() };
        data.config_entries.push(entry);
        Tables::from_data(data)
    }

    #[test]
    fn unmatched_traffic_gets_the_mesh_default_else_deny() {
        let tables = tables_with(&[intention("web-api", "web", "api", Deny)]);
        assert_eq!(tables.mesh().authorize(&name("x"), &name("y")), Decision::Default(Deny));

        let tables = with_mesh_entry(r#"{"DefaultIntentionAction": "allow"}"#);
        let decision = tables.mesh().authorize(&name("x"), &name("y"));
        assert_eq!(decision, Decision::Default(Allow));
        assert!(decision.allowed());
        // An intention still wins over the default.
        let decision = tables.mesh().authorize(&name("web"), &name("api"));
        assert!(matches!(decision, Decision::Intention(i) if i.id == "web-api"));
        assert!(!decision.allowed());

        for body in [r#"{"default_intention_action": "ALLOW"}"#, r#"{"defaultIntentionAction": "Allow"}"#] {
            assert_eq!(with_mesh_entry(body).mesh().default_intention_action(), Allow, "{body}");
        }
        for body in [r#"{"DefaultIntentionAction": "deny"}"#, r#"{"DefaultIntentionAction": "maybe"}"#, "{}", "nope"] {
            assert_eq!(with_mesh_entry(body).mesh().default_intention_action(), Deny, "{body}");
        }
    }

    #[test]
    fn a_pair_has_one_intention_and_a_refused_write_changes_nothing() {
        let mut tables = tables_with(&[intention("a", "web", "api", Allow)]);
        let (outcome, changed) =
            tables.apply(RaftIndex(5), &Command::IntentionUpsert(intention("b", "web", "api", Deny)));
        assert!(matches!(&outcome, CommandOutcome::Rejected(r) if r.contains("already exists")), "{outcome:?}");
        assert!(changed.tables().is_empty());
        assert_eq!(tables.index(Table::Intentions), RaftIndex(1));
        assert_eq!(tables.mesh().intentions().count(), 1);

        // Same ID: an update, keeping its create index.
        let updated = intention("a", "web", "api", Deny);
        assert_eq!(tables.apply(RaftIndex(6), &Command::IntentionUpsert(updated)).0, CommandOutcome::Done);
        let stored = tables.mesh().intention("a").unwrap();
        assert_eq!((stored.action, stored.indexes), (Deny, Indexes { create: RaftIndex(1), modify: RaftIndex(6) }));

        // Moving an intention to another pair frees the old one.
        let moved = intention("a", "web", "db", Deny);
        assert_eq!(tables.apply(RaftIndex(7), &Command::IntentionUpsert(moved)).0, CommandOutcome::Done);
        assert!(tables.mesh().intention_exact(&name("web"), &name("api")).is_none());
        let again = intention("b", "web", "api", Allow);
        assert_eq!(tables.apply(RaftIndex(8), &Command::IntentionUpsert(again)).0, CommandOutcome::Done);

        // Deleting frees the pair too.
        tables.apply(RaftIndex(9), &Command::IntentionDelete { id: "b".into() });
        assert!(tables.mesh().intention_exact(&name("web"), &name("api")).is_none());
        assert_eq!(tables.mesh().intention_exact(&name("web"), &name("db")).map(|i| i.id.as_str()), Some("a"));
    }

    #[test]
    fn invalid_intentions_are_refused() {
        let mut tables = Tables::default();
        let long = "x".repeat(513);
        let mut cases = vec![
            (intention("a", "", "api", Allow), "SourceName must be set"),
            (intention("a", "web", "", Allow), "DestinationName must be set"),
            (intention("a", "we*", "api", Allow), "partial"),
            (intention("a", "web", "ns/api", Allow), "namespaces"),
            (intention("", "web", "api", Allow), "ID"),
            (Intention { description: long.clone(), ..intention("a", "web", "api", Allow) }, "Description"),
        ];
        let mut meta = intention("a", "web", "api", Allow);
        meta.meta.insert("k".into(), long);
        cases.push((meta, "Meta value"));
        for (bad, message) in cases {
            let (outcome, changed) = tables.apply(RaftIndex(1), &Command::IntentionUpsert(bad.clone()));
            assert!(matches!(&outcome, CommandOutcome::Rejected(r) if r.contains(message)), "{bad:?}: {outcome:?}");
            assert!(changed.tables().is_empty());
        }
        assert_eq!(tables.mesh().intentions().count(), 0);
    }

    #[test]
    fn the_pair_index_survives_a_snapshot() {
        let tables = tables_with(&[intention("a", "web", "api", Allow), intention("b", "*", "api", Deny)]);
        let mut restored = Tables::from_data(tables.to_data());
        assert_eq!(restored.mesh().decide(&name("web"), &name("api")).map(|i| i.id.as_str()), Some("a"));
        let duplicate = Command::IntentionUpsert(intention("c", "*", "api", Allow));
        assert!(matches!(restored.apply(RaftIndex(9), &duplicate).0, CommandOutcome::Rejected(_)));
    }
}
