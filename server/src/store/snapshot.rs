//! The portable form of the whole state: what Raft snapshots and
//! `weft snapshot save` contain.

use serde::{Deserialize, Serialize};
use weft_api::catalog::{Check, Node, Service};
use weft_api::ids::RaftIndex;
use weft_api::join::{AgentCaRecord, AgentCredentialRecord, JoinTokenRecord};
use weft_api::kv::KvEntry;
use weft_api::mesh::{CaState, ConfigEntry, Intention};
use weft_api::session::Session;

use super::{
    acl::AclData, acl::AclTables, catalog::Catalog, join::JoinTables, kv::KvTable, mesh::MeshTables,
    restore::PendingRestore, sessions::SessionTable, Table, Tables,
};

/// Every snapshot starts with these bytes, then the format version (u32,
/// little endian), then the postcard-encoded [`StoreData`].
const MAGIC: &[u8; 8] = b"WEFTSNAP";
/// The snapshot format's version; bumped whenever `StoreData`'s shape changes.
/// Version 2 added `left_nodes`, version 3 the join tables, version 4 the
/// agent CA, version 5 the ACL tables, version 6 sessions and KV locks.
/// postcard is not self-describing (a missing trailing field is an error,
/// not a default), so older versions are decoded with their own shapes
/// ([`StoreDataV1`] to [`StoreDataV5`]).
const FORMAT_VERSION: u32 = 6;

/// Every table as a list of records, plus each table's index.
/// Its shape is the format: change it only with a new `FORMAT_VERSION`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreData {
    pub table_indexes: Vec<(String, RaftIndex)>,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
    pub kv: Vec<KvEntry>,
    pub intentions: Vec<Intention>,
    pub config_entries: Vec<ConfigEntry>,
    pub ca: Option<CaState>,
    pub restore_index: RaftIndex,
    /// Nodes that left gracefully and have not registered since (version 2).
    pub left_nodes: Vec<Node>,
    /// Join tokens and agent credentials (version 3).
    pub join_tokens: Vec<JoinTokenRecord>,
    pub agent_credentials: Vec<AgentCredentialRecord>,
    /// The servers' agent CA (version 4).
    pub agent_ca: Option<AgentCaRecord>,
    /// ACL tokens, policies, roles, auth methods and binding rules, and a
    /// snapshot restore under way (version 5).
    pub acl: AclData,
    pub pending_restore: Option<PendingRestore>,
    /// Sessions, and which session holds each locked key (version 6).
    pub sessions: Vec<Session>,
    pub kv_locks: Vec<(String, String)>,
}

/// Version 5 of the format: [`StoreData`] without sessions and KV locks.
#[derive(Deserialize)]
struct StoreDataV5 {
    table_indexes: Vec<(String, RaftIndex)>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    intentions: Vec<Intention>,
    config_entries: Vec<ConfigEntry>,
    ca: Option<CaState>,
    restore_index: RaftIndex,
    left_nodes: Vec<Node>,
    join_tokens: Vec<JoinTokenRecord>,
    agent_credentials: Vec<AgentCredentialRecord>,
    agent_ca: Option<AgentCaRecord>,
    acl: AclData,
    pending_restore: Option<PendingRestore>,
}

impl From<StoreDataV5> for StoreData {
    fn from(v5: StoreDataV5) -> Self {
        StoreData {
            table_indexes: v5.table_indexes,
            nodes: v5.nodes,
            services: v5.services,
            checks: v5.checks,
            kv: v5.kv,
            intentions: v5.intentions,
            config_entries: v5.config_entries,
            ca: v5.ca,
            restore_index: v5.restore_index,
            left_nodes: v5.left_nodes,
            join_tokens: v5.join_tokens,
            agent_credentials: v5.agent_credentials,
            agent_ca: v5.agent_ca,
            acl: v5.acl,
            pending_restore: v5.pending_restore,
            sessions: Vec::new(),
            kv_locks: Vec::new(),
        }
    }
}

/// Version 4 of the format: [`StoreData`] without the ACL tables.
#[derive(Deserialize)]
struct StoreDataV4 {
    table_indexes: Vec<(String, RaftIndex)>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    intentions: Vec<Intention>,
    config_entries: Vec<ConfigEntry>,
    ca: Option<CaState>,
    restore_index: RaftIndex,
    left_nodes: Vec<Node>,
    join_tokens: Vec<JoinTokenRecord>,
    agent_credentials: Vec<AgentCredentialRecord>,
    agent_ca: Option<AgentCaRecord>,
}

impl From<StoreDataV4> for StoreData {
    fn from(v4: StoreDataV4) -> Self {
        StoreData {
            table_indexes: v4.table_indexes,
            nodes: v4.nodes,
            services: v4.services,
            checks: v4.checks,
            kv: v4.kv,
            intentions: v4.intentions,
            config_entries: v4.config_entries,
            ca: v4.ca,
            restore_index: v4.restore_index,
            left_nodes: v4.left_nodes,
            join_tokens: v4.join_tokens,
            agent_credentials: v4.agent_credentials,
            agent_ca: v4.agent_ca,
            acl: AclData::default(),
            pending_restore: None,
            sessions: Vec::new(),
            kv_locks: Vec::new(),
        }
    }
}

/// Version 3 of the format: [`StoreData`] without the agent CA.
#[derive(Deserialize)]
struct StoreDataV3 {
    table_indexes: Vec<(String, RaftIndex)>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    intentions: Vec<Intention>,
    config_entries: Vec<ConfigEntry>,
    ca: Option<CaState>,
    restore_index: RaftIndex,
    left_nodes: Vec<Node>,
    join_tokens: Vec<JoinTokenRecord>,
    agent_credentials: Vec<AgentCredentialRecord>,
}

impl From<StoreDataV3> for StoreData {
    fn from(v3: StoreDataV3) -> Self {
        StoreData {
            table_indexes: v3.table_indexes,
            nodes: v3.nodes,
            services: v3.services,
            checks: v3.checks,
            kv: v3.kv,
            intentions: v3.intentions,
            config_entries: v3.config_entries,
            ca: v3.ca,
            restore_index: v3.restore_index,
            left_nodes: v3.left_nodes,
            join_tokens: v3.join_tokens,
            agent_credentials: v3.agent_credentials,
            agent_ca: None,
            acl: AclData::default(),
            pending_restore: None,
            sessions: Vec::new(),
            kv_locks: Vec::new(),
        }
    }
}

/// Version 2 of the format: [`StoreData`] without the join tables.
#[derive(Deserialize)]
struct StoreDataV2 {
    table_indexes: Vec<(String, RaftIndex)>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    intentions: Vec<Intention>,
    config_entries: Vec<ConfigEntry>,
    ca: Option<CaState>,
    restore_index: RaftIndex,
    left_nodes: Vec<Node>,
}

impl From<StoreDataV2> for StoreData {
    fn from(v2: StoreDataV2) -> Self {
        StoreData {
            table_indexes: v2.table_indexes,
            nodes: v2.nodes,
            services: v2.services,
            checks: v2.checks,
            kv: v2.kv,
            intentions: v2.intentions,
            config_entries: v2.config_entries,
            ca: v2.ca,
            restore_index: v2.restore_index,
            left_nodes: v2.left_nodes,
            join_tokens: Vec::new(),
            agent_credentials: Vec::new(),
            agent_ca: None,
            acl: AclData::default(),
            pending_restore: None,
            sessions: Vec::new(),
            kv_locks: Vec::new(),
        }
    }
}

/// Version 1 of the format: [`StoreData`] without `left_nodes`.
#[derive(Deserialize)]
struct StoreDataV1 {
    table_indexes: Vec<(String, RaftIndex)>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    intentions: Vec<Intention>,
    config_entries: Vec<ConfigEntry>,
    ca: Option<CaState>,
    restore_index: RaftIndex,
}

impl From<StoreDataV1> for StoreData {
    fn from(v1: StoreDataV1) -> Self {
        StoreData {
            table_indexes: v1.table_indexes,
            nodes: v1.nodes,
            services: v1.services,
            checks: v1.checks,
            kv: v1.kv,
            intentions: v1.intentions,
            config_entries: v1.config_entries,
            ca: v1.ca,
            restore_index: v1.restore_index,
            left_nodes: Vec::new(),
            join_tokens: Vec::new(),
            agent_credentials: Vec::new(),
            agent_ca: None,
            acl: AclData::default(),
            pending_restore: None,
            sessions: Vec::new(),
            kv_locks: Vec::new(),
        }
    }
}

impl StoreData {
    /// The same state without the CA roots' private keys and without the
    /// join tables (token and enrollment hashes, the agent CA and its key):
    /// what a client agent is sent.
    pub fn without_secrets(self) -> StoreData {
        StoreData {
            ca: self.ca.map(|ca| ca.without_private_keys()),
            join_tokens: Vec::new(),
            agent_credentials: Vec::new(),
            agent_ca: None,
            pending_restore: None,
            ..self
        }
    }
}

/// Why bytes are not a usable snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Weft snapshot (it does not start with the WEFTSNAP header)")]
    NotASnapshot,
    #[error("the snapshot is damaged: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("snapshot format version {found} is not supported (this Weft reads versions 1 to {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
}

impl StoreData {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        postcard::to_extend(self, bytes).expect("store data always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or(SnapshotError::NotASnapshot)?;
        let (version, body) = body.split_first_chunk::<4>().ok_or(SnapshotError::NotASnapshot)?;
        match u32::from_le_bytes(*version) {
            1 => Ok(postcard::from_bytes::<StoreDataV1>(body)?.into()),
            2 => Ok(postcard::from_bytes::<StoreDataV2>(body)?.into()),
            3 => Ok(postcard::from_bytes::<StoreDataV3>(body)?.into()),
            4 => Ok(postcard::from_bytes::<StoreDataV4>(body)?.into()),
            5 => Ok(postcard::from_bytes::<StoreDataV5>(body)?.into()),
            FORMAT_VERSION => Ok(postcard::from_bytes(body)?),
            found => Err(SnapshotError::UnsupportedVersion { found }),
        }
    }
}

fn table_name(table: Table) -> &'static str {
    match table {
        Table::Nodes => "nodes",
        Table::Services => "services",
        Table::Checks => "checks",
        Table::Kv => "kv",
        Table::Intentions => "intentions",
        Table::ConfigEntries => "config_entries",
        Table::Ca => "ca",
        Table::Join => "join",
        Table::Acl => "acl",
        Table::Events => "events",
        Table::Sessions => "sessions",
    }
}

impl Tables {
    pub(super) fn to_data(&self) -> StoreData {
        StoreData {
            // User events are not in snapshots (see `events`), nor their index.
            table_indexes: Table::ALL
                .iter()
                .filter(|t| **t != Table::Events)
                .map(|t| (table_name(*t).to_owned(), self.index(*t)))
                .collect(),
            nodes: self.catalog.nodes().cloned().collect(),
            services: self.catalog.services().cloned().collect(),
            checks: self.catalog.checks().cloned().collect(),
            kv: self.kv.entries().cloned().collect(),
            intentions: self.mesh.intentions().cloned().collect(),
            config_entries: self.mesh.config_entries().cloned().collect(),
            ca: self.mesh.ca().cloned(),
            restore_index: self.restore_index,
            left_nodes: self.catalog.left_nodes().cloned().collect(),
            join_tokens: self.join.tokens().cloned().collect(),
            agent_credentials: self.join.credentials().cloned().collect(),
            agent_ca: self.join.agent_ca().cloned(),
            acl: self.acl.to_data(),
            pending_restore: self.pending_restore.clone(),
            sessions: self.sessions.iter().cloned().collect(),
            kv_locks: self.kv.locks().map(|(key, holder)| (key.clone(), holder.clone())).collect(),
        }
    }

    pub(super) fn from_data(data: StoreData) -> Self {
        let mut table_indexes = [RaftIndex::ZERO; Table::ALL.len()];
        for table in Table::ALL {
            if let Some((_, index)) = data.table_indexes.iter().find(|(name, _)| name == table_name(table)) {
                table_indexes[table.slot()] = *index;
            }
        }
        Tables {
            catalog: Catalog::from_parts(data.nodes, data.services, data.checks, data.left_nodes),
            kv: KvTable::from_parts(data.kv, data.kv_locks),
            mesh: MeshTables::from_parts(data.intentions, data.config_entries, data.ca),
            join: JoinTables::from_parts(data.join_tokens, data.agent_credentials, data.agent_ca),
            acl: AclTables::from_data(data.acl),
            events: Default::default(),
            sessions: SessionTable::from_sessions(data.sessions),
            table_indexes,
            restore_index: data.restore_index,
            pending_restore: data.pending_restore,
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::command::{Command, CommandOutcome};

    use super::*;

    #[test]
    fn a_restore_in_parts_is_applied_whole_or_not_at_all_and_survives_a_snapshot() {
        let mut source = Tables::default();
        source.apply(RaftIndex(1), &Command::KvSet { key: "k".into(), value: vec![7; 3000], flags: 0, cas: None });
        let bytes = source.to_data().encode();
        let sha256: String =
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let begin = |id: &str, sha256: &str| Command::RestoreBegin {
            id: id.into(),
            total: bytes.len() as u64,
            sha256: sha256.into(),
        };
        let part = |id: &str, from: usize, to: usize| Command::RestoreChunk {
            id: id.into(),
            offset: from as u64,
            bytes: bytes[from..to].to_vec(),
        };
        let finish = |id: &str| Command::RestoreFinish { id: id.into() };
        let done = |outcome: (CommandOutcome, _)| outcome.0 == CommandOutcome::Done;
        let half = bytes.len() / 2;

        let mut tables = Tables::default();
        assert!(done(tables.apply(RaftIndex(2), &begin("r1", &sha256))));
        assert!(!done(tables.apply(RaftIndex(3), &part("r1", half, bytes.len()))), "out of order");
        assert!(!done(tables.apply(RaftIndex(3), &part("other", 0, half))), "another restore's part");
        assert!(done(tables.apply(RaftIndex(3), &part("r1", 0, half))));
        // A server that catches up by snapshot here holds the same half.
        let mut caught_up = Tables::from_data(StoreData::decode(&tables.to_data().encode()).unwrap());
        for replica in [&mut tables, &mut caught_up] {
            assert!(done(replica.apply(RaftIndex(4), &part("r1", half, bytes.len()))));
            assert!(done(replica.apply(RaftIndex(5), &finish("r1"))));
            assert_eq!(replica.kv().get("k").map(|e| e.value.len()), Some(3000));
            assert_eq!(replica.to_data().pending_restore, None);
        }
        // Not all there, or not what was announced: nothing changes.
        let mut tables = Tables::default();
        tables.apply(RaftIndex(2), &begin("r2", &sha256));
        tables.apply(RaftIndex(3), &part("r2", 0, half));
        assert!(!done(tables.apply(RaftIndex(4), &finish("r2"))));
        tables.apply(RaftIndex(5), &begin("r3", &"0".repeat(64)));
        tables.apply(RaftIndex(6), &part("r3", 0, bytes.len()));
        assert!(!done(tables.apply(RaftIndex(7), &finish("r3"))));
        assert!(tables.kv().get("k").is_none());
        // Client agents are never sent the parts.
        let parts = PendingRestore { id: "r".into(), total: 1, sha256: String::new(), bytes: vec![1] };
        let with_parts = StoreData { pending_restore: Some(parts), ..Default::default() };
        assert_eq!(with_parts.without_secrets().pending_restore, None);
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(7), &Command::KvSet { key: "k".into(), value: vec![0, 255], flags: 3, cas: None });
        let bytes = tables.to_data().encode();
        let back = Tables::from_data(StoreData::decode(&bytes).unwrap());
        assert_eq!(back.to_data(), tables.to_data());
        assert_eq!(back.index(Table::Kv), RaftIndex(7));
    }

    #[test]
    fn left_nodes_survive_a_snapshot_and_version_1_still_decodes() {
        let mut tables = Tables::default();
        let node = Node { name: "vm1".into(), address: "10.0.0.1".into(), ..Node::default() };
        tables.apply(RaftIndex(3), &Command::NodeLeave(Box::new(node)));
        let back = StoreData::decode(&tables.to_data().encode()).unwrap();
        assert_eq!(back.left_nodes.len(), 1);

        // A version 1 snapshot: the same fields, without `left_nodes`.
        #[derive(Serialize)]
        struct V1<'a>(
            &'a [(String, RaftIndex)],
            &'a [Node],
            &'a [Service],
            &'a [Check],
            &'a [KvEntry],
            &'a [Intention],
            &'a [ConfigEntry],
            Option<CaState>,
            RaftIndex,
        );
        let kv = [KvEntry { key: "k".into(), ..KvEntry::default() }];
        let v1 = V1(&[("kv".into(), RaftIndex(9))], &[], &[], &[], &kv, &[], &[], None, RaftIndex(2));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let old = StoreData::decode(&bytes).unwrap();
        assert_eq!((old.kv.len(), old.restore_index, old.left_nodes.len()), (1, RaftIndex(2), 0));
        assert!(matches!(
            StoreData::decode(&[MAGIC.as_slice(), &7u32.to_le_bytes()].concat()),
            Err(SnapshotError::UnsupportedVersion { found: 7 })
        ));
    }

    #[test]
    fn restore_of_garbage_is_rejected_and_changes_nothing() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &Command::KvSet { key: "k".into(), value: vec![1], flags: 0, cas: None });
        let (outcome, changed) = tables.apply(RaftIndex(2), &Command::Restore { snapshot: b"nope".to_vec() });
        assert!(matches!(outcome, weft_api::command::CommandOutcome::Rejected(_)));
        assert!(changed.tables().is_empty());
        assert!(tables.kv().get("k").is_some());
    }
}
