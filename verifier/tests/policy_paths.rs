//! The policy's paths on real evidence: `guest.smt`, `tcb.minimum`, and the guard that
//! keeps real SEV-SNP evidence from vouching for SIMULATED claims. Each
//! fails when the property it names breaks.

mod common;
use common::{at, testdata};
use tvm_verifier::tee::snp;
use tvm_verifier::{appraise, Policy, Status, Verdict};

/// SNP-2 (virtee): TCB bl 3, tee 0, snp 8, microcode 115; SMT allowed.
fn snp2(policy: &Policy) -> Verdict {
    let when = "2025-06-01T00:00:00Z";
    let e = snp::SnpEndorsement::prepare(&testdata("snp/virtee_milan_vcek.der"), None);
    let v = snp::verify(&snp::SnpInput {
        report: &testdata("snp/virtee_milan_report.hex"),
        endorsement: &e,
        grace_seconds: 0,
        at: at(when),
    });
    assert!(v.genuine());
    appraise(
        v,
        policy,
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        None,
        at(when),
    )
}

fn snp_policy(extra: &str) -> Policy {
    // No real AMD CRL is among the vectors.
    Policy::from_yaml(&format!(
        "snp: {{dangerous_allow_missing_crl: true{extra}}}"
    ))
    .unwrap()
}

#[test]
fn snp_smt_and_minimum_tcb() {
    let check = |p: &Policy, name: &str| {
        let v = snp2(p);
        let c = v.check(name).unwrap().clone();
        (c.status, c.detail, v.accepted())
    };
    assert_eq!(check(&snp_policy(""), "guest.smt").0, Status::Pass);
    let (s, d, ok) = check(&snp_policy(", allow_smt: false"), "guest.smt");
    assert_eq!((s, ok), (Status::Fail, false), "{d}");

    let at_min = ", minimum_tcb: {milan: {bootloader: 3, tee: 0, snp: 8, microcode: 115}}";
    assert_eq!(check(&snp_policy(at_min), "tcb.minimum").0, Status::Pass);
    for (above, says) in [
        (
            ", minimum_tcb: {milan: {bootloader: 3, tee: 0, snp: 9, microcode: 115}}",
            "snp 8 < 9",
        ),
        (
            ", minimum_tcb: {milan: {bootloader: 3, tee: 0, snp: 8, microcode: 116}}",
            "microcode 115 < 116",
        ),
        (
            ", minimum_tcb: {milan: {bootloader: 4, tee: 1, snp: 8, microcode: 115}}",
            "bootloader 3 < 4, tee 0 < 1",
        ),
    ] {
        let (s, d, ok) = check(&snp_policy(above), "tcb.minimum");
        assert_eq!((s, ok), (Status::Fail, false), "{above}");
        assert!(d.contains(says), "{d}");
    }
    // A minimum for another product does not apply to SNP-2 (Milan): TCB
    // values of different products are not comparable.
    let genoa_only = ", minimum_tcb: {genoa: {bootloader: 9, tee: 9, snp: 99, microcode: 255}}";
    let (s, d, _) = check(&snp_policy(genoa_only), "tcb.minimum");
    assert_eq!(s, Status::NotChecked, "{d}");
    assert!(d.contains("no minimum TCB for Milan"), "{d}");
}

#[test]
fn snp_products_the_policy_does_not_accept_are_refused() {
    let v = snp2(&snp_policy(""));
    let c = v.check("snp.product").unwrap();
    assert_eq!((c.status, c.detail.as_str()), (Status::Pass, "Milan"));
    // A validator that refuses Milan (its VCEK seed can be extracted: docs/threat-model.md).
    let v = snp2(&snp_policy(", products: [genoa, turin]"));
    let c = v.check("snp.product").unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.contains("EPYC Milan") && c.detail.contains("accepts Genoa, Turin"),
        "{}",
        c.detail
    );
    assert!(Policy::from_yaml("snp: {products: [Bergamo]}").is_err());
}

/// Real SEV-SNP evidence in a bundle that claims to be SIMULATED is refused
/// by name, even under a devnet policy: there is no simulated SEV-SNP, and
/// a real report must not lend its standing to simulated GPUs.
#[test]
fn an_snp_report_claiming_to_be_simulated_is_refused() {
    use tvm_protocol::evidence::{Claims, EvidenceBundle, NodeType, TeeEvidence, BUNDLE_VERSION};
    use tvm_protocol::{Digest32, Nonce};
    use tvm_verifier::bundle::{appraise_bundle, BundleInput, TeeCollateral};
    // Any PEM certificate will do as a "simulated root" here: AMD's ARK.
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../certs/anchors/amd_ask_ark_milan.pem"
    ))
    .unwrap();
    let end = "-----END CERTIFICATE-----";
    let root = pem[..pem.find(end).unwrap() + end.len()].to_string();
    let mut policy = snp_policy("");
    policy.dangerous_trust_simulated = Some(tvm_verifier::policy::SimulatedRoots {
        intel_root: root.clone(),
        nvidia_root: root,
    });
    let cvm = Digest32([9; 32]);
    let bundle = EvidenceBundle {
        version: BUNDLE_VERSION,
        nonce: Nonce([1; 32]),
        tee: TeeEvidence::SevSnp {
            report: testdata("snp/virtee_milan_report.hex").into(),
            certs: None,
        },
        gpus: vec![],
        switches: vec![],
        claims: Claims {
            cvm_id: cvm,
            node_type: NodeType::Cpu,
            agent_version: "0.1.0".into(),
            simulated: true,
            gpu_reports_sha256: vec![],
            switch_reports_sha256: vec![],
            runtime: Default::default(),
        },
        runtime_events: vec![],
    };
    let e = snp::SnpEndorsement::prepare(&testdata("snp/virtee_milan_vcek.der"), None);
    let v = appraise_bundle(&BundleInput {
        bundle: &bundle,
        nonce: &Nonce([1; 32]),
        tls_spki_sha256: Some(cvm.0),
        tee_collateral: TeeCollateral::Snp(&e),
        rims: &[],
        revocation: &[],
        policy: &policy,
        images: &tvm_verifier::Images::none(),
        at: at("2025-06-01T00:00:00Z"),
    });
    assert!(!v.accepted());
    let failures: Vec<_> = v
        .failures()
        .iter()
        .map(|c| (c.name, c.detail.clone()))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "tee.collateral");
    assert!(
        failures[0].1.contains("there is no simulated SEV-SNP"),
        "{failures:?}"
    );
}
