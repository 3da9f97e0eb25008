//! Mutation suite: every genuine vector, damaged in one way at a time (bits in
//! signatures, bodies, certificates and collateral; swapped or wrong chains;
//! wrong time; wrong nonce), must be rejected by the check named for that damage.

mod common;
use common::{at, testdata};
use tvm_verifier::tee::snp::{self, SnpInput};
use tvm_verifier::tee::tdx::{self, TdxInput};
use tvm_verifier::{appraise, Status, Verdict};

fn first_failure(v: &Verdict) -> &'static str {
    v.checks()
        .iter()
        .find(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .unwrap_or("none")
}

// ---------------------------------------------------------------- TDX

struct TdxCase {
    quote: Vec<u8>,
    collateral: dcap_qvl::QuoteCollateralV3,
    root: Vec<u8>,
    at: i64,
    expected: Option<[u8; 64]>,
}

impl TdxCase {
    fn load(quote: &str, collateral: &str, when: &str) -> Self {
        let quote = testdata(quote);
        let mut expected = [0u8; 64];
        let q = dcap_qvl::quote::Quote::parse(&quote).unwrap();
        expected.copy_from_slice(&q.report.as_td10().unwrap().report_data);
        TdxCase {
            quote,
            collateral: tdx::parse_collateral(&testdata(collateral)).unwrap(),
            root: tvm_certs::anchors::intel_sgx_root().unwrap().to_vec(),
            at: at(when),
            expected: Some(expected),
        }
    }

    fn verdict(&self) -> Verdict {
        let collateral = tdx::TdxCollateral::prepare(self.collateral.clone(), &self.root);
        let v = tdx::verify(&TdxInput {
            quote: &self.quote,
            collateral: &collateral,
            at: self.at,
            grace_seconds: 0,
        });
        appraise(
            v,
            &common::unmeasured(),
            &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
            self.expected.as_ref(),
            self.at,
        )
    }

    /// Offsets inside the quote: (body start, signature start, QE report start).
    fn layout(&self) -> (usize, usize, usize) {
        let v5 = self.quote[0] == 5;
        let body = if v5 { 54 } else { 48 };
        let body_len = if v5 { 648 } else { 584 };
        let sig = body + body_len + 4;
        (body, sig, sig + 64 + 64 + 6)
    }

    fn pem_chain_range(&self) -> (usize, usize) {
        let hay = &self.quote;
        let start = find(hay, b"-----BEGIN CERTIFICATE-----").expect("quote carries a PEM chain");
        let end = rfind(hay, b"-----END CERTIFICATE-----").unwrap() + 25;
        (start, end)
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}
fn rfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).rposition(|w| w == n)
}

fn flip_byte(v: &mut [u8], i: usize) {
    let i = i.min(v.len() - 1);
    v[i] ^= 0x01;
}

fn swap_first_two_pems(s: &str) -> String {
    let parts: Vec<&str> = s.split_inclusive("-----END CERTIFICATE-----").collect();
    assert!(parts.len() >= 2, "chain has at least two certificates");
    let mut out = String::new();
    out.push_str(parts[1].trim_start_matches('\n'));
    out.push('\n');
    out.push_str(parts[0]);
    for p in &parts[2..] {
        out.push_str(p);
    }
    out
}

fn change_json_char(s: &str, needle: &str) -> String {
    let i = s
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in collateral"));
    let mut b = s.as_bytes().to_vec();
    let j = i + needle.len();
    b[j] = if b[j] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

type TdxMutation = (&'static str, &'static str, fn(&mut TdxCase));

fn tdx_mutations() -> Vec<TdxMutation> {
    vec![
        ("header version", "quote.format", |c| c.quote[0] = 3),
        ("TEE type", "quote.format", |c| c.quote[4] = 0x00),
        ("QE vendor id", "quote.format", |c| c.quote[12] ^= 0xff),
        ("truncated quote", "quote.format", |c| c.quote.truncate(700)),
        // Unsigned bytes after the signature data: zero padding only, bounded.
        ("non-zero byte after the quote", "quote.format", |c| {
            c.quote.push(1)
        }),
        ("a megabyte of zeros after the quote", "quote.format", |c| {
            c.quote.resize(c.quote.len() + (1 << 20), 0)
        }),
        (
            "bytes hidden inside the signature data",
            "quote.format",
            |c| {
                let (_, sig, _) = c.layout();
                // The signature data's length (u32 before it) grows by 16, and 16 bytes follow.
                let len_at = sig - 4;
                let len = u32::from_le_bytes(c.quote[len_at..sig].try_into().unwrap());
                c.quote[len_at..sig].copy_from_slice(&(len + 16).to_le_bytes());
                let end = sig + len as usize;
                c.quote.splice(end..end, [0x41u8; 16]);
            },
        ),
        ("MRTD bit", "quote.signature", |c| {
            let (body, _, _) = c.layout();
            c.quote[body + 136] ^= 0x01
        }),
        ("report_data bit", "quote.signature", |c| {
            let (body, sig, _) = c.layout();
            let _ = body;
            c.quote[sig - 4 - 10] ^= 0x80
        }),
        ("TD attributes debug bit", "quote.signature", |c| {
            let (body, _, _) = c.layout();
            c.quote[body + 120] ^= 0x01
        }),
        ("quote signature first byte", "quote.signature", |c| {
            let (_, sig, _) = c.layout();
            c.quote[sig] ^= 0x01
        }),
        ("quote signature last byte", "quote.signature", |c| {
            let (_, sig, _) = c.layout();
            c.quote[sig + 63] ^= 0x40
        }),
        ("attestation key", "qe.report", |c| {
            let (_, sig, _) = c.layout();
            c.quote[sig + 64 + 5] ^= 0x01
        }),
        ("QE report body", "qe.report", |c| {
            let (_, _, qe) = c.layout();
            c.quote[qe + 20] ^= 0x01
        }),
        ("QE report signature", "qe.report", |c| {
            let (_, _, qe) = c.layout();
            c.quote[qe + 384 + 10] ^= 0x01
        }),
        ("PCK leaf certificate", "pck.chain", |c| {
            let (start, _) = c.pem_chain_range();
            let i = start + 28 + 400;
            c.quote[i] = if c.quote[i] == b'A' { b'B' } else { b'A' };
        }),
        ("PCK chain order swapped", "pck.chain", |c| {
            let (start, end) = c.pem_chain_range();
            let s = String::from_utf8(c.quote[start..end].to_vec()).unwrap();
            let swapped = swap_first_two_pems(&s);
            assert_eq!(swapped.len(), s.len());
            c.quote[start..end].copy_from_slice(swapped.as_bytes());
        }),
        ("TCB Info body", "collateral.chain", |c| {
            c.collateral.tcb_info =
                change_json_char(&c.collateral.tcb_info, "\"tcbEvaluationDataNumber\":1")
        }),
        ("TCB Info not JSON", "collateral.format", |c| {
            c.collateral.tcb_info.insert(0, '[')
        }),
        ("PCK CRL not DER", "collateral.format", |c| {
            c.collateral.pck_crl.truncate(10)
        }),
        ("TCB Info signature", "collateral.chain", |c| {
            c.collateral.tcb_info_signature[5] ^= 0x01
        }),
        ("QE Identity body", "collateral.chain", |c| {
            c.collateral.qe_identity = change_json_char(&c.collateral.qe_identity, "\"isvprodid\":")
        }),
        ("QE Identity signature", "collateral.chain", |c| {
            c.collateral.qe_identity_signature[40] ^= 0x01
        }),
        ("PCK CRL signature", "collateral.chain", |c| {
            let n = c.collateral.pck_crl.len();
            flip_byte(&mut c.collateral.pck_crl, n - 3)
        }),
        ("Root CA CRL signature", "collateral.chain", |c| {
            let n = c.collateral.root_ca_crl.len();
            flip_byte(&mut c.collateral.root_ca_crl, n - 3)
        }),
        ("TCB issuer chain order swapped", "collateral.chain", |c| {
            c.collateral.tcb_info_issuer_chain =
                swap_first_two_pems(&c.collateral.tcb_info_issuer_chain)
        }),
        ("wrong root (AMD ARK)", "collateral.chain", |c| {
            c.root =
                tvm_certs::anchors::amd_ca(tvm_certs::AmdProduct::Milan, tvm_certs::AmdSigner::Vcek)
                    .unwrap()
                    .ark
        }),
        ("expired collateral", "collateral.fresh", |c| {
            c.at += 400 * 86_400
        }),
        ("collateral not yet valid", "collateral.fresh", |c| {
            c.at -= 60 * 86_400
        }),
        ("wrong nonce", "report_data", |c| {
            if let Some(e) = c.expected.as_mut() {
                e[0] ^= 1
            }
        }),
    ]
}

fn run_tdx_suite(quote: &str, collateral: &str, when: &str) {
    let genuine = TdxCase::load(quote, collateral, when);
    assert!(
        genuine.verdict().accepted(),
        "{quote} is genuine: {}",
        genuine.verdict().render()
    );
    let mutations = tdx_mutations();
    assert!(mutations.len() >= 20);
    for (what, expected, mutate) in mutations {
        let mut case = TdxCase::load(quote, collateral, when);
        mutate(&mut case);
        let v = case.verdict();
        assert!(!v.accepted(), "{quote}: mutant '{what}' was accepted");
        assert_eq!(
            first_failure(&v),
            expected,
            "{quote}: mutant '{what}'\n{}",
            v.render()
        );
    }
}

#[test]
fn tdx1_mutants() {
    run_tdx_suite(
        "tdx/dcapqvl_tdx_quote_v4.bin",
        "tdx/dcapqvl_tdx_quote_v4_collateral.json",
        "2025-07-04T10:16:31Z",
    );
}

#[test]
fn tdx2_mutants() {
    run_tdx_suite(
        "tdx/dcapqvl_near_tdx_quote_v4.hex",
        "tdx/dcapqvl_near_tdx_quote_v4_collateral.json",
        "2025-09-10T00:00:00Z",
    );
}

#[test]
fn tdx4_mutants() {
    run_tdx_suite(
        "tdx/gotdxguest_tdx_quote_v5.bin",
        "tdx/dcapqvl_tdx_v5_fmspc90C06F_collateral.json",
        "2026-03-01T00:00:00Z",
    );
}

#[test]
fn tdx_collateral_for_another_platform() {
    // TDX-1's quote (FMSPC B0C06F) with the 90C06F collateral, inside that collateral's window.
    let mut c = TdxCase::load(
        "tdx/dcapqvl_tdx_quote_v4.bin",
        "tdx/dcapqvl_tdx_quote_v4_collateral.json",
        "2025-07-04T10:16:31Z",
    );
    c.collateral =
        tdx::parse_collateral(&testdata("tdx/dcapqvl_tdx_v5_fmspc90C06F_collateral.json")).unwrap();
    c.at = at("2026-03-01T00:00:00Z");
    let v = c.verdict();
    assert_eq!(first_failure(&v), "collateral.match", "{}", v.render());
}

// ---------------------------------------------------------------- SNP

struct SnpCase {
    report: Vec<u8>,
    vek: Vec<u8>,
    ca: Option<(Vec<u8>, Vec<u8>)>,
    at: i64,
    expected: Option<[u8; 64]>,
}

impl SnpCase {
    fn load(report: &str, vek: &str, when: &str) -> Self {
        let report = testdata(report);
        let mut expected = [0u8; 64];
        expected.copy_from_slice(&report[0x50..0x90]);
        SnpCase {
            report,
            vek: testdata(vek),
            ca: None,
            at: at(when),
            expected: Some(expected),
        }
    }

    fn verdict(&self) -> Verdict {
        let endorsement = snp::SnpEndorsement::prepare(
            &self.vek,
            self.ca.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
        );
        let v = snp::verify(&SnpInput {
            report: &self.report,
            endorsement: &endorsement,
            grace_seconds: 0,
            at: self.at,
        });
        // A policy that the genuine vectors meet, so each mutant's failure is its own.
        let mut policy = common::unmeasured();
        policy.snp.dangerous_allow_debug = true;
        policy.snp.allowed_vmpls = vec![0, 1];
        // No real AMD CRL is among the vectors.
        policy.snp.dangerous_allow_missing_crl = true;
        appraise(
            v,
            &policy,
            &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
            self.expected.as_ref(),
            self.at,
        )
    }
}

fn milan(signer: tvm_certs::AmdSigner) -> tvm_certs::AmdCa {
    tvm_certs::anchors::amd_ca(tvm_certs::AmdProduct::Milan, signer).unwrap()
}

type SnpMutation = (&'static str, &'static str, fn(&mut SnpCase));

fn snp_mutations() -> Vec<SnpMutation> {
    use tvm_certs::AmdSigner::{Vcek, Vlek};
    vec![
        ("signature r", "report.signature", |c| {
            c.report[0x2A0] ^= 0x01
        }),
        ("signature s", "report.signature", |c| {
            c.report[0x2E8 + 20] ^= 0x10
        }),
        ("signature padding", "report.signature", |c| {
            c.report[0x2A0 + 60] ^= 0x01
        }),
        ("measurement", "report.signature", |c| {
            c.report[0x90 + 7] ^= 0x01
        }),
        ("report_data", "report.signature", |c| {
            c.report[0x50] ^= 0x01
        }),
        ("guest policy", "report.signature", |c| {
            c.report[0x08] ^= 0x01
        }),
        ("VMPL", "report.signature", |c| c.report[0x30] ^= 0x02),
        ("host_data", "report.signature", |c| c.report[0xC0] ^= 0x01),
        // sev refuses non-zero reserved fields while parsing.
        ("reserved byte", "report.format", |c| {
            c.report[0x200] ^= 0x01
        }),
        // Unsigned, so only the format check can catch it.
        ("reserved byte after the signature", "report.format", |c| {
            c.report[0x2A0 + 144 + 100] ^= 0x01
        }),
        ("reported TCB", "report.signature", |c| {
            c.report[0x180] = c.report[0x180].wrapping_add(1)
        }),
        ("version", "report.format", |c| c.report[0] = 9),
        ("truncated", "report.format", |c| c.report.truncate(1000)),
        ("trailing byte", "report.format", |c| c.report.push(0)),
        ("signing key field", "vek.format", |c| {
            c.report[0x48] ^= 0x04
        }),
        ("endorsement key DER byte 40", "vek.chain", |c| {
            c.vek[40] ^= 0xff
        }),
        ("endorsement key signature", "vek.chain", |c| {
            let n = c.vek.len();
            c.vek[n - 5] ^= 0x01
        }),
        ("intermediate given as the key", "vek.format", |c| {
            c.vek = milan(Vcek).ask
        }),
        ("wrong root", "ca.chain", |c| {
            c.ca = Some((
                milan(Vcek).ask,
                tvm_certs::anchors::intel_sgx_root().unwrap().to_vec(),
            ))
        }),
        ("wrong product chain (Genoa)", "ca.chain", |c| {
            let g = tvm_certs::anchors::amd_ca(
                tvm_certs::AmdProduct::Genoa,
                tvm_certs::AmdSigner::Vcek,
            )
            .unwrap();
            c.ca = Some((g.ask, g.ark))
        }),
        ("chain order swapped", "ca.chain", |c| {
            let m = milan(Vcek);
            c.ca = Some((m.ark, m.ask))
        }),
        (
            "VCEK chain for a VLEK / VLEK chain for a VCEK",
            "vek.chain",
            |c| {
                let other = if c.report[0x48] & 0x1c == 0 {
                    milan(Vlek)
                } else {
                    milan(Vcek)
                };
                c.ca = Some((other.ask, other.ark))
            },
        ),
        ("after the key expired", "vek.validity", |c| {
            c.at = at("2031-01-01T00:00:00Z")
        }),
        ("before the key was issued", "vek.validity", |c| {
            use x509_parser::prelude::{FromDer, X509Certificate};
            let (_, cert) = X509Certificate::from_der(&c.vek).unwrap();
            c.at = cert.validity().not_before.timestamp() - 86_400;
        }),
        ("wrong nonce", "report_data", |c| {
            if let Some(e) = c.expected.as_mut() {
                e[63] ^= 1
            }
        }),
    ]
}

fn run_snp_suite(report: &str, vek: &str, when: &str) {
    let genuine = SnpCase::load(report, vek, when);
    assert!(
        genuine.verdict().accepted(),
        "{report} is genuine: {}",
        genuine.verdict().render()
    );
    let mutations = snp_mutations();
    assert!(mutations.len() >= 20);
    for (what, expected, mutate) in mutations {
        let mut case = SnpCase::load(report, vek, when);
        mutate(&mut case);
        let v = case.verdict();
        assert!(!v.accepted(), "{report}: mutant '{what}' was accepted");
        assert_eq!(
            first_failure(&v),
            expected,
            "{report}: mutant '{what}'\n{}",
            v.render()
        );
    }
}

#[test]
fn snp1_mutants() {
    run_snp_suite(
        "snp/gosevguest_milan_report.bin",
        "snp/gosevguest_milan_vcek.der",
        "2025-06-01T00:00:00Z",
    );
}

#[test]
fn snp2_mutants() {
    run_snp_suite(
        "snp/virtee_milan_report.hex",
        "snp/virtee_milan_vcek.der",
        "2025-06-01T00:00:00Z",
    );
}

#[test]
fn snp3_mutants() {
    run_snp_suite(
        "snp/trustee_milan_report.bin",
        "snp/trustee_milan_vcek.der",
        "2025-06-01T00:00:00Z",
    );
}

#[test]
fn snp4_vlek_mutants() {
    run_snp_suite(
        "snp/trustee_milan_vlek_report.bin",
        "snp/trustee_milan_vlek.der",
        "2025-06-01T00:00:00Z",
    );
}

#[test]
fn vcek_of_another_chip() {
    let mut c = SnpCase::load(
        "snp/trustee_milan_report.bin",
        "snp/trustee_milan_vcek.der",
        "2025-06-01T00:00:00Z",
    );
    c.vek = testdata("snp/virtee_milan_vcek.der");
    let v = c.verdict();
    assert_eq!(first_failure(&v), "report.signature", "{}", v.render());
    assert_eq!(v.check("vek.chip_id").unwrap().status, Status::Fail);
}
