//! A whole node at once: the agent's evidence bundle for the nonce we sent.
//! The CPU TEE's quote is verified and appraised with report_data computed
//! from our nonce and the bundle's claims; the claims must list exactly the
//! carried device reports; every GPU and NVSwitch is verified against the
//! same nonce; the TLS key our connection saw must be the attested one; and
//! SIMULATED evidence counts only under a policy that trusts its roots.

use sha2::{Digest, Sha256};
use tvm_protocol::binding::report_data;
use tvm_protocol::evidence::{EvidenceBundle, NodeType, TeeEvidence};
use tvm_protocol::nonce::Nonce;

use crate::gpu;
use crate::gpu::node::{appraise_node, NodeInput, NodeVerdict, Revocation, RimInput};
use crate::gpu::DeviceRoot;
use crate::policy::Policy;
use crate::tee::appraise::appraise;
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
    pub at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleVerdict {
    pub(crate) accepted: bool,
    /// The evidence says it is SIMULATED (shown wherever the verdict is).
    pub(crate) simulated: bool,
    pub(crate) cvm_id: String,
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
/// `tls_spki_sha256` names.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertificateError(e.to_string()))?;
    Ok(Sha256::digest(cert.public_key().raw).into())
}

pub fn appraise_bundle(input: &BundleInput<'_>) -> BundleVerdict {
    let b = input.bundle;
    let policy = input.policy;
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

    checks.push(match (b.claims.tls_spki_sha256.as_ref(), input.tls_spki_sha256) {
        (Some(want), Some(seen)) if want.0 == seen => {
            Check::pass(check::TLS_KEY, "RA-TLS: the server's TLS key is the attested one")
        }
        (Some(want), Some(seen)) => Check::fail(
            check::TLS_KEY,
            format!(
                "the TLS server key {} is not the attested key {}: another machine or a proxy answered",
                hex::encode(seen),
                hex::encode(want.0)
            ),
        ),
        (None, Some(_)) => Check::fail(check::TLS_KEY, "served over TLS but the claims name no TLS key"),
        (_, None) if input.policy.dangerous_allow_plain_http => Check::not_checked(
            check::TLS_KEY,
            "fetched over plain HTTP (dangerous_allow_plain_http): the attested TLS key was not compared",
        ),
        (_, None) => Check::fail(
            check::TLS_KEY,
            "fetched over plain HTTP: without RA-TLS nothing shows this evidence came from the node listed (a relay could pass on another's); serve the agent's RA-TLS port to validators",
        ),
    });

    // The CPU TEE, with report_data from *our* nonce.
    let expected = report_data(input.nonce, &b.claims);
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
                    appraise(v, policy, Some(&expected), input.at)
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
            appraise(v, policy, Some(&expected), input.at)
        }
        (tee, given) => {
            let kind = match tee {
                TeeEvidence::Tdx { .. } => "TDX",
                TeeEvidence::SevSnp { .. } => "SEV-SNP",
            };
            let detail = match given {
                TeeCollateral::Unavailable(why) => format!("no {kind} collateral: {why}"),
                _ => format!("no {kind} collateral to verify this evidence with: fetch it (tvm-verifier collateral)"),
            };
            Verdict::new(vec![Check::fail(check::TEE_COLLATERAL, detail)], None)
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
            nonce: Some(input.nonce.0),
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
        checks,
        tee,
        gpus,
    }
}
