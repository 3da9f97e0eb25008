//! The protected-PCIe (PPCIe) topology of an HGX node: 8 GPUs and 4 NVSwitches
//! that must all be in the evidence and all wired to each other, so no device
//! outside the attested set can sit on the NVLink fabric.
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

/// FEATURE_FLAG value of a GPU in protected-PCIe mode.
const FEATURE_PPCIE: u8 = 2;

/// The GPU says it runs in protected-PCIe mode (and so needs its switches).
pub fn in_ppcie_mode(r: &MeasurementReport) -> bool {
    r.field(field::PROTECTED_PCIE_STATUS) == Some(&[PPCIE_ON][..])
        || r.field(field::FEATURE_FLAG).and_then(|f| f.first()) == Some(&FEATURE_PPCIE)
}

/// Check the topology; `Ok` says what was found.
pub fn check(devices: &[Device<'_>]) -> Result<String, String> {
    let gpus: Vec<&Device> = devices.iter().filter(|d| !d.arch.is_switch()).collect();
    let switches: Vec<&Device> = devices.iter().filter(|d| d.arch.is_switch()).collect();
    if gpus.len() != GPUS || switches.len() != SWITCHES {
        return Err(format!(
            "a protected-PCIe node has {GPUS} GPUs and {SWITCHES} NVSwitches; the evidence has {} and {}",
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
