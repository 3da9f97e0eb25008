//! What a validator accepts, as YAML (docs/policy.md). `verify` decides whether
//! evidence is genuine; the policy decides whether genuine evidence is good enough.

use serde::{Deserialize, Serialize};
pub use tvm_certs::amd::SnpTcb;
pub use tvm_certs::anchors::AmdProduct;

/// Intel's TCB statuses as dcap-qvl reads them from TCB Info (policy files
/// name them the same way, e.g. `UpToDate`, `TDRelaunchAdvised`).
pub use dcap_qvl::tcb_info::TcbStatus;

/// The status dcap-qvl reports (as text) read back into its enum; `None` for a
/// name this build does not know, which no policy can then allow.
pub fn parse_tcb_status(name: &str) -> Option<TcbStatus> {
    use serde::de::{value::StrDeserializer, IntoDeserializer as _};
    let de: StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
    TcbStatus::deserialize(de).ok()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub tdx: TdxPolicy,
    pub snp: SnpPolicy,
    /// How long past its `nextUpdate` collateral (TCB Info, QE Identity, CRLs)
    /// may still be used when fresh collateral cannot be fetched. 0 = never.
    pub collateral_grace_seconds: u64,
    /// Which VM images are accepted: the operator keys whose signed
    /// manifests list them. No manifest: every node fails `measurement`.
    pub images: crate::image::ImagePolicy,
    pub gpu: GpuPolicy,
    /// Trust SIMULATED evidence signed by these roots. Devnet only: with it,
    /// anyone holding the simulated keys can forge a "TEE".
    pub dangerous_trust_simulated: Option<SimulatedRoots>,
    /// Accept evidence fetched over plain HTTP, whose attested TLS key
    /// cannot be compared (`tls.key`): a relay passing on another node's
    /// genuine evidence is then caught only as a duplicate, costing the
    /// honest node its score too. Off: evidence must come over RA-TLS.
    pub dangerous_allow_plain_http: bool,
}

/// The roots of a simulated hierarchy (`tvm-agent sim-init` writes them into
/// `policy-devnet.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedRoots {
    /// PEM of the simulated Intel SGX root CA.
    pub intel_root: String,
    /// PEM of the simulated NVIDIA device identity root.
    pub nvidia_root: String,
}

/// A simulated root in the policy that is not a PEM certificate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dangerous_trust_simulated.{what} is not a PEM certificate: {reason}")]
pub struct RootError {
    what: &'static str,
    reason: String,
}

impl SimulatedRoots {
    fn der(pem: &str, what: &'static str) -> Result<Vec<u8>, RootError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| RootError {
            what,
            reason: e.to_string(),
        })?;
        Ok(p.contents)
    }
    pub fn intel_root_der(&self) -> Result<Vec<u8>, RootError> {
        Self::der(&self.intel_root, "intel_root")
    }
    pub fn nvidia_root_der(&self) -> Result<Vec<u8>, RootError> {
        Self::der(&self.nvidia_root, "nvidia_root")
    }
}

/// What NVIDIA GPU and NVSwitch evidence must show beyond being genuine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuPolicy {
    /// Every device must be compared with NVIDIA's signed reference values
    /// (driver and VBIOS RIMs). Off: RIM checks may stay "not checked".
    pub require_rims: bool,
    /// Device and RIM certificates must be shown unrevoked by NVIDIA's OCSP.
    pub require_revocation_check: bool,
    /// How long past its `nextUpdate` an OCSP answer may still be used when
    /// NVIDIA's responder cannot be reached. 0 = never.
    pub ocsp_grace_seconds: u64,
    /// Accept a certificate NVIDIA put on hold (revoked, reason certificateHold).
    pub dangerous_allow_hold: bool,
    /// A node with NVSwitches must be a complete protected-PCIe set: 8 GPUs
    /// and 4 switches, all answering the same nonce.
    pub require_ppcie_topology: bool,
    /// RIM indices whose mismatch is tolerated (an operator's decision after
    /// investigating one, see docs/gpu.md). Each is reported.
    pub dangerous_allow_mismatched_indices: Vec<u16>,
}

impl Default for GpuPolicy {
    fn default() -> Self {
        GpuPolicy {
            require_rims: true,
            require_revocation_check: true,
            ocsp_grace_seconds: 0,
            dangerous_allow_hold: false,
            require_ppcie_topology: true,
            dangerous_allow_mismatched_indices: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TdxPolicy {
    /// TCB statuses accepted. OutOfDate is not accepted unless listed here.
    pub allowed_tcb_statuses: Vec<TcbStatus>,
    /// Intel security advisories (INTEL-SA-xxxxx) a platform may still carry.
    pub allowed_advisories: Vec<String>,
    /// Accept TDs with the debug attribute: their memory is readable by the host.
    pub dangerous_allow_debug: bool,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            allowed_tcb_statuses: vec![TcbStatus::UpToDate],
            allowed_advisories: Vec::new(),
            dangerous_allow_debug: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnpPolicy {
    /// Accept guests whose policy lets the host run SMT siblings.
    pub allow_smt: bool,
    /// VMPLs the report may come from (0 is the most privileged).
    pub allowed_vmpls: Vec<u32>,
    /// The AMD products whose reports are accepted (`snp.product`).
    pub products: Vec<AmdProduct>,
    /// Minimum reported TCB per product (TCB values of different products
    /// are not comparable); a product without one is not checked.
    pub minimum_tcb: std::collections::BTreeMap<AmdProduct, SnpTcb>,
    /// Accept guests whose policy allows debugging: the host can read their memory.
    pub dangerous_allow_debug: bool,
    /// Accept guests that allow a migration agent: it can export their memory.
    pub dangerous_allow_migration_agent: bool,
    /// Accept evidence whose VCEK/VLEK and ASK were not checked against
    /// AMD's CRL (none was at hand): a revoked key would pass.
    pub dangerous_allow_missing_crl: bool,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            allow_smt: true,
            allowed_vmpls: vec![0],
            products: AmdProduct::ALL.to_vec(),
            minimum_tcb: Default::default(),
            dangerous_allow_debug: false,
            dangerous_allow_migration_agent: false,
            dangerous_allow_missing_crl: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("policy is not valid YAML for tvm: {0}")]
    Yaml(String),
    #[error(
        "policy images.operator_keys: key {key:?} is not 32 bytes of hex (an Ed25519 public key)"
    )]
    BadOperatorKey { key: String },
    #[error("policy: {0}")]
    BadSimulatedRoots(#[from] RootError),
}

impl Policy {
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let p: Policy =
            serde_saphyr::from_str(text).map_err(|e| PolicyError::Yaml(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Catch a mistyped key when the policy loads, not when a node fails.
    fn validate(&self) -> Result<(), PolicyError> {
        if let Some(r) = &self.dangerous_trust_simulated {
            r.intel_root_der()?;
            r.nvidia_root_der()?;
        }
        for k in &self.images.operator_keys.keys {
            if hex::decode(&k.public_key).map_or(true, |b| b.len() != 32) {
                return Err(PolicyError::BadOperatorKey {
                    key: k.public_key.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_strict() {
        let p = Policy::from_yaml("{}").unwrap();
        assert_eq!(p.tdx.allowed_tcb_statuses, vec![TcbStatus::UpToDate]);
        assert!(!p.tdx.dangerous_allow_debug && !p.snp.dangerous_allow_debug);
        assert_eq!(p.snp.allowed_vmpls, vec![0]);
        assert_eq!(p.collateral_grace_seconds, 0);
    }

    #[test]
    fn full_policy_parses() {
        let p = Policy::from_yaml(
            r#"
tdx:
  allowed_tcb_statuses: [UpToDate, SWHardeningNeeded]
  allowed_advisories: [INTEL-SA-00837]
snp:
  allow_smt: false
  products: [genoa, Turin]
  minimum_tcb: {genoa: {bootloader: 7, tee: 0, snp: 23, microcode: 84}}
collateral_grace_seconds: 86400
images:
  operator_keys:
    keys:
      - public_key: 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c
        valid_from: 2026-01-01T00:00:00Z
        valid_until: 2027-01-01T00:00:00Z
    retired: ["tvm-gpu 2026.11"]
"#,
        )
        .unwrap();
        assert_eq!(p.images.operator_keys.keys.len(), 1);
        assert_eq!(p.images.operator_keys.retired, ["tvm-gpu 2026.11"]);
        assert!(!p.images.dangerous_allow_unmeasured);
        assert_eq!(p.snp.products, [AmdProduct::Genoa, AmdProduct::Turin]);
        assert_eq!(p.snp.minimum_tcb[&AmdProduct::Genoa].microcode, 84);
    }

    #[test]
    fn typos_are_errors() {
        assert!(matches!(
            Policy::from_yaml("tdx: {allowed_tcb_statuses: [UpTodate]}"),
            Err(PolicyError::Yaml(_))
        ));
        assert!(matches!(
            Policy::from_yaml("tdx: {allow_debug: true}"),
            Err(PolicyError::Yaml(_))
        ));
        // Image digests are not pinned in a policy: keys are.
        assert!(matches!(
            Policy::from_yaml("images: [{name: x, tdx: {mrtd: abcd}}]"),
            Err(PolicyError::Yaml(_))
        ));
        assert!(matches!(
            Policy::from_yaml(
                "images: {operator_keys: {keys: [{public_key: abcd, valid_from: 2026-01-01T00:00:00Z, valid_until: 2027-01-01T00:00:00Z}]}}"
            ),
            Err(PolicyError::BadOperatorKey { .. })
        ));
        assert!(matches!(
            Policy::from_yaml("images: {dangerous_allow_unmeasred: true}"),
            Err(PolicyError::Yaml(_))
        ));
    }
}
