//! `tvm`: the command miners, validators and operators type: `tvm serve`,
//! the miner's axon that lists its CVMs to validators, and `tvm devnet`, the
//! whole network on one machine.

pub mod devnet;
pub mod image;
pub mod launch;
pub mod serve;
