//! Intel DCAP collateral for TDX: what it is made of, its dates, and whether
//! its issuers chain to a root. The store checks fetched and cached collateral
//! with these; the verifier checks it again per platform before use.

use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::prelude::{parse_x509_crl, FromDer, X509Certificate};

/// What is wrong with a piece of TDX collateral, naming the item.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollateralError {
    #[error("not dcap-qvl QuoteCollateralV3 JSON: {0}")]
    NotCollateral(String),
    #[error("{item} is not valid JSON: {reason}")]
    NotJson { item: &'static str, reason: String },
    #[error("bad date {value:?}: {reason}")]
    BadDate { value: String, reason: String },
    #[error("{item} is not a DER CRL: {reason}")]
    NotCrl { item: &'static str, reason: String },
    #[error("{item} has no nextUpdate")]
    NoNextUpdate { item: &'static str },
    #[error("collateral has no dated items")]
    NoDatedItems,
    #[error("{item}: {source}")]
    Pem {
        item: String,
        source: crate::anchors::PemError,
    },
    #[error("{item} holds no certificate")]
    NoCertificate { item: String },
    #[error("{what} is not DER X.509: {reason}")]
    NotX509 { what: String, reason: String },
    #[error("{item} has {count} certificate(s); expected the signer and the root")]
    ChainLength { item: &'static str, count: usize },
    #[error("{item} does not end in the trusted root ({root}): wrong root or wrong order")]
    WrongRoot { item: &'static str, root: String },
    #[error("{what} ({subject}) is not signed by {issuer}")]
    NotSignedBy {
        what: String,
        subject: String,
        issuer: String,
    },
    #[error("{item} signature does not verify with {signer}: the document was altered")]
    Altered { item: &'static str, signer: String },
    #[error("{crl} is not signed by {issuer}")]
    CrlNotSignedBy { crl: &'static str, issuer: String },
    /// A CRL or CA of the issuer checks that is not DER (worded as always).
    #[error("{what} is not DER: {reason}")]
    NotDer { what: &'static str, reason: String },
}

/// Parse a collateral file: dcap-qvl's `QuoteCollateralV3` JSON.
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, CollateralError> {
    serde_json::from_slice(json).map_err(|e| CollateralError::NotCollateral(e.to_string()))
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

fn parse_time(s: &str) -> Result<i64, CollateralError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| CollateralError::BadDate {
            value: s.to_string(),
            reason: e.to_string(),
        })
}

fn dated_json(name: &'static str, json: &str) -> Result<Dated, CollateralError> {
    let d: DatedJson = serde_json::from_str(json).map_err(|e| CollateralError::NotJson {
        item: name,
        reason: e.to_string(),
    })?;
    Ok(Dated {
        name,
        issued: parse_time(&d.issue_date)?,
        next_update: parse_time(&d.next_update)?,
    })
}

fn dated_crl(name: &'static str, der: &[u8]) -> Result<Dated, CollateralError> {
    let (_, crl) = parse_x509_crl(der).map_err(|e| CollateralError::NotCrl {
        item: name,
        reason: e.to_string(),
    })?;
    let next = crl
        .next_update()
        .ok_or(CollateralError::NoNextUpdate { item: name })?;
    Ok(Dated {
        name,
        issued: crl.last_update().timestamp(),
        next_update: next.timestamp(),
    })
}

pub fn collateral_dates(c: &QuoteCollateralV3) -> Result<Vec<Dated>, CollateralError> {
    Ok(vec![
        dated_json("TCB Info", &c.tcb_info)?,
        dated_json("QE Identity", &c.qe_identity)?,
        dated_crl("PCK CRL", &c.pck_crl)?,
        dated_crl("Root CA CRL", &c.root_ca_crl)?,
    ])
}

fn pem_chain(name: &str, pem: &str) -> Result<Vec<Vec<u8>>, CollateralError> {
    let certs = crate::anchors::pem_certificates(pem.as_bytes()).map_err(|source| {
        CollateralError::Pem {
            item: name.to_string(),
            source,
        }
    })?;
    if certs.is_empty() {
        return Err(CollateralError::NoCertificate {
            item: name.to_string(),
        });
    }
    Ok(certs)
}

fn x509<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, CollateralError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CollateralError::NotX509 {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

/// The collateral's issuers chain to our root and sign its CRLs. dcap-qvl
/// checks this too; doing it first lets us say which item is wrong.
pub fn check_issuers(c: &QuoteCollateralV3, root_der: &[u8]) -> Result<(), CollateralError> {
    let root = x509("trust root", root_der)?;
    let signed_by = |what: &str, der: &[u8], issuer: &X509Certificate| {
        let cert = x509(what, der)?;
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|_| CollateralError::NotSignedBy {
                what: what.to_string(),
                subject: cert.subject().to_string(),
                issuer: issuer.subject().to_string(),
            })
    };
    for (name, pem) in [
        ("TCB Info issuer chain", &c.tcb_info_issuer_chain),
        ("QE Identity issuer chain", &c.qe_identity_issuer_chain),
        ("PCK CRL issuer chain", &c.pck_crl_issuer_chain),
    ] {
        let chain = pem_chain(name, pem)?;
        if chain.len() < 2 {
            return Err(CollateralError::ChainLength {
                item: name,
                count: chain.len(),
            });
        }
        if chain.last().map(Vec::as_slice) != Some(root_der) {
            return Err(CollateralError::WrongRoot {
                item: name,
                root: root.subject().to_string(),
            });
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
        let signer = x509(&format!("{name} signer"), signer_der)?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &signer.public_key().subject_public_key.data,
        )
        .verify(doc.as_bytes(), sig)
        .map_err(|_| CollateralError::Altered {
            item: name,
            signer: signer.subject().to_string(),
        })?;
    }
    let not_crl = |what, e: x509_parser::nom::Err<_>| CollateralError::NotDer {
        what,
        reason: e.to_string(),
    };
    let (_, crl) = parse_x509_crl(&c.root_ca_crl).map_err(|e| not_crl("Root CA CRL", e))?;
    crl.verify_signature(root.public_key())
        .map_err(|_| CollateralError::CrlNotSignedBy {
            crl: "Root CA CRL",
            issuer: "the trusted root".into(),
        })?;
    let pck_ca_der = &pem_chain("PCK CRL issuer chain", &c.pck_crl_issuer_chain)?[0];
    let (_, pck_ca) =
        X509Certificate::from_der(pck_ca_der).map_err(|e| CollateralError::NotDer {
            what: "PCK CA",
            reason: e.to_string(),
        })?;
    let (_, crl) = parse_x509_crl(&c.pck_crl).map_err(|e| not_crl("PCK CRL", e))?;
    crl.verify_signature(pck_ca.public_key())
        .map_err(|_| CollateralError::CrlNotSignedBy {
            crl: "PCK CRL",
            issuer: pck_ca.subject().to_string(),
        })?;
    Ok(())
}

/// The earliest `nextUpdate` of the collateral's items (Unix seconds).
pub fn next_update(c: &QuoteCollateralV3) -> Result<i64, CollateralError> {
    collateral_dates(c)?
        .iter()
        .map(|d| d.next_update)
        .min()
        .ok_or(CollateralError::NoDatedItems)
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
