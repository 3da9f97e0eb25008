//! `tvm image` as an operator runs it: keys, signing, what validators
//! conclude, retiring a release and rotating keys.

use std::process::Command;

fn tvm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tvm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn public_key(keygen_out: &str) -> String {
    keygen_out
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .unwrap()
        .trim()
        .to_string()
}

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
        "files": [], "measurements": [{"platform": "tdx", "shape": "8xH100", "registers": {"mrtd": "00".repeat(48)}}],
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
