//! What a GPU appraisal needs from NVIDIA's services, through the collateral
//! store (cache first): the RIMs for each device's driver and VBIOS, and OCSP
//! answers for each device's certificates.

use tvm_certs::ocsp::Status;
use tvm_certs::store::{CollateralStore, Source};

use tvm_verifier::gpu::input::DeviceEvidence;
use tvm_verifier::gpu::node::{Revocation, RimInput};
use tvm_verifier::gpu::spdm::{field, MeasurementReport};
use tvm_verifier::gpu::Arch;

/// NVIDIA RIM service ids for a device's reference values.
pub fn rim_ids(report: &MeasurementReport, arch: Arch) -> Vec<String> {
    let compact = |v: String| v.replace('.', "").to_ascii_uppercase();
    let mut ids = Vec::new();
    match arch {
        Arch::Ls10 => {
            if let Some(v) = report.vbios_version() {
                ids.push(format!("NV_SWITCH_BIOS_5612_0002_890_{}", compact(v)));
            }
            return ids;
        }
        Arch::Hopper => {
            if let Some(d) = report.driver_version() {
                ids.push(format!("NV_GPU_DRIVER_GH100_{d}"));
            }
        }
        Arch::Blackwell => {
            if let Some(d) = report.driver_version() {
                let chip = report
                    .text(field::CHIP_INFO)
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "GB100".into());
                ids.push(format!("NV_GPU_CC_DRIVER_{chip}_{d}"));
            }
        }
    }
    if let (Some(p), Some(s), Some(c), Some(v)) = (
        report.text(field::PROJECT),
        report.text(field::PROJECT_SKU),
        report.text(field::CHIP_SKU),
        report.vbios_version(),
    ) {
        ids.push(format!("NV_GPU_VBIOS_{p}_{s}_{c}_{}", compact(v)));
    }
    ids
}

/// Fetch (or take from the cache) the RIMs of every device, verified at `at`.
/// A RIM that cannot be had is reported by the RIM checks as missing.
pub async fn rims(
    store: &CollateralStore,
    devices: &[DeviceEvidence],
    at: i64,
) -> (Vec<RimInput>, Vec<String>) {
    let mut ids: Vec<String> = Vec::new();
    for d in devices {
        // RIMs only for a report a genuine NVIDIA device signed: its chain
        // reaches NVIDIA's root and the report verifies with its leaf, so
        // the driver and VBIOS versions the ids are made of are the
        // device's, not made up (each made-up id would be a request).
        let v = tvm_verifier::gpu::device::verify(&tvm_verifier::gpu::device::DeviceInput {
            evidence: &d.evidence,
            chain: &d.chain,
            nonce: None,
            arch: d.arch,
            at,
            root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        });
        let signed = v
            .verification()
            .check(tvm_verifier::gpu::device::check::SPDM_SIGNATURE)
            .is_some_and(|c| c.status == tvm_verifier::Status::Pass);
        if !signed {
            continue;
        }
        let (Ok(report), Some(arch)) = (MeasurementReport::parse(&d.evidence), arch_of(d)) else {
            continue;
        };
        for id in rim_ids(&report, arch) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for id in ids {
        match store.nvidia_rim(&id).await {
            Ok((xml, _)) => out.push(RimInput::verify(id, &xml, at)),
            Err(e) => problems.push(format!("RIM {id}: {e}")),
        }
    }
    (out, problems)
}

fn arch_of(d: &DeviceEvidence) -> Option<Arch> {
    // Our bundles do not state the arch; the certificates do.
    d.arch
        .or_else(|| Arch::from_common_name(&cert_name(d.chain.first()?)))
}

/// OCSP status of each device's chain: every certificate but the device's own
/// leaf (not in NVIDIA's OCSP database) and the root, as NVIDIA checks them.
pub async fn revocation(
    store: &CollateralStore,
    devices: &[DeviceEvidence],
    at: i64,
    grace_seconds: u64,
) -> Vec<Revocation> {
    let Ok(root) = tvm_certs::anchors::nvidia_device_root() else {
        return vec![
            Revocation::Unknown("the pinned NVIDIA root is unusable".into());
            devices.len()
        ];
    };
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        // OCSP only for a chain that reaches NVIDIA's root: made-up
        // certificates cost no request (and the device fails device.chain).
        out.push(match tvm_certs::verify_chain(&d.chain, root, at) {
            Ok(_) => chain_status(store, &d.chain, root, 1, at, grace_seconds).await,
            Err(e) => Revocation::Unknown(format!("not asked: {e}")),
        });
    }
    out
}

/// OCSP status of each verified RIM's signer chain (every certificate but the
/// root, the signer included), recorded on the RIM.
pub async fn rim_revocation(
    store: &CollateralStore,
    rims: &mut [RimInput],
    at: i64,
    grace_seconds: u64,
) {
    let Ok(root) = tvm_certs::anchors::nvidia_rim_root() else {
        return;
    };
    for r in rims.iter_mut() {
        if let Ok(rim) = &r.rim {
            r.revocation =
                Some(chain_status(store, rim.signer_chain(), root, 0, at, grace_seconds).await);
        }
    }
}

/// Ask OCSP about `chain[first..]` (each issued by the next; the pinned root
/// closes the chain) and sum the answers up.
async fn chain_status(
    store: &CollateralStore,
    chain: &[Vec<u8>],
    root: &[u8],
    first: usize,
    at: i64,
    grace_seconds: u64,
) -> Revocation {
    let mut full = chain.to_vec();
    if full.last().map(Vec::as_slice) != Some(root) {
        full.push(root.to_vec());
    }
    if full.len() < first + 2 {
        return Revocation::Unknown("the chain is too short to check".into());
    }
    let mut result = None;
    let mut until = i64::MAX;
    let mut stale = Vec::new();
    for i in first..full.len() - 1 {
        let name = cert_name(&full[i]);
        match store
            .nvidia_ocsp(&full[i], &full[i + 1], at, grace_seconds)
            .await
        {
            Ok((a, source)) => {
                until = until.min(a.valid_until());
                if let Source::StaleCache(why) = source {
                    stale.push(format!("{name} (responder unreachable: {why})"));
                }
                match a.status {
                    Status::Good => {}
                    ref s if s.is_hold() => {
                        result.get_or_insert(Revocation::Hold(format!("{name} is on hold")));
                    }
                    Status::Revoked { reason, since } => {
                        return Revocation::Bad(format!(
                            "{name} is revoked ({}) since {}",
                            reason.unwrap_or_else(|| "no reason given".into()),
                            tvm_verifier::facts::rfc3339(since)
                        ));
                    }
                    Status::Unknown => {
                        return Revocation::Bad(format!(
                            "NVIDIA's OCSP responder does not know {name}"
                        ));
                    }
                }
            }
            Err(e) => {
                result.get_or_insert(Revocation::Unknown(format!(
                    "no usable OCSP answer for {name}: {e}"
                )));
            }
        }
    }
    result.unwrap_or_else(|| {
        let mut s = format!(
            "{} certificates good per NVIDIA OCSP, until {}",
            full.len() - 1 - first,
            tvm_verifier::facts::rfc3339(until)
        );
        if !stale.is_empty() {
            s.push_str(&format!("; cached answers used for {}", stale.join(", ")));
        }
        Revocation::Good(s)
    })
}

fn cert_name(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| tvm_verifier::gpu::common_name(&c))
        .unwrap_or_else(|_| "a certificate".into())
}
