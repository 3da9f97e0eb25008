//! Measured VM images. What runs in a CVM is told by its measurements: for
//! TDX, MRTD (the firmware, measured by the TDX module) and RTMR0–3
//! (extended by the firmware, the bootloader, the kernel and the agent).
//! The firmware records every RTMR extension in an event log (the ACPI CCEL
//! table points at it), so a verifier can replay the log, check it against
//! the quote's registers, and see *which* component differs.

pub mod authenticode;
pub mod eventlog;
mod le;
pub mod manifest;
pub mod snp;
pub mod tdvf;
pub mod tdx;
