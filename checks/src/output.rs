//! Shaping probe output: bounded captures, lossy UTF-8, and error chains on one line.

use std::error::Error;

/// Decodes `bytes` as UTF-8, replacing invalid sequences, but dropping a multi-byte character
/// that a cut at either end split in two (rather than showing it as a replacement character).
pub(crate) fn lossy(bytes: &[u8]) -> String {
    // A cut at the front leaves up to three continuation bytes (0b10xx_xxxx) of a character.
    let start = bytes.iter().take(3).take_while(|byte| (**byte & 0xC0) == 0x80).count();
    let mut bytes = &bytes[start..];
    // A cut at the back leaves an incomplete sequence: `error_len() == None` says exactly that.
    if let Err(err) = std::str::from_utf8(bytes) {
        if err.error_len().is_none() {
            bytes = &bytes[..err.valid_up_to()];
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first `limit` bytes of a stream (an HTTP body's start says what went wrong, and the rest
/// need not be read at all).
#[derive(Debug, Default)]
pub(crate) struct Head {
    bytes: Vec<u8>,
    limit: usize,
}

impl Head {
    pub(crate) fn new(limit: usize) -> Self {
        Head { bytes: Vec::new(), limit }
    }

    /// Keeps as much of `chunk` as fits; returns false once the head is full.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.bytes.len() < self.limit
    }

    pub(crate) fn into_string(self) -> String {
        lossy(&self.bytes)
    }
}

/// The last `limit` bytes of a stream, and how many bytes it had in all (Consul keeps a script's
/// output in a ring buffer the same way: the end of the output is where the error usually is).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
    limit: usize,
    total: u64,
}

impl Tail {
    pub(crate) fn new(limit: usize) -> Self {
        Tail { bytes: Vec::new(), limit, total: 0 }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.total = self.total.saturating_add(chunk.len() as u64);
        let chunk = &chunk[chunk.len().saturating_sub(self.limit)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.bytes.extend_from_slice(chunk);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The kept bytes, prefixed with Consul's `Captured N of M bytes` note when some were dropped.
    pub(crate) fn render(&self) -> String {
        let text = lossy(&self.bytes);
        if self.total > self.bytes.len() as u64 {
            format!("Captured {} of {} bytes\n...\n{text}", self.bytes.len(), self.total)
        } else {
            text
        }
    }
}

/// `err` and its sources joined with `": "`, skipping a source whose text the previous message
/// already ends with (many libraries repeat their source in their own `Display`).
pub(crate) fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_drops_characters_split_by_a_cut() {
        let text = "é€x€";
        let bytes = text.as_bytes();
        // Cut inside the first "€" at the front and inside the last "€" at the back.
        assert_eq!(lossy(&bytes[3..bytes.len() - 1]), "x");
        assert_eq!(lossy(bytes), text);
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn head_keeps_the_first_bytes() {
        let mut head = Head::new(4);
        assert!(head.push(b"ab"));
        assert!(!head.push(b"cdef"));
        assert!(!head.push(b"gh"));
        assert_eq!(head.into_string(), "abcd");
    }

    #[test]
    fn tail_keeps_the_last_bytes_and_says_how_many_it_dropped() {
        let mut tail = Tail::new(4);
        assert!(tail.is_empty());
        tail.push(b"ab");
        assert_eq!(tail.render(), "ab");
        tail.push(b"cde");
        assert_eq!(tail.render(), "Captured 4 of 5 bytes\n...\nbcde");
        tail.push(b"0123456789");
        assert_eq!(tail.render(), "Captured 4 of 15 bytes\n...\n6789");
        assert!(!tail.is_empty());
    }

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Repeats(#[source] std::io::Error);

        let io = || std::io::Error::other("inner");
        assert_eq!(error_chain(&Outer(io())), "outer: inner");
        assert_eq!(error_chain(&Repeats(io())), "wrapped: inner");
    }
}
