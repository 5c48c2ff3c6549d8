//! Typed identifiers. Each wraps a string or integer so that the compiler
//! keeps a node name, a service ID and a check ID apart.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A node's name (`node_name`), unique in a datacenter.
    NodeName
);
string_id!(
    /// A service's logical name (`web`); many instances share it.
    ServiceName
);
string_id!(
    /// One service instance's ID, unique on its node (defaults to the name).
    ServiceId
);
string_id!(
    /// A health check's ID, unique on its node (`service:web`, `serfHealth`).
    CheckId
);
string_id!(
    /// A datacenter's name (`dc1`).
    Datacenter
);
string_id!(
    /// A network within a datacenter (`--network`): hosts in one network
    /// reach each other directly; another network only through its mesh
    /// gateways. Empty is the default network.
    NetworkName
);

/// The node meta key that carries a node's network.
pub const NETWORK_META_KEY: &str = "weft-network";

/// Whether `text` is usable as a datacenter or network name: non-empty,
/// letters, digits, `-` and `_` only (it goes into DNS names and SNI).
pub fn is_plain_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A Raft log index. Every record carries the index that created it and the
/// one that last modified it; blocking queries wait on these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RaftIndex(pub u64);

impl RaftIndex {
    pub const ZERO: RaftIndex = RaftIndex(0);

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RaftIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A server's Raft member ID: random, made once and kept in the data dir.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub u64);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `CreateIndex`/`ModifyIndex` pair every stored record carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexes {
    pub create: RaftIndex,
    pub modify: RaftIndex,
}

impl Indexes {
    /// Indexes for a record first written at `index`.
    pub fn created_at(index: RaftIndex) -> Self {
        Self { create: index, modify: index }
    }
}

/// A version 4 UUID in its usual text form, from 16 random bytes (the
/// caller draws them, so this crate stays free of a random source).
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}
