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

/// A capture as google/go-nvattest-tools keeps it (NVIDIA's Python SDK
/// objects saved by jsonpickle): `gpus[]` with `AttestationReport.py/b64`
/// and `CertificateChains.GpuAttestationCertificateChain[].pem` (each
/// base64 of PEM), `nvswitches[]` with `attestation_report` and
/// `attestation_cert_chain[]`. Read here as nvtrust's list, GPUs first.
pub fn gonv_capture(rel: &str) -> Vec<tvm_verifier::gpu::input::DeviceEvidence> {
    use base64::Engine as _;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let doc: serde_json::Value = serde_json::from_slice(&testdata(rel)).unwrap();
    let mut list = Vec::new();
    let entry = |arch: &str, report: &serde_json::Value, certs: &serde_json::Value| {
        let pem: Vec<u8> = certs
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| b64(&c["pem"]))
            .collect();
        serde_json::json!({
            "arch": arch,
            "certificate": base64::engine::general_purpose::STANDARD.encode(pem),
            "evidence": report["py/b64"],
        })
    };
    for g in doc["gpus"].as_array().unwrap() {
        let arch = g["Arch"].as_str().unwrap_or("HOPPER");
        list.push(entry(
            arch,
            &g["AttestationReport"],
            &g["CertificateChains"]["GpuAttestationCertificateChain"],
        ));
    }
    for s in doc["nvswitches"].as_array().into_iter().flatten() {
        list.push(entry(
            "LS10",
            &s["attestation_report"],
            &s["attestation_cert_chain"],
        ));
    }
    tvm_verifier::gpu::input::parse_nvtrust_json(&serde_json::to_vec(&list).unwrap()).unwrap()
}
