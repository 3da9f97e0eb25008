//! The simulated TEE: TDX v4 quotes and NVIDIA SPDM GPU reports in the real
//! binary layouts, signed by the local hierarchy of `tvm_certs::sim`. Chosen
//! only by an explicit flag; everything it makes is labelled SIMULATED.

pub mod gpu;
pub mod tdx;
