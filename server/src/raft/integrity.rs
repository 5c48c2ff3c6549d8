//! How a server knows its Raft storage is whole before it serves from it.
//!
//! sled checks its own pages, but when it finds damage while recovering it
//! keeps what came before and drops the rest, silently: a server that had
//! acknowledged 3,000 writes came back serving 1,785 of them. So Weft adds
//! two checks of its own, both verified when the store opens:
//! - every value it stores (log entries, the vote, the markers, the
//!   snapshot) is sealed with a CRC32 of its bytes ([`seal`]), checked on
//!   every read ([`unseal`]);
//! - the witness, a small file beside the store (`raft.witness`), records
//!   the last log index and the vote's term known to be on disk. It is
//!   rewritten after a flush (at most every 100 ms), without a flush of its
//!   own (so it may lag the store, never lead it), and lowered, durably,
//!   before the log is truncated. A store whose log ends before the witness, or whose vote is
//!   older, has lost records: the server refuses to start.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a stored value cannot be trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("a record of {len} bytes is too short to hold its checksum")]
    Short { len: usize },
    #[error("a record's checksum does not match its bytes (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
}

/// `payload` with its CRC32 (little endian) in front.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(4 + payload.len());
    sealed.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    sealed.extend_from_slice(payload);
    sealed
}

/// The payload of a sealed value, if its checksum matches.
pub fn unseal(sealed: &[u8]) -> Result<&[u8], Damage> {
    let Some((sum, payload)) = sealed.split_first_chunk::<4>() else {
        return Err(Damage::Short { len: sealed.len() });
    };
    let (stored, computed) = (u32::from_le_bytes(*sum), crc32fast::hash(payload));
    match stored == computed {
        true => Ok(payload),
        false => Err(Damage::Checksum { stored, computed }),
    }
}

/// What the store is known to hold on disk: its log up to `last_index`, a
/// vote of `vote_term` or later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Witness {
    pub last_index: u64,
    pub vote_term: u64,
}

const HEADER: &str = "weft-raft-witness v1";

impl Witness {
    /// Where the witness of the store in `dir` is kept: beside it, so that
    /// losing the store's directory is noticed too.
    pub fn path(dir: &Path) -> PathBuf {
        dir.with_extension("witness")
    }

    fn text(&self) -> String {
        let body = format!("{HEADER} last_index={} vote_term={}", self.last_index, self.vote_term);
        format!("{body} crc={:08x}\n", crc32fast::hash(body.as_bytes()))
    }

    fn parse(text: &str) -> Option<Witness> {
        let (body, crc) = text.trim_end().rsplit_once(" crc=")?;
        if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
            return None;
        }
        let mut fields = body.strip_prefix(HEADER)?.split_whitespace();
        let mut field = |name: &str| fields.next()?.strip_prefix(name)?.strip_prefix('=')?.parse().ok();
        Some(Witness { last_index: field("last_index")?, vote_term: field("vote_term")? })
    }

    /// The witness at `path`: `None` if there is none yet.
    pub fn read(path: &Path) -> Result<Option<Witness>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Witness::parse(&text).map(Some).ok_or_else(|| {
                format!("{} is damaged ({text:?}); it records how much of the log this server had", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Replaces the witness at `path`; `durable`: flushed before returning
    /// (needed only when it goes down).
    pub fn write(&self, path: &Path, durable: bool) -> std::io::Result<()> {
        let temp = path.with_extension("witness.tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(self.text().as_bytes())?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&temp, path)?;
        if durable {
            if let Some(parent) = path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_and_any_flipped_bit_is_found() {
        let sealed = seal(b"an entry");
        assert_eq!(unseal(&sealed), Ok(&b"an entry"[..]));
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(unseal(&flipped).is_err(), "bit {bit}");
        }
        assert_eq!(unseal(&[1, 2]), Err(Damage::Short { len: 2 }));
    }

    #[test]
    fn the_witness_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Witness::path(&dir.path().join("raft"));
        assert_eq!(Witness::read(&path), Ok(None));
        let witness = Witness { last_index: 3000, vote_term: 7 };
        witness.write(&path, true).unwrap();
        assert_eq!(Witness::read(&path), Ok(Some(witness)));
        let text = std::fs::read_to_string(&path).unwrap().replace("3000", "2000");
        std::fs::write(&path, text).unwrap();
        assert!(Witness::read(&path).unwrap_err().contains("damaged"));
    }
}
