//! Arbitrary bytes as a TDX quote, verified against real Intel collateral:
//! a verdict with a named failure, never a panic.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tvm_verifier::tee::tdx::{self, TdxInput};

fn collateral() -> &'static tdx::TdxCollateral {
    static C: OnceLock<tdx::TdxCollateral> = OnceLock::new();
    C.get_or_init(|| {
        let raw = tdx::parse_collateral(include_bytes!(
            "../../testdata/tdx/dcapqvl_tdx_quote_v4_collateral.json"
        ))
        .expect("vector collateral parses");
        let root = tvm_certs::anchors::intel_sgx_root().expect("pinned root");
        tdx::TdxCollateral::prepare(raw, root)
    })
}

fuzz_target!(|data: &[u8]| {
    let v = tdx::verify(&TdxInput {
        quote: data,
        collateral: collateral(),
        at: 1_751_624_191, // 2025-07-04, inside the collateral's window
        grace_seconds: 0,
    });
    // Random bytes are never a genuine quote.
    assert!(!v.genuine() || data.len() > 1000);
});
