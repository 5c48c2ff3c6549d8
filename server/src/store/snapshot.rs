//! The portable form of the whole state: what Raft snapshots and
//! `weft snapshot save` contain.

use serde::{Deserialize, Serialize};
use weft_api::catalog::{Check, Node, Service};
use weft_api::ids::RaftIndex;
use weft_api::kv::KvEntry;
use weft_api::mesh::{CaState, ConfigEntry, Intention};

use super::{catalog::Catalog, kv::KvTable, mesh::MeshTables, Table, Tables};

/// Every snapshot starts with these bytes, then the format version (u32,
/// little endian), then the postcard-encoded [`StoreData`].
const MAGIC: &[u8; 8] = b"WEFTSNAP";
/// The snapshot format's version; bumped whenever `StoreData`'s shape changes.
const FORMAT_VERSION: u32 = 1;

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
}

impl StoreData {
    /// The same state without the CA roots' private keys: what a client
    /// agent is sent.
    pub fn without_secrets(self) -> StoreData {
        StoreData { ca: self.ca.map(|ca| ca.without_private_keys()), ..self }
    }
}

/// Why bytes are not a usable snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Weft snapshot (it does not start with the WEFTSNAP header)")]
    NotASnapshot,
    #[error("the snapshot is damaged: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("snapshot format version {found} is not supported (this Weft reads version {FORMAT_VERSION})")]
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
        let version = u32::from_le_bytes(*version);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version });
        }
        Ok(postcard::from_bytes(body)?)
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
    }
}

impl Tables {
    pub(super) fn to_data(&self) -> StoreData {
        StoreData {
            table_indexes: Table::ALL.iter().map(|t| (table_name(*t).to_owned(), self.index(*t))).collect(),
            nodes: self.catalog.nodes().cloned().collect(),
            services: self.catalog.services().cloned().collect(),
            checks: self.catalog.checks().cloned().collect(),
            kv: self.kv.entries().cloned().collect(),
            intentions: self.mesh.intentions().cloned().collect(),
            config_entries: self.mesh.config_entries().cloned().collect(),
            ca: self.mesh.ca().cloned(),
            restore_index: self.restore_index,
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
            catalog: Catalog::from_parts(data.nodes, data.services, data.checks),
            kv: KvTable::from_entries(data.kv),
            mesh: MeshTables::from_parts(data.intentions, data.config_entries, data.ca),
            table_indexes,
            restore_index: data.restore_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::command::Command;

    use super::*;

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
    fn restore_of_garbage_is_rejected_and_changes_nothing() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &Command::KvSet { key: "k".into(), value: vec![1], flags: 0, cas: None });
        let (outcome, changed) = tables.apply(RaftIndex(2), &Command::Restore { snapshot: b"nope".to_vec() });
        assert!(matches!(outcome, weft_api::command::CommandOutcome::Rejected(_)));
        assert!(changed.tables().is_empty());
        assert!(tables.kv().get("k").is_some());
    }
}
