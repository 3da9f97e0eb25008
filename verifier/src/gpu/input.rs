//! GPU evidence in the forms it comes in: nvtrust's JSON array (what NVIDIA's
//! SDKs save), a single hex report with its PEM chain, and our own bundle.

use base64::Engine as _;
use serde::Deserialize;
use tvm_protocol::evidence::EvidenceBundle;

use crate::gpu::Arch;

/// One device's evidence, decoded.
#[derive(Debug, Clone)]
pub struct DeviceEvidence {
    /// Position in its file, for messages ("gpu 3").
    pub label: String,
    pub arch: Option<Arch>,
    pub evidence: Vec<u8>,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The nonce the file says the device answered (not trusted: compared).
    pub stated_nonce: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NvtrustEntry {
    arch: String,
    /// Base64 of the PEM chain.
    certificate: String,
    /// Base64 of the SPDM request ‖ response.
    evidence: String,
    nonce: Option<String>,
    #[serde(rename = "version")]
    _version: Option<String>,
    #[serde(rename = "driver_version")]
    _driver_version: Option<String>,
    #[serde(rename = "vbios_version")]
    _vbios_version: Option<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// nvtrust's evidence list: `[{arch, certificate, evidence, nonce, ...}]`.
pub fn parse_nvtrust_json(data: &[u8]) -> Result<Vec<DeviceEvidence>, String> {
    let entries: Vec<NvtrustEntry> = serde_json::from_slice(data).map_err(|e| {
        format!("not an nvtrust evidence list ([{{arch, certificate, evidence, nonce}}]): {e}")
    })?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let arch = Arch::parse(&e.arch)
                .ok_or_else(|| format!("entry {i}: unknown arch {:?}", e.arch))?;
            let evidence = B64
                .decode(e.evidence.trim())
                .map_err(|err| format!("entry {i}: evidence is not base64: {err}"))?;
            let pem = B64
                .decode(e.certificate.trim())
                .map_err(|err| format!("entry {i}: certificate is not base64: {err}"))?;
            let chain = pem_chain(&pem).map_err(|err| format!("entry {i}: {err}"))?;
            let kind = if arch.is_switch() { "switch" } else { "gpu" };
            Ok(DeviceEvidence {
                label: format!("{kind} {i}"),
                arch: Some(arch),
                evidence,
                chain,
                stated_nonce: e.nonce,
            })
        })
        .collect()
}

/// A PEM bundle as DER certificates, in file order.
pub fn pem_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let chain = tvm_certs::anchors::pem_certificates(pem)?;
    if chain.is_empty() {
        return Err("no PEM certificate in the chain".into());
    }
    Ok(chain)
}

/// The GPUs and switches of one of our evidence bundles.
pub fn from_bundle(bundle: &EvidenceBundle) -> Vec<DeviceEvidence> {
    let nonce = Some(hex::encode(bundle.nonce.0));
    let gpus = bundle.gpus.iter().enumerate().map(|(i, d)| ("gpu", i, d));
    let switches = bundle
        .switches
        .iter()
        .enumerate()
        .map(|(i, d)| ("switch", i, d));
    gpus.chain(switches)
        .map(|(kind, i, d)| DeviceEvidence {
            label: format!("{kind} {i}"),
            arch: None,
            evidence: d.report.0.clone(),
            chain: d.cert_chain.iter().map(|c| c.0.clone()).collect(),
            stated_nonce: nonce.clone(),
        })
        .collect()
}

/// Whatever `--gpu-evidence` holds: an nvtrust JSON list, one of our bundles,
/// or a single hex/binary report (its chain then comes from `chain_pem`).
pub fn read(data: &[u8], chain_pem: Option<&[u8]>) -> Result<Vec<DeviceEvidence>, String> {
    let text = data.trim_ascii_start();
    if text.starts_with(b"[") {
        return parse_nvtrust_json(data);
    }
    if text.starts_with(b"{") {
        let bundle = EvidenceBundle::from_json(data).map_err(|e| e.to_string())?;
        return Ok(from_bundle(&bundle));
    }
    let chain_pem = chain_pem.ok_or(
        "a single SPDM report needs its certificate chain: pass --cert-chain FILE (PEM, leaf first)",
    )?;
    Ok(vec![DeviceEvidence {
        label: "device 0".into(),
        arch: None,
        evidence: crate::input::binary_or_hex(data),
        chain: pem_chain(chain_pem)?,
        stated_nonce: None,
    }])
}
