//! The `tvm-verifier verify` command as miners and validators run it.

use std::path::PathBuf;
use std::process::Command;

fn td(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
        .display()
        .to_string()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tvm-verifier"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tdx_accepted_rejected_and_json() {
    let q = td("tdx/dcapqvl_tdx_quote_v4.bin");
    let c = td("tdx/dcapqvl_tdx_quote_v4_collateral.json");
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ACCEPTED") && out.contains("UpToDate"),
        "{out}"
    );
    // Unix seconds work as well; the expired CRL is named.
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--at",
        "1784419200",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Root CA CRL expired"), "{out}");
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--at",
        "2025-07-04T10:16:31Z",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["facts"]["platform"], "tdx");
    assert_eq!(v["facts"]["tcb_status"], "UpToDate");
    // Hex input with 0x, and a wrong expected report_data.
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &td("tdx/dcapqvl_tappd_tdx_quote_v4.hex"),
        "--collateral",
        &c,
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("No matching TCB level"), "{out}");
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--at",
        "2025-07-04T10:16:31Z",
        "--report-data",
        &"00".repeat(64),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  report_data"), "{out}");
}

#[test]
fn snp_with_pinned_and_given_chain() {
    let (code, out, _) = run(&[
        "verify",
        "--snp-report",
        &td("snp/virtee_milan_report.hex"),
        "--vcek",
        &td("snp/virtee_milan_vcek.der"),
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("AMD SEV-SNP") && out.contains("Milan"),
        "{out}"
    );
    let chain =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs/anchors/amd_ask_ark_genoa.pem");
    let (code, out, _) = run(&[
        "verify",
        "--snp-report",
        &td("snp/virtee_milan_report.hex"),
        "--vcek",
        &td("snp/virtee_milan_vcek.der"),
        "--chain",
        chain.to_str().unwrap(),
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("wrong product chain"), "{out}");
}

#[test]
fn unusable_input_exits_2_with_a_reason() {
    let (code, _, err) = run(&[
        "verify",
        "--quote",
        "/nonexistent/quote",
        "--collateral",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read quote"), "{err}");
    let (code, _, err) = run(&["verify", "--quote", &td("tdx/dcapqvl_tdx_quote_v4.bin")]);
    assert_eq!(code, 2);
    assert!(err.contains("--collateral"), "{err}");
    let (code, _, err) = run(&[
        "verify",
        "--quote",
        &td("tdx/dcapqvl_tdx_quote_v4.bin"),
        "--collateral",
        &td("snp/virtee_milan_vcek.der"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("QuoteCollateralV3"), "{err}");
    let (code, _, err) = run(&[
        "verify",
        "--snp-report",
        &td("snp/virtee_milan_report.hex"),
        "--vcek",
        &td("snp/virtee_milan_vcek.der"),
        "--at",
        "yesterday",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
    let (code, _, _) = run(&["verify"]);
    assert_eq!(code, 2);
}
