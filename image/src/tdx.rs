//! Expected TDX registers from a release's artifacts, as TDVF (OVMF for
//! TDX) extends them when it boots a Linux kernel directly (QEMU
//! `-kernel -initrd -append`):
//!
//! - RTMR1: the kernel's Authenticode hash (`EV_EFI_BOOT_SERVICES_APPLICATION`),
//!   then the fixed actions and separator TDVF records around it;
//! - RTMR2: the kernel command line, then the initrd (`EV_EVENT_TAG`), each
//!   as TDVF digests it.
//!
//! RTMR0 (firmware configuration, ACPI tables, TD HOB) depends on the VM
//! shape and MRTD on the firmware image; they come from a reference boot or
//! the firmware's metadata.

use crate::eventlog::extend;
use sha2::{Digest, Sha384};

/// What TDVF records before it starts the kernel (`EV_EFI_ACTION`).
pub const CALLING_EFI_APPLICATION: &[u8] = b"Calling EFI Application from Boot Option";
/// ...and when the kernel leaves the firmware's boot services.
pub const EXIT_BOOT_SERVICES_INVOCATION: &[u8] = b"Exit Boot Services Invocation";
pub const EXIT_BOOT_SERVICES_SUCCESS: &[u8] = b"Exit Boot Services Returned with Success";

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// RTMR1 for a kernel with this Authenticode (PE) SHA-384 hash: the kernel,
/// "Calling EFI Application from Boot Option", the separator (four zero
/// bytes), then the two Exit Boot Services actions.
pub fn rtmr1(kernel_authenticode: &[u8; 48]) -> [u8; 48] {
    replay(&rtmr1_events(kernel_authenticode))
}

/// The event digests behind [`rtmr1`], in order (a manifest's reference events).
pub fn rtmr1_events(kernel_authenticode: &[u8; 48]) -> Vec<[u8; 48]> {
    vec![
        *kernel_authenticode,
        sha384(CALLING_EFI_APPLICATION),
        sha384(&[0; 4]),
        sha384(EXIT_BOOT_SERVICES_INVOCATION),
        sha384(EXIT_BOOT_SERVICES_SUCCESS),
    ]
}

/// RTMR2 for this command line and initrd, given the digests TDVF extends
/// for them.
pub fn rtmr2(cmdline_digest: &[u8; 48], initrd_digest: &[u8; 48]) -> [u8; 48] {
    replay(&rtmr2_events(cmdline_digest, initrd_digest))
}

/// The event digests behind [`rtmr2`], in order.
pub fn rtmr2_events(cmdline_digest: &[u8; 48], initrd_digest: &[u8; 48]) -> Vec<[u8; 48]> {
    vec![*cmdline_digest, *initrd_digest]
}

/// One register extended with `events` from zero.
pub fn replay(events: &[[u8; 48]]) -> [u8; 48] {
    events.iter().fold([0; 48], |r, d| extend(&r, d))
}
