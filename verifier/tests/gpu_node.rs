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
