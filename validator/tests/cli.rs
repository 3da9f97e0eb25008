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

/// A policy file that accepts SEV-SNP evidence without AMD's CRL (no real
/// CRL is among the vectors) and does not check which image runs (no one
/// published tvm manifests for the images the vectors come from).
fn no_crl_policy() -> String {
    let p = std::env::temp_dir().join(format!("tvm-cli-no-crl-{}.yaml", std::process::id()));
    std::fs::write(
        &p,
        "snp: {dangerous_allow_missing_crl: true}\nimages: {dangerous_allow_unmeasured: true}\n",
    )
    .unwrap();
    p.display().to_string()
}

/// TDX-1's MRTD.
const TDX1_MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";

/// A policy pinning a fresh operator key, and a folder with a manifest it
/// signed for TDX-1's image (July 2025).
fn measured_policy(dir: &std::path::Path) -> (String, String) {
    let (key, public) = tvm_image::manifest::keygen().unwrap();
    let quote = std::fs::read(td("tdx/dcapqvl_tdx_quote_v4.bin")).unwrap();
    let (_, rtmr) = tvm_verifier::tee::tdx::registers_of(&quote).unwrap();
    let manifest = serde_json::json!({
        "format": 1, "name": "tdx1-test", "version": "1", "node_types": ["cpu"], "files": [],
        "measurements": [{"platform": "tdx", "shape": "dcap-qvl", "registers": {
            "mrtd": TDX1_MRTD, "rtmr1": hex::encode(rtmr[1]), "rtmr2": hex::encode(rtmr[2])}}],
        "valid_from": "2025-07-01T00:00:00Z", "valid_until": "2025-08-01T00:00:00Z",
    });
    let signed = tvm_image::manifest::sign(&manifest.to_string(), &key).unwrap();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("tdx1.json"),
        serde_json::to_vec(&signed).unwrap(),
    )
    .unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  operator_keys:\n    keys:\n      - {{public_key: {}, valid_from: 2025-01-01T00:00:00Z, valid_until: 2026-01-01T00:00:00Z}}\n",
            hex::encode(public)
        ),
    )
    .unwrap();
    (
        policy.display().to_string(),
        manifests.display().to_string(),
    )
}

#[test]
fn tdx_accepted_rejected_and_json() {
    let q = td("tdx/dcapqvl_tdx_quote_v4.bin");
    let c = td("tdx/dcapqvl_tdx_quote_v4_collateral.json");
    let tmp = tempfile::tempdir().unwrap();
    let (measured, manifests) = measured_policy(tmp.path());
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--policy",
        &measured,
        "--manifests",
        &manifests,
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ACCEPTED")
            && out.contains("UpToDate")
            && out.contains("image tdx1-test 1 (tdx shape dcap-qvl)"),
        "{out}"
    );
    // The manifest is for CPU nodes: as a GPU node's quote it does not count.
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--policy",
        &measured,
        "--manifests",
        &manifests,
        "--node-type",
        "gpu",
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not for gpu nodes"), "{out}");
    // The default policy pins no operator key: genuine, but which image
    // runs is unknown, and that is a rejection saying what to do.
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  measurement") && out.contains("no signed image manifest is loaded"),
        "{out}"
    );
    let policy = no_crl_policy();
    // Unix seconds work as well; the expired CRL is named.
    let (code, out, _) = run(&[
        "verify",
        "--quote",
        &q,
        "--collateral",
        &c,
        "--policy",
        &policy,
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
        "--policy",
        &policy,
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
        "--policy",
        &policy,
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
        "--policy",
        &policy,
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
    // Genuine, but no CRL: the default policy says so and what to do.
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  snp.revocation") && out.contains("dangerous_allow_missing_crl"),
        "{out}"
    );
    let policy = no_crl_policy();
    let (code, out, _) = run(&[
        "verify",
        "--snp-report",
        &td("snp/virtee_milan_report.hex"),
        "--vcek",
        &td("snp/virtee_milan_vcek.der"),
        "--policy",
        &policy,
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
    let policy = no_crl_policy();
    let tdx_args = [
        "verify",
        "--quote",
        &quote,
        "--policy",
        &policy,
        "--at",
        "2025-07-04T10:16:31Z",
    ];

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
        "--policy",
        &policy,
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

#[test]
fn gpu_evidence_single_report_and_node() {
    let dir = std::env::temp_dir().join(format!("tvm-cli-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let offline = dir.join("offline.yaml");
    std::fs::write(
        &offline,
        "gpu:\n  require_rims: false\n  require_revocation_check: false\n",
    )
    .unwrap();
    let offline = offline.display().to_string();

    // NV-4 from nvtrust's two files: accepted under the offline policy.
    let gpus = td("nvidia/nvtrust_ppcie_gpu_evidence_8xH100.json");
    let switches = td("nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json");
    let nonce = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";
    let when = "2025-06-01T00:00:00Z";
    let (code, out, err) = run(&[
        "verify",
        "--gpu-evidence",
        &gpus,
        &switches,
        "--nonce",
        nonce,
        "--at",
        when,
        "--policy",
        &offline,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("NODE ACCEPTED (12 devices)"), "{out}");
    assert!(out.contains("PASS  node.topology"), "{out}");

    // The GPUs alone are not a protected-PCIe node.
    let (code, out, _) = run(&[
        "verify",
        "--gpu-evidence",
        &gpus,
        "--nonce",
        nonce,
        "--at",
        when,
        "--policy",
        &offline,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  node.topology"), "{out}");

    // A wrong nonce is rejected and named; the JSON carries the checks.
    let other = "00".repeat(32);
    let (code, out, _) = run(&[
        "verify",
        "--gpu-evidence",
        &gpus,
        &switches,
        "--nonce",
        &other,
        "--at",
        when,
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], false);
    let first = &v["devices"][0]["verdict"]["checks"];
    let nonce_check = first
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spdm.nonce")
        .unwrap();
    assert_eq!(nonce_check["status"], "fail");

    // One hex report with its chain and a RIM; default policy: no driver RIM, no OCSP.
    let (code, out, _) = run(&[
        "verify",
        "--gpu-evidence",
        &td("nvidia/trustee_hopper_coco_report1.hex"),
        "--cert-chain",
        &td("nvidia/trustee_hopper_coco_cert_chain1.pem"),
        "--rim",
        &td("nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag"),
        "--at",
        "2024-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("PASS  rim.vbios"), "{out}");
    assert!(out.contains("index 9: reported 059b32e7"), "{out}");
    assert!(out.contains("FAIL  rim.driver"), "{out}");

    // A broken RIM next to a good one of the same kind is said, not dropped.
    let broken = dir.join("broken-rim.swidtag");
    let mut rim =
        std::fs::read(td("nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag")).unwrap();
    rim.truncate(rim.len() / 2);
    std::fs::write(&broken, &rim).unwrap();
    let (code, out, err) = run(&[
        "verify",
        "--gpu-evidence",
        &td("nvidia/trustee_hopper_coco_report1.hex"),
        "--cert-chain",
        &td("nvidia/trustee_hopper_coco_cert_chain1.pem"),
        "--rim",
        &td("nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag"),
        broken.to_str().unwrap(),
        "--at",
        "2024-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("PASS  rim.vbios"), "{out}");
    assert!(
        err.contains("broken-rim.swidtag") && err.contains("not used"),
        "{err}"
    );

    // Unusable input: a single report without its chain, a bad nonce.
    let (code, _, err) = run(&[
        "verify",
        "--gpu-evidence",
        &td("nvidia/nvtrust_hopper_report.hex"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--cert-chain"), "{err}");
    let (code, _, err) = run(&["verify", "--gpu-evidence", &gpus, "--nonce", "abc"]);
    assert_eq!(code, 2);
    assert!(err.contains("64 hex"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
