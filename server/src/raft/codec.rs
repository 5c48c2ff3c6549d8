//! How openraft messages and Weft commands become bytes on the wire.
//!
//! One place, so the encoding can change (e.g. to a binary format) without
//! touching the transport.

use serde::{de::DeserializeOwned, Serialize};

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct CodecError(#[from] serde_json::Error);

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("Raft messages always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Decodes an incoming RPC, or answers `InvalidArgument` naming what is wrong.
pub fn codec_decode_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, tonic::Status> {
    decode(bytes).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
}
