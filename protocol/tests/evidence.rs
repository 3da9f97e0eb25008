//! Evidence bundle parsing: round trip, strictness, versions, device-hash binding.

use tvm_protocol::evidence::{
    BundleError, DeviceHashError, BUNDLE_VERSION, MAX_BUNDLE_BYTES, MAX_CHAIN_CERTS, MAX_DEVICES,
};
use tvm_protocol::{
    Claims, DeviceEvidence, Digest32, EvidenceBundle, EvidenceRequest, NodeType, Nonce, Runtime,
    TeeEvidence,
};

fn bundle() -> EvidenceBundle {
    let gpus: Vec<DeviceEvidence> = (0..2u8)
        .map(|i| DeviceEvidence {
            report: vec![i; 100].into(),
            cert_chain: vec![vec![0x30, 0x82, i].into()],
        })
        .collect();
    EvidenceBundle {
        version: BUNDLE_VERSION,
        nonce: Nonce([7; 32]),
        tee: TeeEvidence::Tdx {
            quote: vec![4, 0, 2, 0].into(),
            event_log: None,
        },
        claims: Claims {
            cvm_id: Digest32([1; 32]),
            node_type: NodeType::Gpu,
            agent_version: "0.1.0".into(),
            simulated: true,
            gpu_reports_sha256: gpus.iter().map(|g| Digest32::sha256(&g.report.0)).collect(),
            switch_reports_sha256: vec![],
            runtime: Runtime::default(),
        },
        gpus,
        switches: vec![],
        runtime_events: vec![],
    }
}

fn json(b: &EvidenceBundle) -> serde_json::Value {
    serde_json::from_slice(&b.to_json()).unwrap()
}

fn parse(v: &serde_json::Value) -> Result<EvidenceBundle, BundleError> {
    EvidenceBundle::from_json(&serde_json::to_vec(v).unwrap())
}

#[test]
fn round_trip_and_shape() {
    let b = bundle();
    let v = json(&b);
    assert_eq!(v["tee"]["kind"], "tdx");
    assert_eq!(v["tee"]["quote"], "04000200");
    assert_eq!(v["claims"]["node_type"], "gpu");
    assert_eq!(parse(&v).unwrap(), b);
    b.check_device_hashes().unwrap();
    // 0x-prefixed hex is accepted on input.
    let mut v2 = v.clone();
    v2["tee"]["quote"] = "0x04000200".into();
    assert_eq!(parse(&v2).unwrap(), b);
    // SNP form
    let mut v3 = v.clone();
    v3["tee"] = serde_json::json!({"kind": "sev-snp", "report": "00ff"});
    assert!(matches!(
        parse(&v3).unwrap().tee,
        TeeEvidence::SevSnp { .. }
    ));
}

#[test]
fn newer_versions_and_unknown_fields_are_typed_errors() {
    let mut v = json(&bundle());
    v["version"] = 4.into();
    v["claims"]["new_field"] = "x".into();
    assert_eq!(
        parse(&v).unwrap_err(),
        BundleError::UnsupportedVersion {
            found: 4,
            supported: 3
        }
    );
    // Version 1 (whose CVM id was not the TLS key) and version 2 (whose
    // claims did not carry the agent's configuration) are refused by name.
    for old in [1, 2] {
        let mut v = json(&bundle());
        v["version"] = old.into();
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains(&format!("version {old} is not supported")));
    }
    // More runtime events than any agent records: refused before appraisal.
    let mut v = json(&bundle());
    v["runtime_events"] = (0..=tvm_protocol::evidence::MAX_RUNTIME_EVENTS)
        .map(|i| serde_json::json!({"kind": "model", "value": i.to_string()}))
        .collect();
    assert!(matches!(
        parse(&v),
        Err(BundleError::TooMany {
            what: "runtime events",
            ..
        })
    ));
    // Its `tls_spki_sha256` claim is gone: the CVM id is the TLS key's hash.
    let mut v = json(&bundle());
    v["claims"]["tls_spki_sha256"] = serde_json::Value::Null;
    assert!(matches!(parse(&v), Err(BundleError::Malformed { .. })));
    let mut v = json(&bundle());
    v["claims"]["new_field"] = "x".into();
    match parse(&v).unwrap_err() {
        BundleError::Malformed { path, reason } => {
            assert_eq!(path, "claims.new_field");
            assert!(reason.contains("unknown field `new_field`"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    let mut v = json(&bundle());
    v["tee"]["extra"] = 1.into();
    assert!(matches!(parse(&v), Err(BundleError::Malformed { .. })));
    let mut v = json(&bundle());
    v["tee"]["kind"] = "sgx".into();
    assert!(matches!(parse(&v), Err(BundleError::Malformed { .. })));
}

#[test]
fn malformed_fields_name_their_path() {
    let cases = [
        ("/gpus/1/report", serde_json::json!("zz"), "gpus[1].report"),
        ("/claims/cvm_id", serde_json::json!("abcd"), "claims.cvm_id"),
        (
            "/claims/gpu_reports_sha256/0",
            serde_json::json!(5),
            "claims.gpu_reports_sha256[0]",
        ),
        ("/nonce", serde_json::json!("00"), "nonce"),
    ];
    for (ptr, value, want) in cases {
        let mut v = json(&bundle());
        *v.pointer_mut(ptr).unwrap() = value;
        match parse(&v).unwrap_err() {
            BundleError::Malformed { path, .. } => assert_eq!(path, want),
            e => panic!("{ptr}: {e:?}"),
        }
    }
    assert!(matches!(
        EvidenceBundle::from_json(b"[]"),
        Err(BundleError::Malformed { .. })
    ));
    assert!(matches!(
        EvidenceBundle::from_json(b""),
        Err(BundleError::Malformed { .. })
    ));
    assert!(matches!(
        EvidenceBundle::from_json(br#"{"version":-1}"#),
        Err(BundleError::Malformed { .. })
    ));
    let big = vec![b' '; MAX_BUNDLE_BYTES + 1];
    assert_eq!(
        EvidenceBundle::from_json(&big).unwrap_err(),
        BundleError::TooLarge(MAX_BUNDLE_BYTES + 1)
    );
}

#[test]
fn device_count_and_chain_length_are_capped() {
    let device = |certs: usize| DeviceEvidence {
        report: vec![1; 8].into(),
        cert_chain: (0..certs).map(|i| vec![i as u8; 4].into()).collect(),
    };
    let mut b = bundle();
    b.gpus = (0..MAX_DEVICES - 4)
        .map(|_| device(MAX_CHAIN_CERTS))
        .collect();
    b.switches = (0..4).map(|_| device(1)).collect();
    assert!(
        parse(&json(&b)).is_ok(),
        "16 devices of 8 certificates pass"
    );
    b.switches.push(device(1));
    assert_eq!(
        parse(&json(&b)).unwrap_err(),
        BundleError::TooMany {
            what: "GPU and NVSwitch reports",
            count: MAX_DEVICES + 1,
            limit: MAX_DEVICES
        }
    );
    let mut b = bundle();
    b.gpus[1] = device(MAX_CHAIN_CERTS + 1);
    let e = parse(&json(&b)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "evidence bundle carries 9 certificates in one device chain; at most 8 are read"
    );
    // A certificate bomb: thousands of certificates in one chain.
    let mut b = bundle();
    b.gpus[0] = device(5000);
    assert!(matches!(
        parse(&json(&b)),
        Err(BundleError::TooMany { count: 5000, .. })
    ));
}

#[test]
fn device_hashes_must_match_reports() {
    let mut b = bundle();
    b.gpus[1].report.0[0] ^= 1;
    assert!(matches!(
        b.check_device_hashes(),
        Err(DeviceHashError::HashMismatch {
            kind: "GPU",
            index: 1,
            ..
        })
    ));
    let mut b = bundle();
    b.gpus.pop();
    assert!(matches!(
        b.check_device_hashes(),
        Err(DeviceHashError::CountMismatch {
            claimed: 2,
            carried: 1,
            ..
        })
    ));
    let mut b = bundle();
    b.gpus.swap(0, 1);
    assert!(b.check_device_hashes().is_err(), "order is bound too");
}

#[test]
fn evidence_request_is_targon_compatible() {
    let body = br#"{"nonce":"0707070707070707070707070707070707070707070707070707070707070707"}"#;
    let r: EvidenceRequest = serde_json::from_slice(body).unwrap();
    assert_eq!(r.nonce, Nonce([7; 32]));
    assert_eq!(serde_json::to_vec(&r).unwrap(), body.to_vec());
    assert!(serde_json::from_slice::<EvidenceRequest>(br#"{"nonce":"short"}"#).is_err());
}
