//! NVIDIA evidence appraisal with warm caches (RIMs verified once, as the
//! validator holds them): one GPU fully appraised (chain, signature, RIM
//! compare) and the NV-4 node (8 GPUs + 4 switches, topology). Also the cold
//! cost of verifying a RIM. NVIDIA's Python verifier on the same NV-1 input is
//! timed by bench/gpu.sh in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tvm_verifier::gpu::input::{parse_nvtrust_json, pem_chain, DeviceEvidence};
use tvm_verifier::gpu::node::{appraise_node, NodeInput, RimInput};
use tvm_verifier::gpu::rim::Rim;
use tvm_verifier::input::binary_or_hex;
use tvm_verifier::policy::GpuPolicy;

const NV1: &[u8] = include_bytes!("../../testdata/nvidia/nvtrust_hopper_report.hex");
const NV1_CHAIN: &[u8] = include_bytes!("../../testdata/nvidia/nvtrust_hopper_cert_chain.pem");
const DRIVER_RIM: &[u8] =
    include_bytes!("../../testdata/nvidia/gonv_NV_GPU_DRIVER_GH100_550.90.07.xml");
const VBIOS_RIM: &[u8] =
    include_bytes!("../../testdata/nvidia/gonv_NV_GPU_VBIOS_1010_0200_882_96009F0001.xml");
const NV4_GPUS: &[u8] =
    include_bytes!("../../testdata/nvidia/nvtrust_ppcie_gpu_evidence_8xH100.json");
const NV4_SWITCHES: &[u8] =
    include_bytes!("../../testdata/nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json");
const AT: i64 = 1_725_148_800; // 2024-09-01, inside the RIM signers' window

fn nonce(evidence: &[u8]) -> [u8; 32] {
    let mut n = [0u8; 32];
    n.copy_from_slice(&evidence[4..36]);
    n
}

fn bench(c: &mut Criterion) {
    let nv1 = vec![DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: binary_or_hex(NV1),
        chain: pem_chain(NV1_CHAIN).expect("chain"),
        stated_nonce: None,
    }];
    let rims = [
        RimInput::verify("driver", DRIVER_RIM, AT),
        RimInput::verify("vbios", VBIOS_RIM, AT),
    ];
    // Revocation is looked up from the cache separately; here it is not required.
    let policy = GpuPolicy {
        require_revocation_check: false,
        ..GpuPolicy::default()
    };
    let mut g = c.benchmark_group("gpu");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        "NV-1 fully appraised (chain, signature, 33 RIM indices)",
        |b| {
            b.iter(|| {
                let v = appraise_node(&NodeInput {
                    root: tvm_verifier::gpu::DeviceRoot::Nvidia,
                    devices: &nv1,
                    nonce: Some(nonce(&nv1[0].evidence)),
                    rims: &rims,
                    revocation: &[],
                    policy: &policy,
                    at: AT,
                });
                assert!(v.accepted());
                v
            })
        },
    );
    g.bench_function(
        "NV-1 fully appraised, cold (no signature remembered)",
        |b| {
            b.iter(|| {
                tvm_certs::chain::forget_verified_signatures();
                let v = appraise_node(&NodeInput {
                    root: tvm_verifier::gpu::DeviceRoot::Nvidia,
                    devices: &nv1,
                    nonce: Some(nonce(&nv1[0].evidence)),
                    rims: &rims,
                    revocation: &[],
                    policy: &policy,
                    at: AT,
                });
                assert!(v.accepted());
                v
            })
        },
    );
    g.bench_function("RIM verified cold (XML-DSig + chain)", |b| {
        b.iter(|| {
            tvm_certs::chain::forget_verified_signatures();
            Rim::verify(VBIOS_RIM, AT).expect("verifies")
        })
    });

    let mut node = parse_nvtrust_json(NV4_GPUS).expect("gpus");
    node.extend(parse_nvtrust_json(NV4_SWITCHES).expect("switches"));
    let offline = GpuPolicy {
        require_rims: false,
        require_revocation_check: false,
        ..GpuPolicy::default()
    };
    g.throughput(Throughput::Elements(12));
    g.bench_function("NV-4 node, 12 devices + topology", |b| {
        b.iter(|| {
            let v = appraise_node(&NodeInput {
                root: tvm_verifier::gpu::DeviceRoot::Nvidia,
                devices: &node,
                nonce: Some(nonce(&node[0].evidence)),
                rims: &[],
                revocation: &[],
                policy: &offline,
                at: AT,
            });
            assert!(v.accepted());
            v
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
