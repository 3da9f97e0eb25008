//! OCSP answers from a local test hierarchy (root → issuing CA → device
//! certificate, and delegated responders), built the way NVIDIA's responder
//! answers (BasicOCSPResponse, ECDSA P-384), checked for every way an answer
//! can be wrong.

use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P384_SHA384,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
use tvm_certs::ocsp::{self, OcspError, Status};
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspResponse, ResponderId, ResponseData,
    RevokedInfo, SingleResponse, Version,
};

const NOW: i64 = 1_750_000_000;
const DAY: i64 = 86_400;

struct Pki {
    ca_key: KeyPair,
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    other_der: Vec<u8>,
    responder_key: KeyPair,
    responder_der: Vec<u8>,
    /// Issued by the CA but without id-kp-OCSPSigning.
    plain_key: KeyPair,
    plain_der: Vec<u8>,
    /// A responder of some other CA.
    stranger_key: KeyPair,
    stranger_der: Vec<u8>,
}

fn params(cn: &str, ca: bool) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap()
}

fn pki() -> Pki {
    let root_key = key();
    let root_params = params("Test Root", true);
    let _root = root_params.self_signed(&root_key).unwrap();
    let root = Issuer::from_params(&root_params, &root_key);
    let ca_key = key();
    let ca_params = params("Test Issuing CA", true);
    let ca_der = ca_params.signed_by(&ca_key, &root).unwrap().der().to_vec();
    let ca = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |cn: &str| {
        let k = key();
        params(cn, false).signed_by(&k, &ca).unwrap().der().to_vec()
    };
    let responder_key = key();
    let mut rp = params("Test OCSP Responder", false);
    rp.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    let responder_der = rp.signed_by(&responder_key, &ca).unwrap().der().to_vec();
    let plain_key = key();
    let plain_der = params("Not A Responder", false)
        .signed_by(&plain_key, &ca)
        .unwrap()
        .der()
        .to_vec();
    let other_root_key = key();
    let other_root_params = params("Other Root", true);
    let other = Issuer::from_params(&other_root_params, &other_root_key);
    let stranger_key = key();
    let mut sp = params("Other Responder", false);
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    let stranger_der = sp.signed_by(&stranger_key, &other).unwrap().der().to_vec();
    Pki {
        cert_der: leaf("Device 1"),
        other_der: leaf("Device 2"),
        ca_key,
        ca_der,
        responder_key,
        responder_der,
        plain_key,
        plain_der,
        stranger_key,
        stranger_der,
    }
}

fn gt(t: i64) -> OcspGeneralizedTime {
    OcspGeneralizedTime(
        der::asn1::GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(t as u64))
            .unwrap(),
    )
}

struct Answer<'a> {
    about: &'a [u8],
    status: CertStatus,
    this_update: i64,
    next_update: Option<i64>,
    signer: &'a KeyPair,
    certs: Vec<&'a [u8]>,
}

fn build(p: &Pki, a: Answer<'_>) -> Vec<u8> {
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(der::asn1::OctetString::new(vec![0u8; 20]).unwrap()),
        produced_at: gt(a.this_update),
        responses: vec![SingleResponse {
            cert_id: ocsp::cert_id(a.about, &p.ca_der).unwrap(),
            cert_status: a.status,
            this_update: gt(a.this_update),
            next_update: a.next_update.map(gt),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let kp = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &a.signer.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    let sig = kp
        .sign(&SystemRandom::new(), &tbs.to_der().unwrap())
        .unwrap();
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: spki::AlgorithmIdentifierOwned {
            oid: der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3"),
            parameters: None,
        },
        signature: der::asn1::BitString::from_bytes(sig.as_ref()).unwrap(),
        certs: if a.certs.is_empty() {
            None
        } else {
            Some(
                a.certs
                    .iter()
                    .map(|c| x509_cert::Certificate::from_der(c).unwrap())
                    .collect(),
            )
        },
    };
    OcspResponse::successful(basic).unwrap().to_der().unwrap()
}

fn good<'a>(p: &'a Pki) -> Answer<'a> {
    Answer {
        about: &p.cert_der,
        status: CertStatus::good(),
        this_update: NOW - DAY,
        next_update: Some(NOW + DAY),
        signer: &p.ca_key,
        certs: vec![],
    }
}

fn revoked(reason: x509_cert::ext::pkix::crl::CrlReason) -> CertStatus {
    CertStatus::revoked(RevokedInfo {
        revocation_time: gt(NOW - 2 * DAY),
        revocation_reason: Some(reason),
    })
}

#[test]
fn answers_are_checked_for_signer_certificate_status_and_time() {
    use x509_cert::ext::pkix::crl::CrlReason;
    let p = pki();
    let check =
        |der: &[u8], at: i64, grace: u64| ocsp::check(der, &p.cert_der, &p.ca_der, at, grace);

    // Good, signed by the issuing CA itself.
    let a = check(&build(&p, good(&p)), NOW, 0).unwrap();
    assert_eq!(a.status, Status::Good);
    assert_eq!(a.next_update, Some(NOW + DAY));

    // Good, signed by a delegated responder the CA issued with id-kp-OCSPSigning.
    let by_responder = build(
        &p,
        Answer {
            signer: &p.responder_key,
            certs: vec![&p.responder_der],
            ..good(&p)
        },
    );
    assert_eq!(check(&by_responder, NOW, 0).unwrap().status, Status::Good);

    // Revoked, on hold, unknown.
    let r = check(
        &build(
            &p,
            Answer {
                status: revoked(CrlReason::KeyCompromise),
                ..good(&p)
            },
        ),
        NOW,
        0,
    )
    .unwrap();
    assert_eq!(
        r.status,
        Status::Revoked {
            reason: Some("keyCompromise".into()),
            since: NOW - 2 * DAY
        }
    );
    assert!(!r.status.is_hold());
    let h = check(
        &build(
            &p,
            Answer {
                status: revoked(CrlReason::CertificateHold),
                ..good(&p)
            },
        ),
        NOW,
        0,
    )
    .unwrap();
    assert!(h.status.is_hold());
    let u = check(
        &build(
            &p,
            Answer {
                status: CertStatus::unknown(),
                ..good(&p)
            },
        ),
        NOW,
        0,
    )
    .unwrap();
    assert_eq!(u.status, Status::Unknown);

    // Past nextUpdate: stale, unless within the grace.
    let e = check(&build(&p, good(&p)), NOW + 2 * DAY, 0).unwrap_err();
    assert!(matches!(e, OcspError::Stale { .. }), "{e}");
    assert!(check(&build(&p, good(&p)), NOW + 2 * DAY, (2 * DAY) as u64).is_ok());
    // No nextUpdate: an hour after thisUpdate.
    let no_next = build(
        &p,
        Answer {
            next_update: None,
            ..good(&p)
        },
    );
    assert!(check(&no_next, NOW - DAY + 1800, 0).is_ok());
    assert!(matches!(
        check(&no_next, NOW, 0),
        Err(OcspError::Stale { .. })
    ));
    // From the future.
    let e = check(
        &build(
            &p,
            Answer {
                this_update: NOW + DAY,
                ..good(&p)
            },
        ),
        NOW,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, OcspError::NotYetValid(_)), "{e}");
}

#[test]
fn answers_from_the_wrong_signer_or_about_another_certificate_fail() {
    let p = pki();
    let check = |der: &[u8]| ocsp::check(der, &p.cert_der, &p.ca_der, NOW, 0);

    // About another certificate of the same CA.
    let other = build(
        &p,
        Answer {
            about: &p.other_der,
            ..good(&p)
        },
    );
    assert_eq!(check(&other).unwrap_err(), OcspError::WrongCertificate);

    // A certificate of the CA without the OCSP-signing purpose.
    let plain = build(
        &p,
        Answer {
            signer: &p.plain_key,
            certs: vec![&p.plain_der],
            ..good(&p)
        },
    );
    assert!(matches!(check(&plain), Err(OcspError::Signature(_))));

    // A responder of another hierarchy.
    let stranger = build(
        &p,
        Answer {
            signer: &p.stranger_key,
            certs: vec![&p.stranger_der],
            ..good(&p)
        },
    );
    assert!(matches!(check(&stranger), Err(OcspError::Signature(_))));

    // A delegated responder signing without including its certificate.
    let bare = build(
        &p,
        Answer {
            signer: &p.responder_key,
            ..good(&p)
        },
    );
    assert!(matches!(check(&bare), Err(OcspError::Signature(_))));

    // One flipped bit in any byte: the envelope, tbsResponseData (the
    // responder id included: it is signed), the signature, the certificate.
    let genuine = build(&p, good(&p));
    assert!(check(&genuine).is_ok());
    for i in 0..genuine.len() {
        let mut m = genuine.clone();
        m[i] ^= 0x01;
        assert!(
            check(&m).is_err(),
            "byte {i} of {} flipped and the answer still accepted",
            genuine.len()
        );
    }

    // Not an answer at all; a responder that refuses.
    assert!(matches!(check(b"nonsense"), Err(OcspError::Malformed(_))));
    let later = OcspResponse::try_later().to_der().unwrap();
    assert!(matches!(check(&later), Err(OcspError::NotSuccessful(_))));
}

/// Our requests against OpenSSL's for the same certificates of NVIDIA's
/// real H100 chain (testdata/nvidia/ocsp, made with `openssl ocsp -sha384
/// -no_nonce -reqout`): the CertID must be byte for byte what a second
/// implementation computes, or NVIDIA's responder answers about nothing.
#[test]
fn requests_equal_openssls_for_nvidias_chain() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/nvidia");
    let pem = std::fs::read(root.join("nvtrust_hopper_cert_chain.pem")).unwrap();
    let chain = tvm_certs::anchors::pem_certificates(&pem).unwrap();
    for n in 1..=3 {
        let theirs = std::fs::read(root.join(format!("ocsp/openssl_req_c{n}.der"))).unwrap();
        let ours = ocsp::request(&chain[n], &chain[n + 1]).unwrap();
        let theirs_id = x509_ocsp::OcspRequest::from_der(&theirs)
            .unwrap()
            .tbs_request
            .request_list[0]
            .req_cert
            .clone();
        assert_eq!(
            ocsp::cert_id(&chain[n], &chain[n + 1]).unwrap(),
            theirs_id,
            "certificate {n}"
        );
        assert_eq!(ours, theirs, "certificate {n}: the whole request");
    }
}

#[test]
fn the_request_names_the_certificate() {
    let p = pki();
    let der = ocsp::request(&p.cert_der, &p.ca_der).unwrap();
    let req = x509_ocsp::OcspRequest::from_der(&der).unwrap();
    assert_eq!(req.tbs_request.request_list.len(), 1);
    assert_eq!(
        req.tbs_request.request_list[0].req_cert,
        ocsp::cert_id(&p.cert_der, &p.ca_der).unwrap()
    );
    assert!(req.nonce().is_none(), "answers are cached and shared");
}
