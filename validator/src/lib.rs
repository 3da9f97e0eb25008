//! The validator service: each epoch, every serving miner's node list and
//! every node's evidence fetched (`attest`, over RA-TLS: `ratls`), appraised
//! by `tvm-verifier` with collateral for rounds (`gpu_collateral`, and the
//! store in `run`), scored (`scoring`), stored as it comes (`db`), weights
//! set (`service`), and shown (`status`); `v5` asks accepted nodes for
//! inference and checks the answers (the v5 share). `run` is the epoch loop and its
//! configuration; `round` one epoch's attestation of every node.
#![forbid(unsafe_code)]

pub mod attest;
pub mod db;
pub mod gpu_collateral;
pub mod ratls;
pub mod round;
pub mod run;
pub mod scoring;
pub mod service;
pub mod status;
pub mod v5;
