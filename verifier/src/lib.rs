//! Appraisal of confidential-VM and NVIDIA GPU evidence: is it genuine (`verify`), and does it
//! meet my policy (`appraise`)? Time is always an explicit input.

pub mod appraise;
pub mod attest;
pub mod bundle;
pub mod db;
pub mod facts;
pub mod gpu;
pub mod gpu_appraise;
pub mod gpu_collateral;
pub mod gpu_input;
pub mod input;
pub mod policy;
pub mod ratls;
pub mod rim;
pub mod round;
pub mod run;
pub mod scoring;
pub mod service;
pub mod snp;
pub mod spdm;
pub mod status;
pub mod tdx;
pub mod topology;
pub mod verdict;

pub use appraise::appraise;
pub use facts::Facts;
pub use policy::Policy;
pub use verdict::{Check, Status, Verdict, Verification};
