//! Key/value entries.

use serde::{Deserialize, Serialize};

use crate::ids::Indexes;

/// Largest value the KV store accepts, as in Consul (512 KiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One key and its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Opaque to Weft; clients use it for their own purposes.
    pub flags: u64,
    pub lock_index: u64,
    pub indexes: Indexes,
}
