#![allow(dead_code)]
//! The verifier's vector loaders (shared, not copied), and a loopback server
//! playing the vendors' collateral services.

#[path = "../../../verifier/tests/common/mod.rs"]
mod vectors;
pub use vectors::*;

pub mod pcs;
