//! A whole node's GPUs and switches (NV-4: 8×H100 + 4×NVSwitch LS10 in
//! protected-PCIe mode), and the policy around RIMs and revocation.

mod common;

use common::{at, testdata};
use tvm_verifier::gpu::input::{parse_nvtrust_json, pem_chain, DeviceEvidence};
use tvm_verifier::gpu::node::{appraise_node, check, NodeInput, NodeVerdict, Revocation, RimInput};
use tvm_verifier::policy::GpuPolicy;
use tvm_verifier::Status;

const NV4_NONCE: &str = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";

fn nv4() -> Vec<DeviceEvidence> {
    let mut d =
        parse_nvtrust_json(&testdata("nvidia/nvtrust_ppcie_gpu_evidence_8xH100.json")).unwrap();
    d.extend(
        parse_nvtrust_json(&testdata(
            "nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json",
        ))
        .unwrap(),
    );
    d
}

fn nonce(h: &str) -> [u8; 32] {
    hex::decode(h).unwrap().try_into().unwrap()
}

/// No RIMs or OCSP exist offline for NV-4; the policy relaxes just those.
fn offline_policy() -> GpuPolicy {
    GpuPolicy {
        require_rims: false,
        require_revocation_check: false,
        ..GpuPolicy::default()
    }
}

fn appraise(devices: &[DeviceEvidence], policy: &GpuPolicy) -> NodeVerdict {
    appraise_node(&NodeInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        devices,
        nonce: Some(nonce(NV4_NONCE)),
        rims: &[],
        revocation: &[],
        policy,
        at: at("2025-06-01T00:00:00Z"),
    })
}

fn node_check(v: &NodeVerdict, name: &str) -> (Status, String) {
    let c = v.checks().iter().find(|c| c.name == name).unwrap();
    (c.status, c.detail.clone())
}

#[test]
fn nv4_node_verifies_with_its_topology() {
    let v = appraise(&nv4(), &offline_policy());
    assert!(v.accepted(), "{}", v.render());
    assert_eq!(node_check(&v, check::NODE_TOPOLOGY).0, Status::Pass);
    assert_eq!(node_check(&v, check::NODE_NONCE).0, Status::Pass);
    assert_eq!(node_check(&v, check::NODE_DISTINCT).0, Status::Pass);
    assert_eq!(v.gpu_ids().len(), 8);
    for d in v.devices() {
        let rim = d.verdict().check(check::RIM_MEASUREMENTS).unwrap();
        assert_eq!(rim.status, Status::NotChecked);
    }
}

#[test]
fn dropping_any_device_breaks_the_topology() {
    let all = nv4();
    for drop in 0..all.len() {
        let mut d = all.clone();
        let gone = d.remove(drop);
        let v = appraise(&d, &offline_policy());
        assert!(!v.accepted(), "without {}", gone.label);
        let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("8 GPUs and 4 NVSwitches"), "{detail}");
    }
}

#[test]
fn one_device_answering_another_nonce_fails_the_node() {
    let mut d = nv4();
    // The nonce sits in the request, bytes 4..36.
    d[5].evidence[4] ^= 0x01;
    let v = appraise(&d, &offline_policy());
    assert!(!v.accepted());
    let (status, detail) = node_check(&v, check::NODE_NONCE);
    assert_eq!(status, Status::Fail);
    assert!(detail.contains("gpu 5"), "{detail}");
    // And that device itself fails its signature (the nonce is signed).
    let dev = v.devices()[5].verdict();
    assert_eq!(dev.check("spdm.signature").unwrap().status, Status::Fail);
    // The topology of the other 11 is not judged (it would read "7 GPUs").
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::NotChecked);
    assert!(detail.contains("1 device(s) did not verify"), "{detail}");
}

#[test]
fn a_duplicated_gpu_is_caught() {
    let mut d = nv4();
    d[1] = d[0].clone();
    d[1].label = "gpu 1".into();
    let v = appraise(&d, &offline_policy());
    let (status, detail) = node_check(&v, check::NODE_DISTINCT);
    assert_eq!(status, Status::Fail);
    assert!(detail.contains("same device"), "{detail}");
}

#[test]
fn the_default_policy_requires_rims_and_ocsp() {
    let v = appraise(&nv4(), &GpuPolicy::default());
    assert!(!v.accepted());
    let d = v.devices()[0].verdict();
    for name in [
        check::RIM_DRIVER,
        check::RIM_VBIOS,
        check::RIM_MEASUREMENTS,
        check::REVOCATION,
    ] {
        let c = d.check(name).unwrap();
        assert_eq!(c.status, Status::Fail, "{name}");
        assert!(c.detail.contains("policy requires"), "{}", c.detail);
    }
}

#[test]
fn a_single_gpu_needs_no_topology_but_its_rims_are_compared() {
    let chain = pem_chain(&testdata("nvidia/trustee_hopper_coco_cert_chain1.pem")).unwrap();
    let devices = vec![DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: testdata("nvidia/trustee_hopper_coco_report1.hex"),
        chain,
        stated_nonce: None,
    }];
    let rims = [RimInput::verify(
        "vbios",
        &testdata("nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag"),
        at("2024-06-01T00:00:00Z"),
    )];
    let policy = GpuPolicy {
        require_rims: false,
        require_revocation_check: false,
        require_ppcie_topology: false,
        ..GpuPolicy::default()
    };
    let run = |policy: &GpuPolicy, revocation: &[Revocation]| {
        appraise_node(&NodeInput {
            root: tvm_verifier::gpu::DeviceRoot::Nvidia,
            devices: &devices,
            nonce: Some(nonce(
                "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec",
            )),
            rims: &rims,
            revocation,
            policy,
            at: at("2024-06-01T00:00:00Z"),
        })
    };
    let v = run(&policy, &[]);
    let d = v.devices()[0].verdict();
    assert_eq!(d.check(check::RIM_VBIOS).unwrap().status, Status::Pass);
    assert_eq!(
        d.check(check::RIM_DRIVER).unwrap().status,
        Status::NotChecked
    );
    let m = d.check(check::RIM_MEASUREMENTS).unwrap();
    assert_eq!(m.status, Status::Fail);
    assert!(m.detail.contains("11 of 12 match"), "{}", m.detail);
    assert!(
        m.detail.contains("index 9: reported 059b32e7"),
        "{}",
        m.detail
    );
    assert_eq!(node_check(&v, check::NODE_TOPOLOGY).0, Status::NotChecked);
    assert!(!v.accepted());

    // An operator who investigated index 9 may tolerate it, by name.
    let tolerant = GpuPolicy {
        dangerous_allow_mismatched_indices: vec![9],
        ..policy.clone()
    };
    let v = run(&tolerant, &[]);
    let m = v.devices()[0]
        .verdict()
        .check(check::RIM_MEASUREMENTS)
        .unwrap()
        .clone();
    assert_eq!(m.status, Status::Pass, "{}", m.detail);
    assert!(m.detail.contains("tolerated"), "{}", m.detail);
    assert!(v.accepted(), "{}", v.render());

    // Revocation answers are applied as given.
    let v = run(
        &tolerant,
        &[Revocation::Bad("revoked: keyCompromise".into())],
    );
    assert!(!v.accepted());
    let v = run(&tolerant, &[Revocation::Hold("on hold".into())]);
    assert!(!v.accepted());
    let hold_ok = GpuPolicy {
        dangerous_allow_hold: true,
        ..tolerant.clone()
    };
    assert!(run(&hold_ok, &[Revocation::Hold("on hold".into())]).accepted());
}

#[test]
fn an_expired_rim_is_named_as_the_reason() {
    let chain = pem_chain(&testdata("nvidia/trustee_hopper_coco_cert_chain1.pem")).unwrap();
    let devices = vec![DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: testdata("nvidia/trustee_hopper_coco_report1.hex"),
        chain,
        stated_nonce: None,
    }];
    let late = at("2026-01-01T00:00:00Z");
    let rims = [RimInput::verify(
        "prod.swidtag",
        &testdata("nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag"),
        late,
    )];
    let v = appraise_node(&NodeInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        devices: &devices,
        nonce: None,
        rims: &rims,
        revocation: &[],
        policy: &GpuPolicy::default(),
        at: late,
    });
    let c = v.devices()[0].verdict().check(check::RIM_VBIOS).unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.contains("prod.swidtag") && c.detail.contains("expired"),
        "{}",
        c.detail
    );
}

#[test]
fn a_revoked_rim_signer_voids_the_rim() {
    let chain = pem_chain(&testdata("nvidia/nvtrust_hopper_cert_chain.pem")).unwrap();
    let devices = vec![DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: testdata("nvidia/nvtrust_hopper_report.hex"),
        chain,
        stated_nonce: None,
    }];
    let when = at("2024-09-01T00:00:00Z");
    let mut rims = vec![
        RimInput::verify(
            "driver",
            &testdata("nvidia/gonv_NV_GPU_DRIVER_GH100_550.90.07.xml"),
            when,
        ),
        RimInput::verify(
            "vbios",
            &testdata("nvidia/gonv_NV_GPU_VBIOS_1010_0200_882_96009F0001.xml"),
            when,
        ),
    ];
    let policy = GpuPolicy {
        require_revocation_check: false,
        ..GpuPolicy::default()
    };
    let run = |rims: &[RimInput]| {
        appraise_node(&NodeInput {
            root: tvm_verifier::gpu::DeviceRoot::Nvidia,
            devices: &devices,
            nonce: None,
            rims,
            revocation: &[],
            policy: &policy,
            at: when,
        })
    };
    // NV-1 with its own RIMs: accepted (revocation not required here).
    let v = run(&rims);
    assert!(v.accepted(), "{}", v.render());
    rims[1].revocation = Some(Revocation::Bad(
        "HCC RIM L4 Signer is revoked (keyCompromise)".into(),
    ));
    let v = run(&rims);
    assert!(!v.accepted());
    let c = v.devices()[0].verdict().check(check::RIM_VBIOS).unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("revoked"), "{}", c.detail);
    rims[1].revocation = Some(Revocation::Good("3 certificates good".into()));
    let v = run(&rims);
    let c = v.devices()[0].verdict().check(check::RIM_VBIOS).unwrap();
    assert!(
        c.detail.contains("signer unrevoked per OCSP"),
        "{}",
        c.detail
    );
}

/// An empty evidence list is rejected with a reason, not only "NODE REJECTED".
#[test]
fn an_empty_device_list_fails_by_name() {
    let v = appraise(&[], &offline_policy());
    assert!(!v.accepted());
    let (status, detail) = node_check(&v, check::NODE_NONCE);
    assert_eq!(status, Status::Fail, "{detail}");
    assert!(detail.contains("empty list"), "{detail}");
    assert!(v.render().contains("FAIL  node.nonce"), "{}", v.render());
}

// NV-6: a real HGX H200 node in protected-PCIe mode (go-nvattest-tools'
// PPCIe test data: 8 GPUs G520_0280_895 + 4 LS10 switches, driver 570.124.06).
const NV6_NONCE: &str = "1234567890123456789012345678901234567890123456789012345678901234";
// NV-7: a real HGX B200 node in multi-GPU passthrough (go-nvattest-tools'
// MPT test data: 8 GPUs G525_0220_886, driver 590.48.01).
const NV7_NONCE: &str = "cdb72201e569085d6de41863745f6f77db1f75962c29564ec6abe91f0221861f";

/// Appraised when the NV-6 and NV-7 chains are valid; `None` leaves the nonce unchecked.
fn appraise_with(devices: &[DeviceEvidence], n: Option<&str>) -> NodeVerdict {
    appraise_node(&NodeInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        devices,
        nonce: n.map(nonce),
        rims: &[],
        revocation: &[],
        policy: &offline_policy(),
        at: at("2025-12-01T00:00:00Z"),
    })
}

fn models(v: &NodeVerdict) -> Vec<String> {
    v.devices()
        .iter()
        .map(|d| match d.verdict().facts() {
            Some(tvm_verifier::Facts::Gpu(f)) => f.model.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn nv6_h200_ppcie_node_verifies_and_its_gpus_are_h200s() {
    let d = common::gonv_capture("nvidia/gonv_ppcie_data_8xH200_4xLS10.json");
    assert_eq!(d.len(), 12);
    let v = appraise_with(&d, Some(NV6_NONCE));
    assert!(v.accepted(), "{}", v.render());
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::Pass);
    assert!(detail.contains("protected-PCIe"), "{detail}");
    let m = models(&v);
    assert!(
        m[..8].iter().all(|m| m == "H200 SXM (G520_0280_895)"),
        "{m:?}"
    );
    assert!(m[8..].iter().all(|m| m == "NVSwitch (LS10)"), "{m:?}");
    // Its switches are no other node's: NV-4's GPUs with NV-6's switches fail.
    let mut mixed: Vec<DeviceEvidence> = nv4().into_iter().take(8).collect();
    mixed.extend(d[8..].iter().cloned());
    let v = appraise_with(&mixed, None);
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::Fail);
    assert!(detail.contains("not in this node's evidence"), "{detail}");
}

#[test]
fn nv4_gpus_are_h100_sxm() {
    let v = appraise(&nv4(), &offline_policy());
    let m = models(&v);
    assert!(
        m[..8].iter().all(|m| m == "H100 SXM (G520_0200_885)"),
        "{m:?}"
    );
}

#[test]
fn nv7_b200_mpt_node_verifies_as_eight_b200s() {
    let d = common::gonv_capture("nvidia/gonv_mpt_data_8xB200.json");
    assert_eq!(d.len(), 8);
    let v = appraise_with(&d, Some(NV7_NONCE));
    assert!(v.accepted(), "{}", v.render());
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::Pass, "{detail}");
    assert!(
        detail.contains("8 Blackwell GPUs in multi-GPU passthrough"),
        "{detail}"
    );
    assert!(models(&v).iter().all(|m| m == "B200 (G525_0220_886)"));
}

#[test]
fn a_blackwell_mpt_node_needs_all_eight_gpus_and_no_ls10_switch() {
    let d = common::gonv_capture("nvidia/gonv_mpt_data_8xB200.json");
    for keep in [1, 7] {
        let v = appraise_with(&d[..keep], Some(NV7_NONCE));
        assert!(!v.accepted());
        let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
        assert_eq!(status, Status::Fail);
        assert!(
            detail.contains(&format!("the evidence has {keep}")),
            "{detail}"
        );
    }
    // A Hopper node's switch beside Blackwell GPUs is another machine's.
    let mut with_switch = d.clone();
    with_switch.push(nv4().pop().unwrap());
    let v = appraise_with(&with_switch, None);
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::Fail);
    assert!(
        detail.contains("LS10 NVSwitch in a Blackwell node"),
        "{detail}"
    );
    // Nor is a Hopper GPU among them.
    let mut mixed = d[..7].to_vec();
    mixed.push(nv4().remove(0));
    let v = appraise_with(&mixed, None);
    let (status, detail) = node_check(&v, check::NODE_TOPOLOGY);
    assert_eq!(status, Status::Fail);
    assert!(detail.contains("one architecture"), "{detail}");
}

/// The topology rule on NV-7's real reports with their FEATURE_FLAG
/// (opaque field 36) rewritten: the node checks see each mode a Blackwell
/// board can claim. (Rewritten reports no longer verify; here the rule is
/// applied to them directly.)
#[test]
fn blackwell_modes_follow_nvidias_rules() {
    use tvm_verifier::gpu::spdm::MeasurementReport;
    use tvm_verifier::gpu::topology::{check_blackwell, Device};
    use tvm_verifier::gpu::Arch;
    let d = common::gonv_capture("nvidia/gonv_mpt_data_8xB200.json");
    // Field 36, 2 bytes, value 1 (MPT) — as all eight reports carry it.
    const MPT_TLV: [u8; 6] = [36, 0, 2, 0, 1, 0];
    let with_flag = |flag: Option<u16>| -> Vec<MeasurementReport> {
        d.iter()
            .map(|e| {
                let mut ev = e.evidence.clone();
                let at = ev
                    .windows(MPT_TLV.len())
                    .position(|w| w == MPT_TLV)
                    .expect("FEATURE_FLAG in each NV-7 report");
                match flag {
                    Some(f) => ev[at + 4..at + 6].copy_from_slice(&f.to_le_bytes()),
                    None => ev[at] = 99, // an unknown field type: no FEATURE_FLAG
                }
                MeasurementReport::parse(&ev).unwrap()
            })
            .collect()
    };
    let node = |reports: &[MeasurementReport]| {
        let labels: Vec<String> = (0..reports.len()).map(|i| format!("gpu {i}")).collect();
        let devices: Vec<Device> = reports
            .iter()
            .zip(&labels)
            .map(|(r, l)| Device {
                label: l,
                arch: Arch::Blackwell,
                report: r,
                device_id: None,
            })
            .collect();
        check_blackwell(&devices)
    };
    let mpt = with_flag(Some(1));
    assert!(node(&mpt)
        .unwrap()
        .contains("8 Blackwell GPUs in multi-GPU passthrough"));
    let spt = with_flag(Some(0));
    assert_eq!(
        node(&spt[..1]).unwrap(),
        "1 Blackwell GPU in single-GPU passthrough mode"
    );
    // Several SPT GPUs in one CVM pass, as on Hopper (NVIDIA supports one).
    let ok = node(&spt).unwrap();
    assert!(
        ok.contains("8 Blackwell GPUs in single-GPU passthrough mode"),
        "{ok}"
    );
    let mut mixed = mpt.clone();
    mixed[3] = spt[3].clone();
    let e = node(&mixed).unwrap_err();
    assert!(e.contains("7 of 8 GPUs in multi-GPU passthrough"), "{e}");
    let e = node(&with_flag(Some(2))).unwrap_err();
    assert!(
        e.contains("protected-PCIe mode, which Blackwell does not have"),
        "{e}"
    );
    let e = node(&with_flag(Some(7))).unwrap_err();
    assert!(e.contains("unknown multi-GPU mode 7"), "{e}");
    // The whole little-endian field counts, not its first byte.
    let e = node(&with_flag(Some(0x0100))).unwrap_err();
    assert!(e.contains("unknown multi-GPU mode 256"), "{e}");
    let e = node(&with_flag(None)).unwrap_err();
    assert!(e.contains("does not say its multi-GPU mode"), "{e}");
}
