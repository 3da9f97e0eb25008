//! The evidence exchange: `POST /api/v1/evidence {"nonce"}` and the versioned
//! bundle a guest agent answers with.

use serde::{Deserialize, Serialize};

use crate::hexbytes::{Digest32, HexBytes};
use crate::nonce::Nonce;

/// The bundle version this crate reads and writes.
/// (tests/e2e/tests/round.rs sends a bare `{"version": 3}`: keep it in step.)
pub const BUNDLE_VERSION: u32 = 3;

/// A node with 8 GPUs and 4 switches sends ~250 KB; this leaves room for
/// event logs and certificate tables without letting a peer exhaust memory.
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;

/// GPUs and NVSwitches together: an HGX node has 8 + 4. A bundle with more
/// is refused before any certificate is parsed or collateral fetched.
pub const MAX_DEVICES: usize = 16;

/// Certificates in one device chain: NVIDIA's are 5 (leaf, device CA,
/// provisioner, model CA, root).
pub const MAX_CHAIN_CERTS: usize = 8;

/// Runtime events in one bundle: the agent's configuration, its image and
/// the models it serves.
pub const MAX_RUNTIME_EVENTS: usize = 64;

/// Request body of `POST /api/v1/evidence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRequest {
    pub nonce: Nonce,
}

/// What an agent returns: hardware evidence plus the claims its quote binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    pub version: u32,
    /// The nonce the agent answered (the verifier uses its own copy, not this).
    pub nonce: Nonce,
    pub tee: TeeEvidence,
    #[serde(default)]
    pub gpus: Vec<DeviceEvidence>,
    #[serde(default)]
    pub switches: Vec<DeviceEvidence>,
    pub claims: Claims,
    /// What the agent extended RTMR3 with at start, in order
    /// ([`crate::binding::runtime_events`] of the claims' runtime). On TDX
    /// their replay must be the quote's RTMR3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_events: Vec<RuntimeEvent>,
}

/// One runtime measurement: a type ([`crate::binding::runtime_event`]) and
/// its value, extended as [`crate::binding::runtime_event_digest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEvent {
    pub kind: String,
    pub value: String,
}

/// CPU TEE evidence whose report_data is [`crate::binding::report_data`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TeeEvidence {
    /// An Intel TDX DCAP quote (v4 or v5) and, when the agent has it, the CCEL event log.
    Tdx {
        quote: HexBytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_log: Option<HexBytes>,
    },
    /// An AMD SEV-SNP attestation report (1184 bytes) and, when the host
    /// provides it, the extended-report certificate table (VCEK/VLEK, ASK, ARK).
    SevSnp {
        report: HexBytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certs: Option<HexBytes>,
    },
}

/// One GPU's or NVSwitch's SPDM evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEvidence {
    /// SPDM GET_MEASUREMENTS request followed by its signed response.
    pub report: HexBytes,
    /// DER certificates, device leaf first.
    pub cert_chain: Vec<HexBytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Gpu,
    Cpu,
}

impl NodeType {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeType::Gpu => "gpu",
            NodeType::Cpu => "cpu",
        }
    }
}

/// What the agent asserts about its node; bound into the quote's report_data
/// through [`crate::binding::canonical_claims`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The CVM's identity: SHA-256 of the SubjectPublicKeyInfo (DER) of the
    /// RA-TLS key the agent made inside the VM. A validator proves it by
    /// comparing it with the key its TLS connection saw (`tls.key`).
    pub cvm_id: Digest32,
    pub node_type: NodeType,
    pub agent_version: String,
    /// True only for the development TEE; validators trust it only on a devnet.
    pub simulated: bool,
    /// SHA-256 of each entry of `gpus[].report`, in the same order.
    #[serde(default)]
    pub gpu_reports_sha256: Vec<Digest32>,
    /// SHA-256 of each entry of `switches[].report`, in the same order.
    #[serde(default)]
    pub switch_reports_sha256: Vec<Digest32>,
    #[serde(default)]
    pub runtime: Runtime,
}

/// The inference runtime the sealed VM serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Digest of the VM image (e.g. `sha256:...`).
    #[serde(default)]
    pub image_digest: Option<String>,
    /// Local inference server the agent proxies to.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Models served.
    #[serde(default)]
    pub models: Vec<String>,
    /// SHA-256 of the agent's configuration, the parts that change what
    /// its claims mean (whose requests it answers, its backends, what it
    /// serves).
    #[serde(default)]
    pub agent_config: Option<Digest32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("evidence bundle is {0} bytes; the limit is {MAX_BUNDLE_BYTES}")]
    TooLarge(usize),
    #[error("evidence bundle version {found} is not supported (this build reads version {supported}): the agent and the validator speak different protocol versions; upgrade whichever is older")]
    UnsupportedVersion { found: u64, supported: u32 },
    #[error("evidence bundle is malformed at {path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error("evidence bundle carries {count} {what}; at most {limit} are read")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
}

/// A GPU or switch report whose hash the claims do not list (or list differently).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceHashError {
    #[error("claims list {claimed} {kind} report hashes but the bundle carries {carried} reports")]
    CountMismatch {
        kind: &'static str,
        claimed: usize,
        carried: usize,
    },
    #[error("{kind} report {index} hashes to {actual}, but the claims say {claimed}")]
    HashMismatch {
        kind: &'static str,
        index: usize,
        actual: Digest32,
        claimed: Digest32,
    },
}

impl EvidenceBundle {
    /// Parse a bundle: size limit, then version, then the strict schema of
    /// that version (unknown fields are errors: anything unbound is suspect).
    pub fn from_json(body: &[u8]) -> Result<Self, BundleError> {
        if body.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(body.len()));
        }
        #[derive(Deserialize)]
        struct Probe {
            version: u64,
        }
        let probe: Probe = serde_json::from_slice(body).map_err(|e| BundleError::Malformed {
            path: "version".into(),
            reason: e.to_string(),
        })?;
        if probe.version != u64::from(BUNDLE_VERSION) {
            return Err(BundleError::UnsupportedVersion {
                found: probe.version,
                supported: BUNDLE_VERSION,
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let bundle: Self =
            serde_path_to_error::deserialize(de).map_err(|e| BundleError::Malformed {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        bundle.check_shape()?;
        Ok(bundle)
    }

    /// The caps that bound a verifier's work on one node, checked before any
    /// certificate is parsed: at most [`MAX_DEVICES`] devices, each with at
    /// most [`MAX_CHAIN_CERTS`] certificates.
    pub fn check_shape(&self) -> Result<(), BundleError> {
        let devices = self.gpus.len() + self.switches.len();
        if devices > MAX_DEVICES {
            return Err(BundleError::TooMany {
                what: "GPU and NVSwitch reports",
                count: devices,
                limit: MAX_DEVICES,
            });
        }
        if self.runtime_events.len() > MAX_RUNTIME_EVENTS {
            return Err(BundleError::TooMany {
                what: "runtime events",
                count: self.runtime_events.len(),
                limit: MAX_RUNTIME_EVENTS,
            });
        }
        let longest = self
            .gpus
            .iter()
            .chain(&self.switches)
            .map(|d| d.cert_chain.len())
            .max()
            .unwrap_or(0);
        if longest > MAX_CHAIN_CERTS {
            return Err(BundleError::TooMany {
                what: "certificates in one device chain",
                count: longest,
                limit: MAX_CHAIN_CERTS,
            });
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Cannot fail: these types hold no maps and no fallible Serialize impls.
        serde_json::to_vec(self).expect("evidence bundle serialises")
    }

    /// Check that the claims list exactly the SHA-256 of each carried report.
    pub fn check_device_hashes(&self) -> Result<(), DeviceHashError> {
        for (kind, devices, claimed) in [
            ("GPU", &self.gpus, &self.claims.gpu_reports_sha256),
            (
                "NVSwitch",
                &self.switches,
                &self.claims.switch_reports_sha256,
            ),
        ] {
            if devices.len() != claimed.len() {
                return Err(DeviceHashError::CountMismatch {
                    kind,
                    claimed: claimed.len(),
                    carried: devices.len(),
                });
            }
            for (index, (d, c)) in devices.iter().zip(claimed).enumerate() {
                let actual = Digest32::sha256(&d.report.0);
                if actual != *c {
                    return Err(DeviceHashError::HashMismatch {
                        kind,
                        index,
                        actual,
                        claimed: *c,
                    });
                }
            }
        }
        Ok(())
    }
}
