//! Expected SEV-SNP launch digests: the firmware's pages, the table of
//! kernel, initrd and command-line hashes OVMF checks (measured direct
//! boot), and one VMSA per vCPU, folded as the AMD secure processor does
//! (SNP ABI, PAGE_INFO). The `sev` crate implements the fold (virtee, the
//! same maintainers as sev-snp-measure); this is its tvm-shaped front.

use std::path::Path;

use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

/// What a launch digest depends on.
#[derive(Debug, Clone)]
pub struct LaunchInput<'a> {
    /// The OVMF build (at least its last 4 KiB, where its SNP metadata is,
    /// when `ovmf_hash` is given).
    pub ovmf: &'a Path,
    pub vcpus: u32,
    /// QEMU's CPU model, e.g. `EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`.
    pub cpu: &'a str,
    /// SEV_FEATURES of the VMSAs (bit 0 SNP active, bit 5 debug swap: QEMU
    /// sets 0x21 by default, 0x1 without debug swap).
    pub guest_features: u64,
    /// Measured direct boot: the kernel, initrd and command line whose
    /// hashes OVMF's table holds (all absent: no table).
    pub kernel: Option<&'a Path>,
    pub initrd: Option<&'a Path>,
    pub cmdline: Option<&'a str>,
    /// The firmware pages' digest, hex, when only OVMF's tail is at hand.
    pub ovmf_hash: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnpMeasureError {
    #[error("unknown CPU model {0} (QEMU's names: EPYC, EPYC-v4, EPYC-Milan, EPYC-Genoa, …)")]
    Cpu(String),
    #[error("cannot compute the launch digest: {0}")]
    Measure(String),
}

/// The launch digest (the report's MEASUREMENT) of a guest launched so.
pub fn launch_digest(i: &LaunchInput<'_>) -> Result<[u8; 48], SnpMeasureError> {
    let cpu = CpuType::try_from(i.cpu).map_err(|_| SnpMeasureError::Cpu(i.cpu.to_string()))?;
    let ld = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: i.vcpus,
        vcpu_type: cpu,
        ovmf_file: i.ovmf.to_path_buf(),
        guest_features: GuestFeatures(i.guest_features),
        kernel_file: i.kernel.map(Path::to_path_buf),
        initrd_file: i.initrd.map(Path::to_path_buf),
        append: i.cmdline,
        ovmf_hash_str: i.ovmf_hash,
        vmm_type: Some(VMMType::QEMU),
    })
    .map_err(|e| SnpMeasureError::Measure(e.to_string()))?;
    let mut out = [0u8; 48];
    hex::decode_to_slice(ld.get_hex_ld(), &mut out)
        .map_err(|e| SnpMeasureError::Measure(e.to_string()))?;
    Ok(out)
}
