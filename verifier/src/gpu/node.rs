//! A node's GPUs and NVSwitches appraised together: each device verified (in
//! parallel), compared with its RIMs, its revocation status applied, then the
//! node-level checks (one nonce, distinct devices, protected-PCIe topology)
//! and the policy.

use std::collections::BTreeMap;

use crate::gpu::input::DeviceEvidence;
use crate::gpu::rim::{self, Rim, RimError, RimKind};
use crate::gpu::spdm::{self, MeasurementReport};
use crate::gpu::topology;
use crate::gpu::{self, Arch, DeviceInput};
use crate::policy::GpuPolicy;
use crate::verdict::{Check, Status, Verdict};

pub mod check {
    pub const RIM_DRIVER: &str = "rim.driver";
    pub const RIM_VBIOS: &str = "rim.vbios";
    pub const RIM_MEASUREMENTS: &str = "rim.measurements";
    pub const REVOCATION: &str = "device.revocation";
    pub const NODE_NONCE: &str = "node.nonce";
    pub const NODE_DISTINCT: &str = "node.distinct";
    pub const NODE_TOPOLOGY: &str = "node.topology";
}

/// A RIM file as given: verified, or why not.
#[derive(Debug, Clone)]
pub struct RimInput {
    pub name: String,
    pub rim: Result<Rim, RimError>,
    /// OCSP status of the RIM's signer chain; `None`: not asked.
    pub revocation: Option<Revocation>,
}

impl RimInput {
    pub fn verify(name: impl Into<String>, xml: &[u8], at: i64) -> Self {
        RimInput {
            name: name.into(),
            rim: Rim::verify(xml, at),
            revocation: None,
        }
    }
}

/// What is known of a device's certificates' revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every checked certificate is good per a verified OCSP answer.
    Good(String),
    /// A certificate is revoked (or the answer is unusable): the reason.
    Bad(String),
    /// On hold (certificateHold): accepted only by `dangerous_allow_hold`.
    Hold(String),
    /// No answer to go by (offline, not fetched).
    Unknown(String),
}

pub struct NodeInput<'a> {
    pub devices: &'a [DeviceEvidence],
    /// The nonce every device must answer; `None` leaves it not checked.
    pub nonce: Option<[u8; spdm::NONCE_LEN]>,
    pub rims: &'a [RimInput],
    /// Revocation per device, in `devices` order; missing = unknown.
    pub revocation: &'a [Revocation],
    pub policy: &'a GpuPolicy,
    pub at: i64,
    pub root: gpu::DeviceRoot<'a>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceVerdict {
    pub(crate) label: String,
    /// From the device certificates, when they verified.
    pub(crate) arch: Option<Arch>,
    pub(crate) verdict: Verdict,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeVerdict {
    pub(crate) devices: Vec<DeviceVerdict>,
    pub(crate) checks: Vec<Check>,
    pub(crate) accepted: bool,
}

impl DeviceVerdict {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// From the device certificates, when they verified.
    pub fn arch(&self) -> Option<Arch> {
        self.arch
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

impl NodeVerdict {
    pub fn devices(&self) -> &[DeviceVerdict] {
        &self.devices
    }

    /// The node-level checks (one nonce, distinct devices, topology, policy).
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Every device and every node-level check passed.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.devices {
            out.push_str(&format!("== {} ==\n", d.label));
            out.push_str(&d.verdict.render());
            out.push('\n');
        }
        out.push_str("== node ==\n");
        out.push_str(&crate::verdict::render_checks(&self.checks));
        if self.accepted {
            out.push_str(&format!(
                "\nNODE ACCEPTED ({} devices)\n",
                self.devices.len()
            ));
        } else {
            out.push_str("\nNODE REJECTED\n");
        }
        out
    }

    /// Identities of the accepted GPUs (not switches), for counting each GPU
    /// once network-wide.
    pub fn gpu_ids(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter(|d| d.verdict.accepted && d.arch.is_some_and(|a| !a.is_switch()))
            .filter_map(|d| match &d.verdict.facts {
                Some(crate::Facts::Gpu(f)) => f.device_id.clone(),
                _ => None,
            })
            .collect()
    }
}

/// Appraise every device of a node, and the node.
pub fn appraise_node(input: &NodeInput<'_>) -> NodeVerdict {
    let verified = verify_all(input);
    let mut devices = Vec::with_capacity(verified.len());
    let mut reports = Vec::with_capacity(verified.len());
    for (i, (d, v)) in input.devices.iter().zip(verified).enumerate() {
        let genuine = v.verification.genuine();
        let arch = v.arch;
        let mut checks = v.verification.checks;
        match (&v.report, genuine) {
            (Some(report), true) => {
                let mut appraisal = rim_checks(report, arch, input.rims, input.policy);
                appraisal.push(revocation_check(input.revocation.get(i), input.policy));
                apply_requirements(&mut appraisal, input.policy);
                checks.extend(appraisal);
            }
            _ => {
                for name in [
                    check::RIM_DRIVER,
                    check::RIM_VBIOS,
                    check::RIM_MEASUREMENTS,
                    check::REVOCATION,
                ] {
                    checks.push(Check::not_checked(name, "evidence did not verify"));
                }
            }
        }
        reports.push((d.label.clone(), arch, v.report, genuine));
        devices.push(DeviceVerdict {
            label: d.label.clone(),
            arch,
            verdict: Verdict::new(checks, v.verification.facts),
        });
    }

    let mut checks = Vec::new();
    checks.push(node_nonce(&reports));
    checks.push(distinct(&devices));
    // The certificates' word on what a device is, else what the file said.
    let switches = reports
        .iter()
        .zip(input.devices)
        .filter(|(r, d)| r.1.or(d.arch).is_some_and(|a| a.is_switch()))
        .count();
    let gpus = input.devices.len() - switches;
    // GPUs in protected-PCIe mode are only safe with all their switches attested.
    let ppcie_gpus = reports
        .iter()
        .filter_map(|r| r.2.as_ref())
        .filter(|r| topology::in_ppcie_mode(r))
        .count();
    let blackwell = reports
        .iter()
        .zip(input.devices)
        .any(|(r, d)| r.1.or(d.arch) == Some(Arch::Blackwell));
    let unverified = reports.iter().filter(|r| !r.3).count();
    checks.push(if !input.policy.require_ppcie_topology {
        Check::not_checked(check::NODE_TOPOLOGY, "the policy does not require the multi-GPU topology")
        } else if unverified > 0 {
        // The node fails anyway; a topology of the rest would mislead.
        Check::not_checked(
            check::NODE_TOPOLOGY,
            format!("{unverified} device(s) did not verify: the topology is judged on a whole node only"),
        )
    } else if switches == 0 && ppcie_gpus == 0 && !blackwell {
        Check::not_checked(
            check::NODE_TOPOLOGY,
            format!("{gpus} GPU(s) in single-GPU mode and no NVSwitch: no protected-PCIe topology to check"),
        )
    } else {
        let parsed: Vec<topology::Device> = reports
            .iter()
            .zip(&devices)
            .filter(|((_, _, _, genuine), _)| *genuine)
            .filter_map(|((label, arch, report, _), d)| {
                Some(topology::Device {
                    label: label.as_str(),
                    arch: (*arch)?,
                    report: report.as_ref()?,
                    device_id: match &d.verdict.facts {
                        Some(crate::Facts::Gpu(f)) => f.device_id.as_deref(),
                        _ => None,
                    },
                })
            })
            .collect();
        let found = if blackwell {
            topology::check_blackwell(&parsed)
        } else {
            topology::check(&parsed)
        };
        match found {
            Ok(s) => Check::pass(check::NODE_TOPOLOGY, s),
            Err(e) => Check::fail(check::NODE_TOPOLOGY, e),
        }
    });
    let accepted = devices.iter().all(|d| d.verdict.accepted)
        && !devices.is_empty()
        && checks.iter().all(|c| c.status != Status::Fail);
    NodeVerdict {
        devices,
        checks,
        accepted,
    }
}

/// Devices are independent: verify them on all cores.
fn verify_all(input: &NodeInput<'_>) -> Vec<gpu::DeviceVerification> {
    let one = |d: &DeviceEvidence| {
        gpu::verify(&DeviceInput {
            evidence: &d.evidence,
            chain: &d.chain,
            nonce: input.nonce.as_ref(),
            arch: d.arch,
            at: input.at,
            root: input.root,
        })
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(input.devices.len());
    if threads <= 1 {
        return input.devices.iter().map(one).collect();
    }
    let per = input.devices.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = input
            .devices
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(one).collect::<Vec<_>>()))
            .collect();
        // A panicking verifier thread must not shift the devices out of line
        // with their results: its devices fail, by name.
        handles
            .into_iter()
            .zip(input.devices.chunks(per))
            .flat_map(|(h, chunk)| {
                h.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|_| gpu::DeviceVerification::internal_error("the verifier panicked"))
                        .collect()
                })
            })
            .collect()
    })
}

/// Pick the RIM of `kind` for the reported version and check it.
fn pick<'r>(
    kind: RimKind,
    report: &MeasurementReport,
    rims: &'r [RimInput],
) -> Result<Option<(&'r Rim, Option<&'r Revocation>)>, String> {
    let of_kind: Vec<(&Rim, Option<&Revocation>)> = rims
        .iter()
        .filter_map(|r| r.rim.as_ref().ok().map(|rim| (rim, r.revocation.as_ref())))
        .filter(|(r, _)| r.kind == kind)
        .collect();
    if let Some(r) = of_kind
        .iter()
        .find(|(r, _)| rim::version_matches(r, report).is_ok())
    {
        return Ok(Some(*r));
    }
    if let Some((r, _)) = of_kind.first() {
        return Err(rim::version_matches(r, report).err().unwrap_or_default());
    }
    // A RIM that did not verify may have been the one meant for this device.
    let broken: Vec<String> = rims
        .iter()
        .filter_map(|r| r.rim.as_ref().err().map(|e| format!("{}: {e}", r.name)))
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "no valid {} RIM: {}",
            kind.name(),
            broken.join("; ")
        ));
    }
    Ok(None)
}

fn rim_checks(
    report: &MeasurementReport,
    arch: Option<Arch>,
    rims: &[RimInput],
    policy: &GpuPolicy,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut used = Vec::new();
    let kinds: &[(RimKind, &'static str)] = if arch.is_some_and(|a| a.is_switch()) {
        &[(RimKind::Vbios, check::RIM_VBIOS)]
    } else {
        &[
            (RimKind::Driver, check::RIM_DRIVER),
            (RimKind::Vbios, check::RIM_VBIOS),
        ]
    };
    let mut missing = false;
    for (kind, name) in kinds {
        match pick(*kind, report, rims) {
            // A revoked RIM signer voids the RIM. (A signer whose status is
            // unknown is shown; device revocation is what the policy requires.)
            Ok(Some((r, revocation))) => {
                let void = match revocation {
                    Some(Revocation::Bad(why)) => Some(why.clone()),
                    Some(Revocation::Hold(why)) if !policy.dangerous_allow_hold => {
                        Some(format!("{why} (certificateHold)"))
                    }
                    _ => None,
                };
                if let Some(why) = void {
                    missing = true;
                    checks.push(Check::fail(
                        name,
                        format!(
                            "{} {}: its signer chain is revoked: {why}",
                            r.product, r.version
                        ),
                    ));
                    continue;
                }
                used.push(r);
                let signer = match revocation {
                    Some(Revocation::Good(_)) => "signer unrevoked per OCSP",
                    Some(_) | None => "signer revocation not checked",
                };
                checks.push(Check::pass(
                    name,
                    format!(
                        "{} {} (signed by NVIDIA, tag {:.16}…; {signer})",
                        r.product, r.version, r.tag_id
                    ),
                ));
            }
            Ok(None) => {
                missing = true;
                checks.push(Check::not_checked(
                    name,
                    format!("no {} RIM given for this device", kind.name()),
                ));
            }
            Err(e) => {
                missing = true;
                checks.push(Check::fail(name, e));
            }
        }
    }
    if used.is_empty() {
        checks.push(Check::not_checked(
            check::RIM_MEASUREMENTS,
            "no reference values to compare with",
        ));
        return checks;
    }
    let c = rim::compare(report, &used);
    let tolerated: Vec<u16> = c
        .mismatched_indices()
        .into_iter()
        .filter(|i| policy.dangerous_allow_mismatched_indices.contains(i))
        .collect();
    let total = c.matched.len() + c.mismatched.len() + c.missing.len();
    let mut problems = Vec::new();
    for (i, reported, golden) in &c.mismatched {
        if !tolerated.contains(i) {
            // NVIDIA: index 9 holds, in part, the CC-mode setting (on or
            // devtools) kept in the GPU (nvtrust issue 132).
            let hint = if *i == CC_MODE_INDEX {
                " (NVIDIA: this index covers, in part, the GPU's CC-mode setting; a GPU in devtools mode differs here)"
            } else {
                ""
            };
            problems.push(format!(
                "index {i}: reported {reported}, RIM has {golden}{hint}"
            ));
        }
    }
    if !c.missing.is_empty() {
        problems.push(format!("no block for active indices {:?}", c.missing));
    }
    if !c.conflicting.is_empty() {
        problems.push(format!(
            "indices {:?} are active in two RIMs",
            c.conflicting
        ));
    }
    checks.push(if problems.is_empty() {
        let note = if tolerated.is_empty() {
            String::new()
        } else {
            format!("; mismatch at {tolerated:?} tolerated by dangerous_allow_mismatched_indices")
        };
        let partial = if missing {
            " (only the RIMs given)"
        } else {
            ""
        };
        Check::pass(
            check::RIM_MEASUREMENTS,
            format!(
                "{} of {total} active measurements match{partial}{note}",
                c.matched.len()
            ),
        )
    } else {
        Check::fail(
            check::RIM_MEASUREMENTS,
            format!(
                "{} of {total} match; mismatching: {}",
                c.matched.len(),
                problems.join("; ")
            ),
        )
    });
    checks
}

/// The VBIOS RIM index that depends on the GPU's CC mode (on vs devtools).
const CC_MODE_INDEX: u16 = 9;

fn revocation_check(r: Option<&Revocation>, policy: &GpuPolicy) -> Check {
    match r {
        Some(Revocation::Good(s)) => Check::pass(check::REVOCATION, s.clone()),
        Some(Revocation::Bad(s)) => Check::fail(check::REVOCATION, s.clone()),
        Some(Revocation::Hold(s)) if policy.dangerous_allow_hold => Check::pass(
            check::REVOCATION,
            format!("{s} (on hold, accepted by dangerous_allow_hold)"),
        ),
        Some(Revocation::Hold(s)) => Check::fail(
            check::REVOCATION,
            format!("{s}: NVIDIA put the certificate on hold"),
        ),
        Some(Revocation::Unknown(s)) => Check::not_checked(check::REVOCATION, s.clone()),
        None => Check::not_checked(check::REVOCATION, "no OCSP answer for this device's chain"),
    }
}

/// Not-checked appraisal checks the policy requires become failures, saying so.
fn apply_requirements(checks: &mut [Check], policy: &GpuPolicy) {
    for c in checks.iter_mut() {
        if c.status != Status::NotChecked {
            continue;
        }
        let why = match c.name {
            check::RIM_DRIVER | check::RIM_VBIOS | check::RIM_MEASUREMENTS
                if policy.require_rims =>
            {
                "the policy requires NVIDIA reference values (RIMs): give --rim FILE or use --fetch"
            }
            check::REVOCATION if policy.require_revocation_check => {
                "the policy requires an OCSP check of the device chain: use --fetch (NVIDIA's OCSP service) or import OCSP answers (collateral import)"
            }
            _ => continue,
        };
        c.status = Status::Fail;
        c.detail = format!("{}; {why}", c.detail);
    }
}

type Parsed = (String, Option<Arch>, Option<MeasurementReport>, bool);

fn node_nonce(reports: &[Parsed]) -> Check {
    let mut by_nonce: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (label, _, r, _) in reports {
        if let Some(r) = r {
            by_nonce
                .entry(hex::encode(r.nonce))
                .or_default()
                .push(label);
        }
    }
    match by_nonce.len() {
        0 if reports.is_empty() => Check::fail(
            check::NODE_NONCE,
            "no GPU or NVSwitch evidence was given (an empty list): give at least one device's report",
        ),
        0 => Check::not_checked(check::NODE_NONCE, "no device evidence parsed"),
        1 => Check::pass(
            check::NODE_NONCE,
            format!(
                "all {} devices answer {}",
                reports.len(),
                by_nonce
                    .keys()
                    .next()
                    .map(String::as_str)
                    .unwrap_or_default()
            ),
        ),
        _ => Check::fail(
            check::NODE_NONCE,
            format!(
                "devices answer different nonces: {}",
                by_nonce
                    .iter()
                    .map(|(n, l)| format!("{:.16}… by {}", n, l.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

fn distinct(devices: &[DeviceVerdict]) -> Check {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for d in devices {
        if let Some(crate::Facts::Gpu(f)) = &d.verdict.facts {
            if let Some(id) = f.device_id.as_deref() {
                if let Some(first) = seen.insert(id, &d.label) {
                    return Check::fail(
                        check::NODE_DISTINCT,
                        format!(
                            "{} and {} are the same device ({id}): evidence was duplicated",
                            first, d.label
                        ),
                    );
                }
            }
        }
    }
    Check::pass(
        check::NODE_DISTINCT,
        format!("{} distinct devices", seen.len()),
    )
}
