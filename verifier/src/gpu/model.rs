//! Which product a GPU is, from what NVIDIA signed: the board's project,
//! project SKU and chip SKU (opaque fields 17, 18 and 15 of the SPDM report,
//! the same three that name its VBIOS RIM, `NV_GPU_VBIOS_<project>_<sku>_<chip>_…`).
//!
//! The chip SKU alone is not enough: 886 is both an H100 NVL and a B200. A
//! board this table does not know is shown as unknown, so that no policy
//! pays it as another model by accident.

use crate::gpu::Arch;

/// One known board: the signed identifiers, the product, and where the
/// pairing was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub arch: Arch,
    pub project: &'static str,
    pub project_sku: &'static str,
    pub chip_sku: &'static str,
    /// What validators price ("H100 SXM", "H200 SXM", "B200"): the model
    /// name starts with the family, so `model_points` can match by prefix.
    pub name: &'static str,
    /// The public evidence for the pairing.
    pub source: &'static str,
}

pub const BOARDS: &[Board] = &[
    Board {
        arch: Arch::Hopper,
        project: "1010",
        project_sku: "0200",
        chip_sku: "882",
        name: "H100 PCIe",
        source: "NVIDIA/nvtrust@b75351a guest_tools/rims/vbios_rims (RIM 1010_0200_882_96005E0001); NVIDIA H100 PCIe product brief PB-11133: board P1010 SKU 200; NV-1 (testdata) is this board",
    },
    Board {
        arch: Arch::Hopper,
        project: "1010",
        project_sku: "0210",
        chip_sku: "886",
        name: "H100 NVL",
        source: "thamada/nvidia-smi@198aebb nvsim/H100NVLx2_smi.py (nvidia-smi -q of an H100 NVL: GPU part 2321-886-A1, image 1010.0210.00.02); NVIDIA/nvtrust RIM 1010_0210_886_9600740011",
    },
    Board {
        arch: Arch::Hopper,
        project: "G520",
        project_sku: "0200",
        chip_sku: "885",
        name: "H100 SXM",
        source: "NVIDIA/k8s-test-infra@3b2b865 tests/e2e/go/assertions/nvidiasmi/testdata/hardware/qx-h100.xml (real nvidia-smi -q -x: NVIDIA H100 80GB HBM3, 692-2G520-0200-000, 2330-885-A1); NV-4 (testdata) is this board",
    },
    Board {
        arch: Arch::Hopper,
        project: "G520",
        project_sku: "0280",
        chip_sku: "895",
        name: "H200 SXM",
        source: "NVIDIA/mig-parted issue 120 (nvidia-smi -q: NVIDIA H200, 699-2G520-0280-RC3, 2335-895-A1); NV-6 (testdata, google/go-nvattest-tools PPCIe capture) is this board",
    },
    Board {
        arch: Arch::Hopper,
        project: "G520",
        project_sku: "0205",
        chip_sku: "865",
        name: "H800 SXM",
        source: "liguodongiot/llm-action@9234494 docs/llm-base/nvidia-smi.md (nvidia-smi -q: NVIDIA H800, 692-2G520-0205-000, 2324-865-A1, image G520.0205.00.02, NVLink NV8)",
    },
    Board {
        arch: Arch::Hopper,
        project: "1010",
        project_sku: "0230",
        chip_sku: "894",
        name: "H200 NVL",
        source: "NVIDIA H200 NVL product brief PB-12128 (board P1010 SKU 230); Cisco UCS firmware for ucs-video-nvidia-H200-NVL (VBIOS 1010_0230_894_9600D9000E); a CC setup guide verified on an H200 NVL names RIM NV_GPU_VBIOS_1010_0230_894_9600D9000E",
    },
    Board {
        arch: Arch::Blackwell,
        project: "G525",
        project_sku: "0220",
        chip_sku: "886",
        name: "B200",
        source: "NVIDIA/k8s-test-infra@3b2b865 tests/e2e/go/assertions/nvidiasmi/testdata/hardware/qx-b200.xml (real nvidia-smi -q -x: NVIDIA B200, 692-2G525-0220-500, 2901-886-A1); NV-7 (testdata, google/go-nvattest-tools MPT capture) is this board",
    },
    Board {
        arch: Arch::Blackwell,
        project: "G525",
        project_sku: "0225",
        chip_sku: "886",
        name: "B200",
        source: "an HGX B200 node write-up (nvidia-smi: 7x NVIDIA B200, board 692-2G525-0225-001, GPU part 2901-886-A1) and an HGX install guide (image G525.0225.00.05)",
    },
];

/// What the evidence says the device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Model {
    Known(&'static Board),
    /// A GPU of a known architecture on a board this table does not name.
    Unknown {
        arch: Arch,
        board: String,
    },
    Switch,
}

impl Model {
    /// The device's model from its verified architecture and signed board fields.
    pub fn of(arch: Arch, project: &str, project_sku: &str, chip_sku: &str) -> Model {
        if arch.is_switch() {
            return Model::Switch;
        }
        match BOARDS.iter().find(|b| {
            b.arch == arch
                && b.project == project
                && b.project_sku == project_sku
                && b.chip_sku == chip_sku
        }) {
            Some(b) => Model::Known(b),
            None => Model::Unknown {
                arch,
                board: format!("{project}_{project_sku}_{chip_sku}"),
            },
        }
    }
}

impl std::fmt::Display for Model {
    /// "H200 SXM (G520_0280_895)", "unknown Hopper (G520_0299_899)",
    /// "NVSwitch (LS10)". An unknown board starts with "unknown", so no
    /// model prefix a validator prices matches it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Model::Known(b) => write!(
                f,
                "{} ({}_{}_{})",
                b.name, b.project, b.project_sku, b.chip_sku
            ),
            Model::Unknown { arch, board } => write!(f, "unknown {} ({board})", arch.name()),
            Model::Switch => f.write_str("NVSwitch (LS10)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chip_sku_alone_does_not_decide() {
        let nvl = Model::of(Arch::Hopper, "1010", "0210", "886");
        let b200 = Model::of(Arch::Blackwell, "G525", "0220", "886");
        assert_eq!(nvl.to_string(), "H100 NVL (1010_0210_886)");
        assert_eq!(b200.to_string(), "B200 (G525_0220_886)");
        // A Hopper claiming a Blackwell board is not a B200.
        assert_eq!(
            Model::of(Arch::Hopper, "G525", "0220", "886").to_string(),
            "unknown Hopper (G525_0220_886)"
        );
    }

    #[test]
    fn every_board_is_distinct_and_sourced() {
        for (i, a) in BOARDS.iter().enumerate() {
            assert!(!a.source.is_empty(), "{a:?}");
            for b in &BOARDS[i + 1..] {
                assert!(
                    (a.arch, a.project, a.project_sku, a.chip_sku)
                        != (b.arch, b.project, b.project_sku, b.chip_sku),
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
