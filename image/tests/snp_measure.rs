//! SEV-SNP launch digests against the values virtee/sev-snp-measure's own
//! tests pin (`tests/test_guest.py`, with its `ovmf_AmdSev_suffix.bin`, the
//! last 4 KiB of an AmdSevX64 OVMF build; testdata/measure).

use std::path::{Path, PathBuf};

use tvm_image::snp::{launch_digest, LaunchInput};

fn ovmf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/measure/sevsnpmeasure_ovmf_AmdSev_suffix.bin")
}

const OVMF_HASH: &str = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";

#[test]
fn launch_digests_equal_sev_snp_measures_pinned_values() {
    let dir = tempfile::tempdir().unwrap();
    // sev-snp-measure's tests give /dev/null as kernel and initrd: empty files.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let ovmf = ovmf();
    fn input<'a>(
        ovmf: &'a Path,
        vcpus: u32,
        guest_features: u64,
        kernel: Option<&'a Path>,
        cmdline: Option<&'a str>,
        ovmf_hash: Option<&'a str>,
    ) -> LaunchInput<'a> {
        LaunchInput {
            ovmf,
            vcpus,
            cpu: "EPYC-v4",
            guest_features,
            kernel,
            initrd: kernel,
            cmdline,
            ovmf_hash,
        }
    }
    let cases = [
        // (test name in test_guest.py, input, launch digest)
        ("test_snp_ovmf_hash_gen_default", input(&ovmf, 1, 0x21, Some(&empty), Some(""), Some(OVMF_HASH)),
         "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"),
        ("test_snp_ovmf_hash_gen_feature_snp_only", input(&ovmf, 1, 0x1, Some(&empty), Some(""), Some(OVMF_HASH)),
         "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"),
        ("test_snp_default", input(&ovmf, 1, 0x21, Some(&empty), Some("console=ttyS0 loglevel=7"), None),
         "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
        ("test_snp_guest_feature_snp_only", input(&ovmf, 1, 0x1, Some(&empty), Some("console=ttyS0 loglevel=7"), None),
         "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
        ("test_snp_without_kernel_default", input(&ovmf, 1, 0x21, None, None, None),
         "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"),
        ("test_snp_without_kernel_feature_snp_only", input(&ovmf, 1, 0x1, None, None, None),
         "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"),
        ("test_snp_with_multiple_vcpus_default", input(&ovmf, 4, 0x21, Some(&empty), Some(""), None),
         "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"),
    ];
    for (name, i, want) in cases {
        let got = launch_digest(&i).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex::encode(got), want, "{name}");
    }
    // One changed input, another digest: a byte of the command line, the
    // vCPU count, the CPU model, a byte of the kernel.
    let base = launch_digest(&input(
        &ovmf,
        1,
        0x21,
        Some(&empty),
        Some("console=ttyS0 loglevel=7"),
        None,
    ))
    .unwrap();
    assert_ne!(
        launch_digest(&input(
            &ovmf,
            1,
            0x21,
            Some(&empty),
            Some("console=ttyS0 loglevel=8"),
            None
        ))
        .unwrap(),
        base
    );
    assert_ne!(
        launch_digest(&input(
            &ovmf,
            2,
            0x21,
            Some(&empty),
            Some("console=ttyS0 loglevel=7"),
            None
        ))
        .unwrap(),
        base
    );
    let other_cpu = LaunchInput {
        cpu: "EPYC-Milan",
        ..input(
            &ovmf,
            1,
            0x21,
            Some(&empty),
            Some("console=ttyS0 loglevel=7"),
            None,
        )
    };
    assert_ne!(launch_digest(&other_cpu).unwrap(), base);
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, b"\0").unwrap();
    let one_byte = LaunchInput {
        kernel: Some(&kernel),
        ..input(
            &ovmf,
            1,
            0x21,
            Some(&empty),
            Some("console=ttyS0 loglevel=7"),
            None,
        )
    };
    assert_ne!(launch_digest(&one_byte).unwrap(), base);
    // An unknown CPU model is named.
    let bad = LaunchInput {
        cpu: "EPYC-v99",
        ..input(&ovmf, 1, 0x21, None, None, None)
    };
    assert!(launch_digest(&bad)
        .unwrap_err()
        .to_string()
        .contains("EPYC-v99"));
}

/// The same seven launches, folded from digests ([`launch_digest_from_parts`]):
/// the firmware's metadata read from the OVMF tail by the `sev` crate, the
/// kernel and initrd given by their SHA-256 only.
#[test]
fn launch_digests_from_digests_equal_the_file_based_ones() {
    use sev::measurement::ovmf::OVMF;
    use tvm_image::snp::{
        launch_digest_from_parts, ovmf_pages_digest, BootHashes, LaunchParts, Section,
    };
    let ovmf = OVMF::new(ovmf()).unwrap();
    let sections: Vec<Section> = ovmf
        .metadata_items()
        .iter()
        .map(|d| Section {
            gpa: d.gpa.into(),
            size: d.size.into(),
            section_type: d.section_type as u8,
        })
        .collect();
    let pinned_ovmf: [u8; 48] = hex::decode(OVMF_HASH).unwrap().try_into().unwrap();
    let empty: [u8; 32] = sha2::Digest::finalize(sha2::Sha256::default()).into();
    let hashes = |cmdline: &str| BootHashes {
        kernel: empty,
        initrd: empty,
        cmdline: BootHashes::cmdline_sha256(cmdline),
    };
    let cases = [
        (pinned_ovmf, 1, 0x21, Some(hashes("")), "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"),
        (pinned_ovmf, 1, 0x1, Some(hashes("")), "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"),
        (ovmf_pages_digest(ovmf.gpa(), ovmf.data()), 1, 0x21, Some(hashes("console=ttyS0 loglevel=7")), "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
        (ovmf_pages_digest(ovmf.gpa(), ovmf.data()), 1, 0x1, Some(hashes("console=ttyS0 loglevel=7")), "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
        (ovmf_pages_digest(ovmf.gpa(), ovmf.data()), 1, 0x21, None, "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"),
        (ovmf_pages_digest(ovmf.gpa(), ovmf.data()), 1, 0x1, None, "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"),
        (ovmf_pages_digest(ovmf.gpa(), ovmf.data()), 4, 0x21, Some(hashes("")), "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"),
    ];
    for (i, (ovmf_hash, vcpus, features, hashes, want)) in cases.into_iter().enumerate() {
        let got = launch_digest_from_parts(&LaunchParts {
            ovmf_hash,
            sections: &sections,
            hashes,
            hashes_table_gpa: ovmf.sev_hashes_table_gpa().unwrap(),
            reset_eip: ovmf.sev_es_reset_eip().unwrap(),
            vcpus,
            cpu: "EPYC-v4",
            guest_features: features,
        })
        .unwrap();
        assert_eq!(hex::encode(got), want, "case {i}");
    }
}

/// dstack's real SEV-SNP launch (dstack-mr `real_fixture_recomputes_measurement`):
/// its measurement document, folded, is the MEASUREMENT of the genuine Milan
/// report dstack captured (`dstack-attest/tests/sev_snp_attestation.bin`).
#[test]
fn dstacks_real_launch_reproduces_its_reports_measurement() {
    use tvm_image::snp::{launch_digest_from_parts, BootHashes, LaunchParts, Section};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/measure");
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("dstack_sev_measurement_input.json")).unwrap(),
    )
    .unwrap();
    let h = |k: &str| hex::decode(doc[k].as_str().unwrap()).unwrap();
    let sections: Vec<Section> = serde_json::from_value(doc["ovmf_sections"].clone()).unwrap();
    let parts = |cmdline: &str, vcpus: u32| LaunchParts {
        ovmf_hash: h("ovmf_hash").try_into().unwrap(),
        sections: &sections,
        hashes: Some(BootHashes {
            kernel: h("kernel_hash").try_into().unwrap(),
            initrd: h("initrd_hash").try_into().unwrap(),
            cmdline: BootHashes::cmdline_sha256(cmdline),
        }),
        hashes_table_gpa: doc["sev_hashes_table_gpa"].as_u64().unwrap(),
        reset_eip: doc["sev_es_reset_eip"].as_u64().unwrap() as u32,
        vcpus,
        cpu: doc["vcpu_type"].as_str().unwrap(),
        guest_features: doc["guest_features"].as_u64().unwrap(),
    };
    let cmdline = doc["base_cmdline"].as_str().unwrap();
    let vcpus = doc["vcpus"].as_u64().unwrap() as u32;
    let got = launch_digest_from_parts(&parts(cmdline, vcpus)).unwrap();
    const MEASUREMENT: &str = "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d";
    assert_eq!(hex::encode(got), MEASUREMENT);
    // The genuine report carries it at its MEASUREMENT offset (0x90).
    let att = std::fs::read(dir.join("dstack_sev_snp_attestation.bin")).unwrap();
    let at = att
        .windows(48)
        .position(|w| w == got)
        .expect("the report's measurement");
    let report = &att[at - 0x90..at - 0x90 + 1184];
    assert!([2u32, 3, 5].contains(&u32::from_le_bytes(report[..4].try_into().unwrap())));
    // One byte of the rootfs hash on the command line, one vCPU more: other digests.
    let other = cmdline.replacen("rootfs_hash=ca", "rootfs_hash=cb", 1);
    assert_ne!(
        launch_digest_from_parts(&parts(&other, vcpus)).unwrap(),
        got
    );
    assert_ne!(
        launch_digest_from_parts(&parts(cmdline, vcpus + 1)).unwrap(),
        got
    );
}
