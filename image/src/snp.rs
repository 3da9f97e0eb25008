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

/// An SNP metadata section of OVMF (its `SevMetadata` table), as QEMU
/// launches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub gpa: u64,
    pub size: u64,
    /// 1 secure memory, 2 secrets, 3 CPUID, 4 SVSM CAA, 0x10 kernel hashes.
    pub section_type: u8,
}

/// SHA-256 of the kernel, the initrd and the command line (trimmed, with a
/// final NUL), as QEMU writes them into OVMF's hashes table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootHashes {
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    pub cmdline: [u8; 32],
}

impl BootHashes {
    /// The hashes QEMU computes from the command line text.
    pub fn cmdline_sha256(cmdline: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(cmdline.trim().as_bytes());
        h.update([0u8]);
        h.finalize().into()
    }
}

/// A launch from digests only, as operators publish them: no firmware or
/// kernel file needed (dstack's measurement documents have this shape).
#[derive(Debug, Clone)]
pub struct LaunchParts<'a> {
    /// The launch digest after OVMF's own pages ([`ovmf_pages_digest`]).
    pub ovmf_hash: [u8; 48],
    pub sections: &'a [Section],
    /// Measured direct boot; `None`: the hashes section is a zero page.
    pub hashes: Option<BootHashes>,
    /// Where OVMF expects the hashes table (its offset in the page counts).
    pub hashes_table_gpa: u64,
    /// OVMF's SEV-ES reset vector (the APs' start).
    pub reset_eip: u32,
    pub vcpus: u32,
    pub cpu: &'a str,
    pub guest_features: u64,
}

/// vCPUs a launch may have (one VMSA page each).
pub const MAX_VCPUS: u32 = 512;
/// An OVMF metadata section is a few pages; this bounds the fold's work.
pub const MAX_SECTION: u64 = 64 << 20;

// PAGE_INFO page types (SNP ABI, SNP_LAUNCH_UPDATE).
const PAGE_NORMAL: u8 = 1;
const PAGE_VMSA: u8 = 2;
const PAGE_ZERO: u8 = 3;
const PAGE_SECRETS: u8 = 5;
const PAGE_CPUID: u8 = 6;
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
const PAGE: usize = 4096;

/// The launch digest as the secure processor folds it: per page,
/// `LD = SHA-384(PAGE_INFO)` where PAGE_INFO is the previous digest, the
/// page's contents digest, its length (0x70), type, flags and GPA.
struct Fold([u8; 48]);

impl Fold {
    fn page(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        use sha2::{Digest, Sha384};
        let mut info = Vec::with_capacity(0x70);
        info.extend_from_slice(&self.0);
        info.extend_from_slice(contents);
        info.extend_from_slice(&0x70u16.to_le_bytes());
        info.push(page_type);
        // IMI page, VMPL3/2/1 permissions, reserved: all zero.
        info.extend_from_slice(&[0; 5]);
        info.extend_from_slice(&gpa.to_le_bytes());
        self.0 = Sha384::digest(&info).into();
    }

    fn data(&mut self, gpa: u64, data: &[u8]) {
        use sha2::{Digest, Sha384};
        for (i, chunk) in data.chunks(PAGE).enumerate() {
            let mut page = [0u8; PAGE];
            page[..chunk.len()].copy_from_slice(chunk);
            self.page(
                PAGE_NORMAL,
                gpa + (i * PAGE) as u64,
                &Sha384::digest(page).into(),
            );
        }
    }

    fn zero(&mut self, page_type: u8, gpa: u64, size: u64) {
        for off in (0..size.max(1)).step_by(PAGE) {
            self.page(page_type, gpa.wrapping_add(off), &[0; 48]);
        }
    }
}

/// The launch digest after loading firmware `data` at `gpa` (what dstack
/// calls the OVMF hash, sev-snp-measure `--ovmf-hash`).
pub fn ovmf_pages_digest(gpa: u64, data: &[u8]) -> [u8; 48] {
    let mut f = Fold([0; 48]);
    f.data(gpa, data);
    f.0
}

/// QEMU's hashes table (`SevHashTable`, padded to 16 bytes) in a page at
/// `offset`: a GUID-headed table of the command line, initrd and kernel
/// SHA-256, each entry `GUID ‖ u16 length ‖ hash`.
fn hashes_page(h: &BootHashes, offset: usize) -> Result<[u8; PAGE], SnpMeasureError> {
    use sev::measurement::ovmf::guid_le_to_slice;
    let guid = |g: &str| guid_le_to_slice(g).map_err(|e| SnpMeasureError::Measure(e.to_string()));
    const ENTRY: u16 = 16 + 2 + 32;
    let mut table = Vec::with_capacity(176);
    table.extend_from_slice(&guid("9438d606-4f22-4cc9-b479-a793d411fd21")?);
    table.extend_from_slice(&(16 + 2 + 3 * ENTRY).to_le_bytes());
    for (g, hash) in [
        ("97d02dd8-bd20-4c94-aa78-e7714d36ab2a", &h.cmdline),
        ("44baf731-3a2f-4bd7-9af1-41e29169781d", &h.initrd),
        ("4de79437-abd2-427f-b835-d5b172d2045b", &h.kernel),
    ] {
        table.extend_from_slice(&guid(g)?);
        table.extend_from_slice(&ENTRY.to_le_bytes());
        table.extend_from_slice(hash);
    }
    table.resize(table.len().div_ceil(16) * 16, 0);
    let mut page = [0u8; PAGE];
    let end = offset + table.len();
    if end > PAGE {
        return Err(SnpMeasureError::Measure(format!(
            "the hashes table at page offset {offset} does not fit in its page"
        )));
    }
    page[offset..end].copy_from_slice(&table);
    Ok(page)
}

/// The launch digest of a guest given by digests ([`LaunchParts`]). The
/// VMSAs come from the `sev` crate (the same ones [`launch_digest`] uses);
/// the fold and the hashes table are here because the crate builds them
/// from files only.
pub fn launch_digest_from_parts(p: &LaunchParts<'_>) -> Result<[u8; 48], SnpMeasureError> {
    use sev::measurement::vmsa::VMSA;
    use sha2::{Digest, Sha384};
    let cpu = CpuType::try_from(p.cpu).map_err(|_| SnpMeasureError::Cpu(p.cpu.to_string()))?;
    let bad = |why: String| Err(SnpMeasureError::Measure(why));
    if !(1..=MAX_VCPUS).contains(&p.vcpus) {
        return bad(format!("{} vCPUs; 1 to {MAX_VCPUS} are measured", p.vcpus));
    }
    for s in p.sections {
        if s.size > MAX_SECTION || s.gpa.checked_add(s.size).is_none() {
            return bad(format!(
                "OVMF section at {:#x} of {:#x} bytes: at most {MAX_SECTION:#x}, below 2^64",
                s.gpa, s.size
            ));
        }
    }
    let mut f = Fold(p.ovmf_hash);
    let mut has_hashes_section = false;
    for s in p.sections {
        match s.section_type {
            1 | 4 => f.zero(PAGE_ZERO, s.gpa, s.size),
            2 => f.page(PAGE_SECRETS, s.gpa, &[0; 48]),
            3 => f.page(PAGE_CPUID, s.gpa, &[0; 48]),
            0x10 => {
                has_hashes_section = true;
                match &p.hashes {
                    Some(_) if s.size != PAGE as u64 || p.hashes_table_gpa & !0xfff != s.gpa => {
                        return bad(format!(
                            "the hashes table at {:#x} is not in the one-page kernel hashes section at {:#x} ({:#x} bytes)",
                            p.hashes_table_gpa, s.gpa, s.size
                        ));
                    }
                    Some(h) => {
                        let page = hashes_page(h, (p.hashes_table_gpa & 0xfff) as usize)?;
                        f.page(PAGE_NORMAL, s.gpa, &Sha384::digest(page).into());
                    }
                    None => f.zero(PAGE_ZERO, s.gpa, s.size),
                }
            }
            other => {
                return Err(SnpMeasureError::Measure(format!(
                    "unknown OVMF metadata section type {other:#x} at {:#x}",
                    s.gpa
                )))
            }
        }
    }
    if p.hashes.is_some() && !has_hashes_section {
        return Err(SnpMeasureError::Measure(
            "kernel hashes given, but the firmware has no SNP_KERNEL_HASHES section".into(),
        ));
    }
    let vmsa = VMSA::new(
        p.reset_eip.into(),
        cpu,
        VMMType::QEMU,
        Some(u64::from(p.vcpus)),
        GuestFeatures(p.guest_features),
    );
    let pages = vmsa
        .pages(p.vcpus as usize)
        .map_err(|e| SnpMeasureError::Measure(e.to_string()))?;
    for page in pages {
        f.page(PAGE_VMSA, VMSA_GPA, &Sha384::digest(&page).into());
    }
    Ok(f.0)
}
