//! NVIDIA SPDM evidence from real H100s and NVSwitches (NV-1 to NV-4 of
//! ../shared/vectors/SOURCES.md), with the outcomes their sources expect.

mod common;

use common::{at, failed, testdata};
use tvm_verifier::gpu::input::{parse_nvtrust_json, pem_chain};
use tvm_verifier::gpu::spdm::{field, MeasurementReport};
use tvm_verifier::gpu::{self, check, Arch, DeviceInput};
use tvm_verifier::Status;

const NV1_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
const NV2_NONCE: &str = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec";
pub const NV4_NONCE: &str = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";

fn nonce(h: &str) -> [u8; 32] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn verify(evidence: &[u8], chain_file: &str, n: &str) -> gpu::DeviceVerification {
    let chain = pem_chain(&testdata(chain_file)).unwrap();
    gpu::verify(&DeviceInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        evidence,
        chain: &chain,
        nonce: Some(&nonce(n)),
        arch: None,
        at: at("2025-06-01T00:00:00Z"),
    })
}

fn all_pass(v: &gpu::DeviceVerification) {
    assert!(
        failed(v.verification()).is_empty(),
        "{:?}",
        v.verification().checks()
    );
    for name in check::ORDER {
        let c = v.verification().checks().iter().find(|c| c.name == name);
        assert_eq!(c.map(|c| c.status), Some(Status::Pass), "{name}");
    }
}

#[test]
fn nv1_verifies() {
    let v = verify(
        &testdata("nvidia/nvtrust_hopper_report.hex"),
        "nvidia/nvtrust_hopper_cert_chain.pem",
        NV1_NONCE,
    );
    all_pass(&v);
    let f = v.facts().unwrap();
    assert_eq!(f.arch.map(|a| a.to_string()).as_deref(), Some("Hopper"));
    assert_eq!(f.model.as_deref(), Some("H100 PCIe (1010_0200_882)"));
    // The NVIDIA-issued (BROM) certificate's serial number.
    assert_eq!(f.device_id.as_deref(), Some("41431d480fe5e87274"));
}

/// Every opaque field and measurement trustee's parser derives from NV-1.
#[test]
fn nv1_fields_equal_trustee_claims() {
    let r = MeasurementReport::parse(&testdata("nvidia/nvtrust_hopper_report.hex")).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&testdata(
        "nvidia/trustee_hopper_report_expected_claims.json",
    ))
    .unwrap();
    let cfg = &claims["config"];
    let s = |k: &str| cfg[k].as_str().unwrap().to_string();
    let hexf = |kind| hex::encode(r.field(kind).unwrap());
    assert_eq!(r.driver_version().unwrap(), s("driver_version"));
    assert_eq!(r.vbios_version().unwrap(), s("vbios_version"));
    assert_eq!(r.text(field::PROJECT).unwrap(), s("project"));
    assert_eq!(r.text(field::PROJECT_SKU).unwrap(), s("project_sku"));
    assert_eq!(r.text(field::CHIP_SKU).unwrap(), s("chip_sku"));
    assert_eq!(r.text(field::CHIP_SKU_MOD).unwrap(), s("chip_sku_mod"));
    assert_eq!(hexf(field::PROJECT_SKU_MOD), s("project_sku_mod"));
    assert_eq!(hexf(field::BOARD_ID), s("board_id"));
    assert_eq!(hexf(field::CPR_INFO), s("cpr_info"));
    assert_eq!(hexf(field::GPU_INFO), s("gpu_info"));
    assert_eq!(hex::encode(r.fwid().unwrap()), s("fwid"));
    // trustee printed the status bytes as characters: 0x55 is "U".
    assert_eq!(r.field(field::NVDEC0_STATUS), Some(&b"U"[..]));
    assert_eq!(s("nvdec0_status"), "U");
    assert_eq!(r.field(field::PROTECTED_PCIE_STATUS), Some(&b"U"[..]));
    assert_eq!(s("protected_pcie_status"), "U");
    let counts = r.measurement_counts().unwrap();
    assert_eq!(counts.len(), 64);
    for (i, n) in counts.iter().enumerate() {
        assert_eq!(
            u64::from(*n),
            cfg["measurement_count"][(i + 1).to_string()]
                .as_u64()
                .unwrap()
        );
    }
    let m = claims["measurements"].as_object().unwrap();
    assert_eq!(m.len(), 64);
    for b in &r.blocks {
        assert_eq!(
            hex::encode(&b.value),
            m[&b.index.to_string()].as_str().unwrap(),
            "block {}",
            b.index
        );
    }
}

#[test]
fn nv2_verifies_despite_its_trailing_byte() {
    let v = verify(
        &testdata("nvidia/trustee_hopper_coco_report1.hex"),
        "nvidia/trustee_hopper_coco_cert_chain1.pem",
        NV2_NONCE,
    );
    all_pass(&v);
    let f = v.facts().unwrap();
    assert_eq!(f.driver_version.as_deref(), Some("580.95.05"));
    assert_eq!(f.vbios_version.as_deref(), Some("96.00.74.00.1a"));
    assert_eq!(f.model.as_deref(), Some("H100 PCIe (1010_0200_882)"));
}

#[test]
fn nv3_broken_chains_fail_each_for_its_own_reason() {
    let report = testdata("nvidia/nvtrust_hopper_report.hex");
    let mut reasons = Vec::new();
    for (file, name, needle) in [
        (
            "nvidia/trustee_hopper_cert_chain_bad_case2.pem",
            check::DEVICE_CHAIN,
            "only the root",
        ),
        (
            "nvidia/trustee_hopper_cert_chain_bad_case3.pem",
            check::DEVICE_CHAIN,
            "is not signed by the next one",
        ),
        (
            "nvidia/trustee_hopper_cert_chain_bad_case4.pem",
            check::DEVICE_FWID,
            "no FWID extension",
        ),
    ] {
        let v = verify(&report, file, NV1_NONCE);
        let f = failed(v.verification());
        assert_eq!(f.len(), 1, "{file}: {f:?}");
        assert_eq!(f[0].0, name, "{file}");
        assert!(f[0].1.contains(needle), "{file}: {}", f[0].1);
        reasons.push(f[0].1.clone());
    }
    reasons.dedup();
    assert_eq!(reasons.len(), 3);
    // Case 3 names the certificate whose issuer is missing.
    assert!(reasons[1].contains("GH100 A01 GSP BROM"), "{}", reasons[1]);
    assert!(reasons[1].contains("Provisioner ICA"), "{}", reasons[1]);
}

#[test]
fn nv4_all_twelve_devices_verify() {
    let mut devices =
        parse_nvtrust_json(&testdata("nvidia/nvtrust_ppcie_gpu_evidence_8xH100.json")).unwrap();
    devices.extend(
        parse_nvtrust_json(&testdata(
            "nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json",
        ))
        .unwrap(),
    );
    assert_eq!(devices.len(), 12);
    let mut ids = Vec::new();
    for d in &devices {
        let v = gpu::verify(&DeviceInput {
            root: tvm_verifier::gpu::DeviceRoot::Nvidia,
            evidence: &d.evidence,
            chain: &d.chain,
            nonce: Some(&nonce(NV4_NONCE)),
            arch: d.arch,
            at: at("2025-06-01T00:00:00Z"),
        });
        all_pass(&v);
        let f = v.facts().unwrap();
        if d.arch == Some(Arch::Ls10) {
            assert_eq!(f.vbios_version.as_deref(), Some("96.10.73.00.01"));
            assert_eq!(f.model.as_deref(), Some("NVSwitch (LS10)"));
        } else {
            assert_eq!(f.driver_version.as_deref(), Some("590.12"));
            assert_eq!(f.vbios_version.as_deref(), Some("96.00.a5.00.01"));
            assert_eq!(f.project.as_deref(), Some("G520"));
            assert_eq!(f.model.as_deref(), Some("H100 SXM (G520_0200_885)"));
        }
        ids.push(f.device_id.clone().unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "every device has its own identity");
}

#[test]
fn a_claimed_arch_must_match_the_certificates() {
    let devices = parse_nvtrust_json(&testdata(
        "nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json",
    ))
    .unwrap();
    let d = &devices[0];
    let v = gpu::verify(&DeviceInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        evidence: &d.evidence,
        chain: &d.chain,
        nonce: Some(&nonce(NV4_NONCE)),
        arch: Some(Arch::Hopper),
        at: at("2025-06-01T00:00:00Z"),
    });
    let f = failed(v.verification());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, check::DEVICE_ARCH);
    assert!(f[0]
        .1
        .contains("claims Hopper but the certificates are NVSwitch LS10"));
}

#[test]
fn without_a_nonce_the_nonce_is_not_checked() {
    let chain = pem_chain(&testdata("nvidia/nvtrust_hopper_cert_chain.pem")).unwrap();
    let v = gpu::verify(&DeviceInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        evidence: &testdata("nvidia/nvtrust_hopper_report.hex"),
        chain: &chain,
        nonce: None,
        arch: None,
        at: at("2025-06-01T00:00:00Z"),
    });
    assert!(v.verification().genuine());
    let c = v
        .verification()
        .checks()
        .iter()
        .find(|c| c.name == check::SPDM_NONCE)
        .unwrap();
    assert_eq!(c.status, Status::NotChecked);
}
