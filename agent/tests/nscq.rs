//! The NSCQ binding against a model of NVIDIA's C API (`nscq_model.c`, built
//! here with the system's C compiler into a shared object and loaded with
//! dlopen like the real library): the real NV-4 switch reports and chains
//! come through byte for byte and still verify; every failure the library
//! can report is named; sessions are always closed; a missing library or
//! another API version is a clear "unavailable".

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use tvm_agent::backend::nscq::{Nscq, NscqError};
use tvm_verifier::gpu::{self, Arch, DeviceInput, DeviceRoot};

const NV4_NONCE: &str = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";

fn nonce(h: &str) -> [u8; 32] {
    hex::decode(h).unwrap().try_into().unwrap()
}

/// NV-4's four real LS10 switches: (report, PEM chain).
fn nv4_switches() -> Vec<(Vec<u8>, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json");
    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| (b64(&e["evidence"]), b64(&e["certificate"])))
        .collect()
}

/// The model, built with `defines`, serving NV-4's switches from `dir`.
fn build_model(dir: &Path, defines: &[String]) -> PathBuf {
    for (i, (report, chain)) in nv4_switches().iter().enumerate() {
        std::fs::write(dir.join(format!("report_{i}.bin")), report).unwrap();
        std::fs::write(dir.join(format!("chain_{i}.pem")), chain).unwrap();
    }
    let lib = dir.join("libnscq_model.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(format!("-DMODEL_DIR=\"{}\"", dir.display()))
        .args(defines)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nscq_model.c"))
        .output()
        .unwrap_or_else(|e| panic!("the C compiler {cc:?} is needed for the NSCQ model: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

fn model(defines: &[&str]) -> (tempfile::TempDir, Result<Nscq, NscqError>) {
    let dir = tempfile::tempdir().unwrap();
    let defines: Vec<String> = defines.iter().map(|d| format!("-D{d}")).collect();
    let lib = build_model(dir.path(), &defines);
    let nscq = Nscq::load_from(lib.to_str().unwrap());
    (dir, nscq)
}

/// Every session the model opened (`opened` of them) was destroyed.
fn sessions_closed(dir: &Path, opened: usize) {
    let log = std::fs::read_to_string(dir.join("sessions.log")).unwrap_or_default();
    assert_eq!(log.matches('+').count(), opened, "{log}");
    assert_eq!(log.matches('-').count(), opened, "{log}");
}

#[test]
fn real_switch_evidence_comes_through_and_verifies() {
    let (dir, nscq) = model(&[]);
    let nscq = nscq.unwrap();
    assert_eq!(nscq.version(), "2.0.0");
    let found = nscq.switch_evidence(&nonce(NV4_NONCE)).unwrap();
    assert_eq!(found.len(), 4);
    for (i, (e, (report, chain))) in found.iter().zip(nv4_switches()).enumerate() {
        assert_eq!(e.label, format!("SWX-MODEL-{i}"));
        // NV-4's own nonce: the report is the capture, byte for byte.
        assert_eq!(e.report, report);
        assert_eq!(e.cert_chain, chain);
        let chain = tvm_agent::backend::nvml::split_chain(&e.cert_chain).unwrap();
        let v = gpu::verify(&DeviceInput {
            root: DeviceRoot::Nvidia,
            evidence: &e.report,
            chain: &chain,
            nonce: Some(&nonce(NV4_NONCE)),
            arch: Some(Arch::Ls10),
            at: 1_748_736_000, // 2025-06-01
        });
        assert!(
            v.verification().genuine(),
            "{:?}",
            v.verification().checks()
        );
    }
    // Another nonce is passed to the library and comes back in each report.
    let other = [7u8; 32];
    for e in nscq.switch_evidence(&other).unwrap() {
        assert_eq!(&e.report[4..36], &other);
    }
    sessions_closed(dir.path(), 2);
}

#[test]
fn a_warning_from_session_create_is_not_a_failure() {
    // NVIDIA/nvtrust issue 153: rc 1 (RDT init failure) inside a TDX guest.
    let (dir, nscq) = model(&["MODEL_FAIL=\"create_warning\""]);
    assert_eq!(nscq.unwrap().switch_evidence(&[1; 32]).unwrap().len(), 4);
    sessions_closed(dir.path(), 1);
}

#[test]
fn every_library_failure_is_named_and_closes_the_session() {
    let cases: &[(&str, &str)] = &[
        ("create", "session_create failed: resource not mountable"),
        (
            "observe",
            "observe /drv/nvswitch/{device}/uuid failed: driver error (-7)",
        ),
        ("uuid", "reading an NVSwitch UUID failed: driver error (-7)"),
        ("label", "uuid_to_label failed: invalid UUID (-2)"),
                ("label_unterminated", "a switch label is not NUL-terminated"),
        ("mode", "reading switch SWX-MODEL-0's PCIe mode failed: unsupported driver (-6)"),
        ("unlocked", "switch SWX-MODEL-0 is not in locked trusted-NVLink mode (pcie_mode 1, enabled, not locked"),
        ("input", "set_input (the nonce) failed: overflow (-4)"),
        (
            "report",
            "reading switch SWX-MODEL-0's attestation report failed: timeout (-8)",
        ),
        (
            "report_size",
            "reading switch SWX-MODEL-0's attestation report failed: overflow (-4)",
        ),
        (
            "no_report",
            "switch SWX-MODEL-0: no attestation report came back",
        ),
        (
            "two_reports",
            "switch SWX-MODEL-0: more than one attestation report came back",
        ),
        (
            "stale",
            "switch SWX-MODEL-0: the report answers another nonce",
        ),
        (
            "cert",
            "reading switch SWX-MODEL-0's certificate chain failed: unspecified error (-128)",
        ),
    ];
    for (fail, expect) in cases {
        let (dir, nscq) = model(&[&format!("MODEL_FAIL=\"{fail}\"")]);
        let err = nscq.unwrap().switch_evidence(&[3; 32]).unwrap_err();
        assert!(err.to_string().contains(expect), "{fail}: {err}");
        sessions_closed(dir.path(), usize::from(*fail != "create"));
    }
    // More switches than a node has.
    let (dir, nscq) = model(&["MODEL_SWITCHES=17"]);
    let err = nscq.unwrap().switch_evidence(&[3; 32]).unwrap_err();
    assert!(
        err.to_string()
            .contains("17 NVSwitches listed (at most 16)"),
        "{err}"
    );
    sessions_closed(dir.path(), 1);
}

#[test]
fn a_request_behind_a_slow_call_waits_then_is_busy() {
    let (dir, nscq) = model(&["MODEL_FAIL=\"slow\""]);
    let nscq = std::sync::Arc::new(
        nscq.unwrap()
            .waiting_at_most(std::time::Duration::from_millis(300)),
    );
    let first = {
        let n = nscq.clone();
        std::thread::spawn(move || n.switch_evidence(&[5; 32]).map(|e| e.len()))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = nscq.switch_evidence(&[6; 32]).unwrap_err();
    assert_eq!(second, NscqError::Busy);
    assert!(second.to_string().contains("try again"));
    assert_eq!(first.join().unwrap(), Ok(4));
    // Free again: served.
    assert_eq!(nscq.switch_evidence(&[7; 32]).unwrap().len(), 4);
    sessions_closed(dir.path(), 2);
}

#[test]
fn a_missing_library_or_another_api_is_unavailable() {
    let err = Nscq::load_from("libnvidia-nscq-not-here.so.2")
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("switch attestation unavailable: NVIDIA's NSCQ library")
            && text.contains("install libnvidia-nscq"),
        "{text}"
    );
    let (_dir, nscq) = model(&["MODEL_VERSION=(3u<<24)"]);
    let err = nscq.err().unwrap();
    assert!(matches!(err, NscqError::Version { .. }), "{err}");
    assert!(err.to_string().contains("API 3.0.0"), "{err}");
    // A library without the attestation symbols (here: the C library).
    let err = Nscq::load_from("libc.so.6").err().unwrap();
    assert!(
        err.to_string().contains("it has no nscq_api_version"),
        "{err}"
    );
}
