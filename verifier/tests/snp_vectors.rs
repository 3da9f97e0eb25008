//! SEV-SNP reports captured on real hardware, with their VCEK/VLEK, and the
//! outcome SOURCES.md says a correct verifier reaches.

mod common;
use common::{at, failed, testdata};
use tvm_verifier::tee::snp::{self, checks::*, SnpInput};
use tvm_verifier::{appraise, Facts, Policy, Status, Verification};

pub fn run(report: &[u8], vek: &[u8], when: &str) -> Verification {
    let endorsement = snp::SnpEndorsement::prepare(vek, None);
    snp::verify(&SnpInput {
        report,
        endorsement: &endorsement,
        grace_seconds: 0,
        at: at(when),
    })
}

const SNP1: (&str, &str) = (
    "snp/gosevguest_milan_report.bin",
    "snp/gosevguest_milan_vcek.der",
);
const SNP2: (&str, &str) = ("snp/virtee_milan_report.hex", "snp/virtee_milan_vcek.der");
const SNP3: (&str, &str) = ("snp/trustee_milan_report.bin", "snp/trustee_milan_vcek.der");
const SNP4: (&str, &str) = (
    "snp/trustee_milan_vlek_report.bin",
    "snp/trustee_milan_vlek.der",
);
const WHEN: &str = "2025-06-01T00:00:00Z";

#[test]
fn vcek_reports_verify() {
    for (r, k) in [SNP1, SNP2, SNP3] {
        let v = run(&testdata(r), &testdata(k), WHEN);
        assert!(v.genuine(), "{r}: {:?}", failed(&v));
        let Some(Facts::SevSnp(f)) = v.facts() else {
            panic!()
        };
        assert_eq!(f.signer, Some(tvm_certs::AmdSigner::Vcek));
        assert_eq!(f.product, Some(tvm_certs::AmdProduct::Milan));
    }
}

#[test]
fn snp1_facts_match_sources() {
    let v = run(&testdata(SNP1.0), &testdata(SNP1.1), WHEN);
    let Some(Facts::SevSnp(f)) = v.facts() else {
        panic!()
    };
    assert_eq!(hex::encode(f.measurement), "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01");
    assert_eq!(
        hex::encode(f.report_data),
        format!("0102030405{}", "0".repeat(118))
    );
    assert_eq!(hex::encode(f.chip_id), "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d");
    assert_eq!(f.guest_policy, 0xb0000);
    assert_eq!(
        (
            f.reported_tcb.bootloader,
            f.reported_tcb.tee,
            f.reported_tcb.snp,
            f.reported_tcb.microcode
        ),
        (2, 0, 5, 68)
    );
    assert!(f.debug_allowed && f.smt_allowed && !f.migration_agent_allowed);
    assert_eq!(f.vmpl, 0);
    // Genuine, but its guest policy allows debugging, no AMD CRL was given
    // and no manifest lists its image: the default policy refuses it for each.
    let verdict = appraise(
        v,
        &Policy::default(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        None,
        at(WHEN),
    );
    assert!(!verdict.accepted());
    assert_eq!(
        verdict.failures().map(|c| c.name).collect::<Vec<_>>(),
        vec!["snp.revocation", "guest.debug", "measurement"]
    );
}

#[test]
fn snp2_bit_flip_in_byte_21_fails_the_signature() {
    let mut r = testdata(SNP2.0);
    r[21] ^= 0x80;
    let v = run(&r, &testdata(SNP2.1), WHEN);
    assert_eq!(
        failed(&v).iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![REPORT_SIGNATURE]
    );
}

#[test]
fn snp3_reported_tcb_change_fails_signature_and_tcb() {
    let mut r = testdata(SNP3.0);
    r[384] = r[384].wrapping_add(1);
    let v = run(&r, &testdata(SNP3.1), WHEN);
    let names: Vec<_> = failed(&v).iter().map(|f| f.0).collect();
    assert_eq!(names, vec![REPORT_SIGNATURE, VEK_TCB]);
}

#[test]
fn snp4_vlek_verifies_inside_its_window_only() {
    let (r, k) = (testdata(SNP4.0), testdata(SNP4.1));
    let v = run(&r, &k, "2025-06-01T00:00:00Z");
    assert!(v.genuine(), "{:?}", failed(&v));
    let Some(Facts::SevSnp(f)) = v.facts() else {
        panic!()
    };
    assert_eq!(
        (f.signer, f.report_version, f.vmpl),
        (Some(tvm_certs::AmdSigner::Vlek), 3, 1)
    );
    assert_eq!(hex::encode(f.chip_id), "0".repeat(128));
    for outside in [
        "2024-12-10T22:14:20Z",
        "2025-12-10T22:14:22Z",
        "2026-06-01T00:00:00Z",
    ] {
        let v = run(&r, &k, outside);
        let f = failed(&v);
        assert_eq!(f.len(), 1, "{outside}: {f:?}");
        assert_eq!(f[0].0, VEK_VALIDITY, "{outside}");
    }
    // Genuine but from VMPL 1: the default policy wants VMPL 0.
    let verdict = appraise(
        v,
        &no_crl_needed(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        None,
        at("2025-06-01T00:00:00Z"),
    );
    assert_eq!(
        verdict.failures().map(|c| c.name).collect::<Vec<_>>(),
        vec!["vmpl"]
    );
}

/// The default policy, but accepting evidence without AMD's CRL (the
/// vectors come without one).
fn no_crl_needed() -> Policy {
    let mut p = common::unmeasured();
    p.snp.dangerous_allow_missing_crl = true;
    p
}

#[test]
fn report_data_binding_is_checked_when_expected() {
    let v = run(&testdata(SNP2.0), &testdata(SNP2.1), WHEN);
    let Some(Facts::SevSnp(f)) = v.facts() else {
        panic!()
    };
    let mut want = f.report_data;
    let ok = appraise(
        v.clone(),
        &no_crl_needed(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        Some(&want),
        at(WHEN),
    );
    assert!(ok.accepted(), "{}", ok.render());
    // Without a CRL the default policy refuses the same genuine report.
    let strict = appraise(
        v.clone(),
        &Policy::default(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        Some(&want),
        at(WHEN),
    );
    let revocation = strict.check("snp.revocation").unwrap();
    assert_eq!(revocation.status, Status::Fail);
    assert!(
        revocation.detail.contains("dangerous_allow_missing_crl"),
        "{}",
        revocation.detail
    );
    want[0] ^= 1;
    let wrong = appraise(
        v,
        &no_crl_needed(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        Some(&want),
        at(WHEN),
    );
    assert_eq!(
        wrong.failures().map(|c| c.name).collect::<Vec<_>>(),
        vec!["report_data"]
    );
}

#[test]
fn amd_crl_is_reported_and_a_foreign_crl_refused() {
    let (r, k) = (testdata(SNP2.0), testdata(SNP2.1));
    let at = common::at(WHEN);
    let check = |e: &snp::SnpEndorsement| {
        let v = snp::verify(&SnpInput {
            report: &r,
            endorsement: e,
            at,
            grace_seconds: 0,
        });
        v.checks()
            .iter()
            .find(|c| c.name == AMD_CRL)
            .cloned()
            .unwrap()
    };
    // Without a CRL, revocation is shown as not checked, and why.
    let plain = snp::SnpEndorsement::prepare(&k, None);
    let c = check(&plain);
    assert_eq!(c.status, Status::NotChecked);
    assert!(c.detail.contains("no AMD CRL given"), "{}", c.detail);
    // A CRL that AMD's ARK did not sign (Intel's root CA CRL) is refused.
    let intel =
        tvm_certs::intel::parse_collateral(&testdata("tdx/dcapqvl_tdx_quote_v4_collateral.json"))
            .unwrap();
    let foreign = snp::SnpEndorsement::prepare(&k, None).with_crl(Ok(&intel.root_ca_crl));
    let c = check(&foreign);
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.contains("not signed by AMD's Milan ARK"),
        "{}",
        c.detail
    );
    // Garbage is refused too.
    let c = check(&snp::SnpEndorsement::prepare(&k, None).with_crl(Ok(b"not a crl")));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("not a DER CRL"), "{}", c.detail);
}
