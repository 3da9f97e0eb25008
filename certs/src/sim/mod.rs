//! A local test hierarchy for simulated TEEs: Intel-like (SGX root, PCK
//! platform CA, TCB signing) and NVIDIA-like (device identity root,
//! provisioner CA) certificate authorities, generated here and saved to a
//! directory so that agents can sign with them and validators can trust their
//! roots — but only when a devnet policy names those roots. Every name in it
//! says SIMULATED.

pub mod intel;
pub mod nvidia;
