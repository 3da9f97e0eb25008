//! The multi-GPU topology of a node. On Hopper, protected PCIe (PPCIe): 8 GPUs
//! and 4 NVSwitches that must all be in the evidence and all wired to each
//! other, so no device outside the attested set can sit on the NVLink fabric.
//! On Blackwell, NVLink is encrypted and the switches are outside the trusted
//! base; what must hold is the GPUs' mode (see [`check_blackwell`]).
//!
//! Each device's PDI (platform device identifier) is the NVIDIA-signed serial
//! number of its identity (BROM) certificate without the leading type byte.
//! GPUs list the PDI of the switch at the far end of each of their 18 NVLinks
//! (opaque field 22, byte-reversed); each switch states its own PDI (field 22)
//! and lists the PDIs of the GPUs it connects (field 26, first 8 entries).

use std::collections::BTreeSet;

use crate::gpu::spdm::{field, MeasurementReport};
use crate::gpu::Arch;

pub const GPUS: usize = 8;
pub const SWITCHES: usize = 4;
const PDI_LEN: usize = 8;
/// PROTECTED_PCIE_STATUS when the GPU runs in protected-PCIe mode.
const PPCIE_ON: u8 = 0xAA;

type Pdi = [u8; PDI_LEN];

/// One verified device of the node.
pub struct Device<'a> {
    pub label: &'a str,
    pub arch: Arch,
    pub report: &'a MeasurementReport,
    /// The device identity (BROM certificate serial number, hex).
    pub device_id: Option<&'a str>,
}

fn pdi_from_id(id: &str) -> Option<Pdi> {
    let bytes = hex::decode(id).ok()?;
    let tail = bytes.get(1..)?;
    Pdi::try_from(tail).ok()
}

fn pdis(v: &[u8]) -> Vec<Pdi> {
    v.chunks_exact(PDI_LEN)
        .filter_map(|c| Pdi::try_from(c).ok())
        .collect()
}

fn show(p: &Pdi) -> String {
    hex::encode(p)
}

/// FEATURE_FLAG (opaque field 36) values, as NVIDIA's Python verifier and
/// go-nvattest-tools read them (nvtrust `nv_attestation_sdk` `FEATURE_FLAG`
/// handling; NV-4's Hopper GPUs say 2, the 8×B200 capture says 1).
const FEATURE_SPT: u32 = 0;
const FEATURE_MPT: u32 = 1;
const FEATURE_PPCIE: u32 = 2;
/// GPUs on an HGX Blackwell board, all of which multi-GPU passthrough puts in one CVM.
pub const BLACKWELL_MPT_GPUS: usize = 8;

/// FEATURE_FLAG as the little-endian number it is (`01 00` is 1); `None`
/// when absent, `Some(Err)` when not 1 to 4 bytes.
fn feature_flag(r: &MeasurementReport) -> Option<Result<u32, usize>> {
    r.field(field::FEATURE_FLAG).map(|f| match f.len() {
        1..=4 => Ok(f.iter().rev().fold(0u32, |n, b| n << 8 | u32::from(*b))),
        n => Err(n),
    })
}

/// The GPU says it runs in protected-PCIe mode (and so needs its switches).
pub fn in_ppcie_mode(r: &MeasurementReport) -> bool {
    r.field(field::PROTECTED_PCIE_STATUS) == Some(&[PPCIE_ON][..])
        || feature_flag(r) == Some(Ok(FEATURE_PPCIE))
}

/// Check the topology; `Ok` says what was found.
pub fn check(devices: &[Device<'_>]) -> Result<String, String> {
    let gpus: Vec<&Device> = devices.iter().filter(|d| !d.arch.is_switch()).collect();
    let switches: Vec<&Device> = devices.iter().filter(|d| d.arch.is_switch()).collect();
    if gpus.len() != GPUS || switches.len() != SWITCHES {
        // No switch at all: the agent did not read them (no NSCQ).
        let hint = if switches.is_empty() {
            " (no NVSwitch evidence: the node's agent reads the switches through NVIDIA's NSCQ library, libnvidia-nscq, which must be installed in the CVM)"
        } else {
            ""
        };
        return Err(format!(
            "a protected-PCIe node has {GPUS} GPUs and {SWITCHES} NVSwitches; the evidence has {} and {}{hint}",
            gpus.len(),
            switches.len()
        ));
    }
    let pdi = |d: &Device| {
        d.device_id
            .and_then(pdi_from_id)
            .ok_or_else(|| format!("{}: no device identity to take its PDI from", d.label))
    };
    let gpu_pdis: BTreeSet<Pdi> = gpus.iter().map(|d| pdi(d)).collect::<Result<_, _>>()?;
    let mut switch_pdis = BTreeSet::new();
    for s in &switches {
        let own = pdi(s)?;
        let stated = s.report.field(field::SWITCH_PDI);
        if stated != Some(&own[..]) {
            return Err(format!(
                "{}: states PDI {}, but its certificate says {}",
                s.label,
                stated.map(hex::encode).unwrap_or_else(|| "none".into()),
                show(&own)
            ));
        }
        switch_pdis.insert(own);
    }
    if gpu_pdis.len() != GPUS || switch_pdis.len() != SWITCHES {
        return Err("two devices share a PDI: evidence was duplicated".into());
    }

    for g in &gpus {
        match g.report.field(field::PROTECTED_PCIE_STATUS) {
            Some([PPCIE_ON]) => {}
            other => {
                return Err(format!(
                    "{}: protected PCIe is not on (status {}, expected aa)",
                    g.label,
                    other.map(hex::encode).unwrap_or_else(|| "missing".into())
                ));
            }
        }
        let links = g
            .report
            .field(field::SWITCH_PDI)
            .map(pdis)
            .unwrap_or_default();
        if links.is_empty() {
            return Err(format!("{}: reports no NVLink switch connections", g.label));
        }
        let linked: BTreeSet<Pdi> = links
            .iter()
            .map(|p| {
                let mut r = *p;
                r.reverse();
                r
            })
            .collect();
        if let Some(stranger) = linked.difference(&switch_pdis).next() {
            return Err(format!(
                "{}: an NVLink goes to switch {}, which is not in this node's evidence",
                g.label,
                show(stranger)
            ));
        }
        if let Some(unlinked) = switch_pdis.difference(&linked).next() {
            return Err(format!(
                "{}: no NVLink to switch {} of this node",
                g.label,
                show(unlinked)
            ));
        }
    }
    for s in &switches {
        let listed: BTreeSet<Pdi> = s
            .report
            .field(field::GPU_LINK_CONN)
            .map(|v| pdis(&v[..v.len().min(GPUS * PDI_LEN)]))
            .unwrap_or_default()
            .into_iter()
            .collect();
        if let Some(stranger) = listed.difference(&gpu_pdis).next() {
            return Err(format!(
                "{}: connects GPU {}, which is not in this node's evidence",
                s.label,
                show(stranger)
            ));
        }
        if let Some(missing) = gpu_pdis.difference(&listed).next() {
            return Err(format!(
                "{}: does not connect GPU {} of this node",
                s.label,
                show(missing)
            ));
        }
    }
    Ok(format!(
        "{GPUS} GPUs in protected-PCIe mode, each linked to all {SWITCHES} NVSwitches, each switch to all {GPUS} GPUs"
    ))
}

/// A Blackwell node. NVIDIA's rules (Confidential Computing deployment guide
/// and the GPU Operator's multi-GPU passthrough page; R575/R580 release
/// notes): Blackwell has no protected-PCIe mode, NVLink traffic is encrypted
/// and the NVSwitches are outside the trusted base; in multi-GPU passthrough
/// (MPT) all GPUs of the board go to one CVM; the two modes are not mixed.
/// Several single-GPU-passthrough (SPT) GPUs in one CVM pass, as on Hopper. The mode is
/// what each GPU signed (FEATURE_FLAG), not what the host says.
pub fn check_blackwell(devices: &[Device<'_>]) -> Result<String, String> {
    let gpus: Vec<&Device> = devices.iter().filter(|d| !d.arch.is_switch()).collect();
    if let Some(s) = devices.iter().find(|d| d.arch.is_switch()) {
        return Err(format!(
            "{}: an LS10 NVSwitch in a Blackwell node; HGX Blackwell boards have none, so this evidence is from another machine",
            s.label
        ));
    }
    if let Some(other) = gpus.iter().find(|d| d.arch != Arch::Blackwell) {
        return Err(format!(
            "{}: a {} GPU beside Blackwell GPUs; a node's GPUs are one architecture",
            other.label,
            other.arch.name()
        ));
    }
    let mut modes = Vec::with_capacity(gpus.len());
    for g in &gpus {
        if g.report.field(field::PROTECTED_PCIE_STATUS) == Some(&[PPCIE_ON][..]) {
            return Err(format!(
                "{}: says it is in protected-PCIe mode, which Blackwell does not have",
                g.label
            ));
        }
        let mode = match feature_flag(g.report) {
            Some(Ok(FEATURE_SPT)) => FEATURE_SPT,
            Some(Ok(FEATURE_MPT)) => FEATURE_MPT,
            Some(Ok(FEATURE_PPCIE)) => {
                return Err(format!(
                    "{}: says it is in protected-PCIe mode, which Blackwell does not have",
                    g.label
                ))
            }
                        Some(Ok(other)) => {
                return Err(format!(
                    "{}: unknown multi-GPU mode {other} (FEATURE_FLAG, opaque field 36)",
                    g.label
                ))
            }
            Some(Err(len)) => {
                return Err(format!(
                    "{}: a FEATURE_FLAG (opaque field 36) of {len} bytes",
                    g.label
                ))
            }
            None => {
                return Err(format!(
                    "{}: the report does not say its multi-GPU mode (no FEATURE_FLAG, opaque field 36); Blackwell drivers (r575 and later) report it",
                    g.label
                ))
            }
        };
        modes.push(mode);
    }
    let n = gpus.len();
    let mpt = modes.iter().filter(|m| **m == FEATURE_MPT).count();
    match (mpt, n) {
                (0, 1) => Ok("1 Blackwell GPU in single-GPU passthrough mode".into()),
        // As on Hopper: each GPU's traffic is its own (encrypted, through
        // bounce buffers), and no NVLink is in use; NVIDIA supports one per
        // CVM, which costs a miner nothing to follow, so this is not refused.
        (0, n) => Ok(format!(
            "{n} Blackwell GPUs in single-GPU passthrough mode (NVIDIA supports one per CVM)"
        )),
        (m, n) if m != n => Err(format!(
            "{m} of {n} GPUs in multi-GPU passthrough mode and the rest in single-GPU mode; NVIDIA does not support mixing them"
        )),
        (_, BLACKWELL_MPT_GPUS) => Ok(format!(
            "{BLACKWELL_MPT_GPUS} Blackwell GPUs in multi-GPU passthrough mode (NVLink encrypted; NVSwitches outside the trusted base)"
        )),
        (_, n) => Err(format!(
            "multi-GPU passthrough puts all {BLACKWELL_MPT_GPUS} GPUs of an HGX Blackwell board in one CVM; the evidence has {n}, so the others are elsewhere"
        )),
    }
}
