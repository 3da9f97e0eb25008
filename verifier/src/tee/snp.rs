//! Is this SEV-SNP report genuine? The `sev` crate (pure-Rust crypto) parses
//! the report and checks the AMD chain ARK → ASK/ASVK → VCEK/VLEK; we pin the
//! ARK, check validity dates, the endorsement key's TCB and chip-ID extensions,
//! and verify the report signature over the raw bytes received (sev re-encodes
//! its parsed struct, which would not notice a change in reserved bytes).

use sev::certs::snp::{ca, Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use tvm_certs::amd::AmdCrl;
use tvm_certs::{AmdProduct, AmdSigner};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::facts::{rfc3339, Facts, SnpFacts, TcbFacts};
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
    pub const AMD_CRL: &str = "amd.crl";
}
use checks::*;

const ORDER: [&str; 9] = [
    REPORT_FORMAT,
    VEK_FORMAT,
    CA_CHAIN,
    VEK_CHAIN,
    VEK_VALIDITY,
    AMD_CRL,
    REPORT_SIGNATURE,
    VEK_TCB,
    VEK_CHIP_ID,
];

/// An SNP report is exactly this long (SNP ABI, ATTESTATION_REPORT).
pub const REPORT_LEN: usize = 1184;
/// The signature covers bytes 0x000..0x2A0.
const SIGNED_LEN: usize = 0x2A0;
/// After r and s (72 bytes each) the signature area is reserved to the end
/// of the report; the signature cannot cover it, so it must be zero.
const SIGNATURE_RESERVED: std::ops::Range<usize> = SIGNED_LEN + 144..REPORT_LEN;

pub struct SnpInput<'a> {
    pub report: &'a [u8],
    pub endorsement: &'a SnpEndorsement,
    /// Unix seconds.
    pub at: i64,
    /// Seconds past its `nextUpdate` that AMD's CRL may still be used (policy).
    pub grace_seconds: u64,
}

/// What is known about revocation of the endorsement's chain.
enum CrlState {
    NotGiven(String),
    Invalid(String),
    Checked {
        crl: AmdCrl,
        revoked: Option<&'static str>,
    },
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

/// A certificate's validity window, kept to check at each report's time.
#[derive(Debug, Clone)]
struct Window {
    what: &'static str,
    from: i64,
    until: i64,
}

impl Window {
    fn of(what: &'static str, cert: &X509Certificate<'_>) -> Self {
        let v = cert.validity();
        Window {
            what,
            from: v.not_before.timestamp(),
            until: v.not_after.timestamp(),
        }
    }

    fn check(&self, at: i64) -> Result<(), String> {
        if at < self.from || at > self.until {
            return Err(format!(
                "{} is valid {} .. {}, not at {}",
                self.what,
                rfc3339(self.from),
                rfc3339(self.until),
                rfc3339(at)
            ));
        }
        Ok(())
    }
}

/// The report signature: ECDSA P-384 over SHA-384 of bytes 0..0x2A0; r and s
/// are 72-byte little-endian fields at 0x2A0 and 0x2E8.
fn verify_report_signature(report: &[u8], public_key: &[u8]) -> Result<(), String> {
    let mut sig = [0u8; 96];
    for (field, out) in [(0x2A0, 0), (0x2E8, 48)] {
        let le = &report[field..field + 72];
        if le[48..].iter().any(|b| *b != 0) {
            return Err("signature component wider than 48 bytes: not a P-384 signature".into());
        }
        for i in 0..48 {
            sig[out + 47 - i] = le[i];
        }
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, public_key)
        .verify(&report[..SIGNED_LEN], &sig)
        .map_err(|_| {
            "the report is not signed by this endorsement key: it was altered, or the key belongs to another chip or TCB".to_string()
        })
}

/// A VCEK or VLEK with its AMD chain, checked once (parsing, pinned ARK, the
/// RSA-PSS signatures ARK → ASK → key) and then shared by every report it
/// signs. Dates are kept and checked against each report's time.
pub struct SnpEndorsement {
    signer: Option<AmdSigner>,
    product: Option<AmdProduct>,
    format: Result<String, String>,
    ca_chain: Result<String, String>,
    vek_chain: Result<String, String>,
    windows: Vec<Window>,
    public_key: Vec<u8>,
    tcb: [Option<u8>; 5],
    hwid: Option<Vec<u8>>,
    ask_der: Vec<u8>,
    vek_der: Vec<u8>,
    crl: CrlState,
}

impl SnpEndorsement {
    /// The AMD product and key kind the certificate names (`None` when it
    /// is not an AMD VCEK or VLEK).
    pub fn product_and_signer(&self) -> Option<(AmdProduct, AmdSigner)> {
        self.product.zip(self.signer)
    }

    /// Add AMD's CRL for the endorsement's product and key kind (DER), or why
    /// there is none; the `amd.crl` check reports it.
    pub fn with_crl(mut self, crl: Result<&[u8], String>) -> Self {
        self.crl = match (crl, self.product, self.signer) {
            (Err(why), _, _) => CrlState::NotGiven(why),
            (Ok(der), Some(product), Some(signer)) => match AmdCrl::check(der, product, signer) {
                Ok(crl) => return self.with_checked_crl(crl, signer),
                Err(e) => CrlState::Invalid(e.to_string()),
            },
            (Ok(_), _, _) => CrlState::Invalid(
                "the endorsement key was not recognised, so its CRL cannot be checked".into(),
            ),
        };
        self
    }

    /// A CRL whose signature AMD's root verified: is the intermediate or the
    /// endorsement key on it?
    fn with_checked_crl(mut self, crl: AmdCrl, signer: AmdSigner) -> Self {
        let vlek = signer == AmdSigner::Vlek;
        let revoked = if crl.revokes(&self.ask_der) {
            Some(if vlek { "ASVK" } else { "ASK" })
        } else if crl.revokes(&self.vek_der) {
            Some(if vlek { "VLEK" } else { "VCEK" })
        } else {
            None
        };
        self.crl = CrlState::Checked { crl, revoked };
        self
    }

    /// `ca`: DER of the intermediate (ASK/ASVK) and root (ARK) when the caller
    /// brings them; otherwise the pinned ones for the key's product are used.
    pub fn prepare(vek_der: &[u8], ca: Option<(&[u8], &[u8])>) -> Self {
        let mut e = SnpEndorsement {
            signer: None,
            product: None,
            format: Err(String::new()),
            ca_chain: Err("not reached: vek.format failed".into()),
            vek_chain: Err("not reached: vek.format failed".into()),
            windows: Vec::new(),
            public_key: Vec::new(),
            tcb: [None; 5],
            hwid: None,
            ask_der: Vec::new(),
            vek_der: vek_der.to_vec(),
            crl: CrlState::NotGiven("no AMD CRL given".into()),
        };
        let vek = match X509Certificate::from_der(vek_der) {
            Ok((_, c)) => c,
            Err(err) => {
                e.format = Err(format!(
                    "the VCEK/VLEK is not a DER X.509 certificate: {err}"
                ));
                return e;
            }
        };
        let subject = common_name(vek.subject());
        let issuer = common_name(vek.issuer());
        e.signer = match subject.as_str() {
            "SEV-VCEK" => Some(AmdSigner::Vcek),
            "SEV-VLEK" => Some(AmdSigner::Vlek),
            _ => None,
        };
        e.product = product_of(&issuer);
        let (Some(signer), Some(product)) = (e.signer, e.product) else {
            e.format = Err(format!(
                "the certificate given is {subject:?} issued by {issuer:?}, not an AMD Milan, Genoa or Turin VCEK or VLEK"
            ));
            return e;
        };
        e.format = Ok(format!("{signer} for AMD {product} (issued by {issuer})"));
        e.public_key = vek.public_key().subject_public_key.data.to_vec();
        e.tcb = [
            OID_BL_SPL,
            OID_TEE_SPL,
            OID_SNP_SPL,
            OID_UCODE_SPL,
            OID_FMC_SPL,
        ]
        .map(|oid| ext_u8(&vek, oid));
        e.hwid = ext(&vek, OID_HWID).and_then(|hwid| {
            if hwid.len() == 64 {
                Some(hwid.to_vec())
            } else {
                x509_parser::der_parser::der::parse_der_octetstring(hwid)
                    .ok()
                    .and_then(|(_, o)| o.as_slice().ok().map(<[u8]>::to_vec))
            }
        });
        let pinned = match tvm_certs::anchors::amd_ca(product, signer) {
            Ok(ca) => ca,
            Err(err) => {
                e.ca_chain = Err(err.to_string());
                return e;
            }
        };
        let (ask_der, ark_der) = ca.unwrap_or((&pinned.ask, &pinned.ark));
        e.ask_der = ask_der.to_vec();
        e.ca_chain = (|| -> Result<String, String> {
            match tvm_certs::anchors::is_pinned_ark(ark_der) {
                Some(p) if p == product => {}
                Some(p) => {
                    return Err(format!(
                        "the ARK given is AMD's {p} root, but the {signer} is for {product}: wrong product chain"
                    ))
                }
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
                e.windows.push(Window::of(what, &c));
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
        if e.ca_chain.is_err() {
            e.vek_chain = Err("not reached: ca.chain failed".into());
            return e;
        }
        e.vek_chain = Certificate::from_der(ask_der)
            .and_then(|ask| {
                let vek_cert = Certificate::from_der(vek_der)?;
                (&ask, &vek_cert).verify()
            })
            .map(|()| format!("{signer} signed by AMD's {product} intermediate"))
            .map_err(|err| {
                format!("the {signer} is not signed by AMD's {product} intermediate ({err}): damaged certificate or wrong chain")
            });
        e.windows.push(Window::of(
            if signer == AmdSigner::Vlek {
                "VLEK"
            } else {
                "VCEK"
            },
            &vek,
        ));
        e
    }
}

fn snp_facts(
    r: &AttestationReport,
    signer: Option<AmdSigner>,
    product: Option<AmdProduct>,
) -> SnpFacts {
    let t = &r.reported_tcb;
    SnpFacts {
        report_version: r.version,
        signer,
        product,
        measurement: r.measurement,
        report_data: r.report_data,
        chip_id: r.chip_id,
        guest_policy: r.policy.0,
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

/// Verify an SNP report with its prepared VCEK/VLEK at a given time.
pub fn verify(input: &SnpInput<'_>) -> Verification {
    let mut checks = Vec::new();
    let e = input.endorsement;
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
        Err(err) => {
            checks.push(Check::fail(
                REPORT_FORMAT,
                format!("cannot parse the report: {err}"),
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
            stop!(Some(Facts::SevSnp(snp_facts(&report, None, None))));
        }
    };
    let facts = snp_facts(&report, Some(signer), e.product);
    if !(2..=5).contains(&report.version) || report.sig_algo != 1 {
        checks.push(Check::fail(
            REPORT_FORMAT,
            format!(
                "report version {} / signature algorithm {} is not supported (versions 2-5, ECDSA P-384)",
                report.version, report.sig_algo
            ),
        ));
        stop!(Some(Facts::SevSnp(facts)));
    }
    if input.report[SIGNATURE_RESERVED].iter().any(|b| *b != 0) {
        checks.push(Check::fail(
            REPORT_FORMAT,
            "the reserved bytes after the signature are not zero: they are not signed, so the report was changed after the firmware made it",
        ));
        stop!(Some(Facts::SevSnp(facts)));
    }
    checks.push(Check::pass(
        REPORT_FORMAT,
        format!("SNP report v{}, signed by {signer}", report.version),
    ));

    // The prepared endorsement: format, chain to the pinned ARK, key signed by the intermediate.
    match &e.format {
        Err(err) => {
            checks.push(Check::fail(
                VEK_FORMAT,
                format!("{err}: give the report's {signer}"),
            ));
            stop!(Some(Facts::SevSnp(facts)));
        }
        Ok(_) if e.signer != Some(signer) => {
            let given = e.signer.map(|s| s.to_string()).unwrap_or_default();
            checks.push(Check::fail(
                VEK_FORMAT,
                format!("the report is signed by a {signer} but the certificate given is a {given}: give the report's {signer}"),
            ));
            stop!(Some(Facts::SevSnp(facts)));
        }
        Ok(d) => checks.push(Check::pass(VEK_FORMAT, d.clone())),
    }
    for (name, result) in [(CA_CHAIN, &e.ca_chain), (VEK_CHAIN, &e.vek_chain)] {
        match result {
            Ok(d) => checks.push(Check::pass(name, d.clone())),
            Err(err) => {
                checks.push(Check::fail(name, err.clone()));
                stop!(Some(Facts::SevSnp(facts)));
            }
        }
    }

    // vek.validity: the chain's dates at this report's time.
    match e.windows.iter().try_for_each(|w| w.check(input.at)) {
        Ok(()) => {
            let until = e.windows.iter().map(|w| w.until).min().unwrap_or(i64::MAX);
            checks.push(Check::pass(
                VEK_VALIDITY,
                format!("chain valid until {}", rfc3339(until)),
            ));
        }
        Err(err) => {
            checks.push(Check::fail(
                VEK_VALIDITY,
                format!("{err}: fetch a current {signer}"),
            ));
            stop!(Some(Facts::SevSnp(facts)));
        }
    }

    // amd.crl: neither the intermediate nor the key is revoked, by a current CRL.
    checks.push(match &e.crl {
        CrlState::NotGiven(why) => {
            Check::not_checked(AMD_CRL, format!("{why}: revocation not checked"))
        }
        CrlState::Invalid(why) => Check::fail(AMD_CRL, format!("{why}: fetch AMD's CRL again")),
        CrlState::Checked {
            revoked: Some(what),
            ..
        } => Check::fail(
            AMD_CRL,
            format!("AMD has revoked this {what}: the platform's keys are not trusted"),
        ),
        CrlState::Checked { crl, .. } if input.at < crl.this_update => Check::fail(
            AMD_CRL,
            format!(
                "the AMD CRL is not valid until {}",
                rfc3339(crl.this_update)
            ),
        ),
        CrlState::Checked { crl, .. }
            if input.at > crl.next_update.saturating_add(input.grace_seconds as i64) =>
        {
            Check::fail(
                AMD_CRL,
                format!(
                    "the AMD CRL expired at {}: fetch a fresh one",
                    rfc3339(crl.next_update)
                ),
            )
        }
        CrlState::Checked { crl, .. } => Check::pass(
            AMD_CRL,
            format!("not revoked (CRL valid until {})", rfc3339(crl.next_update)),
        ),
    });

    // report.signature
    match verify_report_signature(input.report, &e.public_key) {
        Ok(()) => checks.push(Check::pass(
            REPORT_SIGNATURE,
            format!("signed by this {signer}"),
        )),
        Err(err) => checks.push(Check::fail(REPORT_SIGNATURE, err)),
    }

    // vek.tcb: the key was issued for exactly the TCB the report claims.
    let t = &report.reported_tcb;
    let mut mismatches = Vec::new();
    for (i, (name, have)) in [
        ("bootloader", Some(t.bootloader)),
        ("tee", Some(t.tee)),
        ("snp", Some(t.snp)),
        ("microcode", Some(t.microcode)),
        ("fmc", t.fmc),
    ]
    .into_iter()
    .enumerate()
    {
        let want = e.tcb[i];
        match (want, have) {
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
    checks.push(match (signer, &e.hwid) {
        (AmdSigner::Vlek, _) => Check::pass(VEK_CHIP_ID, "VLEK: not tied to one chip"),
        (_, _) if masked => Check::pass(VEK_CHIP_ID, "chip ID masked by the guest policy"),
        (_, Some(id)) if id[..] == report.chip_id[..] => {
            Check::pass(VEK_CHIP_ID, "chip ID matches the VCEK")
        }
        (_, Some(_)) => Check::fail(
            VEK_CHIP_ID,
            "the report's chip ID is not the VCEK's: this VCEK belongs to another chip",
        ),
        (_, None) => Check::fail(VEK_CHIP_ID, "the VCEK has no hwID extension"),
    });
    Verification {
        checks,
        facts: Some(Facts::SevSnp(facts)),
    }
}

/// The report_data a report carries, read without verifying anything.
pub fn report_data_of(report: &[u8]) -> Option<[u8; 64]> {
    AttestationReport::from_bytes(report)
        .ok()
        .map(|r| r.report_data)
}

/// The AMD product a report comes from, when the report says (v3+ carries
/// the CPUID family and model; v2 does not).
pub fn product_of_report(report: &[u8]) -> Option<AmdProduct> {
    let r = AttestationReport::from_bytes(report).ok()?;
    match (r.cpuid_fam_id?, r.cpuid_mod_id?) {
        (0x19, m) if m < 0x10 => Some(AmdProduct::Milan),
        (0x19, _) => Some(AmdProduct::Genoa),
        (0x1A, _) => Some(AmdProduct::Turin),
        _ => None,
    }
}

/// Which key signed a report (`None`: not a report, or not signed).
pub fn signer_of_report(report: &[u8]) -> Option<AmdSigner> {
    match AttestationReport::from_bytes(report)
        .ok()?
        .key_info
        .signing_key()
    {
        0 => Some(AmdSigner::Vcek),
        1 => Some(AmdSigner::Vlek),
        _ => None,
    }
}

/// Certificate-table entries read at most (a table has four or five).
const MAX_CERT_TABLE_ENTRIES: usize = 16;

/// The VCEK or VLEK (DER) in an extended report's certificate table, as the
/// host gives it (the `sev-guest` ioctl's or configfs-tsm's auxblob): 24-byte
/// entries `GUID ‖ u32 offset ‖ u32 length` (little-endian), ended by an
/// all-zero one, each pointing at a certificate in the same buffer. The
/// `sev` crate's reader of this format reads through raw pointers meant for
/// the kernel's buffer; evidence from the network gets this bounded one.
pub fn endorsement_key_of_table(table: &[u8], signer: AmdSigner) -> Result<Vec<u8>, String> {
    // GUIDs as stored (first three fields little-endian).
    const VCEK: [u8; 16] = [
        0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    const VLEK: [u8; 16] = [
        0xc2, 0x4b, 0x07, 0xa8, 0x5a, 0xa2, 0x3e, 0x48, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
        0xa1,
    ];
    let want = match signer {
        AmdSigner::Vcek => VCEK,
        AmdSigner::Vlek => VLEK,
    };
    for i in 0..MAX_CERT_TABLE_ENTRIES {
        let Some(entry) = table.get(i * 24..i * 24 + 24) else {
            break;
        };
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        if entry[..16] != want {
            continue;
        }
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        return table
            .get(offset..offset.saturating_add(len))
            .filter(|der| !der.is_empty())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                format!(
                    "the certificate table's {signer} entry ({len} bytes at {offset}) is outside the table ({} bytes)",
                    table.len()
                )
            });
    }
    Err(format!(
        "the certificate table carries no {signer}: the host must give the extended report's certificates"
    ))
}

/// Why AMD KDS cannot be asked for a report's VCEK.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VcekRequestError {
    #[error("cannot parse the report: {0}")]
    Report(String),
    #[error("the report is signed by a VLEK (or not signed): a VLEK comes from the cloud provider, not AMD KDS; it is taken from the evidence's certificate table")]
    NotVcek,
    #[error("the report's chip ID is masked: give its VCEK or VLEK with --vcek")]
    MaskedChip,
}

/// The chip ID and reported TCB a report's VCEK must be fetched for.
pub fn vcek_request(report: &[u8]) -> Result<([u8; 64], tvm_certs::amd::SnpTcb), VcekRequestError> {
    let r = AttestationReport::from_bytes(report)
        .map_err(|e| VcekRequestError::Report(e.to_string()))?;
    if r.key_info.signing_key() != 0 {
        return Err(VcekRequestError::NotVcek);
    }
    if r.chip_id.iter().all(|b| *b == 0) {
        return Err(VcekRequestError::MaskedChip);
    }
    let t = r.reported_tcb;
    Ok((
        r.chip_id,
        tvm_certs::amd::SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Status;

    // SNP-2 (virtee): a genuine Milan report and its VCEK (testdata/README.md).
    const REPORT: &[u8] = include_bytes!("../../../testdata/snp/virtee_milan_report.hex");
    const VCEK: &[u8] = include_bytes!("../../../testdata/snp/virtee_milan_vcek.der");
    const DAY: i64 = 86_400;

    fn at() -> i64 {
        crate::input::parse_time("2025-06-01T00:00:00Z").unwrap()
    }

    fn serial(der: &[u8]) -> Vec<u8> {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        let s = c.raw_serial();
        s[s.iter().position(|b| *b != 0).unwrap_or(s.len())..].to_vec()
    }

    /// The `amd.crl` check for SNP-2 with a CRL of these dates and serials
    /// (as if AMD's root had verified it: the real CRLs revoke nothing SNP-2
    /// depends on, so the revoked branches need made-up contents), at `when`.
    fn crl_check(this: i64, next: i64, revoked: Vec<Vec<u8>>, when: i64, grace: u64) -> Check {
        let report = crate::input::binary_or_hex(REPORT);
        let e = SnpEndorsement::prepare(VCEK, None);
        let e = e.with_checked_crl(
            AmdCrl {
                this_update: this,
                next_update: next,
                revoked,
            },
            AmdSigner::Vcek,
        );
        let v = verify(&SnpInput {
            report: &report,
            endorsement: &e,
            at: when,
            grace_seconds: grace,
        });
        v.check(AMD_CRL).unwrap().clone()
    }

    /// AMD's real Milan VCEK CRL #6 (openpcc's archive, testdata/README.md).
    fn real_milan_crl() -> Vec<u8> {
        let archive = include_str!("../../../testdata/snp/openpcc_sev_certificates.txt");
        let head = "-- test_amd_milan_crl.pem --\n";
        let start = archive.find(head).unwrap() + head.len();
        let end = archive[start..].find("\n-- ").unwrap() + start;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&archive.as_bytes()[start..end]).unwrap();
        pem.contents
    }

    #[test]
    fn snp2_passes_amd_crl_with_amds_real_crl_inside_its_window_only() {
        let report = crate::input::binary_or_hex(REPORT);
        let der = real_milan_crl();
        let check_at = |when: &str| {
            let e = SnpEndorsement::prepare(VCEK, None).with_crl(Ok(&der));
            let v = verify(&SnpInput {
                report: &report,
                endorsement: &e,
                at: crate::input::parse_time(when).unwrap(),
                grace_seconds: 0,
            });
            v.check(AMD_CRL).unwrap().clone()
        };
        // Signed by the pinned Milan ARK, neither the ASK nor SNP-2's VCEK listed.
        let c = check_at("2025-06-01T00:00:00Z");
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        // Past its nextUpdate (2026-05-12), it no longer vouches for anything.
        let c = check_at("2026-06-01T00:00:00Z");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("expired at"), "{}", c.detail);
        // Before its thisUpdate (2025-05-06), it is not valid yet.
        let c = check_at("2025-05-01T00:00:00Z");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("not valid until"), "{}", c.detail);
    }

    #[test]
    fn every_branch_of_the_amd_crl_check() {
        let t = at();
        let ok = crl_check(t - DAY, t + DAY, vec![], t, 0);
        assert_eq!(ok.status, Status::Pass, "{}", ok.detail);
        // The VCEK on the list.
        let c = crl_check(t - DAY, t + DAY, vec![serial(VCEK)], t, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("revoked this VCEK"), "{}", c.detail);
        // The ASK (the pinned Milan one) on the list.
        let ask = tvm_certs::anchors::amd_ca(AmdProduct::Milan, AmdSigner::Vcek)
            .unwrap()
            .ask;
        let c = crl_check(t - DAY, t + DAY, vec![vec![1, 2, 3], serial(&ask)], t, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("revoked this ASK"), "{}", c.detail);
        // Past nextUpdate: fails, unless inside the policy's grace.
        let c = crl_check(t - 3 * DAY, t - DAY, vec![], t, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("expired at"), "{}", c.detail);
        let c = crl_check(t - 3 * DAY, t - DAY, vec![], t, 2 * DAY as u64);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        // Not yet valid.
        let c = crl_check(t + DAY, t + 2 * DAY, vec![], t, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("not valid until"), "{}", c.detail);
        // Not a CRL at all (or not AMD's): refused, with what to do.
        let report = crate::input::binary_or_hex(REPORT);
        let e = SnpEndorsement::prepare(VCEK, None).with_crl(Ok(b"not a CRL"));
        let v = verify(&SnpInput {
            report: &report,
            endorsement: &e,
            at: t,
            grace_seconds: 0,
        });
        let c = v.check(AMD_CRL).unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("fetch AMD's CRL again"), "{}", c.detail);
    }
}
