//! How openraft messages and Weft commands become bytes, on disk (the Raft
//! log) and on the wire (Raft RPCs, forwarded writes).
//!
//! postcard: compact, fast, and byte fields stay bytes (JSON would turn a KV
//! value into an array of numbers). It is not self-describing, so the shape of
//! a logged type may only grow by new enum variants at the end; see
//! `weft_api::command`.

use serde::{de::DeserializeOwned, Serialize};

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("Raft messages always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Decodes an incoming RPC, or answers `InvalidArgument` naming what is wrong.
pub fn codec_decode_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, tonic::Status> {
    decode(bytes).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
}
