//! The loopback test chain: subtensor's rules for the calls tvm sends,
//! applied to a subnet described by a YAML fixture. It is a TEST CHAIN — it
//! says so wherever it shows — for tests and the devnet, where no subtensor
//! node can run; it decodes and checks real extrinsics against the real
//! finney metadata rather than trusting its callers.

pub mod rules;
pub mod server;
