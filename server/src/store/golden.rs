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
//! a batch, an ACL policy, a join token). A second recording
//! (`golden-log-checked.bin`) goes on with mesh writes as leaders have
//! proposed them since `Command::Checked`, one of them outdated; the first
//! stays, for logs written before. `WEFT_BLESS=1 cargo test -p
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
use weft_api::session::{Behavior, Session};

use super::{StoreData, Tables};
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

/// The first log, then mesh writes as a leader proposes them since
/// `Command::Checked`: each checked against the tables as they stood
/// (`mesh_index`), and one whose tables changed after its check.
fn checked_log() -> Vec<Command> {
    let mut log = recorded_log();
    let mut tables = Tables::default();
    for (i, command) in log.iter().enumerate() {
        tables.apply(RaftIndex(i as u64 + 1), command);
    }
    let checked_at = |tables: &Tables, command: Command| Command::Checked {
        mesh_index: tables.mesh_index(),
        command: Box::new(command),
    };
    let db_http = entry("service-defaults", "db", json!({"Protocol": "http"}));
    let router = entry("service-router", "db", json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/v2"}}}]}));
    let intention = Command::IntentionUpsert(Intention {
        id: "9b1c9ab1-0000-4000-8000-000000000002".into(),
        source: "cache".into(),
        destination: "db".into(),
        action: IntentionAction::Deny,
        ..Intention::default()
    });
    let cas = Command::ConfigEntryCas {
        kind: "service-defaults".into(),
        name: "cache".into(),
        cas: 0,
        body: Some(json!({"Protocol": "grpc"}).to_string()),
    };
    let stale = checked_at(&tables, entry("service-defaults", "web", json!({"Protocol": "http2"})));
    for command in [db_http, router, intention, cas] {
        let checked = checked_at(&tables, command);
        tables.apply(RaftIndex(log.len() as u64 + 1), &checked);
        log.push(checked);
    }
    // Checked before the four above were applied: refused as outdated.
    log.push(stale);
    // Sessions: two on vm1, bound to web's check; a lock taken, refused to
    // the other, released when web's check turns critical (its holder's
    // behavior is release; the other's, delete, ends with its key).
    let session = |id: &str, behavior| {
        Command::SessionCreate(Session {
            id: id.into(),
            name: id.into(),
            node: "vm1".into(),
            service_checks: vec!["service:web".into()],
            lock_delay_ms: 15_000,
            behavior,
            ..Session::default()
        })
    };
    let acquire = |key: &str, session: &str| Command::KvAcquire {
        key: key.into(),
        value: b"held".to_vec(),
        flags: 0,
        session: session.into(),
        cas: None,
    };
    let mut web_critical = registration("vm1", "10.0.0.1", "web", 8080);
    if let Command::Register(registration) = &mut web_critical {
        registration.checks[0].status = HealthStatus::Critical;
    }
    log.extend([
        session("5e551011-0000-4000-8000-000000000001", Behavior::Release),
        session("5e551011-0000-4000-8000-000000000002", Behavior::Delete),
        acquire("locks/leader", "5e551011-0000-4000-8000-000000000001"),
        acquire("locks/leader", "5e551011-0000-4000-8000-000000000002"),
        acquire("locks/other", "5e551011-0000-4000-8000-000000000002"),
        Command::SessionRenew { id: "5e551011-0000-4000-8000-000000000001".into() },
        web_critical,
        // Refused: the check it is bound to is critical.
        session("5e551011-0000-4000-8000-000000000003", Behavior::Release),
    ]);
    log
}

/// A log as Raft keeps it: each entry's index and encoded command.
fn encoded(log: &[Command]) -> Vec<u8> {
    let entries: Vec<(u64, Vec<u8>)> =
        log.iter().enumerate().map(|(i, command)| (i as u64 + 1, encode(command))).collect();
    encode(&entries)
}

/// The state a log reaches, as a snapshot, and the indexes of the entries
/// `apply` refused or found outdated.
fn replay(log: &[u8]) -> (Vec<u8>, Vec<u64>) {
    let entries: Vec<(u64, Vec<u8>)> = decode(log).expect("the recorded log decodes");
    let mut tables = Tables::default();
    let mut refused = Vec::new();
    for (index, bytes) in entries {
        let command: Command = decode(&bytes).expect("a recorded command decodes");
        if let (CommandOutcome::Rejected(_) | CommandOutcome::Outdated, _) = tables.apply(RaftIndex(index), &command) {
            refused.push(index);
        }
    }
    (tables.to_data().encode(), refused)
}

/// Replays the recorded `log_file` (after recording `log` anew under
/// `WEFT_BLESS`) and checks the state it reaches and what it refused.
fn check_recording(log: &[Command], (log_file, state_file): (&str, &str), expected_refused: &[u64]) {
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::create_dir_all(fixture("")).unwrap();
        std::fs::write(fixture(log_file), encoded(log)).unwrap();
        std::fs::write(fixture(state_file), replay(&encoded(log)).0).unwrap();
    }
    let recorded = std::fs::read(fixture(log_file)).expect("the recorded log (WEFT_BLESS=1 records it)");
    let expected = std::fs::read(fixture(state_file)).expect("the recorded state");
    let (state, refused) = replay(&recorded);
    assert_eq!(replay(&recorded).0, state, "replaying the same log twice gives the same bytes");
    assert_eq!(refused, expected_refused);
    assert!(state == expected, "the recorded log no longer replays to the recorded state: apply or the format changed");
    // The recording is what this build would write, too.
    assert!(encoded(log) == recorded, "today's encoding of the recorded writes differs from the recorded log");
}

#[test]
fn a_recorded_log_replays_to_the_recorded_state_byte_for_byte() {
    // The router for a tcp service, the split to a missing subset, the
    // second intention for one pair: refused by the rules `apply` evaluates
    // for the variants a leader wrote before `Command::Checked`.
    check_recording(&recorded_log(), ("golden-log.bin", "golden-state.bin"), &[19, 20, 22]);
}

#[test]
fn a_recorded_log_of_checked_writes_replays_to_the_recorded_state_byte_for_byte() {
    // The last write was checked before the four before it were applied.
    check_recording(&checked_log(), ("golden-log-checked.bin", "golden-state-checked.bin"), &[19, 20, 22, 36, 44]);
}

/// Snapshots written before sessions (format 5) still decode to the state
/// the same logs reach today: the recorded states of that format, kept as
/// `golden-state*-v5.bin`, are the replays' states but for the sessions
/// table's index, which they do not name.
#[test]
fn states_recorded_in_format_5_decode_to_todays_replay() {
    // The checked log as it was before sessions: its first 36 writes.
    for (log, state_file) in
        [(recorded_log(), "golden-state-v5.bin"), (checked_log()[..36].to_vec(), "golden-state-checked-v5.bin")]
    {
        let recorded = StoreData::decode(&std::fs::read(fixture(state_file)).unwrap()).unwrap();
        let (state, _) = replay(&encoded(&log));
        let mut today = StoreData::decode(&state).unwrap();
        assert!(today.table_indexes.contains(&("sessions".to_owned(), RaftIndex(0))));
        today.table_indexes.retain(|(name, _)| name != "sessions");
        assert_eq!(recorded, today, "{state_file}");
    }
}
