//! Trust anchors and attestation collateral.
//!
//! Every anchor is compiled in and pinned by the SHA-256 of its DER encoding,
//! so a swapped file fails loudly instead of silently moving trust.

pub mod amd;
pub mod anchors;
pub mod chain;
pub mod fetch;
pub mod intel;
pub mod ocsp;
pub mod sim;
pub mod store;

pub use anchors::{AmdCa, AmdProduct, AmdSigner, AnchorError};
pub use chain::{verify_chain, ChainError};
