//! Is this TDX quote genuine? dcap-qvl does the DCAP work (PCK chain, CRLs,
//! QE report, quote signature, TCB level matching, TDX module identity); around
//! it we check the collateral's dates and issuers ourselves, so that every
//! failure is named and says what to do.

use dcap_qvl::quote::Quote;
use dcap_qvl::QuoteCollateralV3;

use crate::facts::{rfc3339, Facts, TdxFacts};
use crate::verdict::{Check, Verification};
pub use tvm_certs::intel::parse_collateral;
use tvm_certs::intel::{check_issuers, collateral_dates, CollateralError, Dated};

/// Check names, in the order they run.
pub mod checks {
    pub const QUOTE_FORMAT: &str = "quote.format";
    pub const COLLATERAL_FORMAT: &str = "collateral.format";
    pub const COLLATERAL_FRESH: &str = "collateral.fresh";
    pub const COLLATERAL_CHAIN: &str = "collateral.chain";
    pub const PCK_CHAIN: &str = "pck.chain";
    pub const QE_REPORT: &str = "qe.report";
    pub const QE_IDENTITY: &str = "qe.identity";
    pub const QUOTE_SIGNATURE: &str = "quote.signature";
    pub const COLLATERAL_MATCH: &str = "collateral.match";
    pub const TCB_LEVEL: &str = "tcb.level";
    pub const TD_ATTRIBUTES: &str = "td.attributes";
}
use checks::*;

/// Every verification check, in order.
const ORDER: [&str; 11] = [
    QUOTE_FORMAT,
    COLLATERAL_FORMAT,
    COLLATERAL_FRESH,
    COLLATERAL_CHAIN,
    PCK_CHAIN,
    QE_REPORT,
    QE_IDENTITY,
    QUOTE_SIGNATURE,
    COLLATERAL_MATCH,
    TCB_LEVEL,
    TD_ATTRIBUTES,
];

/// Zero bytes allowed after a quote's signature data (real v4 quotes come
/// padded: TDX-1 has 70).
pub const MAX_QUOTE_PADDING: usize = 4096;

/// The checks dcap-qvl performs, in its order: the rest of ORDER.
const DCAP_STAGES: &[&str] = ORDER.split_at(3).1;

/// Collateral for one platform (FMSPC), read and checked against a root once
/// and then shared by every quote verified with it: the issuer checks cost
/// several signature verifications that need not be repeated per quote.
pub struct TdxCollateral {
    raw: QuoteCollateralV3,
    root_der: Vec<u8>,
    dates: Result<Vec<Dated>, CollateralError>,
    issuers: Result<(), CollateralError>,
    fmspc: Option<[u8; 6]>,
}

impl TdxCollateral {
    /// `root_der`: the root every chain must end in (Intel SGX Root CA, or a simulated root).
    pub fn prepare(raw: QuoteCollateralV3, root_der: &[u8]) -> Self {
        let dates = collateral_dates(&raw);
        let issuers = match &dates {
            Ok(_) => check_issuers(&raw, root_der),
            Err(e) => Err(e.clone()),
        };
        let fmspc = serde_json::from_str::<serde_json::Value>(&raw.tcb_info)
            .ok()
            .and_then(|t| {
                let text = t.get("fmspc")?.as_str()?;
                <[u8; 6]>::try_from(hex::decode(text).ok()?).ok()
            });
        TdxCollateral {
            raw,
            root_der: root_der.to_vec(),
            dates,
            issuers,
            fmspc,
        }
    }

    /// The root this collateral was checked against.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn raw(&self) -> &QuoteCollateralV3 {
        &self.raw
    }

    /// The earliest `nextUpdate` of its items (Unix seconds), if it could be read.
    pub fn next_update(&self) -> Option<i64> {
        self.dates
            .as_ref()
            .ok()?
            .iter()
            .map(|d| d.next_update)
            .min()
    }
}

pub struct TdxInput<'a> {
    pub quote: &'a [u8],
    pub collateral: &'a TdxCollateral,
    /// Unix seconds.
    pub at: i64,
    /// Seconds past `nextUpdate` that collateral may still be used (policy).
    pub grace_seconds: u64,
}

/// Fresh: every item issued by `at` and not past `nextUpdate + grace`.
fn check_fresh(dates: &[Dated], at: i64, grace: u64) -> Check {
    let grace = grace as i64;
    let mut problems = Vec::new();
    for d in dates {
        if at < d.issued {
            problems.push(format!(
                "{} is not valid until {}",
                d.name,
                rfc3339(d.issued)
            ));
        } else if at > d.next_update.saturating_add(grace) {
            problems.push(format!("{} expired at {}", d.name, rfc3339(d.next_update)));
        }
    }
    let earliest = dates
        .iter()
        .map(|d| d.next_update)
        .min()
        .unwrap_or(i64::MAX);
    if !problems.is_empty() {
        return Check::fail(
            COLLATERAL_FRESH,
            format!(
                "collateral expired: {}; fetch fresh collateral from Intel PCS (or your PCCS)",
                problems.join("; ")
            ),
        );
    }
    if at > earliest {
        Check::pass(
            COLLATERAL_FRESH,
            format!(
                "past nextUpdate {} but inside the policy grace",
                rfc3339(earliest)
            ),
        )
    } else {
        Check::pass(
            COLLATERAL_FRESH,
            format!("valid until {}", rfc3339(earliest)),
        )
    }
}

/// Which named check a dcap-qvl error belongs to, from its message chain.
fn classify(msg: &str) -> &'static str {
    let has = |s: &str| msg.contains(s);
    if has("Failed to decode quote")
        || has("Unsupported DCAP")
        || has("TEE quote must have")
        || has("Unknown QE vendor")
        || has("Unsupported TEE type")
    {
        QUOTE_FORMAT
    } else if has("expired")
        || has("issue date is in the future")
        || has("Expired")
        || has("NotValidYet")
    {
        COLLATERAL_FRESH
    } else if has("Unsupported QE Identity id")
        || has("Fmspc mismatch")
        || has("non-TDX TCB info")
        || has("non-SGX TCB info")
        || has("missing tdxModule")
        || has("TCB FMSPC")
    {
        COLLATERAL_MATCH
    } else if has("QE ISVSVN")
        || has("No TCB levels found in QE Identity")
        || has("QE report validation")
    {
        QE_IDENTITY
    } else if has("qe_report") || has("QE report hash") || has("Failed to decode QE report") {
        QE_REPORT
    } else if has("tcb_info")
        || has("qe_identity")
        || has("TCB Info")
        || has("QE Identity")
        || has("TcbInfo")
        || has("QeIdentity")
        || has("root ca")
    {
        COLLATERAL_CHAIN
    } else if has("ISV enclave report signature") || has("signed quote scope") {
        QUOTE_SIGNATURE
    } else if has("No matching TCB level")
        || has("TDX module")
        || has("TEE_TCB_SVN2")
        || has("Revoked")
    {
        TCB_LEVEL
    } else if has("Debug mode")
        || has("TD attributes")
        || has("SEPT_VE")
        || has("TD migration")
        || has("TD profiling")
        || has("SERVTD")
        || has("MR service TD")
    {
        TD_ATTRIBUTES
    } else {
        // What remains are webpki path errors, raised while building the PCK chain.
        PCK_CHAIN
    }
}

fn advice(check: &str) -> &'static str {
    match check {
        PCK_CHAIN => "the quote's PCK certificate chain does not verify to the Intel root or is revoked",
        QE_REPORT => "the Quoting Enclave's report is not signed by the PCK key or does not bind the attestation key",
        QE_IDENTITY => "the Quoting Enclave is not one Intel's QE Identity accepts: update the host's DCAP packages",
        QUOTE_SIGNATURE => "the quote body is not signed by the attestation key: the quote was altered",
        COLLATERAL_MATCH => "the collateral is for another platform (FMSPC or TEE type): fetch collateral for this quote",
        TCB_LEVEL => "no TCB level of Intel's TCB Info matches this platform: update the host's BIOS/microcode and TDX module",
        TD_ATTRIBUTES => "the TD attributes are not those of a sealed production TD",
        COLLATERAL_CHAIN => "the collateral's signatures or issuers do not verify to the Intel root",
        COLLATERAL_FRESH => "the collateral is outside its validity window: fetch fresh collateral",
        _ => "the quote could not be read",
    }
}

/// Verify a TDX quote against its collateral and a root, at a given time.
pub fn verify(input: &TdxInput<'_>) -> Verification {
    let mut checks = Vec::new();
    let mut rest = input.quote;
    let quote =
        match <Quote as parity_scale_codec::Decode>::decode(&mut rest).map_err(|e| e.to_string()) {
            Ok(q) if q.header.tee_type == 0x81 && matches!(q.header.version, 4 | 5) => q,
            Ok(q) => {
                checks.push(Check::fail(
                    QUOTE_FORMAT,
                    format!(
                        "not a TDX quote: version {}, TEE type {:#x} (expected v4/v5, 0x81)",
                        q.header.version, q.header.tee_type
                    ),
                ));
                return Verification::stopped(checks, &ORDER, None);
            }
            Err(e) => {
                checks.push(Check::fail(
                    QUOTE_FORMAT,
                    format!("cannot parse the quote ({} bytes): {e}", input.quote.len()),
                ));
                return Verification::stopped(checks, &ORDER, None);
            }
        };
    // Inner lengths larger than their contents would hide unsigned bytes
    // inside the signature data: the quote must be what its parts encode to.
    let end = input.quote.len() - rest.len();
    if parity_scale_codec::Encode::encode(&quote) != input.quote[..end] {
        checks.push(Check::fail(
            QUOTE_FORMAT,
            "the quote's lengths do not match its parts (bytes hidden inside its signature data): send the quote as the TEE made it",
        ));
        return Verification::stopped(checks, &ORDER, None);
    }
    // What follows the signature data is not signed: zero padding (quote
    // buffers are fixed-size) up to a bound, nothing else.
    if rest.len() > MAX_QUOTE_PADDING || rest.iter().any(|b| *b != 0) {
        checks.push(Check::fail(
            QUOTE_FORMAT,
            format!(
                "{} bytes follow the quote's signature data; only zero padding of at most {MAX_QUOTE_PADDING} bytes may: send the quote as the TEE made it",
                rest.len()
            ),
        ));
        return Verification::stopped(checks, &ORDER, None);
    }
    let Some(td) = quote.report.as_td10() else {
        checks.push(Check::fail(QUOTE_FORMAT, "quote body is not a TD report"));
        return Verification::stopped(checks, &ORDER, None);
    };
    let tud = td.td_attributes[0];
    let mut facts = TdxFacts {
        quote_version: quote.header.version,
        tcb_status: None,
        advisory_ids: Vec::new(),
        fmspc: None,
        mrtd: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        td_attributes: td.td_attributes,
        debug: tud & 0x71 != 0,
        collateral_expires: None,
    };
    checks.push(Check::pass(
        QUOTE_FORMAT,
        format!(
            "TDX quote v{}, {} bytes",
            quote.header.version,
            input.quote.len()
        ),
    ));

    let coll = input.collateral;
    let dates = match &coll.dates {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::fail(
                COLLATERAL_FORMAT,
                format!("collateral is malformed: {e}; fetch it again"),
            ));
            return Verification::stopped(checks, &ORDER, Some(Facts::Tdx(facts)));
        }
    };
    checks.push(Check::pass(
        COLLATERAL_FORMAT,
        "TCB Info, QE Identity and both CRLs read",
    ));
    let earliest = coll.next_update().unwrap_or(input.at);
    facts.collateral_expires = Some(rfc3339(earliest));
    facts.fmspc = coll.fmspc;
    let fresh = check_fresh(dates, input.at, input.grace_seconds);
    let fresh_ok = fresh.status == crate::verdict::Status::Pass;
    checks.push(fresh);
    if !fresh_ok {
        return Verification::stopped(checks, &ORDER, Some(Facts::Tdx(facts)));
    }
    if let Err(e) = &coll.issuers {
        checks.push(Check::fail(COLLATERAL_CHAIN, e.to_string()));
        return Verification::stopped(checks, &ORDER, Some(Facts::Tdx(facts)));
    }

    // Inside the grace, evaluate as of the last moment the collateral was valid.
    let dcap_at = input.at.min(earliest - 1).max(0) as u64;
    // The grace is for collateral past nextUpdate, never for certificates:
    // evaluating at an earlier time would also accept certificates that have
    // expired since, so their validity is checked at the real time too.
    // It also names a certificate that is not yet valid with its dates (the
    // path validator's own error says only "not valid yet").
    let expired_cert =
        certificate_expired(&quote, &coll.raw, input.at).map(|(stage, why)| {
            if (dcap_at as i64) < input.at {
                (stage, format!("{why}: the policy's collateral grace covers collateral past its nextUpdate, not certificates"))
            } else {
                (stage, why)
            }
        });
    // Debug is a policy question (td.debug in appraisal), so dcap-qvl lets it through.
    let verifier = dcap_qvl::verify::QuoteVerifier::new(coll.root_der.clone()).allow_debug(true);
    match verifier.verify(input.quote, &coll.raw, dcap_at) {
        Ok(report) => {
            facts.tcb_status = crate::policy::parse_tcb_status(&report.status);
            facts.advisory_ids = report.advisory_ids.clone();
            for &stage in DCAP_STAGES {
                let detail = match stage {
                    COLLATERAL_CHAIN => {
                        "TCB Info, QE Identity and CRLs signed by the Intel root chain".to_string()
                    }
                    PCK_CHAIN => {
                        "PCK certificate chains to the root and is not revoked".to_string()
                    }
                    QE_REPORT => {
                        "QE report signed by the PCK key and binds the attestation key".to_string()
                    }
                    QE_IDENTITY => format!("QE accepted ({})", report.qe_status.status),
                    QUOTE_SIGNATURE => "quote signed by the QE's attestation key".to_string(),
                    COLLATERAL_MATCH => "collateral is for this platform".to_string(),
                    TCB_LEVEL => format!(
                        "TCB status {}{}",
                        report.status,
                        if report.advisory_ids.is_empty() {
                            String::new()
                        } else {
                            format!(", advisories {}", report.advisory_ids.join(", "))
                        }
                    ),
                    _ => "attributes of a production TD (debug is judged by policy)".to_string(),
                };
                match &expired_cert {
                    Some((failed, why)) if *failed == stage => {
                        checks.push(Check::fail(stage, why.clone()));
                    }
                    _ => checks.push(Check::pass(stage, detail)),
                }
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            // A certificate out of its validity explains a chain or date
            // failure; any other failure (a bad signature) is told as it is.
            let (failed, msg) = match &expired_cert {
                Some((stage, why))
                    if matches!(
                        classify(&msg),
                        PCK_CHAIN | COLLATERAL_CHAIN | COLLATERAL_FRESH
                    ) =>
                {
                    (*stage, why.clone())
                }
                _ => (classify(&msg), msg),
            };
            let pos = DCAP_STAGES.iter().position(|s| *s == failed);
            match pos {
                Some(i) => {
                    for s in &DCAP_STAGES[..i] {
                        checks.push(Check::pass(s, "verified"));
                    }
                    checks.push(Check::fail(failed, format!("{}: {msg}", advice(failed))));
                    for s in &DCAP_STAGES[i + 1..] {
                        checks.push(Check::not_checked(
                            s,
                            format!("not reached: {failed} failed"),
                        ));
                    }
                }
                None => {
                    // Format or freshness problems dcap-qvl found that our own checks missed.
                    checks.retain(|c| c.name != failed);
                    checks.push(Check::fail(failed, format!("{}: {msg}", advice(failed))));
                    for s in DCAP_STAGES {
                        checks.push(Check::not_checked(
                            s,
                            format!("not reached: {failed} failed"),
                        ));
                    }
                }
            }
        }
    }
    Verification {
        checks,
        facts: Some(Facts::Tdx(facts)),
    }
}

/// Certificates a quote's PCK chain may have (dcap-qvl verifies the chain;
/// this bounds what tvm parses of it besides).
const MAX_PCK_CHAIN: usize = 4;

/// A certificate of the quote's PCK chain or of the collateral's issuer
/// chains that is not valid at `at`, with the check it fails.
fn certificate_expired(
    quote: &Quote,
    raw: &QuoteCollateralV3,
    at: i64,
) -> Option<(&'static str, String)> {
    let mut pck = dcap_qvl::intel::extract_cert_chain(quote).unwrap_or_default();
    pck.truncate(MAX_PCK_CHAIN);
    let issuers = [
        &raw.tcb_info_issuer_chain,
        &raw.qe_identity_issuer_chain,
        &raw.pck_crl_issuer_chain,
    ]
    .iter()
    .flat_map(|pem| tvm_certs::anchors::pem_certificates(pem.as_bytes()).unwrap_or_default())
    .collect::<Vec<_>>();
    for (stage, ders) in [(PCK_CHAIN, pck), (COLLATERAL_CHAIN, issuers)] {
        for der in ders {
            let Ok((_, c)) = x509_parser::parse_x509_certificate(&der) else {
                continue;
            };
            let (from, to) = (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            );
            if at > to || at < from {
                let when = if at > to {
                    format!("expired at {}", rfc3339(to))
                } else {
                    format!("is not valid before {}", rfc3339(from))
                };
                return Some((stage, format!("certificate {} {when}", c.subject())));
            }
        }
    }
    None
}

/// Why a quote does not say which platform's collateral it needs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot parse the quote: {0}")]
    Quote(String),
    #[error("cannot read the FMSPC from the quote's PCK certificate: {0}")]
    Fmspc(String),
    #[error("cannot read the PCK CA: {0}")]
    PckCa(String),
    #[error("the quote's PCK certificate chain does not verify to the Intel root ({0}): no collateral is fetched for it")]
    Chain(String),
}

/// The report_data a quote carries, read without verifying anything (to
/// refuse evidence for another nonce before any collateral is fetched).
pub fn report_data_of(quote: &[u8]) -> Option<[u8; 64]> {
    Quote::parse(quote)
        .ok()?
        .report
        .as_td10()
        .map(|td| td.report_data)
}

/// MRTD and RTMR0–3 of a quote, read without verifying anything (for an
/// operator measuring a reference boot, and for diagnosis).
pub fn registers_of(quote: &[u8]) -> Option<([u8; 48], [[u8; 48]; 4])> {
    let q = Quote::parse(quote).ok()?;
    let td = q.report.as_td10()?;
    Some((td.mr_td, [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3]))
}

/// [`platform_of`], once the quote's PCK certificate chain verifies to
/// `root` at `at`: collateral is fetched only for a platform Intel vouched
/// for, never for an FMSPC a forged quote makes up.
pub fn verified_platform_of(
    quote: &[u8],
    root_der: &[u8],
    at: i64,
) -> Result<(String, tvm_certs::intel::PckCa), PlatformError> {
    let q = Quote::parse(quote).map_err(|e| PlatformError::Quote(format!("{e:#}")))?;
    let chain = dcap_qvl::intel::extract_cert_chain(&q)
        .map_err(|e| PlatformError::Chain(format!("{e:#}")))?;
    // Intel's is PCK, platform or processor CA, root.
    if chain.len() > MAX_PCK_CHAIN {
        return Err(PlatformError::Chain(format!(
            "{} certificates; Intel's chains have at most {MAX_PCK_CHAIN}",
            chain.len()
        )));
    }
    tvm_certs::verify_chain(&chain, root_der, at)
        .map_err(|e| PlatformError::Chain(e.to_string()))?;
    platform_of(quote)
}

/// The platform a quote needs collateral for: its PCK certificate's FMSPC
/// (12 hex, upper case) and which Intel CA issued that certificate.
pub fn platform_of(quote: &[u8]) -> Result<(String, tvm_certs::intel::PckCa), PlatformError> {
    let q = Quote::parse(quote).map_err(|e| PlatformError::Quote(format!("{e:#}")))?;
    let fmspc =
        dcap_qvl::intel::quote_fmspc(&q).map_err(|e| PlatformError::Fmspc(format!("{e:#}")))?;
    let ca =
        match dcap_qvl::intel::quote_ca(&q).map_err(|e| PlatformError::PckCa(format!("{e:#}")))? {
            dcap_qvl::config::PckCa::Platform => tvm_certs::intel::PckCa::Platform,
            dcap_qvl::config::PckCa::Processor => tvm_certs::intel::PckCa::Processor,
        };
    Ok((hex::encode_upper(fmspc), ca))
}
