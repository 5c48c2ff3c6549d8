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
pub use weft_api::intentions::{is_wildcard, WILDCARD};
use weft_api::intentions::{Decision, IntentionRule, IntentionSet, RuleOrigin, Verdict};
use weft_api::mesh::{Intention, IntentionAction};

use super::config_entries::SERVICE_INTENTIONS;
use super::mesh::MeshTables;
use super::service_intentions::rules_of;

/// The config entry (kind and name) holding mesh-wide settings.
pub const MESH_CONFIG_KIND: &str = "mesh";
pub const MESH_CONFIG_NAME: &str = "mesh";
/// The field of the `mesh` config entry's body that sets the action for
/// traffic no intention matches (`"allow"` or `"deny"`; deny if absent).
pub const DEFAULT_ACTION_FIELD: &str = "DefaultIntentionAction";

/// Consul's limits on an intention's free-form fields.
const MAX_DESCRIPTION_BYTES: usize = 512;

/// An intention's precedence (see [`weft_api::intentions::precedence`]).
pub fn precedence(intention: &Intention) -> u8 {
    weft_api::intentions::precedence(&intention.source, &intention.destination)
}

/// Consul's evaluation order for the intentions table: precedence, highest
/// first, then source and destination names, then ID.
pub fn evaluation_order(a: &Intention, b: &Intention) -> Ordering {
    precedence(b)
        .cmp(&precedence(a))
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.destination.cmp(&b.destination))
        .then_with(|| a.id.cmp(&b.id))
}

/// A table intention as a rule.
pub fn rule_of(intention: &Intention) -> IntentionRule {
    IntentionRule {
        source: intention.source.clone(),
        destination: intention.destination.clone(),
        origin: RuleOrigin::Intention { id: intention.id.clone() },
        verdict: Verdict::Action(intention.action),
    }
}

/// What an `IntentionUpsert` must satisfy on its own, before it is
/// proposed: an ID, and [`validate_intention`].
pub fn check_intention_alone(intention: &Intention) -> Result<(), String> {
    if intention.id.is_empty() {
        return Err("an intention needs an ID".into());
    }
    validate_intention(intention)
}

/// Checks what an intention may hold; the error names the field (Consul's
/// field names). Servers refuse a write that fails this before proposing
/// it, and the HTTP API checks first to answer with a 400.
pub fn validate_intention(intention: &Intention) -> Result<(), String> {
    validate_name("SourceName", &intention.source)?;
    validate_name("DestinationName", &intention.destination)?;
    if intention.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!("Description exceeds maximum length {MAX_DESCRIPTION_BYTES}"));
    }
    weft_api::catalog::validate_meta("Meta", &intention.meta)?;
    Ok(())
}

/// A service name, or `*` alone. `field` names it in the error.
pub fn validate_name(field: &str, name: &ServiceName) -> Result<(), String> {
    let text = name.as_str();
    weft_api::catalog::validate_name(field, text)?;
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
    /// The rules written in `service-intentions` config entries, for every
    /// destination. Entries are validated on write, so none fails to read.
    pub fn config_entry_rules(&self) -> Vec<IntentionRule> {
        self.config_entries_of(SERVICE_INTENTIONS)
            .filter_map(|entry| match serde_json::from_str::<serde_json::Value>(&entry.body) {
                Ok(serde_json::Value::Object(body)) => rules_of(&entry.name, &body).ok(),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every rule that can apply to traffic to `destination` (its own and
    /// the wildcard's), from the intentions table and from config entries.
    pub fn intention_rules(&self, destination: &ServiceName) -> Vec<IntentionRule> {
        let applies = |d: &ServiceName| d == destination || is_wildcard(d);
        let table = self.intentions().filter(|i| applies(&i.destination)).map(rule_of);
        let entries = self.config_entry_rules().into_iter().filter(|r| applies(&r.destination));
        table.chain(entries).collect()
    }

    /// The rules for `destination`, ready to decide with. Writes are
    /// validated, so every rule compiles; if one ever did not, traffic to
    /// `destination` is denied rather than judged without it.
    pub fn intention_set(&self, destination: &ServiceName) -> IntentionSet {
        IntentionSet::new(self.intention_rules(destination), self.default_intention_action()).unwrap_or_else(|error| {
            tracing::error!(%error, %destination, "an intention rule does not compile; denying all traffic to it");
            IntentionSet::deny_all()
        })
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

    /// Whether `source` may connect to `destination`, and why, judged at L4
    /// (an L7 rule counts as a deny): the `check` and `authorize` endpoints.
    pub fn authorize(&self, source: &ServiceName, destination: &ServiceName) -> Decision {
        self.intention_set(destination).decide_l4(source)
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
        let decided = |tables: &Tables, s: &str, d: &str| {
            tables.mesh().intention_set(&name(d)).rule_for(&name(s)).map(|r| r.origin.clone())
        };
        let id = |id: &str| Some(RuleOrigin::Intention { id: id.into() });
        assert_eq!(decided(&tables, "web", "api"), id("web-api"));
        assert_eq!(decided(&tables, "other", "api"), id("any-api"));
        assert_eq!(decided(&tables, "web", "db"), id("web-any"));
        assert_eq!(decided(&tables, "other", "db"), id("any-any"));

        let only_wildcard_destination = tables_with(&[intention("web-any", "web", "*", Allow)]);
        assert_eq!(decided(&only_wildcard_destination, "other", "db"), None);
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
        let decision = tables.mesh().authorize(&name("x"), &name("y"));
        assert!(!decision.allowed() && decision.reason.contains("mesh default is to deny"), "{decision:?}");

        let tables = with_mesh_entry(r#"{"DefaultIntentionAction": "allow"}"#);
        let decision = tables.mesh().authorize(&name("x"), &name("y"));
        assert!(decision.allowed() && decision.reason.contains("mesh default is to allow"), "{decision:?}");
        // An intention still wins over the default.
        let decision = tables.mesh().authorize(&name("web"), &name("api"));
        assert!(!decision.allowed() && decision.reason.contains("web-api"), "{decision:?}");

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
        let rule = restored.mesh().intention_set(&name("api")).rule_for(&name("web")).cloned();
        assert_eq!(rule.map(|r| r.origin), Some(RuleOrigin::Intention { id: "a".into() }));
        let duplicate = Command::IntentionUpsert(intention("c", "*", "api", Allow));
        assert!(matches!(restored.apply(RaftIndex(9), &duplicate).0, CommandOutcome::Rejected(_)));
    }
}
