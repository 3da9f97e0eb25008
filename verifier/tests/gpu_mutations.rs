//! Mutation suite for NVIDIA evidence: every genuine report (NV-1, NV-2, an
//! NV-4 GPU and an NV-4 switch), damaged one way at a time, must be rejected
//! by the check named for that damage; so must damaged RIMs.

mod common;

use common::{at, testdata};
use tvm_verifier::gpu::input::{parse_nvtrust_json, pem_chain};
use tvm_verifier::gpu::rim::{Rim, RimError};
use tvm_verifier::gpu::spdm::{MeasurementReport, REQUEST_LEN, SIGNATURE_LEN};
use tvm_verifier::gpu::{self, Arch, DeviceInput};
use tvm_verifier::Status;

#[derive(Clone)]
struct Case {
    name: &'static str,
    evidence: Vec<u8>,
    chain: Vec<Vec<u8>>,
    nonce: [u8; 32],
    arch: Option<Arch>,
    at: i64,
}

impl Case {
    fn first_failure(&self) -> String {
        let v = gpu::verify(&DeviceInput {
            root: tvm_verifier::gpu::DeviceRoot::Nvidia,
            evidence: &self.evidence,
            chain: &self.chain,
            nonce: Some(&self.nonce),
            arch: self.arch,
            at: self.at,
        });
        v.verification()
            .checks()
            .iter()
            .find(|c| c.status == Status::Fail)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .unwrap_or_else(|| "none".into())
    }
}

fn genuine() -> Vec<Case> {
    let when = at("2025-06-01T00:00:00Z");
    let hex_case = |name, report: &str, chain: &str, nonce: &str| Case {
        name,
        evidence: testdata(report),
        chain: pem_chain(&testdata(chain)).unwrap(),
        nonce: hex::decode(nonce).unwrap().try_into().unwrap(),
        arch: None,
        at: when,
    };
    let nv4 = |file: &str, name| {
        let d = parse_nvtrust_json(&testdata(file)).unwrap().remove(0);
        Case {
            name,
            evidence: d.evidence,
            chain: d.chain,
            nonce: hex::decode(d.stated_nonce.unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
            arch: d.arch,
            at: when,
        }
    };
    vec![
        hex_case(
            "NV-1",
            "nvidia/nvtrust_hopper_report.hex",
            "nvidia/nvtrust_hopper_cert_chain.pem",
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        ),
        hex_case(
            "NV-2",
            "nvidia/trustee_hopper_coco_report1.hex",
            "nvidia/trustee_hopper_coco_cert_chain1.pem",
            "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec",
        ),
        nv4(
            "nvidia/nvtrust_ppcie_gpu_evidence_8xH100.json",
            "NV-4 gpu 0",
        ),
        nv4(
            "nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json",
            "NV-4 switch 0",
        ),
    ]
}

/// Byte offsets of a report's parts, from the parse of the genuine one.
struct Layout {
    record: usize,
    record_len: usize,
    responder_nonce: usize,
    opaque_len_at: usize,
    opaque: usize,
    signature: usize,
}

fn layout(evidence: &[u8]) -> Layout {
    let r = MeasurementReport::parse(evidence).unwrap();
    let record = REQUEST_LEN + 8;
    let record_len = usize::from(evidence[REQUEST_LEN + 5])
        | usize::from(evidence[REQUEST_LEN + 6]) << 8
        | usize::from(evidence[REQUEST_LEN + 7]) << 16;
    let responder_nonce = record + record_len;
    let opaque_len_at = responder_nonce + 32;
    Layout {
        record,
        record_len,
        responder_nonce,
        opaque_len_at,
        opaque: opaque_len_at + 2,
        signature: r.signed.len(),
    }
}

fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    v[at] ^= 0x01;
    v
}

/// Offset of an opaque field's value.
fn opaque_value(evidence: &[u8], l: &Layout, kind: u16) -> Option<usize> {
    let mut p = l.opaque;
    while p + 4 <= l.signature {
        let t = u16::from_le_bytes([evidence[p], evidence[p + 1]]);
        let n = usize::from(u16::from_le_bytes([evidence[p + 2], evidence[p + 3]]));
        if t == kind {
            return Some(p + 4);
        }
        p += 4 + n;
    }
    None
}

fn mutants(g: &Case, other: &Case) -> Vec<(String, Case, &'static str)> {
    let l = layout(&g.evidence);
    let e = &g.evidence;
    let mut out: Vec<(String, Case, &'static str)> = Vec::new();
    let mut add = |what: &str, evidence: Vec<u8>, expect: &'static str| {
        out.push((
            what.to_string(),
            Case {
                evidence,
                ..g.clone()
            },
            expect,
        ));
    };
    // Format.
    add("request version", flip(e.clone(), 0), "spdm.format");
    add("request code", flip(e.clone(), 1), "spdm.format");
    add("no signature requested", flip(e.clone(), 2), "spdm.format");
    add("one block requested", flip(e.clone(), 3), "spdm.format");
    add(
        "response code",
        flip(e.clone(), REQUEST_LEN + 1),
        "spdm.format",
    );
    let mut v = e.clone();
    v[REQUEST_LEN + 5] = v[REQUEST_LEN + 5].wrapping_add(1);
    add("record length", v, "spdm.format");
    let mut v = e.clone();
    v[l.opaque_len_at] = v[l.opaque_len_at].wrapping_add(1);
    add("opaque length", v, "spdm.format");
    add(
        "block spec byte",
        flip(e.clone(), l.record + 1),
        "spdm.format",
    );
    add(
        "truncated signature",
        e[..l.signature + SIGNATURE_LEN - 1].to_vec(),
        "spdm.format",
    );
    let mut v = e.clone();
    v.extend([0, 0]);
    add("two trailing bytes", v, "spdm.format");
    add("empty", Vec::new(), "spdm.format");
    // Signed content.
    add("request nonce", flip(e.clone(), 4), "spdm.signature");
    add(
        "slot id",
        flip(e.clone(), REQUEST_LEN - 1),
        "spdm.signature",
    );
    add(
        "first block value",
        flip(e.clone(), l.record + 7),
        "spdm.signature",
    );
    add(
        "last block value",
        flip(e.clone(), l.record + l.record_len - 1),
        "spdm.signature",
    );
    add(
        "responder nonce",
        flip(e.clone(), l.responder_nonce),
        "spdm.signature",
    );
    add(
        "vbios version",
        flip(e.clone(), opaque_value(e, &l, 6).unwrap()),
        "spdm.signature",
    );
    add(
        "signature r",
        flip(e.clone(), l.signature),
        "spdm.signature",
    );
    add(
        "signature s",
        flip(e.clone(), l.signature + SIGNATURE_LEN - 1),
        "spdm.signature",
    );
    if let Some(fwid) = opaque_value(e, &l, 20) {
        add("reported FWID", flip(e.clone(), fwid), "device.fwid");
        add(
            "driver version",
            flip(e.clone(), opaque_value(e, &l, 3).unwrap()),
            "spdm.signature",
        );
    }

    // Chain and context.
    let mut with =
        |what: &str, c: Case, expect: &'static str| out.push((what.to_string(), c, expect));
    let chain = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let mut c = g.clone();
        f(&mut c.chain);
        c
    };
    with(
        "leaf missing",
        chain(&|c| {
            c.remove(0);
        }),
        "device.fwid",
    );
    with(
        "BROM missing",
        chain(&|c| {
            c.remove(1);
        }),
        "device.chain",
    );
    with(
        "provisioner CA missing",
        chain(&|c| {
            c.remove(2);
        }),
        "device.chain",
    );
    with(
        "intermediates swapped",
        chain(&|c| c.swap(2, 3)),
        "device.chain",
    );
    with(
        "leaf signature bit",
        chain(&|c| {
            let n = c[0].len() - 1;
            c[0][n] ^= 1;
        }),
        "device.chain",
    );
    with(
        "root replaced by a changed copy",
        chain(&|c| {
            let last = c.len() - 1;
            let n = c[last].len() - 1;
            c[last][n] ^= 1;
        }),
        "device.chain",
    );
    with("empty chain", chain(&|c| c.clear()), "device.chain");
    with(
        "another device's leaf",
        chain(&|c| c[0] = other.chain[0].clone()),
        "device.chain",
    );
    with(
        "another device's whole chain",
        Case {
            chain: other.chain.clone(),
            ..g.clone()
        },
        if g.name.contains("switch") {
            "spdm.signature"
        } else {
            "device.fwid"
        },
    );
    with(
        "before the chain was issued",
        Case {
            at: at("2000-01-01T00:00:00Z"),
            ..g.clone()
        },
        "device.chain",
    );
    let mut n = g.nonce;
    n[31] ^= 1;
    with(
        "expected another nonce",
        Case {
            nonce: n,
            ..g.clone()
        },
        "spdm.nonce",
    );
    let wrong_arch = if g.arch == Some(Arch::Ls10) {
        Arch::Hopper
    } else {
        Arch::Ls10
    };
    with(
        "claimed another architecture",
        Case {
            arch: Some(wrong_arch),
            ..g.clone()
        },
        "device.arch",
    );
    out
}

#[test]
fn every_genuine_report_passes_and_every_mutant_fails_where_it_should() {
    let cases = genuine();
    let mut total = 0;
    for (i, g) in cases.iter().enumerate() {
        assert_eq!(g.first_failure(), "none", "{} must verify", g.name);
        // A device of the same kind from another vector.
        let other = if g.name.contains("switch") {
            let mut d = parse_nvtrust_json(&testdata(
                "nvidia/nvtrust_ppcie_switch_evidence_4xLS10.json",
            ))
            .unwrap();
            Case {
                chain: d.remove(1).chain,
                ..g.clone()
            }
        } else {
            cases[(i + 1) % 3].clone()
        };
        let ms = mutants(g, &other);
        assert!(ms.len() >= 20, "{}: only {} mutants", g.name, ms.len());
        for (what, m, expect) in ms {
            let got = m.first_failure();
            assert!(
                got.starts_with(&format!("{expect}: ")),
                "{} / {what}: expected {expect}, got {got}",
                g.name
            );
            total += 1;
        }
    }
    assert!(total >= 80, "{total}");
}

#[test]
fn damaged_rims_are_refused_for_the_right_reason() {
    let xml = String::from_utf8(testdata(
        "nvidia/nvtrust_1010_0200_882_960074001A_PROD.swidtag",
    ))
    .unwrap();
    let when = at("2024-06-01T00:00:00Z");
    assert!(Rim::verify(xml.as_bytes(), when).is_ok());
    let sig_start = xml.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
    let cert_start = xml.find("<ds:X509Certificate>").unwrap() + "<ds:X509Certificate>".len() + 40;
    let swap_char = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let second_cert = {
        let a = xml.find("<ds:X509Certificate>").unwrap();
        let b = xml[a + 1..].find("<ds:X509Certificate>").unwrap() + a + 1;
        let end =
            xml[b..].find("</ds:X509Certificate>").unwrap() + b + "</ds:X509Certificate>".len();
        (b, end)
    };
    type Expect = fn(&RimError) -> bool;
    let signature: Expect = |e| matches!(e, RimError::Signature(_));
    let chain: Expect = |e| matches!(e, RimError::Chain(_));
    let expired: Expect = |e| e.is_expired();
    let malformed: Expect = |e| matches!(e, RimError::Malformed(_));
    let cases: Vec<(&str, String, i64, Expect)> = vec![
        ("golden value", xml.replacen("b558fdac", "b558fdad", 1), when, signature),
        ("version", xml.replacen("96.00.74.00.1A", "96.00.74.00.1B", 1), when, signature),
        ("an index deactivated", xml.replacen("index=\"1\" active=\"True\"", "index=\"1\" active=\"False\"", 1), when, signature),
        ("signature value", swap_char(&xml, sig_start + 10), when, signature),
        ("signer certificate", swap_char(&xml, cert_start), when, chain),
        ("intermediate removed", format!("{}{}", &xml[..second_cert.0], &xml[second_cert.1..]), when, chain),
        ("past the signer's expiry", xml.clone(), at("2025-09-06T00:00:00Z"), expired),
        ("before the signer's issue", xml.clone(), at("2023-01-01T00:00:00Z"), expired),
        ("second signature", xml.replacen("</SoftwareIdentity>", "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/></SoftwareIdentity>", 1), when, malformed),
        ("not XML", xml[..xml.len() / 2].to_string(), when, malformed),
    ];
    for (what, doc, t, expect) in cases {
        let e = Rim::verify(doc.as_bytes(), t).expect_err(what);
        assert!(expect(&e), "{what}: {e}");
    }
}
