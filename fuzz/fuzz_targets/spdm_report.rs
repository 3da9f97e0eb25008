//! Arbitrary bytes as NVIDIA SPDM evidence, verified against a real device
//! chain: a verdict with a named failure, never a panic; and anything the
//! parser accepts re-reads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_verifier::gpu::spdm::MeasurementReport;
use tvm_verifier::gpu::{self, DeviceInput};

const CHAIN: &[u8] = include_bytes!("../../testdata/nvidia/nvtrust_hopper_cert_chain.pem");

fuzz_target!(|data: &[u8]| {
    static CHAIN_DER: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let chain =
        CHAIN_DER.get_or_init(|| tvm_certs::anchors::pem_certificates(CHAIN).unwrap_or_default());
    if let Ok(r) = MeasurementReport::parse(data) {
        assert!(r.signed.len() <= data.len());
        let _ = (
            r.driver_version(),
            r.vbios_version(),
            r.measurement_counts(),
        );
    }
    let v = gpu::verify(&DeviceInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        evidence: data,
        chain,
        nonce: None,
        arch: None,
        at: 1_748_736_000,
    });
    // Only NVIDIA's key can make the signature check pass.
    let signed = v
        .verification()
        .checks()
        .iter()
        .any(|c| c.name == "spdm.signature" && c.status == tvm_verifier::Status::Pass);
    assert!(!signed || data.len() > 37 + 96);
});
