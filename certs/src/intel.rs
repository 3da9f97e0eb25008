//! Intel DCAP collateral for TDX: what it is made of, its dates, and whether
//! its issuers chain to a root. The store checks fetched and cached collateral
//! with these; the verifier checks it again per platform before use.

use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::prelude::{parse_x509_crl, FromDer, X509Certificate};

/// Parse a collateral file: dcap-qvl's `QuoteCollateralV3` JSON.
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, String> {
    serde_json::from_slice(json).map_err(|e| format!("not dcap-qvl QuoteCollateralV3 JSON: {e}"))
}

/// One dated collateral item.
pub struct Dated {
    pub name: &'static str,
    pub issued: i64,
    pub next_update: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatedJson {
    issue_date: String,
    next_update: String,
}

fn parse_time(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("bad date {s:?}: {e}"))
}

fn dated_json(name: &'static str, json: &str) -> Result<Dated, String> {
    let d: DatedJson =
        serde_json::from_str(json).map_err(|e| format!("{name} is not valid JSON: {e}"))?;
    Ok(Dated {
        name,
        issued: parse_time(&d.issue_date)?,
        next_update: parse_time(&d.next_update)?,
    })
}

fn dated_crl(name: &'static str, der: &[u8]) -> Result<Dated, String> {
    let (_, crl) = parse_x509_crl(der).map_err(|e| format!("{name} is not a DER CRL: {e}"))?;
    let next = crl
        .next_update()
        .ok_or_else(|| format!("{name} has no nextUpdate"))?;
    Ok(Dated {
        name,
        issued: crl.last_update().timestamp(),
        next_update: next.timestamp(),
    })
}

pub fn collateral_dates(c: &QuoteCollateralV3) -> Result<Vec<Dated>, String> {
    Ok(vec![
        dated_json("TCB Info", &c.tcb_info)?,
        dated_json("QE Identity", &c.qe_identity)?,
        dated_crl("PCK CRL", &c.pck_crl)?,
        dated_crl("Root CA CRL", &c.root_ca_crl)?,
    ])
}

fn pem_chain(name: &str, pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs =
        crate::anchors::pem_certificates(pem.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name} holds no certificate"));
    }
    Ok(certs)
}

/// The collateral's issuers chain to our root and sign its CRLs. dcap-qvl
/// checks this too; doing it first lets us say which item is wrong.
pub fn check_issuers(c: &QuoteCollateralV3, root_der: &[u8]) -> Result<(), String> {
    let (_, root) = X509Certificate::from_der(root_der)
        .map_err(|e| format!("trust root is not DER X.509: {e}"))?;
    let signed_by = |what: &str, der: &[u8], issuer: &X509Certificate| -> Result<(), String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("{what} is not DER X.509: {e}"))?;
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|_| {
                format!(
                    "{what} ({}) is not signed by {}",
                    cert.subject(),
                    issuer.subject()
                )
            })
    };
    for (name, pem) in [
        ("TCB Info issuer chain", &c.tcb_info_issuer_chain),
        ("QE Identity issuer chain", &c.qe_identity_issuer_chain),
        ("PCK CRL issuer chain", &c.pck_crl_issuer_chain),
    ] {
        let chain = pem_chain(name, pem)?;
        if chain.len() < 2 {
            return Err(format!(
                "{name} has {} certificate(s); expected the signer and the root",
                chain.len()
            ));
        }
        if chain.last().map(Vec::as_slice) != Some(root_der) {
            return Err(format!(
                "{name} does not end in the trusted root ({}): wrong root or wrong order",
                root.subject()
            ));
        }
        signed_by(&format!("{name} signer"), &chain[0], &root)?;
    }
    // The signed documents themselves: raw r||s ECDSA P-256 over their exact bytes.
    for (name, chain_pem, doc, sig) in [
        (
            "TCB Info",
            &c.tcb_info_issuer_chain,
            &c.tcb_info,
            &c.tcb_info_signature,
        ),
        (
            "QE Identity",
            &c.qe_identity_issuer_chain,
            &c.qe_identity,
            &c.qe_identity_signature,
        ),
    ] {
        let signer_der = &pem_chain(name, chain_pem)?[0];
        let (_, signer) = X509Certificate::from_der(signer_der)
            .map_err(|e| format!("{name} signer is not DER X.509: {e}"))?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &signer.public_key().subject_public_key.data,
        )
        .verify(doc.as_bytes(), sig)
        .map_err(|_| {
            format!(
                "{name} signature does not verify with {}: the document was altered",
                signer.subject()
            )
        })?;
    }
    let (_, crl) =
        parse_x509_crl(&c.root_ca_crl).map_err(|e| format!("Root CA CRL is not DER: {e}"))?;
    crl.verify_signature(root.public_key())
        .map_err(|_| "Root CA CRL is not signed by the trusted root".to_string())?;
    let pck_ca_der = &pem_chain("PCK CRL issuer chain", &c.pck_crl_issuer_chain)?[0];
    let (_, pck_ca) =
        X509Certificate::from_der(pck_ca_der).map_err(|e| format!("PCK CA is not DER: {e}"))?;
    let (_, crl) = parse_x509_crl(&c.pck_crl).map_err(|e| format!("PCK CRL is not DER: {e}"))?;
    crl.verify_signature(pck_ca.public_key())
        .map_err(|_| format!("PCK CRL is not signed by {}", pck_ca.subject()))?;
    Ok(())
}

/// The earliest `nextUpdate` of the collateral's items (Unix seconds).
pub fn next_update(c: &QuoteCollateralV3) -> Result<i64, String> {
    collateral_dates(c)?
        .iter()
        .map(|d| d.next_update)
        .min()
        .ok_or_else(|| "collateral has no dated items".to_string())
}

/// Which Intel CA issued the platform's PCK certificate (it names the PCK CRL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PckCa {
    Platform,
    Processor,
}

impl PckCa {
    pub fn as_str(&self) -> &'static str {
        match self {
            PckCa::Platform => "platform",
            PckCa::Processor => "processor",
        }
    }
}
