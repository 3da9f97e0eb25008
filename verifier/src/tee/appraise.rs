//! Does genuine evidence meet my policy? Runs only on what `verify` passed:
//! facts from evidence that failed verification are not trusted.

use tvm_protocol::binding::{replay_runtime_events, runtime_event, runtime_events};
use tvm_protocol::evidence::{NodeType, Runtime, RuntimeEvent};

use crate::facts::{Facts, SnpFacts, TdxFacts};
use crate::image::{appraise_measurement, Images};
use crate::policy::Policy;
use crate::verdict::{Check, Verdict, Verification};

pub mod checks {
    pub const TCB_STATUS: &str = "tcb.status";
    pub const TCB_ADVISORIES: &str = "tcb.advisories";
    pub const TD_DEBUG: &str = "td.debug";
    pub const GUEST_DEBUG: &str = "guest.debug";
    pub const GUEST_MIGRATION_AGENT: &str = "guest.migration_agent";
    pub const GUEST_SMT: &str = "guest.smt";
    pub const VMPL: &str = "vmpl";
    pub const TCB_MINIMUM: &str = "tcb.minimum";
    pub const SNP_PRODUCT: &str = "snp.product";
    pub const SNP_REVOCATION: &str = "snp.revocation";
    pub const MEASUREMENT: &str = "measurement";
    pub const RUNTIME_EVENTS: &str = "runtime.events";
    pub const REPORT_DATA: &str = "report_data";
}
use checks::*;

/// What the `measurement` check compares a quote with.
#[derive(Clone, Copy)]
pub struct ImageInput<'a> {
    /// The manifests accepted under the policy's operator keys.
    pub images: &'a Images,
    /// The node type the claims give (`None`: any).
    pub node_type: Option<NodeType>,
    /// The TDX event log (CCEL) the node sent, to name a differing event.
    pub event_log: Option<&'a [u8]>,
    /// The runtime events the node sent and the claims' runtime they must
    /// be (`runtime.events`); `None`: a lone quote, not checked.
    pub runtime: Option<(&'a [RuntimeEvent], &'a Runtime)>,
}

impl<'a> ImageInput<'a> {
    pub fn new(images: &'a Images) -> Self {
        ImageInput {
            images,
            node_type: None,
            event_log: None,
            runtime: None,
        }
    }
}

/// Apply `policy` to a verification. `image` is what `measurement` compares
/// the quote with; `expected_report_data` is what the quote must carry
/// (from the nonce and claims); `None` leaves binding unchecked.
pub fn appraise(
    v: Verification,
    policy: &Policy,
    image: &ImageInput<'_>,
    expected_report_data: Option<&[u8; 64]>,
    at: i64,
) -> Verdict {
    let mut checks = v.checks;
    let policy_checks: &[&str] = match &v.facts {
        Some(Facts::SevSnp(_)) => &[
            SNP_PRODUCT,
            SNP_REVOCATION,
            GUEST_DEBUG,
            GUEST_MIGRATION_AGENT,
            GUEST_SMT,
            VMPL,
            TCB_MINIMUM,
            RUNTIME_EVENTS,
            MEASUREMENT,
            REPORT_DATA,
        ],
        _ => &[
            TCB_STATUS,
            TCB_ADVISORIES,
            TD_DEBUG,
            RUNTIME_EVENTS,
            MEASUREMENT,
            REPORT_DATA,
        ],
    };
    // Verified means no check failed. A check that could not run for lack of
    // input (no CRL) must not switch the policy checks off: that would let a
    // wrong nonce through.
    let genuine = checks
        .iter()
        .all(|c| c.status != crate::verdict::Status::Fail);
    match (&v.facts, genuine) {
        (Some(Facts::Tdx(f)), true) => checks.extend(appraise_tdx(f, policy)),
        (Some(Facts::SevSnp(f)), true) => {
            // verify says whether AMD's CRL was checked; whether an unchecked
            // one will do is this policy's call.
            let crl_checked = checks.iter().any(|c| {
                c.name == crate::tee::snp::checks::AMD_CRL
                    && c.status == crate::verdict::Status::Pass
            });
            checks.push(
                match (crl_checked, policy.snp.dangerous_allow_missing_crl) {
                    (true, _) => Check::pass(SNP_REVOCATION, "checked against AMD's CRL"),
                    (false, true) => Check::pass(
                        SNP_REVOCATION,
                        "AMD's CRL was not checked, allowed by dangerous_allow_missing_crl",
                    ),
                    (false, false) => Check::fail(
                        SNP_REVOCATION,
                        "AMD's CRL was not checked, so a revoked VCEK, VLEK or ASK would pass: give the CRL (validators fetch it from AMD KDS), or set snp.dangerous_allow_missing_crl",
                    ),
                },
            );
            checks.extend(appraise_snp(f, policy));
        }
        _ => {
            for name in policy_checks {
                checks.push(Check::not_checked(name, "evidence did not verify"));
            }
            return Verdict::new(checks, v.facts);
        }
    }
    if let (Some(facts), Some((events, runtime))) = (&v.facts, image.runtime) {
        checks.push(appraise_runtime(facts, events, runtime));
    }
    if let Some(facts) = &v.facts {
        checks.push(appraise_measurement(
            facts,
            image.node_type,
            image.event_log,
            image.images,
            &policy.images,
            at,
        ));
    }
    let actual = match &v.facts {
        Some(Facts::Tdx(f)) => Some(&f.report_data),
        Some(Facts::SevSnp(f)) => Some(&f.report_data),
        Some(Facts::Gpu(_)) | None => None,
    };
    let shown = actual.map_or_else(|| "unknown".to_string(), hex::encode);
    checks.push(match expected_report_data {
        None => Check::not_checked(REPORT_DATA, format!("no nonce given; report_data is {shown}")),
        Some(want) if actual == Some(want) => Check::pass(REPORT_DATA, "bound to this nonce and these claims"),
        Some(want) => Check::fail(
            REPORT_DATA,
            format!(
                "report_data {shown} is not the expected {}: the evidence answers another nonce, was relayed from another machine, or its claims were changed",
                hex::encode(want)
            ),
        ),
    });
    Verdict::new(checks, v.facts)
}

/// The runtime the agent recorded at start: only known event types, exactly
/// the events the claims' runtime makes, and on TDX replaying to RTMR3.
fn appraise_runtime(facts: &Facts, events: &[RuntimeEvent], runtime: &Runtime) -> Check {
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| !runtime_event::KNOWN.contains(&e.kind.as_str()))
    {
        return Check::fail(
            RUNTIME_EVENTS,
            format!(
                "runtime event {i} has the unknown type {:?} (known: {}): software that records other runtime events is not software this verifier can vouch for",
                e.kind,
                runtime_event::KNOWN.join(", ")
            ),
        );
    }
    let show = |ev: &[RuntimeEvent]| {
        ev.iter()
            .map(|e| format!("{}={}", e.kind, e.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = runtime_events(runtime);
    if events != want.as_slice() {
        return Check::fail(
            RUNTIME_EVENTS,
            format!(
                "the runtime events [{}] are not the claims' runtime [{}]",
                show(events),
                show(&want)
            ),
        );
    }
    match facts {
        Facts::Tdx(f) => {
            let replayed = replay_runtime_events(events);
            if replayed == f.rtmr[3] {
                Check::pass(
                    RUNTIME_EVENTS,
                    format!(
                        "RTMR3 holds {} runtime events: {}",
                        events.len(),
                        show(events)
                    ),
                )
            } else {
                Check::fail(
                    RUNTIME_EVENTS,
                    format!(
                        "RTMR3 is {} but the runtime events replay to {}: something other than the agent extended RTMR3, or the agent restarted with another configuration",
                        hex::encode(f.rtmr[3]),
                        hex::encode(replayed)
                    ),
                )
            }
        }
        Facts::SevSnp(_) => Check::pass(
            RUNTIME_EVENTS,
            format!(
                "{} runtime events, bound by report_data (SEV-SNP has no run-time register): {}",
                events.len(),
                show(events)
            ),
        ),
        Facts::Gpu(_) => Check::not_checked(RUNTIME_EVENTS, "not CPU TEE evidence"),
    }
}

fn appraise_tdx(f: &TdxFacts, policy: &Policy) -> Vec<Check> {
    let p = &policy.tdx;
    let status = f
        .tcb_status
        .map_or_else(|| "unknown".to_string(), |s| s.to_string());
    let mut out = vec![match f.tcb_status {
        Some(s) if p.allowed_tcb_statuses.contains(&s) => Check::pass(TCB_STATUS, status),
        _ => Check::fail(
            TCB_STATUS,
            format!(
                "TCB status {status} is not allowed (policy allows {:?}): update the host's BIOS, microcode and TDX module",
                p.allowed_tcb_statuses
            ),
        ),
    }];
    let disallowed: Vec<&String> = f
        .advisory_ids
        .iter()
        .filter(|a| !p.allowed_advisories.contains(a))
        .collect();
    out.push(if f.advisory_ids.is_empty() {
        Check::pass(TCB_ADVISORIES, "none")
    } else if disallowed.is_empty() {
        Check::pass(
            TCB_ADVISORIES,
            format!("{} (allowed by policy)", f.advisory_ids.join(", ")),
        )
    } else {
        Check::fail(
            TCB_ADVISORIES,
            format!(
                "platform is affected by {}, not allowed by policy",
                disallowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    });
    out.push(match (f.debug, p.dangerous_allow_debug) {
        (false, _) => Check::pass(TD_DEBUG, "debug off"),
        (true, true) => Check::pass(TD_DEBUG, "DEBUG TD accepted by dangerous_allow_debug"),
        (true, false) => Check::fail(
            TD_DEBUG,
            "the TD has debug enabled: the host can read its memory; launch a production image",
        ),
    });
    out
}

fn names(products: &[crate::policy::AmdProduct]) -> String {
    match products {
        [] => "no product".into(),
        _ => products
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn appraise_snp(f: &SnpFacts, policy: &Policy) -> Vec<Check> {
    let p = &policy.snp;
    let mut out = Vec::new();
    out.push(match f.product {
        Some(product) if p.products.contains(&product) => {
            Check::pass(SNP_PRODUCT, product.to_string())
        }
        Some(product) => Check::fail(
            SNP_PRODUCT,
            format!(
                "the report comes from an EPYC {product}; this policy accepts {}",
                names(&p.products)
            ),
        ),
        None => Check::fail(SNP_PRODUCT, "the report's AMD product is not known"),
    });
    out.push(match (f.debug_allowed, p.dangerous_allow_debug) {
        (false, _) => Check::pass(GUEST_DEBUG, "debug off"),
        (true, true) => Check::pass(GUEST_DEBUG, "debug allowed by dangerous_allow_debug"),
        (true, false) => Check::fail(
            GUEST_DEBUG,
            "guest policy allows debugging: the host can read its memory; launch with debug off",
        ),
    });
    out.push(
        match (f.migration_agent_allowed, p.dangerous_allow_migration_agent) {
            (false, _) => Check::pass(GUEST_MIGRATION_AGENT, "no migration agent"),
            (true, true) => Check::pass(
                GUEST_MIGRATION_AGENT,
                "allowed by dangerous_allow_migration_agent",
            ),
            (true, false) => Check::fail(
                GUEST_MIGRATION_AGENT,
                "guest policy allows a migration agent, which can export its memory",
            ),
        },
    );
    out.push(match (f.smt_allowed, p.allow_smt) {
        (true, false) => Check::fail(
            GUEST_SMT,
            "guest policy allows SMT but this policy requires SMT off",
        ),
        (smt, _) => Check::pass(GUEST_SMT, if smt { "SMT allowed" } else { "SMT off" }),
    });
    out.push(if p.allowed_vmpls.contains(&f.vmpl) {
        Check::pass(VMPL, format!("VMPL {}", f.vmpl))
    } else {
        Check::fail(
            VMPL,
            format!(
                "report comes from VMPL {}, policy allows {:?}",
                f.vmpl, p.allowed_vmpls
            ),
        )
    });
    out.push(match f.product.and_then(|product| p.minimum_tcb.get(&product)) {
        None => Check::not_checked(
            TCB_MINIMUM,
            match f.product {
                Some(product) => format!("policy sets no minimum TCB for {product}"),
                None => "policy sets no minimum TCB".into(),
            },
        ),
        Some(min) => {
            let t = &f.reported_tcb;
            let mut low = Vec::new();
            for (name, have, want) in [
                ("bootloader", t.bootloader, min.bootloader),
                ("tee", t.tee, min.tee),
                ("snp", t.snp, min.snp),
                ("microcode", t.microcode, min.microcode),
            ] {
                if have < want {
                    low.push(format!("{name} {have} < {want}"));
                }
            }
            if let (Some(want), have) = (min.fmc, t.fmc.unwrap_or(0)) {
                if have < want {
                    low.push(format!("fmc {have} < {want}"));
                }
            }
            if low.is_empty() {
                Check::pass(TCB_MINIMUM, "reported TCB at or above the minimum")
            } else {
                Check::fail(TCB_MINIMUM, format!("reported TCB below the minimum: {}; update the host's SEV firmware and microcode", low.join(", ")))
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::TdxFacts;
    use crate::policy::TcbStatus;
    use crate::verdict::Status;

    fn verified_td(status: Option<TcbStatus>) -> Verification {
        let facts = TdxFacts {
            quote_version: 4,
            tcb_status: status,
            advisory_ids: Vec::new(),
            fmspc: None,
            mrtd: [0; 48],
            rtmr: [[0; 48]; 4],
            report_data: [0; 64],
            td_attributes: [0; 8],
            debug: false,
            collateral_expires: None,
        };
        Verification {
            checks: vec![Check::pass("quote.signature", "test")],
            facts: Some(Facts::Tdx(facts)),
        }
    }

    fn tcb_check(policy: &Policy, status: Option<TcbStatus>) -> Status {
        let verdict = appraise(
            verified_td(status),
            policy,
            &ImageInput::new(&Images::none()),
            None,
            0,
        );
        verdict.check(TCB_STATUS).map(|c| c.status).unwrap()
    }

    // TD 1.5's relaunch statuses come from dcap-qvl; a policy can name them,
    // and the default (UpToDate only) still refuses them.
    #[test]
    fn td_relaunch_statuses_are_allowed_only_when_listed() {
        let strict = Policy::default();
        let relaunch = Policy::from_yaml(
            "tdx: {allowed_tcb_statuses: [UpToDate, TDRelaunchAdvised, TDRelaunchAdvisedConfigurationNeeded]}",
        )
        .unwrap();
        for status in [
            TcbStatus::TDRelaunchAdvised,
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        ] {
            assert_eq!(tcb_check(&strict, Some(status)), Status::Fail);
            assert_eq!(tcb_check(&relaunch, Some(status)), Status::Pass);
        }
        assert_eq!(
            tcb_check(&relaunch, Some(TcbStatus::OutOfDate)),
            Status::Fail
        );
        assert_eq!(tcb_check(&relaunch, None), Status::Fail);
    }

    #[test]
    fn dcap_status_names_read_back() {
        assert_eq!(
            crate::policy::parse_tcb_status("TDRelaunchAdvised"),
            Some(TcbStatus::TDRelaunchAdvised)
        );
        assert_eq!(crate::policy::parse_tcb_status("UpTodate"), None);
    }

    /// No real vector carries advisories, so the policy's advisory list is
    /// tested on facts (appraisal judges facts; verify made them).
    #[test]
    fn advisories_pass_only_when_the_policy_lists_every_one() {
        let with = |ids: &[&str]| {
            let mut v = verified_td(Some(TcbStatus::SWHardeningNeeded));
            if let Some(Facts::Tdx(f)) = v.facts.as_mut() {
                f.advisory_ids = ids.iter().map(|s| s.to_string()).collect();
            }
            v
        };
        let policy = Policy::from_yaml(
            "tdx: {allowed_tcb_statuses: [UpToDate, SWHardeningNeeded], allowed_advisories: [INTEL-SA-00837]}\nimages: {dangerous_allow_unmeasured: true}",
        )
        .unwrap();
        let check = |ids: &[&str], p: &Policy| {
            let v = appraise(with(ids), p, &ImageInput::new(&Images::none()), None, 0);
            let c = v.check(TCB_ADVISORIES).unwrap().clone();
            (c.status, c.detail, v.accepted())
        };
        assert_eq!(check(&[], &policy).0, Status::Pass);
        let (s, d, ok) = check(&["INTEL-SA-00837"], &policy);
        assert_eq!((s, ok), (Status::Pass, true));
        assert!(d.contains("allowed by policy"), "{d}");
        let (s, d, ok) = check(&["INTEL-SA-00837", "INTEL-SA-00960"], &policy);
        assert_eq!((s, ok), (Status::Fail, false));
        assert!(d.contains("INTEL-SA-00960") && !d.contains("00837"), "{d}");
        // The default policy allows none.
        let (s, _, _) = check(&["INTEL-SA-00837"], &Policy::default());
        assert_eq!(s, Status::Fail);
    }
}
