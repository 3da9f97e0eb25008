//! NVIDIA RIMs (NV-5 of ../shared/vectors/SOURCES.md): signatures and chains,
//! their expiry, and the comparisons SOURCES.md records.

mod common;

use common::{at, testdata};
use tvm_verifier::gpu::rim::{self, Rim, RimError, RimKind};
use tvm_verifier::gpu::spdm::MeasurementReport;

const PROD_VBIOS: &str = "nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag";
const TEST_DRIVER: &str = "nvidia/nvtrust_Driver_RIM_test_no_gpu.swidtag";
const TEST_VBIOS: &str = "nvidia/nvtrust_1010_0200_882_96005E0001_test_no_gpu.swidtag";

fn rim(file: &str) -> Rim {
    Rim::verify(&testdata(file), at("2024-06-01T00:00:00Z")).unwrap()
}

#[test]
fn the_three_rims_verify_in_their_window() {
    for (file, kind, version, active) in [
        (PROD_VBIOS, RimKind::Vbios, "96.00.74.00.1A", 12),
        (TEST_DRIVER, RimKind::Driver, "545.00", 21),
        (TEST_VBIOS, RimKind::Vbios, "96.00.5E.00.01", 12),
    ] {
        let r = rim(file);
        assert_eq!(r.kind(), kind, "{file}");
        assert_eq!(r.version(), version);
        assert_eq!(r.product(), "GH100");
        assert_eq!(r.active().count(), active, "{file}");
        assert_eq!(r.signer_chain().len(), 3, "leaf, L3 and CA; root excluded");
    }
    let driver = rim(TEST_DRIVER);
    let idx: Vec<u16> = driver.active().map(|g| g.index).collect();
    let mut want = vec![7];
    want.extend(21..=40);
    assert_eq!(idx, want);
}

#[test]
fn rims_past_their_signer_expiry_fail_as_expired() {
    // PROD's L4 signer is valid until 2025-09-05, the others until mid-2025.
    for file in [PROD_VBIOS, TEST_DRIVER, TEST_VBIOS] {
        let e = Rim::verify(&testdata(file), at("2025-10-01T00:00:00Z")).unwrap_err();
        assert!(e.is_expired(), "{file}: {e}");
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(e.to_string().contains("HCC RIM L4 Signer"), "{e}");
    }
}

#[test]
fn a_changed_golden_value_breaks_the_signature() {
    let xml = String::from_utf8(testdata(PROD_VBIOS)).unwrap();
    let changed = xml.replacen("b558fdac", "b558fdad", 1);
    assert_ne!(xml, changed);
    let e = Rim::verify(changed.as_bytes(), at("2024-06-01T00:00:00Z")).unwrap_err();
    assert!(matches!(e, RimError::Signature(_)), "{e}");
    assert!(e.to_string().contains("digest"), "{e}");
}

#[test]
fn nv1_against_the_test_rims_mismatches_as_sources_says() {
    let report = MeasurementReport::parse(&testdata("nvidia/nvtrust_hopper_report.hex")).unwrap();
    let driver = rim(TEST_DRIVER);
    let vbios = rim(TEST_VBIOS);

    let e = rim::version_matches(&driver, &report).unwrap_err();
    assert!(e.contains("550.90.07") && e.contains("545.00"), "{e}");
    let e = rim::version_matches(&vbios, &report).unwrap_err();
    assert!(
        e.contains("96.00.9f.00.01") && e.contains("96.00.5E.00.01"),
        "{e}"
    );

    let d = rim::compare(&report, &[&driver]);
    // SOURCES.md counts 6 raw matches (23, 24, 28, 33, 35, 38); NV-1 reports
    // NVDEC0 disabled, so index 35 is skipped, as NVIDIA's verifiers do.
    assert_eq!(d.matched, vec![23, 24, 28, 33, 38]);
    assert_eq!(d.skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![35]);
    let g35 = driver.golden().iter().find(|g| g.index == 35).unwrap();
    let b36 = &report.block(36).unwrap().value;
    assert!(g35
        .alternatives
        .iter()
        .any(|a| a.as_slice() == b36.as_slice()));
    assert_eq!(d.mismatched.len(), 21 - 6);
    let v = rim::compare(&report, &[&vbios]);
    assert_eq!(v.matched, vec![0, 4, 5, 6, 8, 10, 12]);
    assert_eq!(v.mismatched_indices(), vec![1, 2, 3, 9, 11]);

    let both = rim::compare(&report, &[&driver, &vbios]);
    assert!(!both.ok());
    assert!(both.conflicting.is_empty());
    assert_eq!(both.matched.len(), 12);
}

#[test]
fn nv2_against_the_prod_vbios_rim_matches_all_but_index_9() {
    let report =
        MeasurementReport::parse(&testdata("nvidia/trustee_hopper_coco_report1.hex")).unwrap();
    let vbios = rim(PROD_VBIOS);
    assert_eq!(
        rim::version_matches(&vbios, &report).unwrap(),
        "96.00.74.00.1a"
    );
    let c = rim::compare(&report, &[&vbios]);
    assert_eq!(c.matched, vec![0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12]);
    assert_eq!(c.mismatched_indices(), vec![9]);
    let (_, reported, golden) = &c.mismatched[0];
    assert!(reported.starts_with("059b32e7") && reported.ends_with("de03"));
    assert!(golden.starts_with("7f3e9382") && golden.ends_with("c098"));
}

#[test]
fn an_index_active_in_two_rims_is_a_conflict() {
    let report = MeasurementReport::parse(&testdata("nvidia/nvtrust_hopper_report.hex")).unwrap();
    let vbios = rim(TEST_VBIOS);
    let c = rim::compare(&report, &[&vbios, &vbios]);
    assert_eq!(c.conflicting.len(), 12);
    assert!(!c.ok());
}

#[test]
fn malformed_rims_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "well-formed"),
        (b"<a/>", "SoftwareIdentity"),
        (b"\xff\xfe", "UTF-8"),
        (
            br#"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd"/>"#,
            "0 XML signatures",
        ),
    ];
    for (xml, needle) in cases {
        let e = Rim::verify(xml, at("2024-06-01T00:00:00Z")).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

/// NV-1 with the RIMs NVIDIA published for its driver (550.90.07) and VBIOS
/// (96.00.9F.00.01): the one fully positive reference-value vector.
#[test]
fn nv1_matches_its_own_driver_and_vbios_rims() {
    let report = MeasurementReport::parse(&testdata("nvidia/nvtrust_hopper_report.hex")).unwrap();
    let when = at("2024-09-01T00:00:00Z");
    let driver = Rim::verify(
        &testdata("nvidia/gonv_NV_GPU_DRIVER_GH100_550.90.07.xml"),
        when,
    )
    .unwrap();
    let vbios = Rim::verify(
        &testdata("nvidia/gonv_NV_GPU_VBIOS_1010_0200_882_96009F0001.xml"),
        when,
    )
    .unwrap();
    assert_eq!(driver.kind(), RimKind::Driver);
    assert_eq!(vbios.kind(), RimKind::Vbios);
    assert_eq!(rim::version_matches(&driver, &report).unwrap(), "550.90.07");
    assert_eq!(
        rim::version_matches(&vbios, &report).unwrap(),
        "96.00.9f.00.01"
    );
    let c = rim::compare(&report, &[&driver, &vbios]);
    assert!(c.ok(), "{c:?}");
    assert!(c.mismatched.is_empty() && c.missing.is_empty() && c.conflicting.is_empty());
    let active = driver.active().count() + vbios.active().count();
    assert_eq!(c.matched.len() + c.skipped.len(), active);
    assert!(c.matched.len() >= 30, "{}", c.matched.len());
}
