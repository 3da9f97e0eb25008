//! TDX quotes captured on real hardware, with Intel's collateral, and the
//! outcome SOURCES.md says a correct verifier reaches.

mod common;
use common::{at, failed, testdata};
use tvm_verifier::tee::tdx::{self, checks::*, TdxInput};
use tvm_verifier::{appraise, Facts, Status, Verification};

fn run(quote: &str, collateral: &str, when: &str) -> Verification {
    let q = testdata(quote);
    let c = tdx::parse_collateral(&testdata(collateral)).unwrap();
    let root = tvm_certs::anchors::intel_sgx_root().unwrap();
    let c = tdx::TdxCollateral::prepare(c, root);
    tdx::verify(&TdxInput {
        quote: &q,
        collateral: &c,
        at: at(when),
        grace_seconds: 0,
    })
}

fn tcb(v: &Verification) -> (Option<String>, Vec<String>) {
    match v.facts() {
        Some(Facts::Tdx(f)) => (f.tcb_status.map(|s| s.to_string()), f.advisory_ids.clone()),
        _ => panic!("no TDX facts"),
    }
}

const V4: &str = "tdx/dcapqvl_tdx_quote_v4.bin";
const V4_COLL: &str = "tdx/dcapqvl_tdx_quote_v4_collateral.json";
const NEAR: &str = "tdx/dcapqvl_near_tdx_quote_v4.hex";
const NEAR_COLL: &str = "tdx/dcapqvl_near_tdx_quote_v4_collateral.json";
const V5_OUT: &str = "tdx/dcapqvl_tdx_quote_v5_outdated.bin";
const V5_COLL: &str = "tdx/dcapqvl_tdx_v5_fmspc90C06F_collateral.json";
const V5_GO: &str = "tdx/gotdxguest_tdx_quote_v5.bin";
const TAPPD: &str = "tdx/dcapqvl_tappd_tdx_quote_v4.hex";

#[test]
fn tdx1_up_to_date_across_its_window() {
    for when in [
        "2025-06-19T10:32:27Z",
        "2025-07-04T10:16:31Z",
        "2025-07-19T10:00:34Z",
    ] {
        let v = run(V4, V4_COLL, when);
        assert!(v.genuine(), "{when}: {:?}", failed(&v));
        assert_eq!(tcb(&v), (Some("UpToDate".into()), vec![]));
    }
    let v = run(V4, V4_COLL, "2025-07-04T10:16:31Z");
    let Some(Facts::Tdx(f)) = v.facts() else {
        panic!()
    };
    assert_eq!(hex::encode(f.mrtd), "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
    assert_eq!(hex::encode(f.rtmr[3]), "0".repeat(96));
    assert_eq!(hex::encode(f.report_data), "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20");
    assert_eq!(
        f.fmspc.map(hex::encode_upper).as_deref(),
        Some("B0C06F000000")
    );
    assert!(!f.debug);
    let verdict = appraise(
        v,
        &common::unmeasured(),
        &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
        None,
        at("2025-07-04T10:16:31Z"),
    );
    assert!(verdict.accepted(), "{}", verdict.render());
    assert_eq!(
        verdict.check(MEASUREMENT_NAME).unwrap().status,
        Status::NotChecked
    );
}

const MEASUREMENT_NAME: &str = "measurement";

#[test]
fn tdx2_near_up_to_date() {
    let v = run(NEAR, NEAR_COLL, "1757462400");
    assert!(v.genuine(), "{:?}", failed(&v));
    assert_eq!(tcb(&v), (Some("UpToDate".into()), vec![]));
}

#[test]
fn tdx4_v5_up_to_date() {
    for when in [
        "2026-02-18T10:58:51Z",
        "2026-03-01T00:00:00Z",
        "2026-03-20T10:41:14Z",
    ] {
        let v = run(V5_GO, V5_COLL, when);
        assert!(v.genuine(), "{when}: {:?}", failed(&v));
        assert_eq!(tcb(&v), (Some("UpToDate".into()), vec![]));
        let Some(Facts::Tdx(f)) = v.facts() else {
            panic!()
        };
        assert_eq!(f.quote_version, 5);
    }
}

#[test]
fn tdx3_and_tdx5_have_no_matching_tcb_level() {
    for (q, c, when) in [
        (V5_OUT, V5_COLL, "2026-03-01T00:00:00Z"),
        (TAPPD, V4_COLL, "2025-07-04T10:16:31Z"),
    ] {
        let v = run(q, c, when);
        let f = failed(&v);
        assert_eq!(f.len(), 1, "{q}: {f:?}");
        assert_eq!(f[0].0, TCB_LEVEL, "{q}");
        assert!(f[0].1.contains("No matching TCB level"), "{q}: {}", f[0].1);
        // Everything before the TCB match verified: signatures and chains are genuine.
        for name in [COLLATERAL_CHAIN, PCK_CHAIN, QE_REPORT, QUOTE_SIGNATURE] {
            assert_eq!(
                v.checks().iter().find(|c| c.name == name).unwrap().status,
                Status::Pass,
                "{q} {name}"
            );
        }
        let verdict = appraise(
            v,
            &common::unmeasured(),
            &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
            None,
            at(when),
        );
        assert!(!verdict.accepted());
    }
}

#[test]
fn tdx1_rejected_once_its_crl_expired() {
    let v = run(V4, V4_COLL, "2026-07-19T00:00:00Z");
    let f = failed(&v);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, COLLATERAL_FRESH);
    assert!(
        f[0].1
            .contains("Root CA CRL expired at 2026-04-03T11:21:57Z"),
        "{}",
        f[0].1
    );
    assert!(
        f[0].1.contains("PCK CRL expired at 2025-07-19T10:00:35Z"),
        "{}",
        f[0].1
    );
    // Just after the PCK CRL's nextUpdate, only the items past it are named.
    let v = run(V4, V4_COLL, "2025-07-19T10:00:36Z");
    let f = failed(&v);
    assert!(
        f[0].1.contains("PCK CRL expired") && !f[0].1.contains("Root CA CRL"),
        "{}",
        f[0].1
    );
    // Before the collateral was issued.
    let v = run(V4, V4_COLL, "2025-06-01T00:00:00Z");
    assert!(
        failed(&v)[0].1.contains("not valid until"),
        "{:?}",
        failed(&v)
    );
}

#[test]
fn grace_extends_use_of_expired_collateral_only_as_far_as_policy_says() {
    let q = testdata(V4);
    let c = tdx::parse_collateral(&testdata(V4_COLL)).unwrap();
    let root = tvm_certs::anchors::intel_sgx_root().unwrap();
    let c = tdx::TdxCollateral::prepare(c, root);
    let day = 86_400;
    let input = |when: i64, grace: u64| TdxInput {
        quote: &q,
        collateral: &c,
        at: when,
        grace_seconds: grace,
    };
    let after = at("2025-07-19T10:00:35Z") + day;
    assert!(!tdx::verify(&input(after, 0)).genuine());
    let v = tdx::verify(&input(after, 2 * day as u64));
    assert!(v.genuine(), "{:?}", failed(&v));
    let fresh = v
        .checks()
        .iter()
        .find(|c| c.name == COLLATERAL_FRESH)
        .unwrap();
    assert!(fresh.detail.contains("grace"), "{}", fresh.detail);
    assert!(!tdx::verify(&input(after + 2 * day, 2 * day as u64)).genuine());

    // A grace long enough to reach past the PCK certificate's expiry
    // (2032-02-06) does not revive the certificate: grace is for collateral
    // past nextUpdate only (dcap-qvl judges at nextUpdate, so the real time
    // is checked for certificates beside it).
    let pck_expired = at("2032-02-07T00:00:00Z");
    let grace = (pck_expired - at("2025-07-19T10:00:35Z")) as u64 + day as u64;
    let v = tdx::verify(&input(pck_expired, grace));
    let names = |v: &Verification| failed(v).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&v), vec![PCK_CHAIN], "{:?}", v.checks());
    let pck = v.checks().iter().find(|c| c.name == PCK_CHAIN).unwrap();
    assert!(
        pck.detail.contains("Intel SGX PCK Certificate")
            && pck.detail.contains("expired at 2032-02-06T23:25:51Z")
            && pck.detail.contains("not certificates"),
        "{}",
        pck.detail
    );
    // The TCB signing certificate (2032-05-06) fails the collateral chain.
    let signer_expired = at("2032-05-07T00:00:00Z");
    let grace = (signer_expired - at("2025-07-19T10:00:35Z")) as u64 + day as u64;
    let v = tdx::verify(&input(signer_expired, grace));
    assert!(names(&v).contains(&PCK_CHAIN), "{:?}", failed(&v));
    // Inside the certificates' lives, the same grace still applies.
    let v = tdx::verify(&input(at("2031-01-01T00:00:00Z"), grace));
    assert!(v.genuine(), "{:?}", failed(&v));
}
