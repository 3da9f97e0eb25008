//! NVIDIA devices a host passes to its CVM, by PCI device id.
//!
//! Source of every id: the PCI ID Repository (`pci.ids`, pciutils/pciids),
//! vendor 10de. Names are the product names there; the architecture decides
//! which node type may use the part.

use std::fmt;

pub const NVIDIA: u16 = 0x10de;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Hopper,
    Blackwell,
    /// An NVIDIA GPU this build has no entry for.
    Unknown,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Hopper => "Hopper",
            Arch::Blackwell => "Blackwell",
            Arch::Unknown => "unknown architecture",
        })
    }
}

/// (device id, name, architecture), from pci.ids.
const GPUS: &[(u16, &str, Arch)] = &[
    (0x2313, "H100 CNX", Arch::Hopper),
    (0x2321, "H100 NVL", Arch::Hopper),
    (0x2322, "H800 PCIe", Arch::Hopper),
    (0x2324, "H800", Arch::Hopper),
    (0x2329, "H20", Arch::Hopper),
    (0x232c, "H20-3e", Arch::Hopper),
    (0x2330, "H100 SXM5 80GB", Arch::Hopper),
    (0x2331, "H100 PCIe", Arch::Hopper),
    (0x2335, "H200 SXM 141GB", Arch::Hopper),
    (0x2337, "H100 SXM5 64GB", Arch::Hopper),
    (0x2338, "H100 SXM5 96GB", Arch::Hopper),
    (0x2339, "H100 SXM5 94GB", Arch::Hopper),
    (0x233a, "H800 NVL", Arch::Hopper),
    (0x233b, "H200 NVL", Arch::Hopper),
    (0x2342, "GH200", Arch::Hopper),
    (0x2348, "GH200 144G HBM3e", Arch::Hopper),
    (0x2901, "B200", Arch::Blackwell),
    (0x2909, "HGX B200 168GB", Arch::Blackwell),
    (0x2941, "GB200", Arch::Blackwell),
    (0x3182, "B300 SXM6 AC", Arch::Blackwell),
];

/// NVSwitch chips of HGX boards (their own PCI functions, class 0680).
/// HGX B200's switches have no entry in pci.ids yet.
const SWITCHES: &[(u16, &str)] = &[(0x22a3, "H100 NVSwitch")];

/// What an NVIDIA PCI function is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Gpu {
        name: String,
        arch: Arch,
    },
    Switch {
        name: String,
    },
    /// Audio functions, bridges and the like: not passed through.
    Other,
}

/// Classify an NVIDIA function by device id and PCI class (24-bit).
pub fn part(device: u16, class: u32) -> Part {
    let base = class >> 8;
    if let Some((_, name)) = SWITCHES.iter().find(|(id, _)| *id == device) {
        return Part::Switch {
            name: (*name).to_string(),
        };
    }
    // 0300 VGA, 0302 3D controller: the GPUs.
    if base == 0x0300 || base == 0x0302 {
        return match GPUS.iter().find(|(id, _, _)| *id == device) {
            Some((_, name, arch)) => Part::Gpu {
                name: (*name).to_string(),
                arch: *arch,
            },
            None => Part::Gpu {
                name: format!("NVIDIA device {device:04x}"),
                arch: Arch::Unknown,
            },
        };
    }
    Part::Other
}
