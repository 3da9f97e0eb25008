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

/// GPU evidence that cannot be read, and where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvidenceError {
    #[error("not an nvtrust evidence list ([{{arch, certificate, evidence, nonce}}]): {0}")]
    NotNvtrustList(String),
    #[error("entry {entry}: unknown arch {arch:?}")]
    UnknownArch { entry: usize, arch: String },
    #[error("entry {entry}: {what} is not base64: {reason}")]
    NotBase64 {
        entry: usize,
        what: &'static str,
        reason: String,
    },
    #[error("entry {entry}: {source}")]
    Entry {
        entry: usize,
        source: Box<EvidenceError>,
    },
    #[error(transparent)]
    Pem(#[from] tvm_certs::anchors::PemError),
    #[error("no PEM certificate in the chain")]
    EmptyChain,
    #[error("{0}")]
    Bundle(String),
    #[error(
        "a single SPDM report needs its certificate chain: pass --cert-chain FILE (PEM, leaf first)"
    )]
    ChainNeeded,
}

/// nvtrust's evidence list: `[{arch, certificate, evidence, nonce, ...}]`.
pub fn parse_nvtrust_json(data: &[u8]) -> Result<Vec<DeviceEvidence>, EvidenceError> {
    let entries: Vec<NvtrustEntry> =
        serde_json::from_slice(data).map_err(|e| EvidenceError::NotNvtrustList(e.to_string()))?;
    let base64 = |entry, what, text: &str| {
        B64.decode(text.trim())
            .map_err(|e| EvidenceError::NotBase64 {
                entry,
                what,
                reason: e.to_string(),
            })
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let arch = Arch::parse(&e.arch).ok_or_else(|| EvidenceError::UnknownArch {
                entry: i,
                arch: e.arch.clone(),
            })?;
            let evidence = base64(i, "evidence", &e.evidence)?;
            let pem = base64(i, "certificate", &e.certificate)?;
            let chain = pem_chain(&pem).map_err(|err| EvidenceError::Entry {
                entry: i,
                source: Box::new(err),
            })?;
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
pub fn pem_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, EvidenceError> {
    let chain = tvm_certs::anchors::pem_certificates(pem)?;
    if chain.is_empty() {
        return Err(EvidenceError::EmptyChain);
    }
    Ok(chain)
}

/// The GPUs and switches of one of our evidence bundles.
pub fn from_bundle(bundle: &EvidenceBundle) -> Vec<DeviceEvidence> {
    // What the devices were asked to sign: the nonce bound to the CVM.
    let nonce = Some(hex::encode(tvm_protocol::binding::device_nonce(
        &bundle.nonce,
        &bundle.claims.cvm_id,
    )));
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
pub fn read(data: &[u8], chain_pem: Option<&[u8]>) -> Result<Vec<DeviceEvidence>, EvidenceError> {
    let text = data.trim_ascii_start();
    if text.starts_with(b"[") {
        return parse_nvtrust_json(data);
    }
    if text.starts_with(b"{") {
        let bundle =
            EvidenceBundle::from_json(data).map_err(|e| EvidenceError::Bundle(e.to_string()))?;
        return Ok(from_bundle(&bundle));
    }
    let chain_pem = chain_pem.ok_or(EvidenceError::ChainNeeded)?;
    Ok(vec![DeviceEvidence {
        label: "device 0".into(),
        arch: None,
        evidence: crate::input::binary_or_hex(data),
        chain: pem_chain(chain_pem)?,
        stated_nonce: None,
    }])
}
