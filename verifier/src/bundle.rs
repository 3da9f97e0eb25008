//! A whole node at once: the agent's evidence bundle for the nonce we sent.
//! The CPU TEE's quote is verified and appraised with report_data computed
//! from our nonce and the bundle's claims; the claims must list exactly the
//! carried device reports; every GPU and NVSwitch is verified against our
//! nonce bound to the CVM id ([`device_nonce`]); the CVM id must be the hash
//! of the TLS key our connection saw (so the id is proven, and a report
//! asked for by another CVM fails); and SIMULATED evidence counts only under
//! a policy that trusts its roots.

use sha2::{Digest, Sha256};
use tvm_protocol::binding::{device_nonce, report_data};
use tvm_protocol::evidence::{EvidenceBundle, NodeType, TeeEvidence};
use tvm_protocol::nonce::Nonce;

use crate::gpu;
use crate::gpu::node::{appraise_node, NodeInput, NodeVerdict, Revocation, RimInput};
use crate::gpu::DeviceRoot;
use crate::image::Images;
use crate::policy::Policy;
use crate::tee::appraise::{appraise, ImageInput};
use crate::tee::snp::{self, SnpEndorsement};
use crate::tee::tdx::{self, TdxCollateral};
use crate::verdict::{Check, Status, Verdict};

pub mod check {
    pub const SIMULATED: &str = "evidence.simulated";
    pub const CLAIMS_DEVICES: &str = "claims.devices";
    pub const NODE_TYPE: &str = "node.type";
    pub const TLS_KEY: &str = "tls.key";
    pub const TEE_COLLATERAL: &str = "tee.collateral";
}

/// Collateral for the bundle's CPU TEE, prepared by the caller (and shared
/// across the nodes of one platform).
#[derive(Clone, Copy)]
pub enum TeeCollateral<'a> {
    Tdx(&'a TdxCollateral),
    Snp(&'a SnpEndorsement),
    /// None could be had, and why (fails `tee.collateral` with the reason).
    Unavailable(&'a str),
    None,
}

pub struct BundleInput<'a> {
    pub bundle: &'a EvidenceBundle,
    /// The nonce this verifier sent (never the bundle's own copy).
    pub nonce: &'a Nonce,
    /// SHA-256 of the SubjectPublicKeyInfo the TLS connection presented;
    /// `None` when the bundle came over plain HTTP.
    pub tls_spki_sha256: Option<[u8; 32]>,
    pub tee_collateral: TeeCollateral<'a>,
    pub rims: &'a [RimInput],
    /// Per device (GPUs then switches), as `gpu_collateral::revocation` gives it.
    pub revocation: &'a [Revocation],
    pub policy: &'a Policy,
    /// The image manifests accepted under the policy's operator keys.
    pub images: &'a Images,
    pub at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleVerdict {
    pub(crate) accepted: bool,
    /// The evidence says it is SIMULATED (shown wherever the verdict is).
    pub(crate) simulated: bool,
    pub(crate) cvm_id: String,
    /// The CVM id is the key the TLS connection saw (`tls.key` passed).
    pub(crate) identity_proven: bool,
    pub(crate) checks: Vec<Check>,
    pub(crate) tee: Verdict,
    pub(crate) gpus: Option<NodeVerdict>,
}

impl BundleVerdict {
    /// Every check passed or was not needed, the TEE's verdict and the GPUs'.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    /// The evidence says it is SIMULATED (shown wherever the verdict is).
    pub fn simulated(&self) -> bool {
        self.simulated
    }

    /// The CVM id the bundle claims.
    pub fn cvm_id(&self) -> &str {
        &self.cvm_id
    }

    /// The CVM id is proven: it is the hash of the key the TLS connection
    /// saw. An unproven id (plain HTTP, a file) may be anyone's.
    pub fn identity_proven(&self) -> bool {
        self.identity_proven
    }

    /// The node-level checks (binding, TLS key, SIMULATED, claims).
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The CPU TEE's verdict.
    pub fn tee(&self) -> &Verdict {
        &self.tee
    }

    /// The GPUs' and NVSwitches' verdict, when the node has any.
    pub fn gpus(&self) -> Option<&NodeVerdict> {
        self.gpus.as_ref()
    }

    /// Every failed check, node-level first, with its name and reason.
    pub fn failures(&self) -> Vec<&Check> {
        let mut out: Vec<&Check> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .collect();
        out.extend(self.tee.failures());
        if let Some(g) = &self.gpus {
            out.extend(g.checks.iter().filter(|c| c.status == Status::Fail));
            for d in &g.devices {
                out.extend(d.verdict.failures());
            }
        }
        out
    }

    /// Whether a check of this name failed anywhere in the verdict.
    pub fn failed(&self, name: &str) -> bool {
        self.failures().iter().any(|c| c.name == name)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.simulated {
            out.push_str("SIMULATED evidence (devnet): not from real hardware\n");
        }
        out.push_str(&format!(
            "node {}: {}\n",
            self.cvm_id,
            if self.accepted {
                "ACCEPTED"
            } else {
                "REJECTED"
            }
        ));
        out.push_str(&crate::verdict::render_checks(&self.checks));
        out.push_str("CPU TEE\n");
        out.push_str(&self.tee.render());
        if let Some(g) = &self.gpus {
            out.push_str(&g.render());
        }
        out
    }
}

/// A TLS certificate that is not X.509.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server's TLS certificate cannot be read: {0}")]
pub struct CertificateError(String);

/// SHA-256 of a certificate's SubjectPublicKeyInfo: what the claims'
/// CVM id must be.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertificateError(e.to_string()))?;
    Ok(Sha256::digest(cert.public_key().raw).into())
}

/// The cheap, binding checks a validator runs before it fetches any
/// collateral for a bundle: SIMULATED against the policy, the claims naming
/// the device reports, the node type, the TLS key being the CVM id, and the
/// TEE evidence carrying the report_data our nonce and these claims make
/// (read, not yet verified). `Err` names the first check that failed: the
/// bundle cannot pass, so nothing is fetched for it (a forged chip id,
/// FMSPC or device certificate then costs no request to a vendor).
pub fn precheck(
    bundle: &EvidenceBundle,
    nonce: &Nonce,
    tls_spki_sha256: Option<[u8; 32]>,
    policy: &Policy,
) -> Result<(), String> {
    let (checks, _) = node_checks(bundle, tls_spki_sha256, policy);
    if let Some(c) = checks.iter().find(|c| c.status == Status::Fail) {
        return Err(format!("{} failed", c.name));
    }
    let carried = match &bundle.tee {
        TeeEvidence::Tdx { quote, .. } => tdx::report_data_of(&quote.0),
        TeeEvidence::SevSnp { report, .. } => snp::report_data_of(&report.0),
    };
    match carried {
        Some(rd) if rd == report_data(nonce, &bundle.claims) => Ok(()),
        Some(_) => Err(format!(
            "{} failed",
            crate::tee::appraise::checks::REPORT_DATA
        )),
        None => Err("the TEE evidence cannot be parsed".into()),
    }
}

type SimRoots = Option<(Vec<u8>, Vec<u8>)>;

/// The node-level checks, and the simulated roots (Intel's, NVIDIA's) the
/// evidence must chain to when the policy trusts SIMULATED evidence.
fn node_checks(
    b: &EvidenceBundle,
    tls_spki_sha256: Option<[u8; 32]>,
    policy: &Policy,
) -> (Vec<Check>, SimRoots) {
    let mut checks = Vec::new();

    // evidence.simulated: which roots the evidence must chain to.
    let sim_roots = match (&policy.dangerous_trust_simulated, b.claims.simulated) {
        (_, false) => {
            checks.push(Check::pass(
                check::SIMULATED,
                "real hardware claimed: vendor roots",
            ));
            None
        }
        (None, true) => {
            checks.push(Check::fail(
                check::SIMULATED,
                "the evidence is SIMULATED and this policy does not trust simulated roots (dangerous_trust_simulated, devnet only)",
            ));
            None
        }
        (Some(r), true) => match (r.intel_root_der(), r.nvidia_root_der()) {
            (Ok(i), Ok(n)) => {
                checks.push(Check::pass(
                    check::SIMULATED,
                    "SIMULATED evidence, trusted by this devnet policy",
                ));
                Some((i, n))
            }
            (Err(e), _) | (_, Err(e)) => {
                checks.push(Check::fail(check::SIMULATED, e.to_string()));
                None
            }
        },
    };

    checks.push(match b.check_device_hashes() {
        Ok(()) => Check::pass(
            check::CLAIMS_DEVICES,
            format!(
                "{} GPU and {} NVSwitch reports, each named by the claims",
                b.gpus.len(),
                b.switches.len()
            ),
        ),
        Err(e) => Check::fail(
            check::CLAIMS_DEVICES,
            format!("{e}: a device report was swapped or added after the quote was made"),
        ),
    });

    checks.push(match (b.claims.node_type, b.gpus.len()) {
        (NodeType::Gpu, 0) => Check::fail(check::NODE_TYPE, "a GPU node that sent no GPU evidence"),
        (NodeType::Cpu, n) if n > 0 => Check::fail(
            check::NODE_TYPE,
            format!("a CPU node that sent {n} GPU reports"),
        ),
        (t, n) => Check::pass(check::NODE_TYPE, format!("{} node, {n} GPUs", t.as_str())),
    });

    let tls_key = match tls_spki_sha256 {
        Some(seen) if seen == b.claims.cvm_id.0 => Check::pass(
            check::TLS_KEY,
            "RA-TLS: the server's TLS key is the attested CVM key (the CVM id is proven)",
        ),
        Some(seen) => Check::fail(
            check::TLS_KEY,
            format!(
                "the TLS server key {} is not the attested CVM key {}: another machine or a proxy answered",
                hex::encode(seen),
                hex::encode(b.claims.cvm_id.0)
            ),
        ),
        None if policy.dangerous_allow_plain_http => Check::not_checked(
            check::TLS_KEY,
            "fetched over plain HTTP (dangerous_allow_plain_http): the CVM id is unproven and not used to tell nodes apart",
        ),
        None => Check::fail(
            check::TLS_KEY,
            "fetched over plain HTTP: without RA-TLS nothing shows this evidence came from the node listed (a relay could pass on another's); serve the agent's RA-TLS port to validators",
        ),
    };
    checks.push(tls_key);
    (checks, sim_roots)
}

pub fn appraise_bundle(input: &BundleInput<'_>) -> BundleVerdict {
    let b = input.bundle;
    let policy = input.policy;
    let (checks, sim_roots) = node_checks(b, input.tls_spki_sha256, policy);
    let identity_proven = checks
        .iter()
        .any(|c| c.name == check::TLS_KEY && c.status == Status::Pass);

    // The CPU TEE, with report_data from *our* nonce.
    let expected = report_data(input.nonce, &b.claims);
    let image = ImageInput {
        images: input.images,
        node_type: Some(b.claims.node_type),
        event_log: match &b.tee {
            TeeEvidence::Tdx { event_log, .. } => event_log.as_ref().map(|l| l.0.as_slice()),
            TeeEvidence::SevSnp { .. } => None,
        },
        runtime: Some((&b.runtime_events, &b.claims.runtime)),
    };
    let tee = match (&b.tee, input.tee_collateral) {
        (TeeEvidence::Tdx { quote, .. }, TeeCollateral::Tdx(c)) => {
            let want_root = match &sim_roots {
                Some((intel, _)) => Ok(intel.as_slice()),
                None => tvm_certs::anchors::intel_sgx_root(),
            };
            match want_root {
                Ok(root) if root == c.root_der() => {
                    let v = tdx::verify(&tdx::TdxInput {
                        quote: &quote.0,
                        collateral: c,
                        at: input.at,
                        grace_seconds: policy.collateral_grace_seconds,
                    });
                    appraise(v, policy, &image, Some(&expected), input.at)
                }
                Ok(_) => Verdict::new(
                    vec![Check::fail(
                        check::TEE_COLLATERAL,
                        "the TDX collateral was prepared for another root than the evidence claims (simulated vs Intel)",
                    )],
                    None,
                ),
                Err(e) => Verdict::new(vec![Check::fail(check::TEE_COLLATERAL, e.to_string())], None),
            }
        }
        // The simulated TEE is TDX: an SEV-SNP report claiming to be
        // simulated would let real-hardware evidence vouch for simulated GPUs.
        (TeeEvidence::SevSnp { .. }, _) if b.claims.simulated => Verdict::new(
            vec![Check::fail(
                check::TEE_COLLATERAL,
                "an SEV-SNP report in evidence that claims to be SIMULATED: there is no simulated SEV-SNP",
            )],
            None,
        ),
        (TeeEvidence::SevSnp { report, .. }, TeeCollateral::Snp(e)) => {
            let v = snp::verify(&snp::SnpInput {
                report: &report.0,
                endorsement: e,
                at: input.at,
                grace_seconds: policy.collateral_grace_seconds,
            });
            appraise(v, policy, &image, Some(&expected), input.at)
        }
        (tee, given) => {
            let (kind, carried) = match tee {
                TeeEvidence::Tdx { quote, .. } => ("TDX", tdx::report_data_of(&quote.0)),
                TeeEvidence::SevSnp { report, .. } => ("SEV-SNP", snp::report_data_of(&report.0)),
            };
            let detail = match given {
                TeeCollateral::Unavailable(why) => format!("no {kind} collateral: {why}"),
                _ => format!("no {kind} collateral to verify this evidence with: fetch it (tvm-verifier collateral)"),
            };
            let mut checks = vec![Check::fail(check::TEE_COLLATERAL, detail)];
            // Unverifiable, but a wrong report_data is still worth saying.
            if let Some(rd) = carried.filter(|rd| *rd != expected) {
                checks.push(Check::fail(
                    crate::tee::appraise::checks::REPORT_DATA,
                    format!(
                        "the evidence carries report_data {}, not the {} our nonce and its claims make (read without verifying the evidence)",
                        hex::encode(rd),
                        hex::encode(expected)
                    ),
                ));
            }
            Verdict::new(checks, None)
        }
    };

    let devices = gpu::input::from_bundle(b);
    let gpus = (!devices.is_empty()).then(|| {
        let root = match &sim_roots {
            Some((_, nv)) => DeviceRoot::Simulated(nv),
            None => DeviceRoot::Nvidia,
        };
        appraise_node(&NodeInput {
            devices: &devices,
            nonce: Some(device_nonce(input.nonce, &b.claims.cvm_id)),
            rims: input.rims,
            revocation: input.revocation,
            policy: &policy.gpu,
            at: input.at,
            root,
        })
    });

    let accepted = checks.iter().all(|c| c.status != Status::Fail)
        && tee.accepted
        && gpus.as_ref().is_none_or(|g| g.accepted);
    BundleVerdict {
        accepted,
        simulated: b.claims.simulated,
        cvm_id: hex::encode(b.claims.cvm_id.0),
        identity_proven,
        checks,
        tee,
        gpus,
    }
}
