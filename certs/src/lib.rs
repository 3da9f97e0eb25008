//! Trust anchors and attestation collateral.
//!
//! Every anchor is compiled in and pinned by the SHA-256 of its DER encoding,
//! so a swapped file fails loudly instead of silently moving trust.
#![forbid(unsafe_code)]

pub mod amd;
pub mod anchors;
pub mod chain;
#[cfg(feature = "store")]
pub mod fetch;
pub mod intel;
pub mod ocsp;
#[cfg(feature = "store")]
pub mod store;

pub use anchors::{AmdCa, AmdProduct, AmdSigner, AnchorError};
pub use chain::{verify_chain, ChainError};
