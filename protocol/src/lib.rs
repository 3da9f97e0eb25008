//! What crosses the wire in tvm, with no network I/O: Epistula v2 signing and
//! checking, hotkeys and SS58, the validator's nonce, the miner's node list, the
//! evidence bundle and the report_data that binds it to one TEE quote.
//!
//! docs/protocol.md is the reference for other implementations.

pub mod binding;
pub mod epistula;
pub mod evidence;
pub mod hexbytes;
pub mod keys;
pub mod nodes;
pub mod nonce;
pub mod replay;
pub mod spdm;
pub mod wallet;

pub use binding::{device_nonce, report_data};
pub use epistula::{EpistulaError, Recipient, SignedHeaders, Verified, Verifier};
pub use evidence::{
    BundleError, Claims, DeviceEvidence, EvidenceBundle, EvidenceRequest, NodeType, Runtime,
    TeeEvidence,
};
pub use hexbytes::{Digest32, HexBytes};
pub use keys::{AccountId, Hotkey, KeyError, Ss58Error};
pub use nodes::{parse_node_list, NodeEntry};
pub use nonce::Nonce;
pub use replay::ReplayGuard;
