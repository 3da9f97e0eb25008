//! Arbitrary bytes as an SEV-SNP report (and, split off the end, as its VCEK):
//! a verdict with a named failure, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_verifier::snp::{self, SnpInput};

const VCEK: &[u8] = include_bytes!("../../testdata/snp/virtee_milan_vcek.der");

fuzz_target!(|data: &[u8]| {
    // Report against the real VCEK.
    let v = snp::verify(&SnpInput {
        report: data,
        vek_der: VCEK,
        ca: None,
        at: 1_748_736_000,
    });
    assert!(!v.genuine() || data.len() == snp::REPORT_LEN);
    // The same bytes as a certificate.
    let _ = snp::verify(&SnpInput {
        report: &[0u8; snp::REPORT_LEN],
        vek_der: data,
        ca: None,
        at: 1_748_736_000,
    });
});
