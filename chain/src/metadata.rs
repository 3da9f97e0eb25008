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

/// The transaction extensions this runtime wants on a signed extrinsic, by
/// identifier and in order: read from the metadata, never assumed.
pub fn transaction_extensions(md: &Metadata) -> Vec<String> {
    md.extrinsic()
        .transaction_extensions_to_use_for_encoding()
        .map(|e| e.identifier().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finney_decodes_and_lists_its_extensions() {
        let md = finney().unwrap();
        let ext = transaction_extensions(&md);
        for wanted in ["CheckNonce", "CheckGenesis", "CheckMortality"] {
            assert!(
                ext.iter().any(|e| e == wanted),
                "{wanted} missing from {ext:?}"
            );
        }
        assert!(decode(&FINNEY[..1000]).is_err());
    }
}
