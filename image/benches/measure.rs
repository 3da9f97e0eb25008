//! What an operator's `tvm image measure` and a validator's manifest
//! loading cost, with the field's tool beside ours on the same input where
//! one is a dependency: the `sev` crate's file-based SEV-SNP launch digest
//! against our fold from digests. (dstack-mr's MRTD is not a dependency;
//! the closing note times it on the same OVMF image by hand.)

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use tvm_image::{authenticode, eventlog, manifest, snp, tdvf};

fn data(rel: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(rel),
    )
    .expect("test data")
}

fn bench(c: &mut Criterion) {
    let ovmf = data("measure/debian_ovmf_2022.11-6+deb12u2_OVMF.fd");
    c.bench_function("tdvf::mrtd, Debian OVMF (2 MiB), single-pass", |b| {
        b.iter(|| tdvf::mrtd(&ovmf, tdvf::PageOrder::SinglePass).expect("mrtd"))
    });
    let pe = data("pe/setuptools_cli-64.exe");
    c.bench_function("authenticode::sha384, 73 KiB PE", |b| {
        b.iter(|| authenticode::sha384(&pe).expect("hash"))
    });
    let ccel = data("measure/gotdxguest_ccel_data.dat");
    c.bench_function("eventlog parse + replay, GCP CCEL", |b| {
        b.iter(|| eventlog::replay(&eventlog::parse(&ccel).expect("log")))
    });

    // SEV-SNP: sev's digest from the OVMF tail and files, ours from digests.
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let tail = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/measure/sevsnpmeasure_ovmf_AmdSev_suffix.bin");
    const OVMF_HASH: &str = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";
    let input = snp::LaunchInput {
        ovmf: &tail,
        vcpus: 4,
        cpu: "EPYC-v4",
        guest_features: 0x21,
        kernel: Some(&empty),
        initrd: Some(&empty),
        cmdline: Some(""),
        ovmf_hash: Some(OVMF_HASH),
    };
    let want = snp::launch_digest(&input).expect("digest");
    let o = sev::measurement::ovmf::OVMF::new(tail.clone()).expect("ovmf");
    let sections: Vec<snp::Section> = o
        .metadata_items()
        .iter()
        .map(|d| snp::Section {
            gpa: d.gpa.into(),
            size: d.size.into(),
            section_type: d.section_type as u8,
        })
        .collect();
    let empty_sha: [u8; 32] = sha2::Digest::finalize(sha2::Sha256::default()).into();
    let parts = snp::LaunchParts {
        ovmf_hash: manifest::hex48(OVMF_HASH).expect("hex"),
        sections: &sections,
        hashes: Some(snp::BootHashes {
            kernel: empty_sha,
            initrd: empty_sha,
            cmdline: snp::BootHashes::cmdline_sha256(""),
        }),
        hashes_table_gpa: o.sev_hashes_table_gpa().expect("gpa"),
        reset_eip: o.sev_es_reset_eip().expect("eip"),
        vcpus: 4,
        cpu: "EPYC-v4",
        guest_features: 0x21,
    };
    assert_eq!(snp::launch_digest_from_parts(&parts).expect("digest"), want);
    let mut g = c.benchmark_group("sev-snp launch digest, 4 vCPUs");
    g.bench_function("sev crate (files)", |b| {
        b.iter(|| snp::launch_digest(&input).expect("digest"))
    });
    g.bench_function("tvm (digests)", |b| {
        b.iter(|| snp::launch_digest_from_parts(&parts).expect("digest"))
    });
    g.finish();

    // A validator's manifest check, once per manifest per round.
    let (key, public) = manifest::keygen().expect("key");
    let keys: manifest::KeySet = serde_json::from_value(serde_json::json!({"keys": [{
        "public_key": hex::encode(public),
        "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z"}]}))
    .expect("keys");
    let text = serde_json::json!({
        "format": 1, "name": "tvm-gpu", "version": "1", "node_types": ["gpu"], "files": [],
        "measurements": [{"platform": "tdx", "shape": "s", "registers": {
            "mrtd": "11".repeat(48), "rtmr1": "22".repeat(48), "rtmr2": "33".repeat(48)}}],
        "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
    })
    .to_string();
    let signed = serde_json::to_vec(&manifest::sign(&text, &key).expect("sign")).expect("json");
    c.bench_function("manifest::verify (one signature)", |b| {
        b.iter(|| manifest::verify(&signed, &keys, 1_800_000_000).expect("verify"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
