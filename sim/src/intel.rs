//! A simulated Intel SGX/TDX provisioning hierarchy, in Intel's real formats.
//!
//! Intel's structure is mirrored: a self-signed root CA, a PCK Platform CA that
//! issues one PCK certificate per machine (with the SGX extension,
//! OID 1.2.840.113741.1.13.1, that DCAP verifiers read the platform's TCB and
//! FMSPC from), and a TCB Signing certificate that signs the TCB Info and QE
//! Identity JSON. [`SimIntel::collateral`] produces dcap-qvl's
//! `QuoteCollateralV3` for the one simulated platform type ([`SIM_FMSPC`]):
//! TCB Info v3 for TDX, QE Identity v2 for the TD quoting enclave, and both CRLs
//! (DER). Quotes built for a [`SimPlatform`] with the constants below pass
//! dcap-qvl when it is given [`SimIntel::root_der`] as the trust root, and fail
//! against Intel's real root. Every certificate name says SIMULATED, and the
//! simulated TDX module and quoting enclave have signers of their own
//! (hashes of labels), never Intel's.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use dcap_qvl::QuoteCollateralV3;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

/// FMSPC of the simulated platform type (`00A06F000000`): in every PCK
/// certificate and in the collateral's TCB Info.
pub const SIM_FMSPC: [u8; 6] = [0x00, 0xA0, 0x6F, 0x00, 0x00, 0x00];
/// PCE ID of the simulated platforms (Intel's is 0 too).
pub const SIM_PCE_ID: [u8; 2] = [0x00, 0x00];
/// CPUSVN in the PCK certificates; the QE report carries it too.
pub const SIM_CPU_SVN: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
/// PCESVN in the PCK certificates.
pub const SIM_PCE_SVN: u16 = 13;
/// TEE_TCB_SVN the simulated TDX module reports: module ISVSVN 5, module major
/// version 1 (so the TCB Info's `TDX_01` module identity applies), late
/// microcode SVN 2.
pub const SIM_TEE_TCB_SVN: [u8; 16] = [5, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// MRSIGNER_SEAM of the simulated TDX module: SHA-384("SIMULATED Intel TDX module signer").
/// (Intel's own module has an all-zero MRSIGNER_SEAM.)
pub const SIM_TDX_MODULE_MRSIGNER: [u8; 48] = [
    0xc9, 0x3c, 0x4c, 0x61, 0x37, 0x6b, 0x9e, 0xfd, 0xed, 0x6e, 0xbe, 0xb2, 0xdd, 0x41, 0xa4, 0x7b,
    0x4a, 0x3e, 0xad, 0xc4, 0x61, 0x8e, 0xb4, 0xf7, 0xd8, 0x97, 0x68, 0x00, 0x79, 0x7c, 0x23, 0x6e,
    0x87, 0x7e, 0x4c, 0x84, 0xd9, 0x22, 0xbf, 0xb3, 0x3c, 0x0d, 0xad, 0xc5, 0x4c, 0xe9, 0x2d, 0xb6,
];
/// MRSEAM of the simulated TDX module: SHA-384("SIMULATED Intel TDX module").
/// Not appraised by DCAP; reported in the TD report.
pub const SIM_TDX_MODULE_MRSEAM: [u8; 48] = [
    0x6e, 0x5a, 0x51, 0xeb, 0xe4, 0xb5, 0xd3, 0x3e, 0xd1, 0x82, 0xb0, 0x57, 0xb9, 0x0f, 0x85, 0x4b,
    0xed, 0xfa, 0x06, 0xc4, 0x76, 0x99, 0x38, 0xf5, 0x2f, 0x17, 0xca, 0x34, 0xa4, 0xe3, 0x0b, 0x8b,
    0xf2, 0xbf, 0x25, 0x47, 0xb3, 0x87, 0x43, 0x9b, 0xa6, 0xb6, 0x1d, 0x48, 0x81, 0xa6, 0xe9, 0xaf,
];
/// SEAMATTRIBUTES of the simulated TDX module (none, as in production).
pub const SIM_SEAM_ATTRIBUTES: [u8; 8] = [0; 8];
/// MRSIGNER of the simulated TD quoting enclave: SHA-256("SIMULATED Intel TD Quoting Enclave signer").
pub const SIM_QE_MRSIGNER: [u8; 32] = [
    0xd8, 0x63, 0x49, 0x22, 0x3d, 0x32, 0x5c, 0x9d, 0x95, 0x60, 0x05, 0x8b, 0xf3, 0x15, 0x14, 0xdc,
    0xfa, 0x3c, 0x26, 0xbb, 0xb4, 0x80, 0xf4, 0x08, 0xc1, 0x73, 0xb7, 0x9f, 0x61, 0xfa, 0x2d, 0x19,
];
/// MRENCLAVE of the simulated TD quoting enclave: SHA-256("SIMULATED Intel TD Quoting Enclave").
/// Not appraised by DCAP; reported in the QE report.
pub const SIM_QE_MRENCLAVE: [u8; 32] = [
    0x2d, 0x9f, 0xf4, 0x68, 0xff, 0xf5, 0xa8, 0x27, 0x43, 0x74, 0x22, 0xe9, 0x8c, 0x48, 0x0f, 0x8c,
    0x2b, 0x1c, 0x3b, 0x2b, 0x32, 0x56, 0x2d, 0xa0, 0xdb, 0x78, 0x8f, 0x35, 0x70, 0x3f, 0x14, 0x6f,
];
/// ISVPRODID of the TD quoting enclave (Intel's TD_QE is 2 as well).
pub const SIM_QE_ISV_PROD_ID: u16 = 2;
/// ISVSVN of the simulated TD quoting enclave.
pub const SIM_QE_ISV_SVN: u16 = 4;
/// MISCSELECT of the simulated TD quoting enclave.
pub const SIM_QE_MISC_SELECT: u32 = 0;
/// SGX ATTRIBUTES of the simulated TD quoting enclave: INIT | MODE64BIT, not DEBUG.
pub const SIM_QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// `tcbEvaluationDataNumber` of the simulated TCB Info and QE Identity.
pub const SIM_TCB_EVALUATION_DATA_NUMBER: u32 = 19;
/// `tcbDate` of the simulated TCB levels.
pub const SIM_TCB_DATE: &str = "2025-01-01T00:00:00Z";

/// Common names of the simulated hierarchy.
pub const ROOT_CA_NAME: &str = "SIMULATED Intel SGX Root CA";
pub const PCK_PLATFORM_CA_NAME: &str = "SIMULATED Intel SGX PCK Platform CA";
pub const TCB_SIGNING_NAME: &str = "SIMULATED Intel SGX TCB Signing";
pub const PCK_CERT_NAME: &str = "SIMULATED Intel SGX PCK Certificate";

/// How long collateral stays valid after `now` (Intel's is 30 days too).
const COLLATERAL_VALIDITY_SECS: i64 = 30 * 86_400;
/// Backdating of certificates, against clock skew between machines.
const BACKDATE: Duration = Duration::days(1);

/// The SGX extension and its parts (Intel SGX PCK Certificate and CRL Profile).
const SGX_EXTENSION_OID: [u64; 7] = [1, 2, 840, 113_741, 1, 13, 1];

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable simulated Intel file: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("the simulated hierarchy in {dir} is inconsistent: {reason}")]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cannot load the {what} key into ring: {reason}")]
    Key { what: &'static str, reason: String },
    #[error("signing {what} failed (ECDSA P-256)")]
    Sign { what: &'static str },
    #[error("the system random number generator failed")]
    Random,
    #[error("time {secs} (Unix seconds) cannot be used: {reason}")]
    Time { secs: i64, reason: String },
}

/// One authority of the hierarchy: its certificate and key.
struct Authority {
    cert_der: Vec<u8>,
    cert_pem: String,
    /// The rcgen issuer: distinguished name, key usages and key, for issuing
    /// certificates and CRLs.
    issuer: Issuer<'static, KeyPair>,
    /// The same key in ring, for raw r‖s signatures (TCB Info, QE Identity).
    signer: EcdsaKeyPair,
}

/// Which authority: its name, file stem and role in the hierarchy.
#[derive(Clone, Copy)]
enum Role {
    Root,
    PlatformCa,
    TcbSigning,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Root => ROOT_CA_NAME,
            Role::PlatformCa => PCK_PLATFORM_CA_NAME,
            Role::TcbSigning => TCB_SIGNING_NAME,
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            Role::Root => "intel-root",
            Role::PlatformCa => "intel-pck-platform-ca",
            Role::TcbSigning => "intel-tcb-signing",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Role::Root => "the simulated Intel root CA",
            Role::PlatformCa => "the simulated PCK Platform CA",
            Role::TcbSigning => "the simulated TCB Signing certificate",
        }
    }

    /// Certificate parameters; the same on generation and on load (the issuer
    /// name must encode to the same bytes as the certificate's subject).
    fn params(self, not_before: OffsetDateTime) -> Result<CertificateParams, SimError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = intel_dn(self.name());
        p.key_identifier_method = KeyIdMethod::Sha256;
        p.serial_number = Some(random_serial()?);
        p.not_before = not_before;
        match self {
            Role::Root => {
                p.not_after = not_before + Duration::days(20 * 365);
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            }
            Role::PlatformCa => {
                p.not_after = not_before + Duration::days(15 * 365);
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                p.use_authority_key_identifier_extension = true;
            }
            Role::TcbSigning => {
                p.not_after = not_before + Duration::days(7 * 365);
                p.is_ca = IsCa::ExplicitNoCa;
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
                p.use_authority_key_identifier_extension = true;
            }
        }
        Ok(p)
    }
}

/// The simulated Intel CA hierarchy: root CA, PCK Platform CA, TCB Signing.
pub struct SimIntel {
    root: Authority,
    platform_ca: Authority,
    tcb_signing: Authority,
}

impl fmt::Debug for SimIntel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimIntel")
            .field("root", &ROOT_CA_NAME)
            .field("platform_ca", &PCK_PLATFORM_CA_NAME)
            .field("tcb_signing", &TCB_SIGNING_NAME)
            .finish_non_exhaustive()
    }
}

impl SimIntel {
    /// A fresh hierarchy with new P-256 keys.
    pub fn generate() -> Result<Self, SimError> {
        let not_before = OffsetDateTime::now_utc() - BACKDATE;
        let root_key = new_key(Role::Root.what())?;
        let root_params = Role::Root.params(not_before)?;
        let root_cert =
            root_params
                .self_signed(&root_key)
                .map_err(|source| SimError::Generate {
                    what: Role::Root.what(),
                    source,
                })?;
        let root = authority(root_cert.der().to_vec(), root_params, root_key, Role::Root)?;

        let issue = |role: Role| -> Result<Authority, SimError> {
            let key = new_key(role.what())?;
            let params = role.params(not_before)?;
            let cert =
                params
                    .signed_by(&key, &root.issuer)
                    .map_err(|source| SimError::Generate {
                        what: role.what(),
                        source,
                    })?;
            authority(cert.der().to_vec(), params, key, role)
        };
        let platform_ca = issue(Role::PlatformCa)?;
        let tcb_signing = issue(Role::TcbSigning)?;
        Ok(SimIntel {
            root,
            platform_ca,
            tcb_signing,
        })
    }

    /// Write the certificates (`<stem>.pem`) and PKCS#8 keys (`<stem>.key`,
    /// mode 0600) under `dir`, creating it: `intel-root`,
    /// `intel-pck-platform-ca`, `intel-tcb-signing`.
    pub fn save(&self, dir: &Path) -> Result<(), SimError> {
        fs::create_dir_all(dir).map_err(|source| SimError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        for (role, a) in self.authorities() {
            let stem = role.file_stem();
            write_file(
                &dir.join(format!("{stem}.pem")),
                a.cert_pem.as_bytes(),
                false,
            )?;
            let key_pem = a.issuer.key().serialize_pem();
            write_file(&dir.join(format!("{stem}.key")), key_pem.as_bytes(), true)?;
        }
        Ok(())
    }

    /// Read a hierarchy written by [`SimIntel::save`]. Each key must match its
    /// certificate, each name must be the simulated one, and the PCK Platform
    /// CA and TCB Signing certificates must be signed by the root.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let root = load_authority(dir, Role::Root)?;
        let platform_ca = load_authority(dir, Role::PlatformCa)?;
        let tcb_signing = load_authority(dir, Role::TcbSigning)?;
        let inconsistent = |reason: String| SimError::Inconsistent {
            dir: dir.to_path_buf(),
            reason,
        };
        let (_, root_cert) = parse_x509_certificate(&root.cert_der)
            .map_err(|e| inconsistent(format!("root certificate: {e}")))?;
        for (role, a) in [
            (Role::Root, &root),
            (Role::PlatformCa, &platform_ca),
            (Role::TcbSigning, &tcb_signing),
        ] {
            let (_, cert) = parse_x509_certificate(&a.cert_der)
                .map_err(|e| inconsistent(format!("{}: {e}", role.name())))?;
            cert.verify_signature(Some(root_cert.public_key()))
                .map_err(|_| {
                    inconsistent(format!(
                        "{} is not signed by the root in {}.pem",
                        role.name(),
                        Role::Root.file_stem()
                    ))
                })?;
        }
        Ok(SimIntel {
            root,
            platform_ca,
            tcb_signing,
        })
    }

    fn authorities(&self) -> [(Role, &Authority); 3] {
        [
            (Role::Root, &self.root),
            (Role::PlatformCa, &self.platform_ca),
            (Role::TcbSigning, &self.tcb_signing),
        ]
    }

    /// The root CA certificate (DER): the trust root to give the verifier.
    pub fn root_der(&self) -> &[u8] {
        &self.root.cert_der
    }

    /// The root CA certificate (PEM).
    pub fn root_pem(&self) -> &str {
        &self.root.cert_pem
    }

    /// The PCK Platform CA certificate (PEM).
    pub fn platform_ca_pem(&self) -> &str {
        &self.platform_ca.cert_pem
    }

    /// The TCB Signing certificate (PEM).
    pub fn tcb_signing_pem(&self) -> &str {
        &self.tcb_signing.cert_pem
    }

    /// DCAP collateral for the simulated platform type, issued at `now` (Unix
    /// seconds) and valid for 30 days: TCB Info v3 (id "TDX") and QE Identity
    /// v2 (id "TD_QE"), each signed by the TCB Signing key over its exact bytes
    /// (raw r‖s), their issuer chains (signer, root; PEM), and the root CA and
    /// PCK CRLs (DER, empty).
    pub fn collateral(&self, now: i64) -> Result<QuoteCollateralV3, SimError> {
        let next = now
            .checked_add(COLLATERAL_VALIDITY_SECS)
            .ok_or_else(|| SimError::Time {
                secs: now,
                reason: "too large".into(),
            })?;
        let issue_date = rfc3339(now)?;
        let next_update = rfc3339(next)?;

        let tcb_info = tcb_info_json(&issue_date, &next_update);
        let qe_identity = qe_identity_json(&issue_date, &next_update);
        let tcb_info_signature =
            sign_raw(&self.tcb_signing.signer, tcb_info.as_bytes(), "TCB Info")?;
        let qe_identity_signature = sign_raw(
            &self.tcb_signing.signer,
            qe_identity.as_bytes(),
            "QE Identity",
        )?;

        let signer_chain = format!("{}{}", self.tcb_signing.cert_pem, self.root.cert_pem);
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain: format!("{}{}", self.platform_ca.cert_pem, self.root.cert_pem),
            root_ca_crl: empty_crl(&self.root, now, next, "the simulated root CA CRL")?,
            pck_crl: empty_crl(&self.platform_ca, now, next, "the simulated PCK CRL")?,
            tcb_info_issuer_chain: signer_chain.clone(),
            tcb_info,
            tcb_info_signature: tcb_info_signature.to_vec(),
            qe_identity_issuer_chain: signer_chain,
            qe_identity,
            qe_identity_signature: qe_identity_signature.to_vec(),
            pck_certificate_chain: None,
        })
    }

    /// A new simulated machine: a fresh PCK key with a PCK certificate from the
    /// PCK Platform CA (SGX extension: random PPID and platform instance ID,
    /// [`SIM_CPU_SVN`], [`SIM_PCE_SVN`], [`SIM_PCE_ID`], [`SIM_FMSPC`], SGX type
    /// Scalable, configuration flags all false), and a fresh attestation key.
    pub fn issue_platform(&self) -> Result<SimPlatform, SimError> {
        let rng = SystemRandom::new();
        let mut ppid = [0u8; 16];
        let mut instance_id = [0u8; 16];
        rng.fill(&mut ppid).map_err(|_| SimError::Random)?;
        rng.fill(&mut instance_id).map_err(|_| SimError::Random)?;

        let what = "the simulated PCK certificate";
        let pck_key = new_key(what)?;
        let not_before = OffsetDateTime::now_utc() - BACKDATE;
        let mut params = CertificateParams::default();
        params.distinguished_name = intel_dn(PCK_CERT_NAME);
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before;
        params.not_after = not_before + Duration::days(7 * 365);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &SGX_EXTENSION_OID,
            sgx_extension(&ppid, &instance_id),
        )];
        let cert = params
            .signed_by(&pck_key, &self.platform_ca.issuer)
            .map_err(|source| SimError::Generate { what, source })?;
        let pck_cert_der = cert.der().to_vec();
        let pck_chain_pem = format!(
            "{}{}{}",
            pem_cert(&pck_cert_der),
            self.platform_ca.cert_pem,
            self.root.cert_pem
        );
        let pck_key = ring_key(&pck_key.serialize_der(), "PCK")?;

        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SimError::Random)?;
        let attestation_key = ring_key(pkcs8.as_ref(), "attestation")?;

        let qe_id_hash = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"SIMULATED QE ID".as_slice(), &ppid].concat(),
        );
        let mut qe_id = [0u8; 16];
        qe_id.copy_from_slice(&qe_id_hash.as_ref()[..16]);

        Ok(SimPlatform {
            pck_key,
            pck_cert_der,
            pck_chain_pem,
            attestation_key,
            ppid,
            qe_id,
        })
    }
}

/// One simulated machine: its PCK certificate chain and key, and the
/// attestation key its (simulated) quoting enclave signs quotes with.
pub struct SimPlatform {
    pck_key: EcdsaKeyPair,
    pck_cert_der: Vec<u8>,
    pck_chain_pem: String,
    attestation_key: EcdsaKeyPair,
    ppid: [u8; 16],
    qe_id: [u8; 16],
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlatform")
            .field("ppid", &hex::encode(self.ppid))
            .field("qe_id", &hex::encode(self.qe_id))
            .finish_non_exhaustive()
    }
}

impl SimPlatform {
    /// The PCK certificate (DER).
    pub fn pck_cert_der(&self) -> &[u8] {
        &self.pck_cert_der
    }

    /// PCK certificate, PCK Platform CA, root (PEM, in that order): the
    /// quote's certification data type 5.
    pub fn pck_chain_pem(&self) -> &str {
        &self.pck_chain_pem
    }

    /// The platform's PPID (in the PCK certificate).
    pub fn ppid(&self) -> [u8; 16] {
        self.ppid
    }

    /// The QE ID (first 16 bytes of the quote header's user data).
    pub fn qe_id(&self) -> [u8; 16] {
        self.qe_id
    }

    /// The attestation public key, raw x‖y (64 bytes), as in the quote.
    pub fn attestation_public_key(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // ring gives the uncompressed SEC1 point: 0x04 ‖ x ‖ y.
        let point = self.attestation_key.public_key().as_ref();
        if point.len() == 65 {
            out.copy_from_slice(&point[1..]);
        }
        out
    }

    /// ECDSA P-256 / SHA-256 over `msg` with the PCK key, raw r‖s: the QE
    /// report signature.
    pub fn sign_with_pck(&self, msg: &[u8]) -> Result<[u8; 64], SimError> {
        sign_raw(&self.pck_key, msg, "the QE report (PCK key)")
    }

    /// ECDSA P-256 / SHA-256 over `msg` with the attestation key, raw r‖s:
    /// the quote signature over header ‖ body.
    pub fn sign_with_attestation_key(&self, msg: &[u8]) -> Result<[u8; 64], SimError> {
        sign_raw(&self.attestation_key, msg, "the quote (attestation key)")
    }
}

fn intel_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "SIMULATED Intel Corporation");
    dn.push(DnType::LocalityName, "Santa Clara");
    dn.push(DnType::StateOrProvinceName, "CA");
    dn.push(DnType::CountryName, "US");
    dn
}

/// A positive 16-byte serial number with a non-zero leading byte.
fn random_serial() -> Result<SerialNumber, SimError> {
    let mut sn = [0u8; 16];
    SystemRandom::new()
        .fill(&mut sn)
        .map_err(|_| SimError::Random)?;
    sn[0] = (sn[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&sn))
}

fn new_key(what: &'static str) -> Result<KeyPair, SimError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| SimError::Generate { what, source })
}

fn ring_key(pkcs8: &[u8], what: &'static str) -> Result<EcdsaKeyPair, SimError> {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|e| SimError::Key {
        what,
        reason: e.to_string(),
    })
}

fn sign_raw(key: &EcdsaKeyPair, msg: &[u8], what: &'static str) -> Result<[u8; 64], SimError> {
    let sig = key
        .sign(&SystemRandom::new(), msg)
        .map_err(|_| SimError::Sign { what })?;
    sig.as_ref().try_into().map_err(|_| SimError::Sign { what })
}

fn authority(
    cert_der: Vec<u8>,
    params: CertificateParams,
    key: KeyPair,
    role: Role,
) -> Result<Authority, SimError> {
    let signer = ring_key(&key.serialize_der(), role.what())?;
    Ok(Authority {
        cert_pem: pem_cert(&cert_der),
        cert_der,
        issuer: Issuer::new(params, key),
        signer,
    })
}

fn load_authority(dir: &Path, role: Role) -> Result<Authority, SimError> {
    let stem = role.file_stem();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    let bad = |path: &Path, reason: String| SimError::BadFile {
        path: path.to_path_buf(),
        reason,
    };

    let cert_pem = read_text(&cert_path)?;
    let mut ders = tvm_certs::anchors::pem_certificates(cert_pem.as_bytes())
        .map_err(|e| bad(&cert_path, e.to_string()))?;
    if ders.len() != 1 {
        return Err(bad(
            &cert_path,
            format!("holds {} certificates, expected one", ders.len()),
        ));
    }
    let cert_der = ders.remove(0);
    let (_, cert) = parse_x509_certificate(&cert_der)
        .map_err(|e| bad(&cert_path, format!("not an X.509 certificate: {e}")))?;
    let cn = common_name(&cert);
    if cn.as_deref() != Some(role.name()) {
        return Err(bad(
            &cert_path,
            format!("its subject CN is {cn:?}, expected {:?}", role.name()),
        ));
    }

    let key = KeyPair::from_pem(&read_text(&key_path)?)
        .map_err(|e| bad(&key_path, format!("not a PKCS#8 PEM private key: {e}")))?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(bad(&key_path, "not an ECDSA P-256 key".into()));
    }
    if key.subject_public_key_info() != cert.tbs_certificate.subject_pki.raw {
        return Err(bad(
            &key_path,
            format!("does not match the certificate in {}", cert_path.display()),
        ));
    }

    // The issuer needs only the name, key usages and key identifier method,
    // which are fixed per role; the PEM is re-encoded from the DER.
    let params = role.params(cert.validity().not_before.to_datetime())?;
    authority(cert_der, params, key, role)
}

fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), SimError> {
    super::write_file(path, data, secret).map_err(|source| SimError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, SimError> {
    fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_cert(der: &[u8]) -> String {
    super::pem("CERTIFICATE", der)
}

fn rfc3339(secs: i64) -> Result<String, SimError> {
    let time_err = |reason: String| SimError::Time { secs, reason };
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| time_err(e.to_string()))?
        .format(&Rfc3339)
        .map_err(|e| time_err(e.to_string()))
}

fn empty_crl(
    issuer: &Authority,
    now: i64,
    next: i64,
    what: &'static str,
) -> Result<Vec<u8>, SimError> {
    let at = |secs: i64| {
        OffsetDateTime::from_unix_timestamp(secs).map_err(|e| SimError::Time {
            secs,
            reason: e.to_string(),
        })
    };
    let params = CertificateRevocationListParams {
        this_update: at(now)?,
        next_update: at(next)?,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(&issuer.issuer)
        .map_err(|source| SimError::Generate { what, source })?;
    Ok(crl.der().to_vec())
}

fn svn_components(svns: &[u8]) -> Vec<serde_json::Value> {
    svns.iter().map(|svn| json!({ "svn": svn })).collect()
}

/// TCB Info v3 for TDX, in Intel's field order: one UpToDate platform level
/// (exactly what the simulated platforms report) and the `TDX_01` module
/// identity of the simulated TDX module.
fn tcb_info_json(issue_date: &str, next_update: &str) -> String {
    let module_mrsigner = hex::encode_upper(SIM_TDX_MODULE_MRSIGNER);
    let seam_attributes = hex::encode_upper(SIM_SEAM_ATTRIBUTES);
    let module_version = SIM_TEE_TCB_SVN[1];
    json!({
        "id": "TDX",
        "version": 3,
        "issueDate": issue_date,
        "nextUpdate": next_update,
        "fmspc": hex::encode_upper(SIM_FMSPC),
        "pceId": hex::encode_upper(SIM_PCE_ID),
        "tcbType": 0,
        "tcbEvaluationDataNumber": SIM_TCB_EVALUATION_DATA_NUMBER,
        "tdxModule": {
            "mrsigner": module_mrsigner,
            "attributes": seam_attributes,
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": [{
            "id": format!("TDX_{module_version:02X}"),
            "mrsigner": module_mrsigner,
            "attributes": seam_attributes,
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [{
                "tcb": { "isvsvn": SIM_TEE_TCB_SVN[0] },
                "tcbDate": SIM_TCB_DATE,
                "tcbStatus": "UpToDate",
            }],
        }],
        "tcbLevels": [{
            "tcb": {
                "sgxtcbcomponents": svn_components(&SIM_CPU_SVN),
                "pcesvn": SIM_PCE_SVN,
                "tdxtcbcomponents": svn_components(&SIM_TEE_TCB_SVN),
            },
            "tcbDate": SIM_TCB_DATE,
            "tcbStatus": "UpToDate",
        }],
    })
    .to_string()
}

/// QE Identity v2 of the simulated TD quoting enclave.
fn qe_identity_json(issue_date: &str, next_update: &str) -> String {
    json!({
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue_date,
        "nextUpdate": next_update,
        "tcbEvaluationDataNumber": SIM_TCB_EVALUATION_DATA_NUMBER,
        "miscselect": hex::encode_upper(SIM_QE_MISC_SELECT.to_le_bytes()),
        "miscselectMask": "FFFFFFFF",
        "attributes": hex::encode_upper(SIM_QE_ATTRIBUTES),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(SIM_QE_MRSIGNER),
        "isvprodid": SIM_QE_ISV_PROD_ID,
        "tcbLevels": [{
            "tcb": { "isvsvn": SIM_QE_ISV_SVN },
            "tcbDate": SIM_TCB_DATE,
            "tcbStatus": "UpToDate",
        }],
    })
    .to_string()
}

// --- DER for the SGX extension ---------------------------------------------

use super::der;

fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &items.concat())
}

fn der_oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let (first, second) = match arcs {
        [a, b, ..] => (*a, *b),
        _ => (0, 0),
    };
    let mut push_arc = |mut v: u64| {
        let mut groups = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        groups.reverse();
        content.extend_from_slice(&groups);
    };
    push_arc(first * 40 + second);
    for arc in arcs.iter().skip(2) {
        push_arc(*arc);
    }
    der(0x06, &content)
}

/// A non-negative INTEGER, minimally encoded.
fn der_uint(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take(7).take_while(|b| **b == 0).count();
    let mut content = Vec::new();
    if bytes[skip] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[skip..]);
    der(0x02, &content)
}

/// `SEQUENCE { OID 1.2.840.113741.1.13.1.<sub>, value }`.
fn sgx_entry(sub: &[u64], value: Vec<u8>) -> Vec<u8> {
    let oid: Vec<u64> = SGX_EXTENSION_OID.iter().chain(sub).copied().collect();
    der_seq(&[der_oid(&oid), value])
}

/// The value of the SGX extension of a PCK certificate issued by the Platform CA.
fn sgx_extension(ppid: &[u8; 16], instance_id: &[u8; 16]) -> Vec<u8> {
    let mut tcb: Vec<Vec<u8>> = (1u64..)
        .zip(SIM_CPU_SVN)
        .map(|(i, svn)| sgx_entry(&[2, i], der_uint(u64::from(svn))))
        .collect();
    tcb.push(sgx_entry(&[2, 17], der_uint(u64::from(SIM_PCE_SVN))));
    tcb.push(sgx_entry(&[2, 18], der(0x04, &SIM_CPU_SVN)));
    let boolean = |b: bool| der(0x01, &[if b { 0xff } else { 0x00 }]);
    der_seq(&[
        sgx_entry(&[1], der(0x04, ppid)),
        sgx_entry(&[2], der_seq(&tcb)),
        sgx_entry(&[3], der(0x04, &SIM_PCE_ID)),
        sgx_entry(&[4], der(0x04, &SIM_FMSPC)),
        // SGX Type: Scalable (1), as on TDX-capable platforms.
        sgx_entry(&[5], der(0x0a, &[1])),
        sgx_entry(&[6], der(0x04, instance_id)),
        sgx_entry(
            &[7],
            der_seq(&[
                sgx_entry(&[7, 1], boolean(false)),
                sgx_entry(&[7, 2], boolean(false)),
                sgx_entry(&[7, 3], boolean(false)),
            ]),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn temp_dir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        SystemRandom::new().fill(&mut r).unwrap();
        std::env::temp_dir().join(format!(
            "tvm-sim-intel-{tag}-{}-{}",
            std::process::id(),
            hex::encode(r)
        ))
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    fn names(der: &[u8]) -> (String, String) {
        let (_, c) = parse_x509_certificate(der).unwrap();
        (c.subject().to_string(), c.issuer().to_string())
    }

    #[test]
    fn labelled_constants_are_the_hashes_of_their_labels() {
        let h384 = |s: &str| sha2::Sha384::digest(s.as_bytes()).to_vec();
        let h256 = |s: &str| sha2::Sha256::digest(s.as_bytes()).to_vec();
        assert_eq!(
            h384("SIMULATED Intel TDX module signer"),
            SIM_TDX_MODULE_MRSIGNER
        );
        assert_eq!(h384("SIMULATED Intel TDX module"), SIM_TDX_MODULE_MRSEAM);
        assert_eq!(
            h256("SIMULATED Intel TD Quoting Enclave signer"),
            SIM_QE_MRSIGNER
        );
        assert_eq!(h256("SIMULATED Intel TD Quoting Enclave"), SIM_QE_MRENCLAVE);
    }

    #[test]
    fn every_certificate_name_says_simulated() {
        let sim = SimIntel::generate().unwrap();
        let platform = sim.issue_platform().unwrap();
        let mut ders = vec![sim.root_der().to_vec(), platform.pck_cert_der().to_vec()];
        for pem in [
            sim.platform_ca_pem(),
            sim.tcb_signing_pem(),
            platform.pck_chain_pem(),
        ] {
            ders.extend(tvm_certs::anchors::pem_certificates(pem.as_bytes()).unwrap());
        }
        for der in &ders {
            let (subject, issuer) = names(der);
            assert!(subject.contains("SIMULATED"), "{subject}");
            assert!(issuer.contains("SIMULATED"), "{issuer}");
        }
        let (subject, issuer) = names(sim.root_der());
        assert!(subject.contains(ROOT_CA_NAME) && subject == issuer);
        let (subject, issuer) = names(platform.pck_cert_der());
        assert!(subject.contains(PCK_CERT_NAME), "{subject}");
        assert!(issuer.contains(PCK_PLATFORM_CA_NAME), "{issuer}");
    }

    #[test]
    fn pck_certificate_carries_the_sgx_extension_dcap_reads() {
        let sim = SimIntel::generate().unwrap();
        let platform = sim.issue_platform().unwrap();
        let ext = dcap_qvl::intel::parse_pck_extension(platform.pck_cert_der()).unwrap();
        assert_eq!(ext.ppid, platform.ppid());
        assert_eq!(ext.cpu_svn, SIM_CPU_SVN);
        assert_eq!(ext.pce_svn, SIM_PCE_SVN);
        assert_eq!(ext.pce_id, SIM_PCE_ID);
        assert_eq!(ext.fmspc, SIM_FMSPC);
        assert_eq!(ext.sgx_type, 1);
        assert_eq!(ext.platform_instance_id.map(|v| v.len()), Some(16));
        assert_eq!(ext.dynamic_platform, Some(false));
        assert_eq!(ext.cached_keys, Some(false));
        assert_eq!(ext.smt_enabled, Some(false));
        assert_eq!(
            dcap_qvl::intel::pck_ca(platform.pck_cert_der()).unwrap(),
            dcap_qvl::config::PckCa::Platform
        );
        // A second machine: another PPID and another key.
        let other = sim.issue_platform().unwrap();
        assert_ne!(other.ppid(), platform.ppid());
        assert_ne!(
            other.attestation_public_key(),
            platform.attestation_public_key()
        );
    }

    #[test]
    fn collateral_passes_the_repo_issuer_checks() {
        let sim = SimIntel::generate().unwrap();
        let t = now();
        let c = sim.collateral(t).unwrap();
        tvm_certs::intel::check_issuers(&c, sim.root_der()).unwrap();
        let dates = tvm_certs::intel::collateral_dates(&c).unwrap();
        for d in &dates {
            assert_eq!(d.issued, t, "{}", d.name);
            assert_eq!(d.next_update, t + COLLATERAL_VALIDITY_SECS, "{}", d.name);
        }
        let tcb: dcap_qvl::TcbInfo = serde_json::from_str(&c.tcb_info).unwrap();
        assert_eq!(tcb.id, "TDX");
        assert_eq!(tcb.version, 3);
        assert_eq!(tcb.fmspc, "00A06F000000");
        let qe: dcap_qvl::QeIdentity = serde_json::from_str(&c.qe_identity).unwrap();
        assert_eq!(qe.id, "TD_QE");
        assert_eq!(qe.mrsigner, SIM_QE_MRSIGNER);
        // Another hierarchy's root does not anchor it.
        let other = SimIntel::generate().unwrap();
        assert!(tvm_certs::intel::check_issuers(&c, other.root_der()).is_err());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = temp_dir("roundtrip");
        let sim = SimIntel::generate().unwrap();
        sim.save(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for stem in ["intel-root", "intel-pck-platform-ca", "intel-tcb-signing"] {
                let mode = fs::metadata(dir.join(format!("{stem}.key")))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{stem}.key");
            }
        }
        let loaded = SimIntel::load(&dir).unwrap();
        assert_eq!(loaded.root_der(), sim.root_der());
        assert_eq!(loaded.root_pem(), sim.root_pem());
        assert_eq!(loaded.platform_ca_pem(), sim.platform_ca_pem());
        assert_eq!(loaded.tcb_signing_pem(), sim.tcb_signing_pem());
        // The loaded keys still sign what the saved root anchors.
        let c = loaded.collateral(now()).unwrap();
        tvm_certs::intel::check_issuers(&c, sim.root_der()).unwrap();
        let platform = loaded.issue_platform().unwrap();
        let chain =
            tvm_certs::anchors::pem_certificates(platform.pck_chain_pem().as_bytes()).unwrap();
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[2], sim.root_der());
        let (_, leaf) = parse_x509_certificate(&chain[0]).unwrap();
        let (_, ca) = parse_x509_certificate(&chain[1]).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_says_what_is_wrong() {
        let missing = temp_dir("missing");
        let e = SimIntel::load(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read") && e.contains("intel-root.pem"),
            "{e}"
        );

        let dir = temp_dir("mismatch");
        SimIntel::generate().unwrap().save(&dir).unwrap();
        // A key that is not the certificate's.
        fs::copy(
            dir.join("intel-tcb-signing.key"),
            dir.join("intel-root.key"),
        )
        .unwrap();
        let e = SimIntel::load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("intel-root.key") && e.contains("does not match"),
            "{e}"
        );

        // A platform CA from another hierarchy.
        let other = temp_dir("other");
        SimIntel::generate().unwrap().save(&other).unwrap();
        SimIntel::generate().unwrap().save(&dir).unwrap();
        for ext in ["pem", "key"] {
            let f = format!("intel-pck-platform-ca.{ext}");
            fs::copy(other.join(&f), dir.join(&f)).unwrap();
        }
        let e = SimIntel::load(&dir).unwrap_err().to_string();
        assert!(e.contains("not signed by the root"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }
}
