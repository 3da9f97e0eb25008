//! The collateral store against a loopback HTTPS server playing Intel PCS and
//! AMD KDS: fetch, cache, outage, restart, offline bundle, and rate limits.

mod common;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::pcs::{serve, Server};
use common::{at, testdata};
use tvm_certs::store::{CollateralStore, PckCa, SnpTcb, Source, StoreConfig, StoreError};
use tvm_certs::AmdProduct;
use tvm_verifier::tee::tdx::{self, checks::COLLATERAL_FRESH, TdxCollateral, TdxInput};
use tvm_verifier::Status;

fn store(dir: &std::path::Path, s: &Server) -> CollateralStore {
    let base = format!("https://{}", s.addr);
    CollateralStore::open(
        StoreConfig {
            dir: dir.to_path_buf(),
            pcs_url: base.clone(),
            root_crl_url: format!("{base}/root.crl"),
            kds_url: base.clone(),
            nvidia_ocsp_url: format!("{base}/ocsp"),
            nvidia_rim_url: base,
            refresh_before_seconds: 86_400,
            timeout_seconds: 5,
        },
        std::slice::from_ref(&s.cert_der),
    )
    .unwrap()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tvm-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const FMSPC: &str = "B0C06F000000";

fn verify_at(c: &dcap_qvl::QuoteCollateralV3, when: i64) -> tvm_verifier::Verification {
    let quote = testdata("tdx/dcapqvl_tdx_quote_v4.bin");
    let prepared = TdxCollateral::prepare(c.clone(), tvm_certs::anchors::intel_sgx_root().unwrap());
    tdx::verify(&TdxInput {
        quote: &quote,
        collateral: &prepared,
        at: when,
        grace_seconds: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_serves_from_cache_until_next_update_then_expires() {
    let server = serve(false).await;
    let dir = tempdir("outage");
    let st = store(&dir, &server);

    let t1 = at("2025-07-04T10:16:31Z");
    let (c, src) = st.tdx(FMSPC, PckCa::Platform, t1).await.unwrap();
    assert_eq!(src, Source::Fetched);
    assert_eq!(
        server.state.requests.load(Ordering::SeqCst),
        4,
        "TCB Info, QE Identity, PCK CRL, root CRL"
    );
    assert!(verify_at(&c, t1).genuine());

    // The service goes away: wait (generously) until its port refuses.
    server.handle.shutdown();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Well before nextUpdate: the cache answers, no request is made.
    let sent = st.requests_sent();
    let t2 = at("2025-07-10T00:00:00Z");
    let (c2, src) = st.tdx(FMSPC, PckCa::Platform, t2).await.unwrap();
    assert_eq!(src, Source::Cache);
    assert_eq!(st.requests_sent(), sent);
    assert!(verify_at(&c2, t2).genuine());

    // Inside the refresh window: a fetch is tried, fails, and the cache still serves.
    let t3 = at("2025-07-18T12:00:00Z");
    let (c3, src) = st.tdx(FMSPC, PckCa::Platform, t3).await.unwrap();
    assert!(
        matches!(src, Source::StaleCache(ref why) if why.contains("cannot reach")),
        "{src:?}"
    );
    assert!(verify_at(&c3, t3).genuine());

    // Past nextUpdate: still served (the verifier decides), and verification fails clearly.
    let t4 = at("2025-07-20T00:00:00Z");
    let (c4, _) = st.tdx(FMSPC, PckCa::Platform, t4).await.unwrap();
    let v = verify_at(&c4, t4);
    let fresh = v
        .checks()
        .iter()
        .find(|c| c.name == COLLATERAL_FRESH)
        .unwrap();
    assert_eq!(fresh.status, Status::Fail);
    assert!(
        fresh.detail.contains("collateral expired") && fresh.detail.contains("PCK CRL expired"),
        "{}",
        fresh.detail
    );

    // A restarted validator reads the same cache from disk.
    let again = store(&dir, &server);
    let (_, src) = again.tdx(FMSPC, PckCa::Platform, t2).await.unwrap();
    assert_eq!(src, Source::Cache);

    // Offline bundle: export, import elsewhere, serve with no network at all.
    let bundle = st.export_bundle().unwrap();
    let other_dir = tempdir("bundle");
    let other = store(&other_dir, &server);
    assert_eq!(other.import_bundle(&bundle).unwrap(), 1);
    let (c5, src) = other.tdx(FMSPC, PckCa::Platform, t2).await.unwrap();
    assert_eq!(src, Source::Cache);
    assert!(verify_at(&c5, t2).genuine());
    assert_eq!(other.requests_sent(), 0);
    // A tampered bundle is refused, naming the item.
    let tampered = String::from_utf8(bundle).unwrap().replacen(
        "\\\"tcbEvaluationDataNumber\\\":17",
        "\\\"tcbEvaluationDataNumber\\\":18",
        1,
    );
    let third = store(&tempdir("tampered"), &server);
    let err = third.import_bundle(tampered.as_bytes()).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("bundle tdx item 0"), "{err}");

    // A cache file edited on disk is ignored, never used.
    let path = dir.join("tdx").join(format!("{FMSPC}-platform.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "\\\"tcbEvaluationDataNumber\\\":17",
            "\\\"tcbEvaluationDataNumber\\\":18",
            1,
        ),
    )
    .unwrap();
    let reopened = store(&dir, &server);
    assert!(
        reopened.tdx(FMSPC, PckCa::Platform, t2).await.is_err(),
        "tampered cache must not be served"
    );

    for d in [dir, other_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn snp2_chip_and_tcb() -> ([u8; 64], SnpTcb) {
    let report = testdata("snp/virtee_milan_report.hex");
    let mut chip = [0u8; 64];
    chip.copy_from_slice(&report[0x1A0..0x1E0]);
    (
        chip,
        SnpTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcek_is_fetched_once_and_checked() {
    let server = serve(false).await;
    let dir = tempdir("vcek");
    let st = store(&dir, &server);
    let (chip, tcb) = snp2_chip_and_tcb();
    let (der, src) = st.vcek(AmdProduct::Milan, &chip, tcb).await.unwrap();
    assert_eq!(src, Source::Fetched);
    assert_eq!(der, testdata("snp/virtee_milan_vcek.der"));
    let (_, src) = st.vcek(AmdProduct::Milan, &chip, tcb).await.unwrap();
    assert_eq!(src, Source::Cache);
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 1);
    // A VCEK served for the wrong TCB is refused.
    let wrong = SnpTcb {
        microcode: 116,
        ..tcb
    };
    let err = st.vcek(AmdProduct::Milan, &chip, wrong).await.unwrap_err();
    assert!(err.to_string().contains("another TCB"), "{err}");
    // A CRL that AMD's ARK did not sign is refused, and not cached.
    let at = common::at("2025-06-01T00:00:00Z");
    let err = st
        .amd_crl(AmdProduct::Milan, tvm_certs::AmdSigner::Vcek, at)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not signed by AMD's Milan ARK"),
        "{err}"
    );
    assert!(!dir.join("snp/crl/Milan-vcek.der").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cause_backoff_not_a_storm() {
    let server = serve(true).await;
    let dir = tempdir("429");
    let st = Arc::new(store(&dir, &server));
    let (chip, tcb) = snp2_chip_and_tcb();
    // Twenty validators' rounds asking for the same VCEK at once.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let st = st.clone();
            tokio::spawn(async move { st.vcek(AmdProduct::Milan, &chip, tcb).await })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        errors.push(t.await.unwrap().unwrap_err().to_string());
    }
    assert_eq!(
        server.state.requests.load(Ordering::SeqCst),
        1,
        "one request, then backoff"
    );
    assert!(errors.iter().any(|e| e.contains("429")), "{errors:?}");
    assert!(
        errors.iter().filter(|e| e.contains("slow down")).count() >= 19,
        "{errors:?}"
    );
    // Other chips on the same host wait too.
    let mut other = chip;
    other[0] ^= 1;
    assert!(st.vcek(AmdProduct::Milan, &other, tcb).await.is_err());
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// RIMs come from NVIDIA's RIM service once, then from the cache; an OCSP
/// responder that cannot answer leaves revocation unknown, which the default
/// policy refuses, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_rims_are_fetched_once_and_ocsp_outages_are_named() {
    use tvm_validator::gpu_collateral;
    use tvm_verifier::gpu::input::{pem_chain, DeviceEvidence};
    use tvm_verifier::gpu::node::{appraise_node, check, NodeInput};
    use tvm_verifier::policy::GpuPolicy;

    let server = serve(false).await;
    let dir = tempdir("gpu");
    let st = store(&dir, &server);
    let devices = vec![DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: testdata("nvidia/nvtrust_hopper_report.hex"),
        chain: pem_chain(&testdata("nvidia/nvtrust_hopper_cert_chain.pem")).unwrap(),
        stated_nonce: None,
    }];
    let when = at("2024-09-01T00:00:00Z");
    let (mut rims, problems) = gpu_collateral::rims(&st, &devices, when).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rims.len(), 2);
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 2);
    // The RIM signer chains too: signer, L3 and CA of each RIM.
    gpu_collateral::rim_revocation(&st, &mut rims, when, 0).await;
    assert_eq!(server.state.ocsp_requests.load(Ordering::SeqCst), 6);
    assert!(matches!(
        rims[0].revocation,
        Some(tvm_verifier::gpu::node::Revocation::Unknown(_))
    ));
    let revocation = gpu_collateral::revocation(&st, &devices, when, 0).await;
    // BROM, Provisioner ICA and Identity CA: the leaf and root are not asked about.
    assert_eq!(server.state.ocsp_requests.load(Ordering::SeqCst), 9);

    let policy = GpuPolicy::default();
    let v = appraise_node(&NodeInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        devices: &devices,
        nonce: None,
        rims: &rims,
        revocation: &revocation,
        policy: &policy,
        at: when,
    });
    let d = v.devices()[0].verdict();
    assert_eq!(
        d.check(check::RIM_MEASUREMENTS).unwrap().status,
        Status::Pass
    );
    let r = d.check(check::REVOCATION).unwrap();
    assert_eq!(r.status, Status::Fail);
    assert!(r.detail.contains("GH100 A01 GSP BROM"), "{}", r.detail);
    assert!(r.detail.contains("TryLater"), "{}", r.detail);
    assert!(r.detail.contains("policy requires"), "{}", r.detail);

    // Second time: RIMs from the cache; the responder is asked again.
    let (again, _) = gpu_collateral::rims(&st, &devices, when).await;
    assert_eq!(again.len(), 2);
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 2);
    // They travel in the offline bundle.
    let bundle = st.export_bundle().unwrap();
    let other = tempdir("gpu-import");
    let st2 = store(&other, &server);
    assert_eq!(st2.import_bundle(&bundle).unwrap(), 2);
    let (imported, _) = gpu_collateral::rims(&st2, &devices, when).await;
    assert_eq!(imported.len(), 2);
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 2);
    // An id the service does not have is reported, not fatal.
    let mut other_dev = devices.clone();
    other_dev[0].evidence = testdata("nvidia/trustee_hopper_coco_report1.hex");
    other_dev[0].chain =
        pem_chain(&testdata("nvidia/trustee_hopper_coco_cert_chain1.pem")).unwrap();
    let (none, problems) = gpu_collateral::rims(&st, &other_dev, when).await;
    assert!(none.is_empty());
    assert_eq!(problems.len(), 2);
    assert!(
        problems[0].contains("NV_GPU_DRIVER_GH100_580.95.05") && problems[0].contains("404"),
        "{problems:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// The validator's round gets SEV-SNP collateral from the store: the chip's
/// VCEK from KDS and AMD's CRL, so a real report is verified (not failed
/// for want of collateral) and a bad CRL is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_collateral_endorses_an_snp_report_from_the_store() {
    use tvm_validator::round::Collateral;
    let server = serve(false).await;
    let dir = tempdir("round-snp");
    let collateral = tvm_validator::run::StoreCollateral::new(store(&dir, &server), 0, Vec::new());
    let report = testdata("snp/virtee_milan_report.hex");
    let at = common::at("2025-06-01T00:00:00Z");
    let endorsement = collateral
        .snp(&report, None, at)
        .await
        .expect("VCEK from the store");
    let v = tvm_verifier::tee::snp::verify(&tvm_verifier::tee::snp::SnpInput {
        report: &report,
        endorsement: &endorsement,
        at,
        grace_seconds: 0,
    });
    let failed = common::failed(&v);
    let names: Vec<&str> = failed.iter().map(|(n, _)| *n).collect();
    // Genuine: signed by the chip's VCEK under AMD's chain. The test
    // server's CRL is not AMD's: revocation is not checked, and says why.
    assert!(names.is_empty(), "{failed:?}");
    let crl = v.checks().iter().find(|c| c.name == "amd.crl").unwrap();
    assert_eq!(crl.status, tvm_verifier::Status::NotChecked);
    assert!(
        crl.detail.contains("not signed by AMD's Milan ARK"),
        "{}",
        crl.detail
    );
    assert!(v
        .checks()
        .iter()
        .any(|c| c.name == "report.signature" && c.status == tvm_verifier::Status::Pass));
    // What cannot be endorsed says why, and nothing panics: a report cut
    // short, one with its chip ID masked, one signed by a VLEK.
    let why = collateral
        .snp(&report[..100], None, at)
        .await
        .err()
        .unwrap();
    assert!(why.contains("cannot parse the report"), "{why}");
    let mut masked = report.clone();
    masked[0x1A0..0x1E0].fill(0);
    let why = collateral.snp(&masked, None, at).await.err().unwrap();
    let lower = why.to_lowercase();
    assert!(
        lower.contains("chip id") || lower.contains("chip_id"),
        "{why}"
    );
    let vlek = testdata("snp/trustee_milan_vlek_report.bin");
    let why = collateral.snp(&vlek, None, at).await.err().unwrap();
    assert!(
        why.contains("VLEK") && why.contains("certificate table"),
        "{why}"
    );

    // SNP-4, VLEK-signed (a cloud provider's): its VLEK comes from the
    // certificate table the host gives with the report, as the agent sends
    // it (`certs`), and is checked against the pinned Milan ASVK.
    let table = |guid: [u8; 16], der: &[u8], offset: u32| {
        let mut t = guid.to_vec();
        t.extend_from_slice(&offset.to_le_bytes());
        t.extend_from_slice(&(der.len() as u32).to_le_bytes());
        t.extend_from_slice(&[0u8; 24]);
        t.extend_from_slice(der);
        t
    };
    // a8074bc2-a25a-483e-aae6-39c045a0b8a1, as stored.
    const VLEK_GUID: [u8; 16] = [
        0xc2, 0x4b, 0x07, 0xa8, 0x5a, 0xa2, 0x3e, 0x48, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
        0xa1,
    ];
    let vlek_der = testdata("snp/trustee_milan_vlek.der");
    let certs = table(VLEK_GUID, &vlek_der, 48);
    let judged = |when: &str| {
        let collateral = &collateral;
        let (vlek, certs) = (&vlek, &certs);
        let when = common::at(when);
        async move {
            let e = collateral
                .snp(vlek, Some(certs), when)
                .await
                .expect("VLEK from the table");
            tvm_verifier::tee::snp::verify(&tvm_verifier::tee::snp::SnpInput {
                report: vlek,
                endorsement: &e,
                at: when,
                grace_seconds: 0,
            })
        }
    };
    let inside = judged("2025-06-01T00:00:00Z").await;
    assert!(
        common::failed(&inside).is_empty(),
        "{:?}",
        common::failed(&inside)
    );
    assert!(inside
        .checks()
        .iter()
        .any(|c| c.name == "report.signature" && c.status == tvm_verifier::Status::Pass));
    // The same VLEK after its window (2024-12-10..2025-12-10): refused.
    let after = judged("2026-01-01T00:00:00Z").await;
    assert!(!after.genuine(), "{:?}", common::failed(&after));
    // A table without the VLEK, or pointing outside itself: said so.
    const VCEK_GUID: [u8; 16] = [
        0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    let why = collateral
        .snp(&vlek, Some(&table(VCEK_GUID, &vlek_der, 48)), at)
        .await
        .err()
        .unwrap();
    assert!(why.contains("carries no VLEK"), "{why}");
    let why = collateral
        .snp(&vlek, Some(&table(VLEK_GUID, &vlek_der, 1 << 20)), at)
        .await
        .err()
        .unwrap();
    assert!(why.contains("outside the table"), "{why}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A certificate bomb costs no request: device chains that do not reach
/// NVIDIA's root get no OCSP and no RIM look-up, and a quote whose PCK chain
/// does not reach Intel's root gets no PCS fetch for the FMSPC it claims.
/// The genuine chain of the same test is asked about (the counter works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_certificates_cost_no_request() {
    use tvm_validator::gpu_collateral;
    use tvm_validator::round::Collateral;
    use tvm_verifier::gpu::input::{pem_chain, DeviceEvidence};
    use tvm_verifier::gpu::node::Revocation;

    let server = serve(false).await;
    let dir = tempdir("bomb");
    let st = store(&dir, &server);
    let when = at("2024-09-01T00:00:00Z");
    let genuine = DeviceEvidence {
        label: "gpu 0".into(),
        arch: None,
        evidence: testdata("nvidia/nvtrust_hopper_report.hex"),
        chain: pem_chain(&testdata("nvidia/nvtrust_hopper_cert_chain.pem")).unwrap(),
        stated_nonce: None,
    };
    // 16 devices, each a chain of 8 self-signed certificates (the caps), and
    // the genuine chain with its root swapped for a self-made one.
    let self_signed = || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["NVIDIA GH100".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().der().to_vec()
    };
    let mut bomb: Vec<DeviceEvidence> = (0..16)
        .map(|i| DeviceEvidence {
            label: format!("gpu {i}"),
            chain: (0..8).map(|_| self_signed()).collect(),
            ..genuine.clone()
        })
        .collect();
    let mut swapped_root = genuine.clone();
    *swapped_root.chain.last_mut().unwrap() = self_signed();
    bomb.push(swapped_root);

    let (rims, _) = gpu_collateral::rims(&st, &bomb, when).await;
    let revocation = gpu_collateral::revocation(&st, &bomb, when, 0).await;
    assert!(rims.is_empty());
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 0);
    assert_eq!(server.state.ocsp_requests.load(Ordering::SeqCst), 0);
    assert_eq!(revocation.len(), bomb.len());
    for r in &revocation {
        assert!(
            matches!(r, Revocation::Unknown(why) if why.starts_with("not asked")),
            "{r:?}"
        );
    }
    // A genuine chain with a report it did not sign (one byte changed): its
    // driver and VBIOS versions could be made up, so no RIM is asked for.
    let mut forged = genuine.clone();
    forged.evidence[120] ^= 1;
    let (rims, _) = gpu_collateral::rims(&st, std::slice::from_ref(&forged), when).await;
    assert!(rims.is_empty());
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 0);
    // The genuine device is asked about: the counters would have seen them.
    let (rims, _) = gpu_collateral::rims(&st, std::slice::from_ref(&genuine), when).await;
    assert_eq!(rims.len(), 2);
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 2);
    let _ = gpu_collateral::revocation(&st, std::slice::from_ref(&genuine), when, 0).await;
    assert_eq!(server.state.ocsp_requests.load(Ordering::SeqCst), 3);

    // TDX: one base64 character of the quote's PCK certificate changed.
    let collateral = tvm_validator::run::StoreCollateral::new(store(&dir, &server), 0, Vec::new());
    let mut quote = testdata("tdx/dcapqvl_tdx_quote_v4.bin");
    let begin = quote
        .windows(27)
        .position(|w| w == b"-----BEGIN CERTIFICATE-----")
        .unwrap();
    let i = begin + 27 + 400;
    quote[i] = if quote[i] == b'A' { b'B' } else { b'A' };
    let t = at("2025-07-04T10:16:31Z");
    let e = collateral.tdx(&quote, t).await.err().unwrap();
    assert!(e.contains("no collateral is fetched"), "{e}");
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 2);
    // The genuine quote is fetched for (4 requests: TCB info, QE identity, CRLs).
    let good = testdata("tdx/dcapqvl_tdx_quote_v4.bin");
    assert!(collateral.tdx(&good, t).await.is_ok());
    assert_eq!(server.state.requests.load(Ordering::SeqCst), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Signed image manifests through the store: fetched from the operator's
/// URL and cached; an answer with no signed manifest (an error page, `[]`)
/// never replaces a good copy; plain HTTP elsewhere than this machine, a
/// missing folder and a FIFO are refused by name; they travel in the
/// offline bundle; and only what the policy's keys signed is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_manifests_are_fetched_cached_and_never_replaced_by_nothing() {
    let server = serve(false).await;
    let dir = tempdir("images");
    let st = store(&dir, &server);
    let (key, public) = tvm_image::manifest::keygen().unwrap();
    let keys: tvm_verifier::image::KeySet = serde_json::from_value(serde_json::json!({"keys": [{
        "public_key": hex::encode(public),
        "valid_from": "2025-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}]}))
    .unwrap();
    let manifest = serde_json::json!({
        "format": 1, "name": "tvm-gpu", "version": "1", "node_types": ["gpu"], "files": [],
        "measurements": [{"platform": "tdx", "shape": "s", "registers": {
            "mrtd": "11".repeat(48), "rtmr1": "22".repeat(48), "rtmr2": "33".repeat(48)}}],
        "valid_from": "2025-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z",
    })
    .to_string();
    let signed = tvm_image::manifest::sign(&manifest, &key).unwrap();
    *server.state.manifests.lock().unwrap() = serde_json::to_vec(&vec![signed]).unwrap();
    let url = format!("https://{}/manifests.json", server.addr);
    let accepted = |found: &tvm_certs::store::FoundManifests| {
        tvm_verifier::Images::load(
            found
                .manifests
                .iter()
                .map(|(s, b)| (s.as_str(), b.as_slice())),
            &keys,
            at("2026-01-01T00:00:00Z"),
        )
        .accepted()
        .len()
    };
    let accepts = |m: &[u8]| {
        !tvm_verifier::Images::load([("", m)], &keys, at("2026-01-01T00:00:00Z"))
            .accepted()
            .is_empty()
    };
    let found = st
        .image_manifests(std::slice::from_ref(&url), &accepts)
        .await;
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(accepted(&found), 1);

    // Two hours old: past the hour after which a URL is fetched again.
    let age_cache = || {
        for entry in std::fs::read_dir(dir.join("images")).unwrap() {
            let f = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
                .unwrap();
        }
    };
    // The URL now answers `[]`; once the cached copy is old enough to be
    // fetched again, the empty answer is refused and the copy kept.
    *server.state.manifests.lock().unwrap() = b"[]".to_vec();
    age_cache();
    let before = server.state.requests.load(Ordering::SeqCst);
    let found = st
        .image_manifests(std::slice::from_ref(&url), &accepts)
        .await;
    assert_eq!(server.state.requests.load(Ordering::SeqCst), before + 1);
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("no manifest in the answer is accepted")),
        "{:?}",
        found.problems
    );
    assert_eq!(accepted(&found), 1, "the cached copy still counts");
    // Nor does a signed-looking answer no pinned key signed.
    let (other_key, _) = tvm_image::manifest::keygen().unwrap();
    let junk = tvm_image::manifest::sign(&manifest, &other_key).unwrap();
    *server.state.manifests.lock().unwrap() = serde_json::to_vec(&vec![junk]).unwrap();
    age_cache();
    let found = st
        .image_manifests(std::slice::from_ref(&url), &accepts)
        .await;
    assert_eq!(accepted(&found), 1, "still the good copy");

    // Plain HTTP to another machine, a folder that is not there, a FIFO.
    let folder = dir.join("operator");
    std::fs::create_dir_all(&folder).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(folder.join("stuck.json"))
        .status()
        .unwrap()
        .success());
    let sources = [
        "http://203.0.113.7/manifests.json".to_string(),
        format!("https://{}/moved.json", server.addr),
        dir.join("nowhere").display().to_string(),
        folder.display().to_string(),
    ];
    let found = st.image_manifests(&sources, &accepts).await;
    for says in [
        "fetched over https://",
        "error following redirect",
        "no such folder",
        "stuck.json: not a regular file",
    ] {
        assert!(
            found.problems.iter().any(|p| p.contains(says)),
            "{says}: {:?}",
            found.problems
        );
    }
    assert_eq!(accepted(&found), 1);

    // The offline bundle carries them to a validator that never fetched.
    let bundle = st.export_bundle().unwrap();
    let other = tempdir("images-import");
    let st2 = store(&other, &server);
    st2.import_bundle(&bundle).unwrap();
    let found = st2.image_manifests(&[], &accepts).await;
    assert_eq!(accepted(&found), 1);
    // ...and a key the policy does not pin accepts none of them.
    let (_, stranger) = tvm_image::manifest::keygen().unwrap();
    let foreign: tvm_verifier::image::KeySet =
        serde_json::from_value(serde_json::json!({"keys": [{
        "public_key": hex::encode(stranger),
        "valid_from": "2025-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}]}))
        .unwrap();
    let images = tvm_verifier::Images::load(
        found
            .manifests
            .iter()
            .map(|(s, b)| (s.as_str(), b.as_slice())),
        &foreign,
        at("2026-01-01T00:00:00Z"),
    );
    assert!(images.accepted().is_empty() && images.refused().len() == 1);
}
