//! OCSP (RFC 6960) for the NVIDIA device and RIM chains: the request for one
//! certificate, and the check of an answer: signed by the certificate's issuer
//! or by a responder the issuer delegated to (id-kp-OCSPSigning), about this
//! certificate, and current at the given time within a grace period.
//!
//! Requests carry no nonce, so that an answer can be cached and shared between
//! validators until its `nextUpdate` (as with OCSP stapling); freshness comes
//! from `thisUpdate`/`nextUpdate`, which are always checked.

use der::{Decode, Encode, Reader, SliceReader};
use ring::digest;
use ring::signature::{self, UnparsedPublicKey};
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A NVIDIA OCSP answer is under 3 KB; refuse anything far larger.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Clock skew tolerated on `thisUpdate`.
const SKEW_SECONDS: i64 = 300;

const OID_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_ECDSA_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_OCSP_BASIC: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const OID_KP_OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("cannot build an OCSP request: {0}")]
    Request(String),
    #[error("the OCSP answer is malformed: {0}")]
    Malformed(String),
    #[error("the OCSP responder refused: {0}")]
    NotSuccessful(String),
    #[error("the OCSP answer's signature does not verify: {0}")]
    Signature(String),
    #[error("the OCSP answer is not about this certificate")]
    WrongCertificate,
    #[error("the OCSP answer is stale: nextUpdate {next_update} is past (grace {grace}s); fetch a fresh one")]
    Stale { next_update: String, grace: u64 },
    #[error("the OCSP answer is not valid yet (thisUpdate {0})")]
    NotYetValid(String),
}

/// What the responder says about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    /// Revoked, with the CRL reason if given (`certificateHold` is on hold).
    Revoked {
        reason: Option<String>,
        since: i64,
    },
    Unknown,
}

impl Status {
    pub fn is_hold(&self) -> bool {
        matches!(self, Status::Revoked { reason: Some(r), .. } if r == "certificateHold")
    }
}

/// A checked answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    pub this_update: i64,
    /// Unix seconds; absent means "only as fresh as thisUpdate".
    pub next_update: Option<i64>,
}

impl Answer {
    /// Until when this answer may be used (without grace).
    pub fn valid_until(&self) -> i64 {
        // An answer without nextUpdate is good for an hour (as NVIDIA's SDK does).
        self.next_update.unwrap_or(self.this_update + 3600)
    }
}

fn sha384(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA384, data).as_ref().to_vec()
}

/// The CertID (SHA-384, as NVIDIA's verifier uses) of `cert` issued by `issuer`.
pub fn cert_id(cert: &[u8], issuer: &[u8]) -> Result<CertId, OcspError> {
    let bad = |e: String| OcspError::Request(e);
    let (_, c) = X509Certificate::from_der(cert).map_err(|e| bad(e.to_string()))?;
    let (_, i) = X509Certificate::from_der(issuer).map_err(|e| bad(e.to_string()))?;
    Ok(CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: OID_SHA384,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: der::asn1::OctetString::new(sha384(i.subject().as_raw()))
            .map_err(|e| bad(e.to_string()))?,
        issuer_key_hash: der::asn1::OctetString::new(sha384(
            &i.public_key().subject_public_key.data,
        ))
        .map_err(|e| bad(e.to_string()))?,
        serial_number: x509_cert::serial_number::SerialNumber::new(c.raw_serial())
            .map_err(|e| bad(e.to_string()))?,
    })
}

/// DER of an OCSP request for `cert` issued by `issuer`.
pub fn request(cert: &[u8], issuer: &[u8]) -> Result<Vec<u8>, OcspError> {
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id(cert, issuer)?,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    req.to_der().map_err(|e| OcspError::Request(e.to_string()))
}

/// The raw DER of BasicOCSPResponse's first field (what was signed).
fn raw_tbs(basic: &[u8]) -> Result<Vec<u8>, OcspError> {
    let bad = |e: der::Error| OcspError::Malformed(e.to_string());
    let mut r = SliceReader::new(basic).map_err(bad)?;
    // The outer SEQUENCE header, then the first element whole.
    let _outer = der::Header::decode(&mut r).map_err(bad)?;
    Ok(r.tlv_bytes().map_err(bad)?.to_vec())
}

fn verify_sig(
    alg: &der::asn1::ObjectIdentifier,
    spki_key: &[u8],
    curve_p384: bool,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    let algorithm: &dyn signature::VerificationAlgorithm = match (*alg, curve_p384) {
        (a, true) if a == OID_ECDSA_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        (a, true) if a == OID_ECDSA_SHA256 => &signature::ECDSA_P384_SHA256_ASN1,
        (a, false) if a == OID_ECDSA_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        (a, false) if a == OID_ECDSA_SHA384 => &signature::ECDSA_P256_SHA384_ASN1,
        _ => return false,
    };
    UnparsedPublicKey::new(algorithm, spki_key)
        .verify(msg, sig)
        .is_ok()
}

fn is_p384(cert: &X509Certificate<'_>) -> bool {
    use x509_parser::public_key::{ECPoint, PublicKey};
    matches!(
        cert.public_key().parsed(),
        Ok(PublicKey::EC(ECPoint { .. }))
    ) && cert.public_key().subject_public_key.data.len() == 97
}

/// Check an OCSP answer about `cert` (issued by `issuer`) at Unix time `at`.
pub fn check(
    response: &[u8],
    cert: &[u8],
    issuer: &[u8],
    at: i64,
    grace_seconds: u64,
) -> Result<Answer, OcspError> {
    inspect(response, cert, issuer, Some((at, grace_seconds)))
}

/// Check everything but the time (signer, certificate): for answers taken
/// into a cache, which are checked again, with the time, when used.
pub fn check_signed(response: &[u8], cert: &[u8], issuer: &[u8]) -> Result<Answer, OcspError> {
    inspect(response, cert, issuer, None)
}

fn inspect(
    response: &[u8],
    cert: &[u8],
    issuer: &[u8],
    when: Option<(i64, u64)>,
) -> Result<Answer, OcspError> {
    let malformed = |e: der::Error| OcspError::Malformed(e.to_string());
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(OcspError::Malformed(format!(
            "{} bytes, more than {MAX_RESPONSE_BYTES}",
            response.len()
        )));
    }
    let outer = OcspResponse::from_der(response).map_err(malformed)?;
    if outer.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::NotSuccessful(format!(
            "{:?}",
            outer.response_status
        )));
    }
    let bytes = outer
        .response_bytes
        .ok_or_else(|| OcspError::Malformed("a successful answer without a body".into()))?;
    if bytes.response_type != OID_OCSP_BASIC {
        return Err(OcspError::Malformed(format!(
            "response type {} is not id-pkix-ocsp-basic",
            bytes.response_type
        )));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der).map_err(malformed)?;
    let tbs = raw_tbs(basic_der)?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or_else(|| OcspError::Malformed("signature is not whole bytes".into()))?;

    let want = cert_id(cert, issuer).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| same_cert(&s.cert_id, &want, issuer))
        .ok_or(OcspError::WrongCertificate)?;
    let time = |t: &x509_ocsp::OcspGeneralizedTime| t.0.to_unix_duration().as_secs() as i64;
    let this_update = time(&single.this_update);
    let next_update = single.next_update.as_ref().map(time);
    // Certificates are judged at the given time, else at the answer's own.
    let at = when.map(|w| w.0).unwrap_or(this_update);
    // Who signed: the issuer itself, or a responder it delegated to.
    let (_, issuer_cert) =
        X509Certificate::from_der(issuer).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let alg = &basic.signature_algorithm.oid;
    let by_issuer = verify_sig(
        alg,
        &issuer_cert.public_key().subject_public_key.data,
        is_p384(&issuer_cert),
        &tbs,
        sig,
    );
    if !by_issuer {
        let mut delegated = false;
        for r in basic.certs.iter().flatten() {
            let der = r.to_der().map_err(malformed)?;
            let Ok((_, responder)) = X509Certificate::from_der(&der) else {
                continue;
            };
            let authorized = responder
                .verify_signature(Some(issuer_cert.public_key()))
                .is_ok()
                && responder.validity().not_before.timestamp() <= at
                && at <= responder.validity().not_after.timestamp()
                && responder
                    .extended_key_usage()
                    .ok()
                    .flatten()
                    .is_some_and(|eku| {
                        eku.value.ocsp_signing
                            || eku
                                .value
                                .other
                                .iter()
                                .any(|o| o.to_id_string() == OID_KP_OCSP_SIGNING)
                    });
            if authorized
                && verify_sig(
                    alg,
                    &responder.public_key().subject_public_key.data,
                    is_p384(&responder),
                    &tbs,
                    sig,
                )
            {
                delegated = true;
                break;
            }
        }
        if !delegated {
            return Err(OcspError::Signature(
                "signed neither by the certificate's issuer nor by a responder it authorized (valid, id-kp-OCSPSigning)".into(),
            ));
        }
    }

    if when.is_some() && this_update > at + SKEW_SECONDS {
        return Err(OcspError::NotYetValid(rfc3339(this_update)));
    }
    let answer = Answer {
        status: match &single.cert_status {
            CertStatus::Good(_) => Status::Good,
            CertStatus::Unknown(_) => Status::Unknown,
            CertStatus::Revoked(info) => Status::Revoked {
                reason: info.revocation_reason.map(|r| reason_name(r as u32)),
                since: time(&info.revocation_time),
            },
        },
        this_update,
        next_update,
    };
    let until = answer.valid_until();
    if let Some((at, grace_seconds)) = when {
        if at > until.saturating_add(grace_seconds as i64) {
            return Err(OcspError::Stale {
                next_update: rfc3339(until),
                grace: grace_seconds,
            });
        }
    }
    Ok(answer)
}

/// The answer's CertID names our certificate, whatever hash it used.
fn same_cert(got: &CertId, want: &CertId, issuer: &[u8]) -> bool {
    if got.serial_number != want.serial_number {
        return false;
    }
    if got.hash_algorithm.oid == want.hash_algorithm.oid {
        return got.issuer_name_hash == want.issuer_name_hash
            && got.issuer_key_hash == want.issuer_key_hash;
    }
    // Responders may answer with SHA-1 or SHA-256 CertIDs.
    let alg = match got.hash_algorithm.oid.to_string().as_str() {
        "1.3.14.3.2.26" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        "2.16.840.1.101.3.4.2.1" => &digest::SHA256,
        _ => return false,
    };
    let Ok((_, i)) = X509Certificate::from_der(issuer) else {
        return false;
    };
    let name = digest::digest(alg, i.subject().as_raw());
    let key = digest::digest(alg, &i.public_key().subject_public_key.data);
    got.issuer_name_hash.as_bytes() == name.as_ref()
        && got.issuer_key_hash.as_bytes() == key.as_ref()
}

fn reason_name(code: u32) -> String {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "other",
    }
    .to_string()
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}
