//! Is one GPU's or NVSwitch's SPDM evidence genuine? The device chain to the
//! pinned NVIDIA Device Identity CA, the leaf's FWID against the reported one,
//! the P-384 signature over request ‖ response, the nonce and the
//! architecture. Reference values (RIMs) are compared in `rim`.

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use serde::Serialize;
use tvm_certs::{anchors, verify_chain, ChainError};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::facts::{Facts, GpuFacts};
use crate::gpu::spdm::{self, field, MeasurementReport};
use crate::gpu::Model;
use crate::verdict::{Check, Verification};

/// Check names, in the order they run.
pub mod check {
    pub const SPDM_FORMAT: &str = "spdm.format";
    pub const DEVICE_CHAIN: &str = "device.chain";
    pub const DEVICE_FWID: &str = "device.fwid";
    pub const SPDM_SIGNATURE: &str = "spdm.signature";
    pub const SPDM_NONCE: &str = "spdm.nonce";
    pub const DEVICE_ARCH: &str = "device.arch";
    pub const ORDER: [&str; 6] = [
        SPDM_FORMAT,
        DEVICE_CHAIN,
        DEVICE_FWID,
        SPDM_SIGNATURE,
        SPDM_NONCE,
        DEVICE_ARCH,
    ];
}

/// Hopper and NVSwitch leaves: a legacy DICE extension whose last 48 bytes
/// are the firmware's SHA-384 digest (FWID).
const OID_DICE_LEGACY: &str = "2.23.133.5.4.1";
/// Blackwell leaves: a TCG DiceTcbInfo; the FWID is its first `fwids` entry.
const OID_DICE_TCB_INFO: &str = "2.23.133.5.4.1.1";

/// The device families NVIDIA signs evidence for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// GH100: H100, H200.
    Hopper,
    /// GB100/GB102: B100, B200.
    Blackwell,
    /// The third-generation NVSwitch of HGX systems.
    #[serde(rename = "ls10")]
    Ls10,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Hopper => "Hopper",
            Arch::Blackwell => "Blackwell",
            Arch::Ls10 => "NVSwitch LS10",
        }
    }

    pub fn is_switch(&self) -> bool {
        matches!(self, Arch::Ls10)
    }

    /// The `arch` names of nvtrust's evidence JSON.
    pub fn parse(s: &str) -> Option<Arch> {
        match s.to_ascii_uppercase().as_str() {
            "HOPPER" => Some(Arch::Hopper),
            "BLACKWELL" => Some(Arch::Blackwell),
            "LS10" | "LS_10" => Some(Arch::Ls10),
            _ => None,
        }
    }

    /// From the chip name NVIDIA puts in the device certificates'
    /// common names ("GH100 A01 GSP BROM", "LS_10 A01 FSP BROM", ...).
    pub fn from_common_name(cn: &str) -> Option<Arch> {
        if cn.contains("GH100") {
            Some(Arch::Hopper)
        } else if cn.contains("GB10") || cn.contains("GB20") {
            Some(Arch::Blackwell)
        } else if cn.contains("LS_10") || cn.contains("LS10") {
            Some(Arch::Ls10)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The root a device chain must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRoot<'a> {
    /// The pinned NVIDIA Device Identity CA: real hardware.
    Nvidia,
    /// A simulated device root (DER), trusted only by a devnet policy.
    Simulated(&'a [u8]),
}

impl DeviceRoot<'_> {
    fn name(&self) -> &'static str {
        match self {
            DeviceRoot::Nvidia => "the NVIDIA Device Identity CA",
            DeviceRoot::Simulated(_) => "the SIMULATED device root",
        }
    }
}

/// One device's evidence and what the verifier expects of it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInput<'a> {
    /// SPDM GET_MEASUREMENTS request ‖ response.
    pub evidence: &'a [u8],
    /// DER certificates, leaf first; the root may be left out.
    pub chain: &'a [Vec<u8>],
    /// The nonce the verifier sent; `None` leaves `spdm.nonce` not checked.
    pub nonce: Option<&'a [u8; spdm::NONCE_LEN]>,
    /// The architecture the evidence claims (nvtrust's `arch`), if any.
    pub arch: Option<Arch>,
    /// Unix seconds.
    pub at: i64,
    pub root: DeviceRoot<'a>,
}

/// A verified device: the checks, and the parsed report for RIM comparison.
#[derive(Debug, Clone)]
pub struct DeviceVerification {
    pub(crate) verification: Verification,
    pub(crate) report: Option<MeasurementReport>,
    /// From the device certificates.
    pub(crate) arch: Option<Arch>,
}

impl DeviceVerification {
    pub fn verification(&self) -> &Verification {
        &self.verification
    }

    /// The parsed report, for RIM comparison and topology.
    pub fn report(&self) -> Option<&MeasurementReport> {
        self.report.as_ref()
    }

    /// From the device certificates.
    pub fn arch(&self) -> Option<Arch> {
        self.arch
    }

    /// A device whose verification could not complete (reported, never accepted).
    pub(crate) fn internal_error(reason: &str) -> Self {
        DeviceVerification {
            verification: Verification::stopped(
                vec![Check::fail(check::SPDM_FORMAT, reason)],
                &check::ORDER,
                None,
            ),
            report: None,
            arch: None,
        }
    }

    pub fn facts(&self) -> Option<&GpuFacts> {
        match &self.verification.facts {
            Some(Facts::Gpu(f)) => Some(f),
            _ => None,
        }
    }
}

/// Verify one device's evidence. Never panics on malformed input.
pub fn verify(input: &DeviceInput<'_>) -> DeviceVerification {
    let mut checks = Vec::with_capacity(check::ORDER.len());
    // A report that parsed is kept even when a later check fails: the node
    // check still needs to see which nonce it answered.
    let stop = |checks, facts, report| DeviceVerification {
        verification: Verification::stopped(checks, &check::ORDER, facts),
        report,
        arch: None,
    };

    let report = match MeasurementReport::parse(input.evidence) {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(check::SPDM_FORMAT, e.to_string()));
            return stop(checks, None, None);
        }
    };
    checks.push(Check::pass(
        check::SPDM_FORMAT,
        format!(
            "SPDM 1.1 measurements: {} blocks, {} opaque fields",
            report.blocks.len(),
            report.opaque.len()
        ),
    ));

    let root = match input.root {
        DeviceRoot::Nvidia => anchors::nvidia_device_root(),
        DeviceRoot::Simulated(der) => Ok(der),
    };
    let root = match root {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(check::DEVICE_CHAIN, e.to_string()));
            return stop(checks, None, Some(report));
        }
    };
    let chain = match verify_chain(input.chain, root, input.at) {
        Ok(c) => c,
        Err(e) => {
            let hint = match e {
                ChainError::OnlyRoot | ChainError::Empty => "",
                _ => "; send the chain the device returns (GET_CERTIFICATE), leaf first",
            };
            checks.push(Check::fail(check::DEVICE_CHAIN, format!("{e}{hint}")));
            return stop(checks, None, Some(report));
        }
    };
    // Every element parsed in verify_chain; parse again for the fields we need.
    let certs: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
        .collect();
    let Some(leaf) = certs.first() else {
        checks.push(Check::fail(check::DEVICE_CHAIN, "the chain is empty"));
        return stop(checks, None, Some(report));
    };
    let identity = device_identity(&certs);
    checks.push(Check::pass(
        check::DEVICE_CHAIN,
        format!(
            "{} certificates to {}; leaf {}",
            chain.len() + 1,
            input.root.name(),
            common_name(leaf)
        ),
    ));

    let facts = |report: &MeasurementReport, arch: Option<Arch>| {
        Some(Facts::Gpu(gpu_facts(report, arch, identity.clone())))
    };

    // device.fwid: the leaf names the firmware that signs; it must be the
    // firmware that reported. (A chain without its leaf fails here.)
    let cert_fwid = match leaf_fwid(leaf) {
        Ok(f) => f,
        Err(e) => {
            checks.push(Check::fail(check::DEVICE_FWID, e));
            return stop(checks, facts(&report, None), Some(report));
        }
    };
    match report.fwid() {
        // NVSwitches report no FWID field; their leaf's still must be present.
        None if leaf_is_switch(leaf) => checks.push(Check::pass(
            check::DEVICE_FWID,
            format!(
                "switch firmware {} (switches report no FWID field)",
                hex::encode(cert_fwid)
            ),
        )),
        None => {
            checks.push(Check::fail(
                check::DEVICE_FWID,
                "the report has no FWID opaque field to compare with the certificate",
            ));
            return stop(checks, facts(&report, None), Some(report));
        }
        Some(f) if f == cert_fwid => {
            checks.push(Check::pass(check::DEVICE_FWID, hex::encode(f)));
        }
        Some(f) => {
            checks.push(Check::fail(
                check::DEVICE_FWID,
                format!(
                    "the report's FWID {} is not the leaf certificate's {}: the evidence and the chain are from different firmware or devices",
                    hex::encode(f),
                    hex::encode(cert_fwid)
                ),
            ));
            return stop(checks, facts(&report, None), Some(report));
        }
    }

    // spdm.signature
    let key = UnparsedPublicKey::new(
        &ECDSA_P384_SHA384_FIXED,
        leaf.public_key().subject_public_key.data.as_ref(),
    );
    if key.verify(&report.signed, &report.signature).is_err() {
        checks.push(Check::fail(
            check::SPDM_SIGNATURE,
            "the measurement signature does not verify with the leaf certificate's key: the evidence was altered or is from another device",
        ));
        return stop(checks, facts(&report, None), Some(report));
    }
    checks.push(Check::pass(
        check::SPDM_SIGNATURE,
        "ECDSA P-384 over request and response",
    ));

    // spdm.nonce
    match input.nonce {
        None => checks.push(Check::not_checked(
            check::SPDM_NONCE,
            format!(
                "no expected nonce given (evidence has {}); it could be a replay",
                hex::encode(report.nonce)
            ),
        )),
        Some(n) if *n == report.nonce => {
            checks.push(Check::pass(check::SPDM_NONCE, hex::encode(n)));
        }
        Some(n) => checks.push(Check::fail(
            check::SPDM_NONCE,
            format!(
                "evidence answers nonce {}, expected {}: stale or replayed evidence, or a report asked for by another CVM",
                hex::encode(report.nonce),
                hex::encode(n)
            ),
        )),
    }

    // device.arch: what the certificates say, against what was claimed.
    let cert_arch = certs
        .iter()
        .find_map(|c| Arch::from_common_name(&common_name(c)));
    let arch = match (cert_arch, input.arch) {
        (None, _) => {
            checks.push(Check::fail(
                check::DEVICE_ARCH,
                format!(
                    "no known NVIDIA chip (GH100, GB10x, LS_10) in the chain's names, leaf {}",
                    common_name(leaf)
                ),
            ));
            None
        }
        (Some(c), Some(claimed)) if c != claimed => {
            checks.push(Check::fail(
                check::DEVICE_ARCH,
                format!("evidence claims {claimed} but the certificates are {c}"),
            ));
            Some(c)
        }
        (Some(c), _) => {
            checks.push(Check::pass(check::DEVICE_ARCH, c.name()));
            Some(c)
        }
    };

    let facts = facts(&report, arch);
    DeviceVerification {
        verification: Verification { checks, facts },
        report: Some(report),
        arch,
    }
}

pub fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("(no common name)")
        .to_string()
}

fn leaf_is_switch(leaf: &X509Certificate<'_>) -> bool {
    matches!(Arch::from_common_name(&common_name(leaf)), Some(Arch::Ls10))
}

/// The firmware digest (FWID) the leaf certificate names.
fn leaf_fwid(leaf: &X509Certificate<'_>) -> Result<Vec<u8>, String> {
    const LEN: usize = spdm::DIGEST_LEN;
    let ext = |oid: &str| {
        leaf.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .map(|e| e.value)
    };
    if let Some(v) = ext(OID_DICE_LEGACY) {
        // ... OCTET STRING (48 bytes) at the very end.
        if v.len() < LEN + 2
            || v[v.len() - LEN - 2] != 0x04
            || usize::from(v[v.len() - LEN - 1]) != LEN
        {
            return Err("the FWID extension does not end in a 48-byte digest".into());
        }
        return Ok(v[v.len() - LEN..].to_vec());
    }
    if let Some(v) = ext(OID_DICE_TCB_INFO) {
        return dice_tcb_info_fwid(v)
            .ok_or_else(|| "the DiceTcbInfo extension has no 48-byte FWID".to_string());
    }
    Err(format!(
        "the first certificate ({}) has no FWID extension ({OID_DICE_LEGACY}): is the device's leaf (signing) certificate missing from the chain?",
        common_name(leaf)
    ))
}

/// DiceTcbInfo ::= SEQUENCE { ..., fwids [6] IMPLICIT SEQUENCE OF FWID, ... },
/// FWID ::= SEQUENCE { hashAlg OID, digest OCTET STRING }: the first digest.
fn dice_tcb_info_fwid(der: &[u8]) -> Option<Vec<u8>> {
    /// One TLV: (tag, contents, rest). Short and long lengths up to 2 bytes.
    fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, d) = d.split_first()?;
        let (&len0, d) = d.split_first()?;
        let (len, d) = match len0 {
            l if l < 0x80 => (usize::from(l), d),
            0x81 => (usize::from(*d.first()?), d.get(1..)?),
            0x82 => (
                usize::from(*d.first()?) << 8 | usize::from(*d.get(1)?),
                d.get(2..)?,
            ),
            _ => return None,
        };
        Some((tag, d.get(..len)?, d.get(len..)?))
    }
    let (0x30, mut fields, _) = tlv(der)? else {
        return None;
    };
    while !fields.is_empty() {
        let (tag, body, rest) = tlv(fields)?;
        fields = rest;
        if tag == 0xA6 {
            let (0x30, fwid, _) = tlv(body)? else {
                return None;
            };
            let (0x06, _, fwid) = tlv(fwid)? else {
                return None;
            };
            let (0x04, digest, _) = tlv(fwid)? else {
                return None;
            };
            return (digest.len() == spdm::DIGEST_LEN).then(|| digest.to_vec());
        }
    }
    None
}

/// The certificate NVIDIA's provisioning CA issued to this device (the BROM
/// certificate): its subject serialNumber is unique per device and, unlike
/// NVML's UUID, signed by NVIDIA.
fn device_identity(certs: &[X509Certificate<'_>]) -> Option<String> {
    let brom = certs.iter().find(|c| {
        c.issuer()
            .iter_common_name()
            .any(|cn| cn.as_str().is_ok_and(|s| s.contains("Provisioner ICA")))
    })?;
    let serial = brom
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()?
        .as_str()
        .ok()?
        .to_ascii_lowercase();
    Some(serial)
}

fn gpu_facts(r: &MeasurementReport, arch: Option<Arch>, device_id: Option<String>) -> GpuFacts {
    GpuFacts {
        arch,
        model: model(r, arch),
        device_id,
        nonce: r.nonce,
        driver_version: r.driver_version(),
        vbios_version: r.vbios_version(),
        project: r.text(field::PROJECT),
        project_sku: r.text(field::PROJECT_SKU),
        chip_sku: r.text(field::CHIP_SKU),
        fwid: r.fwid().map(<[u8]>::to_vec),
        measurements: r
            .blocks
            .iter()
            .map(|b| (b.index, b.value.clone()))
            .collect(),
    }
}

/// The product, from the architecture the certificates name and the board
/// fields the device signed.
fn model(r: &MeasurementReport, arch: Option<Arch>) -> Option<String> {
    let text = |f| r.text(f).unwrap_or_default();
    Some(
        Model::of(
            arch?,
            &text(field::PROJECT),
            &text(field::PROJECT_SKU),
            &text(field::CHIP_SKU),
        )
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_tcb_info_gives_its_first_fwid() {
        // DiceTcbInfo { vendor [0] "NVIDIA", fwids [6] { { sha384, 48 x 0xab } } }
        let mut fwid = vec![
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        ];
        fwid.extend([0x04, 48]);
        fwid.extend([0xab; 48]);
        let mut seq = vec![0x30, fwid.len() as u8];
        seq.extend(fwid);
        let mut fwids = vec![0xA6, seq.len() as u8];
        fwids.extend(seq);
        let mut body = vec![0x80, 6];
        body.extend(b"NVIDIA");
        body.extend(fwids);
        let mut der = vec![0x30, 0x81, body.len() as u8];
        der.extend(body);
        assert_eq!(dice_tcb_info_fwid(&der), Some(vec![0xab; 48]));
        assert_eq!(dice_tcb_info_fwid(&der[..der.len() - 1]), None);
        assert_eq!(dice_tcb_info_fwid(&[0x30, 0x00]), None);
    }
}
