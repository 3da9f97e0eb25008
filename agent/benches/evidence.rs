//! Evidence latency in sim mode: one bundle for a node of 8 simulated H100s
//! (8 SPDM reports signed with P-384, then a TDX quote over the claims),
//! gathering the GPU reports in parallel vs one after another. Run twice:
//! with no modelled device latency (pure signing cost on this machine) and
//! with 50 ms per report, a stand-in for the time a real GPU's firmware
//! takes, which is what parallel gathering hides.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tvm_agent::backend::sim::{hierarchy, Shape, SimDevices, SimTee};
use tvm_agent::backend::Gather;
use tvm_agent::config::SimConfig;
use tvm_agent::evidence::EvidenceSource;
use tvm_protocol::evidence::Runtime;
use tvm_protocol::nonce::Nonce;

fn source(dir: &std::path::Path, latency_ms: u64, gather: Gather) -> EvidenceSource {
    let cfg = SimConfig {
        dir: dir.to_path_buf(),
        gpus: 8,
        switches: 0,
        gpu_latency_ms: latency_ms,
        ..SimConfig::default()
    };
    let (_, nvidia) = hierarchy(dir).expect("hierarchy");
    EvidenceSource {
        tee: Box::new(SimTee::open(&cfg).expect("sim tee")),
        devices: Box::new(
            SimDevices::issue(&nvidia, Shape::gpus(8), Duration::from_millis(latency_ms))
                .expect("sim gpus"),
        ),
        cvm_id: tvm_protocol::Digest32([7; 32]),
        runtime: Runtime::default(),
        gather,
        runtime_events: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = dir.path().join("sim");
    let nonce = Nonce([9; 32]);
    for latency in [0u64, 50] {
        let mut g = c.benchmark_group(format!("evidence_8_sim_gpus_{latency}ms_per_report"));
        if latency > 0 {
            g.sample_size(10);
        }
        for (name, how) in [
            ("parallel", Gather::Parallel),
            ("sequential", Gather::Sequential),
        ] {
            let src = source(&sim, latency, how);
            g.bench_function(name, |b| b.iter(|| src.produce(nonce).expect("bundle")));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
