//! Is this SEV-SNP report genuine? The `sev` crate (pure-Rust crypto) parses
//! the report and checks the AMD chain ARK → ASK/ASVK → VCEK/VLEK; we pin the
//! ARK, check validity dates, the endorsement key's TCB and chip-ID extensions,
//! and verify the report signature over the raw bytes received (sev re-encodes
//! its parsed struct, which would not notice a change in reserved bytes).

use p384::ecdsa::signature::Verifier as _;
use sev::certs::snp::{ca, Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use tvm_certs::{AmdProduct, AmdSigner};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::facts::{Facts, SnpFacts, TcbFacts};
use crate::verdict::{Check, Verification};

pub mod checks {
    pub const REPORT_FORMAT: &str = "report.format";
    pub const VEK_FORMAT: &str = "vek.format";
    pub const CA_CHAIN: &str = "ca.chain";
    pub const VEK_CHAIN: &str = "vek.chain";
    pub const VEK_VALIDITY: &str = "vek.validity";
    pub const REPORT_SIGNATURE: &str = "report.signature";
    pub const VEK_TCB: &str = "vek.tcb";
    pub const VEK_CHIP_ID: &str = "vek.chip_id";
}
use checks::*;

const ORDER: [&str; 8] = [
    REPORT_FORMAT,
    VEK_FORMAT,
    CA_CHAIN,
    VEK_CHAIN,
    VEK_VALIDITY,
    REPORT_SIGNATURE,
    VEK_TCB,
    VEK_CHIP_ID,
];

/// An SNP report is exactly this long (SNP ABI, ATTESTATION_REPORT).
pub const REPORT_LEN: usize = 1184;
/// The signature covers bytes 0x000..0x2A0.
const SIGNED_LEN: usize = 0x2A0;

pub struct SnpInput<'a> {
    pub report: &'a [u8],
    /// DER of the VCEK or VLEK.
    pub vek_der: &'a [u8],
    /// DER of the intermediate (ASK/ASVK) and root (ARK), when the caller
    /// brings them; otherwise the pinned ones for the key's product are used.
    pub ca: Option<(&'a [u8], &'a [u8])>,
    /// Unix seconds.
    pub at: i64,
}

// AMD's VCEK/VLEK certificate extensions (VCEK spec, table 8).
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

fn ext<'a>(cert: &'a X509Certificate<'_>, oid: &str) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
}

/// A small DER INTEGER (the SPL extensions) as u8.
fn ext_u8(cert: &X509Certificate<'_>, oid: &str) -> Option<u8> {
    let v = ext(cert, oid)?;
    let (_, obj) = x509_parser::der_parser::der::parse_der_integer(v).ok()?;
    obj.as_u64().ok().and_then(|n| u8::try_from(n).ok())
}

fn product_of(issuer_cn: &str) -> Option<AmdProduct> {
    AmdProduct::ALL
        .into_iter()
        .find(|p| issuer_cn.ends_with(p.name()))
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string()
}

fn validity(what: &str, cert: &X509Certificate<'_>, at: i64) -> Result<(), String> {
    let v = cert.validity();
    let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
    if at < from || at > until {
        return Err(format!(
            "{what} is valid {} .. {}, not at {}",
            v.not_before,
            v.not_after,
            crate::facts::rfc3339(at)
        ));
    }
    Ok(())
}

/// The report signature: ECDSA P-384 over SHA-384 of bytes 0..0x2A0; r and s
/// are 72-byte little-endian fields at 0x2A0 and 0x2E8.
fn verify_report_signature(report: &[u8], vek: &X509Certificate<'_>) -> Result<(), String> {
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&vek.public_key().subject_public_key.data)
        .map_err(|_| "the endorsement key is not a P-384 public key".to_string())?;
    let le_to_be = |field: &[u8]| -> Result<[u8; 48], String> {
        if field[48..].iter().any(|b| *b != 0) {
            return Err("signature component wider than 48 bytes".into());
        }
        let mut be = [0u8; 48];
        for (i, b) in field[..48].iter().enumerate() {
            be[47 - i] = *b;
        }
        Ok(be)
    };
    let r = le_to_be(&report[0x2A0..0x2A0 + 72])?;
    let s = le_to_be(&report[0x2E8..0x2E8 + 72])?;
    let sig = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|_| "signature r or s is out of range".to_string())?;
    key.verify(&report[..SIGNED_LEN], &sig)
        .map_err(|_| "the report is not signed by this endorsement key: it was altered, or the key belongs to another chip or TCB".to_string())
}

fn snp_facts(r: &AttestationReport, signer: &str, product: Option<AmdProduct>) -> SnpFacts {
    let t = &r.reported_tcb;
    SnpFacts {
        report_version: r.version,
        signer: signer.to_string(),
        product: product.map(|p| p.name().to_string()),
        measurement: hex::encode(r.measurement),
        report_data: hex::encode(r.report_data),
        chip_id: hex::encode(r.chip_id),
        guest_policy: format!("{:#x}", r.policy.0),
        vmpl: r.vmpl,
        reported_tcb: TcbFacts {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        },
        debug_allowed: r.policy.debug_allowed(),
        migration_agent_allowed: r.policy.migrate_ma_allowed(),
        smt_allowed: r.policy.smt_allowed(),
    }
}

/// Verify an SNP report with its VCEK/VLEK at a given time.
pub fn verify(input: &SnpInput<'_>) -> Verification {
    let mut checks = Vec::new();
    macro_rules! stop {
        ($facts:expr) => {
            return Verification::stopped(checks, &ORDER, $facts)
        };
    }

    // report.format
    if input.report.len() != REPORT_LEN {
        checks.push(Check::fail(
            REPORT_FORMAT,
            format!(
                "report is {} bytes; an SNP attestation report is {REPORT_LEN}",
                input.report.len()
            ),
        ));
        stop!(None);
    }
    let report = match AttestationReport::from_bytes(input.report) {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(
                REPORT_FORMAT,
                format!("cannot parse the report: {e}"),
            ));
            stop!(None);
        }
    };
    let signer = match report.key_info.signing_key() {
        0 => AmdSigner::Vcek,
        1 => AmdSigner::Vlek,
        k => {
            checks.push(Check::fail(
                REPORT_FORMAT,
                format!("report is not signed (signing key {k}); request it from the firmware with a VCEK or VLEK"),
            ));
            stop!(Some(Facts::SevSnp(snp_facts(&report, "none", None))));
        }
    };
    if !(2..=5).contains(&report.version) || report.sig_algo != 1 {
        checks.push(Check::fail(
            REPORT_FORMAT,
            format!("report version {} / signature algorithm {} is not supported (versions 2-5, ECDSA P-384)", report.version, report.sig_algo),
        ));
        stop!(Some(Facts::SevSnp(snp_facts(
            &report,
            &signer.to_string(),
            None
        ))));
    }
    checks.push(Check::pass(
        REPORT_FORMAT,
        format!("SNP report v{}, signed by {signer}", report.version),
    ));

    // vek.format
    let vek = match X509Certificate::from_der(input.vek_der) {
        Ok((_, c)) => c,
        Err(e) => {
            checks.push(Check::fail(
                VEK_FORMAT,
                format!("the {signer} is not a DER X.509 certificate: {e}"),
            ));
            stop!(Some(Facts::SevSnp(snp_facts(
                &report,
                &signer.to_string(),
                None
            ))));
        }
    };
    let subject = common_name(vek.subject());
    let issuer = common_name(vek.issuer());
    let product = product_of(&issuer);
    let facts = snp_facts(&report, &signer.to_string(), product);
    let expected_cn = format!("SEV-{signer}");
    if subject != expected_cn {
        checks.push(Check::fail(
            VEK_FORMAT,
            format!("the report is signed by a {signer} but the certificate given is {subject:?}: give the report's {signer}"),
        ));
        stop!(Some(Facts::SevSnp(facts)));
    }
    let Some(product) = product else {
        checks.push(Check::fail(
            VEK_FORMAT,
            format!("unknown issuer {issuer:?}: not an AMD Milan, Genoa or Turin {signer}"),
        ));
        stop!(Some(Facts::SevSnp(facts)));
    };
    checks.push(Check::pass(
        VEK_FORMAT,
        format!("{signer} for AMD {product} (issued by {issuer})"),
    ));

    // ca.chain: the ARK must be AMD's pinned root for this product.
    let pinned = match tvm_certs::anchors::amd_ca(product, signer) {
        Ok(ca) => ca,
        Err(e) => {
            checks.push(Check::fail(CA_CHAIN, e.to_string()));
            stop!(Some(Facts::SevSnp(facts)));
        }
    };
    let (ask_der, ark_der) = input.ca.unwrap_or((&pinned.ask, &pinned.ark));
    let ca_result = (|| -> Result<String, String> {
        match tvm_certs::anchors::is_pinned_ark(ark_der) {
            Some(p) if p == product => {}
            Some(p) => return Err(format!("the ARK given is AMD's {p} root, but the {signer} is for {product}: wrong product chain")),
            None => return Err("the ARK given is not one of AMD's pinned roots: wrong root".into()),
        }
        let chain = ca::Chain {
            ark: Certificate::from_der(ark_der).map_err(|e| format!("ARK: {e}"))?,
            ask: Certificate::from_der(ask_der).map_err(|e| format!("ASK: {e}"))?,
        };
        (&chain).verify().map_err(|e| {
            format!("the ASK is not signed by the ARK ({e}): wrong or damaged intermediate")
        })?;
        for (what, der) in [("ARK", ark_der), ("ASK", ask_der)] {
            let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("{what}: {e}"))?;
            validity(what, &c, input.at)?;
        }
        Ok(format!(
            "ARK is AMD's pinned {product} root and signs the {}",
            if signer == AmdSigner::Vlek {
                "ASVK"
            } else {
                "ASK"
            }
        ))
    })();
    match ca_result {
        Ok(d) => checks.push(Check::pass(CA_CHAIN, d)),
        Err(e) => {
            checks.push(Check::fail(CA_CHAIN, e));
            stop!(Some(Facts::SevSnp(facts)));
        }
    }

    // vek.chain
    let signed = Certificate::from_der(ask_der).and_then(|ask| {
        let vek_cert = Certificate::from_der(input.vek_der)?;
        (&ask, &vek_cert).verify()
    });
    match signed {
        Ok(()) => checks.push(Check::pass(
            VEK_CHAIN,
            format!("{signer} signed by AMD's {product} intermediate"),
        )),
        Err(e) => {
            checks.push(Check::fail(
                VEK_CHAIN,
                format!("the {signer} is not signed by AMD's {product} intermediate ({e}): damaged certificate or wrong chain"),
            ));
            stop!(Some(Facts::SevSnp(facts)));
        }
    }

    // vek.validity
    match validity(&signer.to_string(), &vek, input.at) {
        Ok(()) => checks.push(Check::pass(
            VEK_VALIDITY,
            format!("valid until {}", vek.validity().not_after),
        )),
        Err(e) => {
            checks.push(Check::fail(
                VEK_VALIDITY,
                format!("{e}: fetch a current {signer}"),
            ));
            stop!(Some(Facts::SevSnp(facts)));
        }
    }

    // report.signature
    match verify_report_signature(input.report, &vek) {
        Ok(()) => checks.push(Check::pass(
            REPORT_SIGNATURE,
            format!("signed by this {signer}"),
        )),
        Err(e) => checks.push(Check::fail(REPORT_SIGNATURE, e)),
    }

    // vek.tcb: the key was issued for exactly the TCB the report claims.
    let t = &report.reported_tcb;
    let mut mismatches = Vec::new();
    for (name, oid, have) in [
        ("bootloader", OID_BL_SPL, Some(t.bootloader)),
        ("tee", OID_TEE_SPL, Some(t.tee)),
        ("snp", OID_SNP_SPL, Some(t.snp)),
        ("microcode", OID_UCODE_SPL, Some(t.microcode)),
        ("fmc", OID_FMC_SPL, t.fmc),
    ] {
        let want = ext_u8(&vek, oid);
        match (want, have) {
            (None, None) => {}
            (None, Some(_)) if name == "fmc" => {}
            (w, h) if w == h => {}
            (w, h) => mismatches.push(format!("{name}: report {h:?}, {signer} {w:?}")),
        }
    }
    checks.push(if mismatches.is_empty() {
        Check::pass(
            VEK_TCB,
            format!(
                "reported TCB matches the {signer} (bl {} tee {} snp {} ucode {})",
                t.bootloader, t.tee, t.snp, t.microcode
            ),
        )
    } else {
        Check::fail(
            VEK_TCB,
            format!(
                "reported TCB differs from the {signer}'s: {}; fetch the {signer} for this TCB",
                mismatches.join(", ")
            ),
        )
    });

    // vek.chip_id: a VCEK names its chip; a VLEK or a masked chip ID does not.
    let masked = report.chip_id.iter().all(|b| *b == 0);
    checks.push(match (signer, ext(&vek, OID_HWID)) {
        (AmdSigner::Vlek, _) => Check::pass(VEK_CHIP_ID, "VLEK: not tied to one chip"),
        (_, _) if masked => Check::pass(VEK_CHIP_ID, "chip ID masked by the guest policy"),
        (_, Some(hwid)) => {
            let id = if hwid.len() == 64 {
                Some(hwid.to_vec())
            } else {
                x509_parser::der_parser::der::parse_der_octetstring(hwid)
                    .ok()
                    .and_then(|(_, o)| o.as_slice().ok().map(<[u8]>::to_vec))
            };
            if id.as_deref() == Some(&report.chip_id[..]) {
                Check::pass(VEK_CHIP_ID, "chip ID matches the VCEK")
            } else {
                Check::fail(
                    VEK_CHIP_ID,
                    "the report's chip ID is not the VCEK's: this VCEK belongs to another chip",
                )
            }
        }
        (_, None) => Check::fail(VEK_CHIP_ID, "the VCEK has no hwID extension"),
    });
    Verification {
        checks,
        facts: Some(Facts::SevSnp(facts)),
    }
}
