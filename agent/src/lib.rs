//! The guest agent: the only tvm code inside a miner's confidential VM.
//!
//! It answers a validator's nonce with one evidence bundle in which the CPU
//! TEE's quote binds every local GPU report, the agent's TLS key and the
//! runtime it serves; it lets only Epistula-signed callers in; and it proxies
//! inference only while the VM's GPUs are in confidential-computing mode.

pub mod sim;
