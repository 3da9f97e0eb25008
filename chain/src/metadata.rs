//! Runtime metadata: the finney snapshot this crate is built and tested
//! against (spec_version 393, V16, from CortexLM/bittensor-rs; see
//! metadata/README.md). Live code asks the node for its own.

use subxt::Metadata;

/// SCALE-encoded `state_getMetadata` answer of finney (spec 393).
pub const FINNEY: &[u8] = include_bytes!("../metadata/finney-metadata.scale");

#[derive(Debug, thiserror::Error)]
#[error("runtime metadata cannot be decoded: {0}")]
pub struct MetadataError(pub String);

/// Decode metadata as `state_getMetadata` returns it.
pub fn decode(bytes: &[u8]) -> Result<Metadata, MetadataError> {
    use parity_scale_codec::Decode;
    Metadata::decode(&mut &bytes[..]).map_err(|e| MetadataError(e.to_string()))
}

pub fn finney() -> Result<Metadata, MetadataError> {
    decode(FINNEY)
}
