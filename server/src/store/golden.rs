//! The golden replay test: a log recorded in today's format (committed as
//! `server/tests/fixtures/golden-log.bin`) is decoded and applied to empty
//! tables, and the state they reach, encoded as a snapshot, must equal
//! `golden-state.bin` byte for byte. A later build that decodes the log
//! differently, or applies a command differently (accepts what was refused,
//! stores another index), fails it: servers on different builds, or a log
//! replayed after an upgrade, would diverge.
//!
//! The log holds every kind of write a cluster commonly makes (KV with
//! check-and-set, catalog registrations and a leave, intentions, config
//! entries of every kind including refused ones, check-and-set on entries,
//! a batch, an ACL policy, a join token). `WEFT_BLESS=1 cargo test -p
//! weft-server golden` writes both files anew: only for a deliberate change
//! of the format, never to make the test pass.

use std::path::PathBuf;

use serde_json::json;
use weft_api::acl::AclPolicy;
use weft_api::catalog::{Check, HealthStatus, Node, Registration, Service};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::RaftIndex;
use weft_api::join::JoinTokenRecord;
use weft_api::mesh::{ConfigEntry, Intention, IntentionAction};

use super::Tables;
use crate::raft::{decode, encode};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn entry(kind: &str, name: &str, body: serde_json::Value) -> Command {
    let body = body.to_string();
    Command::ConfigEntryUpsert(ConfigEntry { kind: kind.into(), name: name.into(), body, indexes: Default::default() })
}

fn registration(node: &str, address: &str, service: &str, port: u16) -> Command {
    Command::Register(Box::new(Registration {
        node: Node { name: node.into(), address: address.into(), ..Node::default() },
        service: Some(Service { id: service.into(), name: service.into(), port, ..Service::default() }),
        checks: vec![Check {
            node: node.into(),
            id: format!("service:{service}").as_str().into(),
            name: format!("{service} alive"),
            status: HealthStatus::Passing,
            service_id: service.into(),
            check_type: "tcp".into(),
            ..Check::default()
        }],
        ..Registration::default()
    }))
}

/// The recorded writes, as a leader would have proposed them.
fn recorded_log() -> Vec<Command> {
    let kv = |key: &str, value: &str, cas| Command::KvSet { key: key.into(), value: value.into(), flags: 7, cas };
    vec![
        kv("app/config", "v1", None),
        kv("app/feature", "on", Some(0)),
        kv("app/feature", "off", Some(0)),
        kv("app/config", "v2", Some(1)),
        kv("tmp/a", "x", None),
        kv("tmp/b", "y", None),
        Command::KvDelete { key: "tmp/".into(), recurse: true, cas: None },
        Command::KvDelete { key: "app/feature".into(), recurse: false, cas: Some(99) },
        registration("vm1", "10.0.0.1", "web", 8080),
        registration("vm2", "10.0.0.2", "api", 9090),
        registration("vm3", "10.0.0.3", "db", 5432),
        Command::IntentionUpsert(Intention {
            id: "9b1c9ab1-0000-4000-8000-000000000001".into(),
            source: "web".into(),
            destination: "api".into(),
            action: IntentionAction::Allow,
            description: "web calls api".into(),
            ..Intention::default()
        }),
        Command::IntentionDelete { id: "no-such-intention".into() },
        entry("proxy-defaults", "global", json!({"Config": {"protocol": "tcp"}})),
        entry("service-defaults", "api", json!({"Protocol": "http"})),
        entry(
            "service-resolver",
            "api",
            json!({"Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {}}}),
        ),
        entry(
            "service-router",
            "api",
            json!({"Routes": [{"Match": {"HTTP": {"PathRegex": "^/v2/.*$"}}, "Destination": {"ServiceSubset": "v2"}}]}),
        ),
        entry(
            "service-splitter",
            "api",
            json!({"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}),
        ),
        // Refused in apply: db speaks tcp, and the subset does not exist.
        entry("service-router", "db", json!({"Routes": []})),
        entry("service-splitter", "api", json!({"Splits": [{"Weight": 100, "ServiceSubset": "v3"}]})),
        entry("service-intentions", "db", json!({"Sources": [{"Name": "api", "Action": "allow"}]})),
        // Refused: the pair web → api already has an intention.
        entry("service-intentions", "api", json!({"Sources": [{"Name": "web", "Action": "allow"}]})),
        entry("mesh", "mesh", json!({"DefaultIntentionAction": "deny"})),
        entry(
            "ingress-gateway",
            "edge",
            json!({"Listeners": [{"Port": 8080, "Protocol": "http", "Services": [{"Name": "api"}]}]}),
        ),
        Command::ConfigEntryCas {
            kind: "service-defaults".into(),
            name: "web".into(),
            cas: 0,
            body: Some(json!({"Protocol": "http"}).to_string()),
        },
        Command::ConfigEntryCas { kind: "service-defaults".into(), name: "web".into(), cas: 3, body: None },
        Command::ConfigEntryDelete { kind: "mesh".into(), name: "mesh".into() },
        Command::Batch(vec![
            kv("batch/1", "a", None),
            registration("vm4", "10.0.0.4", "cache", 6379),
            kv("batch/2", "b", Some(5)),
        ]),
        Command::NodeLeave(Box::new(Node { name: "vm3".into(), ..Node::default() })),
        Command::AclPolicySet(Box::new(AclPolicy {
            id: "00000000-0000-4000-8000-0000000000aa".into(),
            name: "readers".into(),
            description: "read everything".into(),
            rules_text: "node_prefix \"\" { policy = \"read\" }".into(),
            rules: Default::default(),
            datacenters: Vec::new(),
            indexes: Default::default(),
        })),
        Command::JoinTokenCreate(JoinTokenRecord {
            id: "1a2b3c4d5e6f".into(),
            secret_sha256: "00".repeat(32),
            description: "vm5".into(),
            expires_at: 1_800_000_000,
            uses_left: 1,
            indexes: Default::default(),
        }),
    ]
}

/// The log as Raft keeps it: each entry's index and encoded command.
fn encoded_log() -> Vec<u8> {
    let entries: Vec<(u64, Vec<u8>)> =
        recorded_log().iter().enumerate().map(|(i, command)| (i as u64 + 1, encode(command))).collect();
    encode(&entries)
}

/// The state a log reaches, as a snapshot, and the indexes of the entries
/// `apply` refused.
fn replay(log: &[u8]) -> (Vec<u8>, Vec<u64>) {
    let entries: Vec<(u64, Vec<u8>)> = decode(log).expect("the recorded log decodes");
    let mut tables = Tables::default();
    let mut refused = Vec::new();
    for (index, bytes) in entries {
        let command: Command = decode(&bytes).expect("a recorded command decodes");
        if let (CommandOutcome::Rejected(_), _) = tables.apply(RaftIndex(index), &command) {
            refused.push(index);
        }
    }
    (tables.to_data().encode(), refused)
}

#[test]
fn a_recorded_log_replays_to_the_recorded_state_byte_for_byte() {
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::create_dir_all(fixture("")).unwrap();
        std::fs::write(fixture("golden-log.bin"), encoded_log()).unwrap();
        std::fs::write(fixture("golden-state.bin"), replay(&encoded_log()).0).unwrap();
    }
    let log = std::fs::read(fixture("golden-log.bin")).expect("the recorded log (WEFT_BLESS=1 records it)");
    let expected = std::fs::read(fixture("golden-state.bin")).expect("the recorded state");
    let (state, refused) = replay(&log);
    assert_eq!(replay(&log).0, state, "replaying the same log twice gives the same bytes");
    // The router for a tcp service, the split to a missing subset, the
    // second intention for one pair.
    assert_eq!(refused, [19, 20, 22]);
    assert!(state == expected, "the recorded log no longer replays to the recorded state: apply or the format changed");
    // The recording is what this build would write, too.
    assert!(encoded_log() == log, "today's encoding of the recorded writes differs from the recorded log");
}
