#![allow(dead_code)]
//! Loading the real vectors (copied from ../shared/vectors; see testdata/README.md).

use std::path::PathBuf;

use tvm_verifier::input::{binary_or_hex, parse_time};

pub fn testdata(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel);
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    binary_or_hex(&raw)
}

pub fn at(s: &str) -> i64 {
    parse_time(s).unwrap()
}

/// The failed checks of a verification: (name, reason).
pub fn failed(v: &tvm_verifier::Verification) -> Vec<(&'static str, String)> {
    v.checks()
        .iter()
        .filter(|c| c.status == tvm_verifier::Status::Fail)
        .map(|c| (c.name, c.detail.clone()))
        .collect()
}

/// The default policy, but not checking which image runs: the real vectors
/// come from images no one published a tvm manifest for.
#[allow(dead_code)]
pub fn unmeasured() -> tvm_verifier::Policy {
    let mut p = tvm_verifier::Policy::default();
    p.images.dangerous_allow_unmeasured = true;
    p
}
