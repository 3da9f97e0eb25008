//! Signed image manifests: each way a manifest can be unacceptable is
//! refused with its own reason, and a key rotation accepts both keys inside
//! the overlap only.

use tvm_image::manifest::{self, KeySet, ManifestError, TrustedKey};

const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn rfc(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn manifest_text(version: &str, from: i64, until: i64) -> String {
    serde_json::json!({
        "format": 1,
        "name": "tvm-gpu",
        "version": version,
        "node_types": ["gpu"],
        "files": [{"path": "tvm-gpu.qcow2", "sha256": "ab".repeat(32), "size": 4096}],
        "launch": {"qemu": "9.2.0", "firmware": "TDVF edk2-stable202502"},
        "measurements": [{
            "platform": "tdx",
            "shape": "8xH100-96vcpu",
            "registers": {"mrtd": "11".repeat(48), "rtmr0": "22".repeat(48),
                          "rtmr1": "33".repeat(48), "rtmr2": "44".repeat(48)},
            "modes": {"rtmr0": "warn"},
            "source": "computed"
        }],
        "valid_from": rfc(from),
        "valid_until": rfc(until),
    })
    .to_string()
}

fn trusted(public_key: &[u8], from: i64, until: i64) -> TrustedKey {
    serde_json::from_value(serde_json::json!({
        "public_key": hex::encode(public_key),
        "valid_from": rfc(from),
        "valid_until": rfc(until),
    }))
    .unwrap()
}

fn signed(text: &str, key: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&manifest::sign(text, key).unwrap()).unwrap()
}

#[test]
fn every_unacceptable_manifest_is_refused_with_its_reason() {
    let (k1, p1) = manifest::keygen().unwrap();
    let (k2, _) = manifest::keygen().unwrap();
    let keys = KeySet {
        keys: vec![trusted(&p1, T0, T0 + 365 * DAY)],
        retired: vec![],
    };
    let text = manifest_text("1.0.0", T0, T0 + 90 * DAY);
    let good = signed(&text, &k1);
    let m = manifest::verify(&good, &keys, T0 + DAY).unwrap();
    assert_eq!(m.release(), "tvm-gpu 1.0.0");
    assert_eq!(
        m.measurements[0].modes.get("rtmr0"),
        Some(&manifest::Mode::Warn)
    );

    // Tampered: one character of the manifest changed after signing.
    let mut s: manifest::Signed = serde_json::from_slice(&good).unwrap();
    s.manifest = s.manifest.replacen("1.0.0", "1.0.1", 1);
    let tampered = serde_json::to_vec(&s).unwrap();
    assert!(matches!(
        manifest::verify(&tampered, &keys, T0 + DAY),
        Err(ManifestError::BadSignature(_))
    ));
    // Every byte of the signature flipped: never accepted.
    let s: manifest::Signed = serde_json::from_slice(&good).unwrap();
    let sig = hex::decode(&s.signatures[0].sig).unwrap();
    for i in 0..sig.len() {
        let mut bad = sig.clone();
        bad[i] ^= 1;
        let mut t = s.clone();
        t.signatures[0].sig = hex::encode(&bad);
        assert!(
            matches!(
                manifest::verify(&serde_json::to_vec(&t).unwrap(), &keys, T0 + DAY),
                Err(ManifestError::BadSignature(_))
            ),
            "signature byte {i}"
        );
    }
    // Unknown key.
    let e = manifest::verify(&signed(&text, &k2), &keys, T0 + DAY).unwrap_err();
    assert!(matches!(e, ManifestError::UnknownKey(_)), "{e}");
    assert!(e.to_string().contains("is the key set current"), "{e}");
    // Expired key, and a key not yet valid.
    let e = manifest::verify(&good, &keys, T0 + 400 * DAY).unwrap_err();
    assert!(matches!(e, ManifestError::KeyOutsideWindow { .. }), "{e}");
    let e = manifest::verify(&good, &keys, T0 - DAY).unwrap_err();
    assert!(matches!(e, ManifestError::KeyOutsideWindow { .. }), "{e}");
    // Revoked key.
    let mut revoked = keys.clone();
    revoked.keys[0].revoked = true;
    assert!(matches!(
        manifest::verify(&good, &revoked, T0 + DAY),
        Err(ManifestError::KeyRevoked(_))
    ));
    // Image past its window (the key still valid), and a retired image.
    let e = manifest::verify(&good, &keys, T0 + 100 * DAY).unwrap_err();
    assert!(matches!(e, ManifestError::ImageOutsideWindow { .. }), "{e}");
    assert!(e.to_string().contains("tvm-gpu 1.0.0"), "{e}");
    let mut retired = keys.clone();
    retired.retire("tvm-gpu 1.0.0");
    assert_eq!(
        manifest::verify(&good, &retired, T0 + DAY),
        Err(ManifestError::Retired("tvm-gpu 1.0.0".into()))
    );
    // Unsigned, malformed, another format, too large.
    let mut s: manifest::Signed = serde_json::from_slice(&good).unwrap();
    s.signatures.clear();
    assert_eq!(
        manifest::verify(&serde_json::to_vec(&s).unwrap(), &keys, T0 + DAY),
        Err(ManifestError::Unsigned)
    );
    assert!(matches!(
        manifest::verify(b"{", &keys, T0 + DAY),
        Err(ManifestError::Malformed(_))
    ));
    let v2 = signed(&text.replacen("\"format\":1", "\"format\":2", 1), &k1);
    assert_eq!(
        manifest::verify(&v2, &keys, T0 + DAY),
        Err(ManifestError::Format(2))
    );
    let big = vec![b' '; manifest::MAX_SIGNED_BYTES + 1];
    assert!(matches!(
        manifest::verify(&big, &keys, T0 + DAY),
        Err(ManifestError::TooLarge(_))
    ));
}

#[test]
fn a_rotation_accepts_both_keys_inside_the_overlap_only() {
    let (old, old_pub) = manifest::keygen().unwrap();
    let (new, new_pub) = manifest::keygen().unwrap();
    let mut keys = KeySet {
        keys: vec![trusted(&old_pub, T0, T0 + 365 * DAY)],
        retired: vec![],
    };
    // Rotate on day 30 with a 7-day overlap; the new key lives a year.
    let rotated_at = T0 + 30 * DAY;
    keys.rotate(&new_pub, rotated_at, 7 * DAY, 365 * DAY)
        .unwrap();
    // Rotating to the same key again is refused (it would cut its window).
    assert!(keys
        .rotate(&new_pub, rotated_at + DAY, 7 * DAY, 365 * DAY)
        .is_err());
    let text = manifest_text("2.0.0", T0, T0 + 200 * DAY);
    let by_old = signed(&text, &old);
    let by_new = signed(&text, &new);
    let ok = |m: &[u8], t: i64| manifest::verify(m, &keys, t).is_ok();
    // Before the rotation only the old key; inside the overlap both; after
    // it only the new one.
    assert!(ok(&by_old, rotated_at - DAY) && !ok(&by_new, rotated_at - DAY));
    assert!(ok(&by_old, rotated_at + DAY) && ok(&by_new, rotated_at + DAY));
    assert!(!ok(&by_old, rotated_at + 8 * DAY) && ok(&by_new, rotated_at + 8 * DAY));
    assert!(matches!(
        manifest::verify(&by_old, &keys, rotated_at + 8 * DAY),
        Err(ManifestError::KeyOutsideWindow { .. })
    ));
    // A manifest signed by both is accepted throughout.
    let mut both: manifest::Signed = serde_json::from_slice(&by_old).unwrap();
    both.signatures
        .extend(manifest::sign(&text, &new).unwrap().signatures);
    let both = serde_json::to_vec(&both).unwrap();
    for t in [rotated_at - DAY, rotated_at + DAY, rotated_at + 8 * DAY] {
        assert!(ok(&both, t), "{t}");
    }
}

#[test]
fn what_signatures_cannot_catch_is_refused_before_signing_and_after_verifying() {
    let (k, p) = manifest::keygen().unwrap();
    let keys = KeySet {
        keys: vec![trusted(&p, T0, T0 + 365 * DAY)],
        retired: vec![],
    };
    let base: serde_json::Value =
        serde_json::from_str(&manifest_text("1.0.0", T0, T0 + 90 * DAY)).unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Value), says: &str| {
        let mut v = base.clone();
        edit(&mut v);
        let text = v.to_string();
        let e = manifest::verify(&signed(&text, &k), &keys, T0 + DAY).unwrap_err();
        assert!(matches!(e, ManifestError::Malformed(_)), "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
    };
    refused(
        &|v| v["measurements"][0]["registers"]["rtmr9"] = "00".repeat(48).into(),
        "not a register of this platform",
    );
    refused(
        &|v| v["measurements"][0]["registers"]["mrtd"] = "00".repeat(32).into(),
        "32 bytes, expected 48",
    );
    refused(
        &|v| v["measurements"][0]["modes"]["rtmr3"] = "warn".into(),
        "a mode for a register the manifest does not give",
    );
    refused(
        &|v| {
            v["measurements"][0]["platform"] = "sev-snp".into();
        },
        "not a register of this platform",
    );
    // Reference events must replay to their register.
    let one = [0x33u8; 48];
    let replayed = tvm_image::eventlog::extend(&[0; 48], &one);
    refused(
        &|v| v["measurements"][0]["events"]["rtmr0"] = vec![hex::encode(one)].into(),
        "replay to",
    );
    let mut good = base.clone();
    good["measurements"][0]["registers"]["rtmr0"] = hex::encode(replayed).into();
    good["measurements"][0]["events"]["rtmr0"] = vec![hex::encode(one)].into();
    let m = manifest::verify(&signed(&good.to_string(), &k), &keys, T0 + DAY).unwrap();
    assert_eq!(m.measurements[0].events_of(0), Some(vec![one]));
    refused(
        &|v| v["measurements"] = serde_json::json!([]),
        "no measurements",
    );
}

#[test]
fn the_registers_naming_the_software_are_always_given_and_enforced() {
    let (k, p) = manifest::keygen().unwrap();
    let keys = KeySet {
        keys: vec![trusted(&p, T0, T0 + 365 * DAY)],
        retired: vec![],
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&manifest_text("1.0.0", T0, T0 + 90 * DAY)).unwrap();
    // Every register warn-only would let any guest through.
    v["measurements"][0]["modes"]["mrtd"] = "warn".into();
    let e = manifest::verify(&signed(&v.to_string(), &k), &keys, T0 + DAY).unwrap_err();
    assert!(
        e.to_string().contains("mrtd: must be given and enforced"),
        "{e}"
    );
    // RTMR1 (the kernel) and RTMR2 (command line, initrd) too.
    for r in ["rtmr1", "rtmr2"] {
        let mut v: serde_json::Value =
            serde_json::from_str(&manifest_text("1.0.0", T0, T0 + 90 * DAY)).unwrap();
        v["measurements"][0]["modes"][r] = "warn".into();
        let e = manifest::verify(&signed(&v.to_string(), &k), &keys, T0 + DAY).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{r}: must be given and enforced")),
            "{e}"
        );
    }
    // A revocation in a second entry for the same key counts.
    let good = signed(&manifest_text("1.0.0", T0, T0 + 90 * DAY), &k);
    let mut twice = keys.clone();
    let mut again = twice.keys[0].clone();
    again.revoked = true;
    twice.keys.push(again);
    assert!(matches!(
        manifest::verify(&good, &twice, T0 + DAY),
        Err(ManifestError::KeyRevoked(_))
    ));
    // More signatures than any rotation needs are not all checked.
    let mut many: manifest::Signed = serde_json::from_slice(&good).unwrap();
    let one = many.signatures[0].clone();
    many.signatures = vec![one; manifest::MAX_SIGNATURES + 1];
    let e = manifest::verify(&serde_json::to_vec(&many).unwrap(), &keys, T0 + DAY).unwrap_err();
    assert!(e.to_string().contains("at most 8 are checked"), "{e}");
    // A set of RTMRs alone (RTMR3 is the runtime's) names no firmware.
    let mut v: serde_json::Value =
        serde_json::from_str(&manifest_text("1.0.0", T0, T0 + 90 * DAY)).unwrap();
    v["measurements"][0]["registers"]
        .as_object_mut()
        .unwrap()
        .remove("mrtd");
    let e = manifest::verify(&signed(&v.to_string(), &k), &keys, T0 + DAY).unwrap_err();
    assert!(
        e.to_string().contains("mrtd: must be given and enforced"),
        "{e}"
    );
}
