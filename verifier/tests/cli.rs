//! The `tvm-verifier verify` command as miners and validators run it.

mod common;
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
    // No collateral file and no reachable PCS: unusable, with the reason (never the real internet).
    let dir = std::env::temp_dir().join(format!("tvm-cli-empty-{}", std::process::id()));
    let (code, _, err) = run(&[
        "verify",
        "--quote",
        &td("tdx/dcapqvl_tdx_quote_v4.bin"),
        "--collateral-dir",
        dir.to_str().unwrap(),
        "--pcs-url",
        "https://127.0.0.1:9",
        "--root-crl-url",
        "https://127.0.0.1:9/crl",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no collateral for FMSPC B0C06F000000") && err.contains("cannot reach"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collateral_and_vcek_come_from_the_store_and_travel_as_a_bundle() {
    let server = common::pcs::serve(false).await;
    let base = format!("https://{}", server.addr);
    let tmp = std::env::temp_dir().join(format!("tvm-cli-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let root = tmp.join("pcs-root.der");
    std::fs::write(&root, &server.cert_der).unwrap();
    let dir = tmp.join("cache");
    let store_args = |dir: &PathBuf| {
        vec![
            "--collateral-dir".to_string(),
            dir.display().to_string(),
            "--pcs-url".into(),
            base.clone(),
            "--root-crl-url".into(),
            format!("{base}/root.crl"),
            "--kds-url".into(),
            base.clone(),
            "--tls-root".into(),
            root.display().to_string(),
        ]
    };
    // Run the CLI off the async runtime (the server lives on it) with the store options.
    let cli = |args: &[&str], dir: &PathBuf| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(store_args(dir));
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run(&refs)
        })
    };
    let quote = td("tdx/dcapqvl_tdx_quote_v4.bin");
    let snp = td("snp/virtee_milan_report.hex");
    let bundle = tmp.join("bundle.json").display().to_string();
    let tdx_args = ["verify", "--quote", &quote, "--at", "2025-07-04T10:16:31Z"];

    let (code, out, err) = cli(&tdx_args, &dir).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("UpToDate"), "{out}");

    // The VCEK of SNP-2 from "KDS" (a v2 report: the product is given).
    let snp_args = [
        "verify",
        "--snp-report",
        &snp,
        "--product",
        "milan",
        "--at",
        "2025-06-01T00:00:00Z",
    ];
    let (code, out, err) = cli(&snp_args, &dir).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");

    // Export, then import into an empty cache and verify with the service gone.
    let (code, out, err) = cli(&["collateral", "export", &bundle], &dir).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    server.handle.shutdown();
    let dir2 = tmp.join("cache2");
    let (code, out, err) = cli(&["collateral", "import", &bundle], &dir2)
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 2 item(s)"), "{out}");
    let (code, out, err) = cli(&tdx_args, &dir2).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let _ = std::fs::remove_dir_all(tmp);
}
