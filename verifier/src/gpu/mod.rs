//! NVIDIA GPUs and NVSwitches: one device's SPDM evidence (`device`, over the
//! `spdm` message layout), its reference values (`rim`), the protected-PCIe
//! topology of a node (`topology`), the product a board is (`model`), and a node's devices appraised together
//! (`node`). `input` reads evidence in the forms it comes in.

pub mod device;
pub mod input;
pub mod model;
pub mod node;
pub mod rim;
pub mod spdm;
pub mod topology;

pub use device::*;
pub use model::Model;
