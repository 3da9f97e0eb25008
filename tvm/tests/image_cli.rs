//! `tvm image` as an operator runs it: keys, signing, what validators
//! conclude, retiring a release and rotating keys.

mod common;
use common::{public_key, tvm};

#[test]
fn keygen_sign_verify_retire_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let (code, out1, err) = tvm(&["image", "keygen", "--out", &p("k1")]);
    assert_eq!(code, 0, "{err}");
    let (_, out2, _) = tvm(&["image", "keygen", "--out", &p("k2")]);
    // Never over an existing key.
    let (code, _, err) = tvm(&["image", "keygen", "--out", &p("k1")]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(p("k1")).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The key set validators pin: key 1 for 2026.
    let keys = serde_json::json!({"keys": [{
        "public_key": public_key(&out1),
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z",
    }]});
    std::fs::write(p("keys.json"), keys.to_string()).unwrap();
    let manifest = serde_json::json!({
        "format": 1, "name": "tvm-gpu", "version": "1.0.0", "node_types": ["gpu"],
        "files": [], "measurements": [{"platform": "tdx", "shape": "8xH100", "registers": {"mrtd": "00".repeat(48), "rtmr1": "01".repeat(48), "rtmr2": "02".repeat(48)}}],
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2026-12-01T00:00:00Z",
    });
    std::fs::write(p("m.json"), manifest.to_string()).unwrap();
    let (code, _, err) = tvm(&[
        "image",
        "sign",
        "--key",
        &p("k1"),
        "--manifest",
        &p("m.json"),
        "--out",
        &p("m.signed.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    let verify = |at: &str| {
        tvm(&[
            "image",
            "verify",
            "--keys",
            &p("keys.json"),
            "--manifest",
            &p("m.signed.json"),
            "--at",
            at,
        ])
    };
    let (code, out, err) = verify("2026-03-01T00:00:00Z");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ACCEPTED tvm-gpu 1.0.0"), "{out}");

    // Changed after signing.
    let signed = std::fs::read_to_string(p("m.signed.json")).unwrap();
    std::fs::write(p("m.signed.json"), signed.replacen("1.0.0", "1.0.9", 1)).unwrap();
    let (code, _, err) = verify("2026-03-01T00:00:00Z");
    assert_eq!(code, 1);
    assert!(err.contains("changed after it was signed"), "{err}");
    std::fs::write(p("m.signed.json"), &signed).unwrap();

    // Rotate to key 2 on 2026-06-01 with a 7-day overlap, and sign with both.
    let (code, _, err) = tvm(&[
        "image",
        "rotate-key",
        "--keys",
        &p("keys.json"),
        "--public-key",
        &public_key(&out2),
        "--overlap-days",
        "7",
        "--at",
        "2026-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = verify("2026-06-10T00:00:00Z");
    assert_eq!(code, 1, "key 1 has expired: {out}");
    let (code, _, err) = tvm(&[
        "image",
        "sign",
        "--add",
        "--key",
        &p("k2"),
        "--manifest",
        &p("m.signed.json"),
        "--out",
        &p("m.signed.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    for at in ["2026-05-01T00:00:00Z", "2026-06-10T00:00:00Z"] {
        let (code, _, err) = verify(at);
        assert_eq!(code, 0, "{at}: {err}");
    }

    // Retired: refused whatever its window.
    let (code, _, err) = tvm(&[
        "image",
        "retire",
        "--keys",
        &p("keys.json"),
        "--release",
        "tvm-gpu 1.0.0",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = verify("2026-06-10T00:00:00Z");
    assert_eq!(code, 1);
    assert!(err.contains("retired"), "{err}");
}

fn measure_data(name: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/measure")
        .join(name)
        .display()
        .to_string()
}

/// Measure a reference boot (the GCP TD of go-tdx-guest: its quote and
/// CCEL), publish it, and diagnose that boot and one of a changed release.
#[test]
fn measure_a_reference_boot_then_diagnose_down_to_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let quote = measure_data("gotdxguest_cos-113-tdx-quote.dat");
    let log = measure_data("gotdxguest_ccel_data.dat");
    let (code, out, err) = tvm(&[
        "image",
        "measure",
        "tdx",
        "--shape",
        "gcp-c3-standard-4",
        "--quote",
        &quote,
        "--event-log",
        &log,
    ]);
    assert_eq!(code, 0, "{err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(set["source"], "reference boot");
    for r in ["mrtd", "rtmr0", "rtmr1", "rtmr2"] {
        assert_eq!(set["registers"][r].as_str().unwrap().len(), 96, "{r}");
    }
    assert!(
        set["events"]["rtmr1"].as_array().unwrap().len() >= 3,
        "{set}"
    );

    // A log that is not this boot's is refused by name.
    let mut other = std::fs::read(&log).unwrap();
    let first_rtmr1 = set["events"]["rtmr1"][0].as_str().unwrap();
    let d = hex::decode(first_rtmr1).unwrap();
    let at = other.windows(48).position(|w| w == d.as_slice()).unwrap();
    other[at] ^= 1;
    std::fs::write(p("other.log"), &other).unwrap();
    let (code, _, err) = tvm(&[
        "image",
        "measure",
        "tdx",
        "--shape",
        "x",
        "--quote",
        &quote,
        "--event-log",
        &p("other.log"),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("replays RTMR1") && err.contains("not that boot's"),
        "{err}"
    );

    // Publish it: key, manifest, signature.
    let (_, keygen, _) = tvm(&["image", "keygen", "--out", &p("k")]);
    let keys = serde_json::json!({"keys": [{
        "public_key": public_key(&keygen),
        "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
    }]});
    std::fs::write(p("keys.json"), keys.to_string()).unwrap();
    let manifest = |set: &serde_json::Value, version: &str| {
        serde_json::json!({
            "format": 1, "name": "cos", "version": version, "node_types": ["cpu"], "files": [],
            "measurements": [set],
            "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
        })
        .to_string()
    };
    std::fs::write(p("m.json"), manifest(&set, "113")).unwrap();
    let (code, _, err) = tvm(&[
        "image",
        "sign",
        "--key",
        &p("k"),
        "--manifest",
        &p("m.json"),
        "--out",
        &p("m.signed.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tvm(&[
        "image",
        "diagnose",
        "--quote",
        &quote,
        "--event-log",
        &log,
        "--manifest",
        &p("m.signed.json"),
        "--keys",
        &p("keys.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("=> this quote matches cos 113 shape gcp-c3-standard-4"),
        "{out}"
    );

    // The next release boots another kernel: its RTMR1 reference events
    // differ in the first event, and the diagnosis names it.
    let mut next = set.clone();
    let mut events: Vec<String> = serde_json::from_value(next["events"]["rtmr1"].clone()).unwrap();
    events[0] = "11".repeat(48);
    let digests: Vec<[u8; 48]> = events
        .iter()
        .map(|e| hex::decode(e).unwrap().try_into().unwrap())
        .collect();
    next["registers"]["rtmr1"] = hex::encode(tvm_image::tdx::replay(&digests)).into();
    next["events"]["rtmr1"] = events.into();
    std::fs::write(p("next.json"), manifest(&next, "114")).unwrap();
    tvm(&[
        "image",
        "sign",
        "--key",
        &p("k"),
        "--manifest",
        &p("next.json"),
        "--out",
        &p("next.signed.json"),
    ]);
    let (code, out, _) = tvm(&[
        "image",
        "diagnose",
        "--quote",
        &quote,
        "--event-log",
        &log,
        "--manifest",
        &p("next.signed.json"),
        "--keys",
        &p("keys.json"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rtmr1 DIFFERS (enforced)")
            && out.contains("first differing event: RTMR1 event 0 (log record")
            && out.contains(&"11".repeat(48))
            && out.contains("=> no TDX measurement set of cos 114 matches"),
        "{out}"
    );
    // Without the log the register is named and the log asked for.
    let (_, out, _) = tvm(&[
        "image",
        "diagnose",
        "--quote",
        &quote,
        "--manifest",
        &p("next.signed.json"),
    ]);
    assert!(
        out.contains("signatures not checked") && out.contains("give --event-log"),
        "{out}"
    );
}

/// From digests: TDX RTMR1 and RTMR2 computed with their reference events;
/// SEV-SNP from dstack's real launch document (its genuine report's MEASUREMENT).
#[test]
fn measure_from_digests() {
    let h = |b: u8| format!("{b:02x}").repeat(48);
    let (code, out, err) = tvm(&[
        "image",
        "measure",
        "tdx",
        "--shape",
        "8xH100",
        "--mrtd",
        &h(1),
        "--rtmr0",
        &h(2),
        "--kernel-authenticode",
        &h(3),
        "--cmdline-sha384",
        &h(4),
        "--initrd-sha384",
        &h(5),
    ]);
    assert_eq!(code, 0, "{err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    let k: [u8; 48] = [3; 48];
    assert_eq!(
        set["registers"]["rtmr1"],
        hex::encode(tvm_image::tdx::rtmr1(&k))
    );
    assert_eq!(
        set["registers"]["rtmr2"],
        hex::encode(tvm_image::tdx::rtmr2(&[4; 48], &[5; 48]))
    );
    assert_eq!(set["events"]["rtmr2"], serde_json::json!([h(4), h(5)]));
    let (code, _, err) = tvm(&[
        "image",
        "measure",
        "tdx",
        "--shape",
        "x",
        "--mrtd",
        "ab",
        "--rtmr0",
        &h(2),
        "--kernel-authenticode",
        &h(3),
        "--cmdline-sha384",
        &h(4),
        "--initrd-sha384",
        &h(5),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--mrtd") && err.contains("expected 48"),
        "{err}"
    );

    // MRTD from the firmware itself (Debian's OVMF; dstack-mr's value).
    let (code, out, err) = tvm(&[
        "image",
        "measure",
        "tdx",
        "--shape",
        "8xH100",
        "--firmware",
        &measure_data("debian_ovmf_2022.11-6+deb12u2_OVMF.fd"),
        "--page-order",
        "two-pass",
        "--rtmr0",
        &h(2),
        "--kernel-authenticode",
        &h(3),
        "--cmdline-sha384",
        &h(4),
        "--initrd-sha384",
        &h(5),
    ]);
    assert_eq!(code, 0, "{err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        set["registers"]["mrtd"],
        "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1"
    );

    let (code, out, err) = tvm(&[
        "image",
        "measure",
        "sev-snp",
        "--shape",
        "milan-2vcpu",
        "--launch",
        &measure_data("dstack_sev_measurement_input.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        set["registers"]["measurement"],
        "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d"
    );
}
