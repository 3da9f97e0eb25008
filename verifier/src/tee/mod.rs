//! The confidential VM's own evidence: Intel TDX quotes (`tdx`) and AMD
//! SEV-SNP reports (`snp`) verified, then `appraise`d against the policy.

pub mod appraise;
pub mod snp;
pub mod tdx;
