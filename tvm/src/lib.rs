//! `tvm`: the command miners, validators and operators type: `tvm serve`,
//! the miner's axon that lists its CVMs to validators, and `tvm devnet`, the
//! whole network on one machine.

pub mod check;
pub mod devnet;
pub mod download;
pub mod image;
pub mod image_service;
pub mod install;
pub mod launch;
pub mod serve;
