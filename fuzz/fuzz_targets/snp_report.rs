//! Arbitrary bytes as an SEV-SNP report (and, split off the end, as its VCEK),
//! and as an extended report's certificate table: a verdict with a named
//! failure, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_verifier::tee::snp::{self, SnpInput};

const VCEK: &[u8] = include_bytes!("../../testdata/snp/virtee_milan_vcek.der");

fuzz_target!(|data: &[u8]| {
    // Report against the real VCEK.
    static REAL: std::sync::OnceLock<snp::SnpEndorsement> = std::sync::OnceLock::new();
    let real = REAL.get_or_init(|| snp::SnpEndorsement::prepare(VCEK, None));
    let v = snp::verify(&SnpInput {
        report: data,
        endorsement: real,
        grace_seconds: 0,
        at: 1_748_736_000,
    });
    assert!(!v.genuine() || data.len() == snp::REPORT_LEN);
    // The same bytes as a certificate.
    let endorsement = snp::SnpEndorsement::prepare(data, None);
    let _ = snp::verify(&SnpInput {
        report: &[0u8; snp::REPORT_LEN],
        endorsement: &endorsement,
        grace_seconds: 0,
        at: 1_748_736_000,
    });
    // The same bytes as a certificate table (where a VLEK comes from).
    if let Ok(der) = snp::endorsement_key_of_table(data, tvm_certs::AmdSigner::Vlek) {
        assert!(der.len() <= data.len());
    }
    let _ = snp::signer_of_report(data);
});
