//! Appraisal of confidential-VM evidence: is it genuine (`verify`), and does it
//! meet my policy (`appraise`)? Time is always an explicit input.

pub mod appraise;
pub mod facts;
pub mod input;
pub mod policy;
pub mod snp;
pub mod tdx;
pub mod verdict;

pub use appraise::appraise;
pub use facts::Facts;
pub use policy::Policy;
pub use verdict::{Check, Status, Verdict, Verification};
