//! NVIDIA's SPDM attestation reports carry typed opaque fields after the
//! measurements; these are their type numbers, shared by the verifier that
//! reads them and the simulated GPUs that write them.

/// Opaque-data field types NVIDIA defines.
pub mod field {
    pub const DRIVER_VERSION: u16 = 3;
    pub const GPU_INFO: u16 = 4;
    pub const VBIOS_VERSION: u16 = 6;
    pub const NVDEC0_STATUS: u16 = 11;
    pub const MSRSCNT: u16 = 12;
    pub const CPR_INFO: u16 = 13;
    pub const BOARD_ID: u16 = 14;
    pub const CHIP_SKU: u16 = 15;
    pub const CHIP_SKU_MOD: u16 = 16;
    pub const PROJECT: u16 = 17;
    pub const PROJECT_SKU: u16 = 18;
    pub const PROJECT_SKU_MOD: u16 = 19;
    pub const FWID: u16 = 20;
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    pub const SWITCH_PDI: u16 = 22;
    pub const FLOORSWEPT_PORTS: u16 = 23;
    pub const POSITION_ID: u16 = 24;
    pub const LOCK_SWITCH_STATUS: u16 = 25;
    pub const GPU_LINK_CONN: u16 = 26;
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    pub const CHIP_INFO: u16 = 35;
    pub const FEATURE_FLAG: u16 = 36;
}
