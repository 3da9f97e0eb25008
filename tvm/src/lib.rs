//! `tvm`: the command miners, validators and operators type. So far: `tvm
//! serve`, the miner's axon that lists its CVMs to validators.

pub mod serve;
