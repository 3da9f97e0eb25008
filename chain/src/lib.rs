//! Subtensor, the Bittensor chain: what validators read (metagraph,
//! hyperparameters) and write (`set_weights`), and what miners announce
//! (`serve_axon`). Built offline against the finney metadata in
//! `metadata/`; at run time the live node's metadata is used.

pub mod calls;
pub mod client;
pub mod drand;
pub mod events;
pub mod extrinsic;
pub mod hyperparams;
pub mod metadata;
pub mod neurons;
pub mod testchain;
