//! Appraisal of confidential-VM and NVIDIA GPU evidence: is it genuine (`verify`), and does it
//! meet my policy (`appraise`)? Evidence, collateral, policy and time in; a verdict with every
//! check named out. Time is always an explicit input; nothing here opens a socket.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod facts;
pub mod gpu;
pub mod image;
pub mod input;
pub mod policy;
pub mod tee;
pub mod verdict;

pub use facts::Facts;
pub use image::Images;
pub use policy::Policy;
pub use tee::appraise::{appraise, ImageInput};
pub use verdict::{Check, Status, Verdict, Verification};
