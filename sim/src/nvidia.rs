//! The SIMULATED NVIDIA device-identity hierarchy, shaped like the real one:
//!
//! ```text
//! SIMULATED NVIDIA Device Identity CA                  (root, self-signed)
//! └── SIMULATED NVIDIA GH100 Identity
//!     ├── SIMULATED NVIDIA GH100 Provisioner ICA 1      (issues GPU BROM certificates)
//!     └── SIMULATED NVIDIA LS_10 Provisioner ICA 1      (issues NVSwitch BROM certificates)
//!         └── SIMULATED <chip> A01 <engine> BROM        (per device; subject serialNumber = identity)
//!             └── SIMULATED <chip> A01 <engine> FMC LF  (per device; the SPDM signing key, DICE FWID)
//! ```
//!
//! Every key is ECDSA P-384 and every signature ECDSA-with-SHA384, as on real
//! hardware. The chip names the verifier keys on ("GH100", "LS_10") and the
//! "Provisioner ICA" marker of the BROM issuer are kept; every name also says
//! SIMULATED, and none of it chains to NVIDIA's root.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::string::PrintableString;
use rcgen::PublicKeyData as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, OtherNameValue, SanType, SerialNumber,
    PKCS_ECDSA_P384_SHA384,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::der;

/// Common name of the simulated root (the `DeviceRoot::Simulated` anchor).
pub const ROOT_CN: &str = "SIMULATED NVIDIA Device Identity CA";
const ROOT_ORG: &str = "SIMULATED NVIDIA";
const ORG: &str = "SIMULATED NVIDIA Corporation";
const IDENTITY_CN: &str = "SIMULATED NVIDIA GH100 Identity";
const GPU_PROVISIONER_CN: &str = "SIMULATED NVIDIA GH100 Provisioner ICA 1";
const SWITCH_PROVISIONER_CN: &str = "SIMULATED NVIDIA LS_10 Provisioner ICA 1";

/// File of the root certificate (PEM) that [`SimNvidia::save`] writes.
pub const ROOT_FILE: &str = "nvidia-root.pem";
/// (certificate, PKCS#8 key) files of each CA, root first.
const FILES: [(&str, &str); 4] = [
    (ROOT_FILE, "nvidia-root.key"),
    ("nvidia-gh100-identity.pem", "nvidia-gh100-identity.key"),
    (
        "nvidia-gh100-provisioner.pem",
        "nvidia-gh100-provisioner.key",
    ),
    ("nvidia-ls10-provisioner.pem", "nvidia-ls10-provisioner.key"),
];

/// TCG DICE (legacy) extension NVIDIA puts on Hopper and NVSwitch leaves.
const OID_DICE_LEGACY: [u64; 6] = [2, 23, 133, 5, 4, 1];
/// NVIDIA's subject-alternative-name other-name type ("NVIDIA:GH100:<id>").
const OID_NVIDIA_SAN: [u64; 9] = [1, 3, 6, 1, 4, 1, 412, 274, 1];
/// id-sha384, DER contents.
const OID_SHA384_DER: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SUBJECT_KEY_IDENTIFIER: [u64; 4] = [2, 5, 29, 14];
/// X.520 serialNumber.
const OID_SERIAL_NUMBER: [u64; 4] = [2, 5, 4, 5];

pub const FWID_LEN: usize = 48;
pub const SIGNATURE_LEN: usize = 96;
/// Platform device identifier: the identity without its type byte.
pub const PDI_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SimNvidiaError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("the P-384 signing key was rejected: {0}")]
    Key(String),
    #[error("ECDSA P-384 signing failed")]
    Sign,
    #[error("bad certificate date: {0}")]
    Time(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
}

/// What a simulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimDeviceKind {
    /// A Hopper H100 GPU (GH100, attested by its GSP).
    Gpu,
    /// A third-generation NVSwitch (LS_10, attested by its FSP).
    Switch,
}

impl SimDeviceKind {
    fn chip(self) -> &'static str {
        match self {
            SimDeviceKind::Gpu => "GH100",
            SimDeviceKind::Switch => "LS_10",
        }
    }
    fn engine(self) -> &'static str {
        match self {
            SimDeviceKind::Gpu => "GSP",
            SimDeviceKind::Switch => "FSP",
        }
    }
    /// The first byte of the BROM serial number (real GPUs: 0x41, switches: 0x50).
    fn type_byte(self) -> u8 {
        match self {
            SimDeviceKind::Gpu => 0x41,
            SimDeviceKind::Switch => 0x50,
        }
    }
    fn brom_cn(self) -> String {
        format!("SIMULATED {} A01 {} BROM", self.chip(), self.engine())
    }
    fn leaf_cn(self) -> String {
        format!("SIMULATED {} A01 {} FMC LF", self.chip(), self.engine())
    }
}

/// One CA of the hierarchy: what rcgen needs to issue under it, and its certificate.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

/// The simulated NVIDIA device-identity CAs.
pub struct SimNvidia {
    root: Ca,
    identity: Ca,
    gpu_provisioner: Ca,
    switch_provisioner: Ca,
}

impl fmt::Debug for SimNvidia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimNvidia")
            .field("root", &ROOT_CN)
            .field("identity", &IDENTITY_CN)
            .field("gpu_provisioner", &GPU_PROVISIONER_CN)
            .field("switch_provisioner", &SWITCH_PROVISIONER_CN)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], SimNvidiaError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| SimNvidiaError::Random)?;
    Ok(out)
}

fn new_key() -> Result<KeyPair, SimNvidiaError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?)
}

/// Not before 2024-01-01, not after 9999-12-31 23:59:59 (as NVIDIA's device
/// certificates: they never expire).
fn validity() -> Result<(OffsetDateTime, OffsetDateTime), SimNvidiaError> {
    let bad = |e: time::error::ComponentRange| SimNvidiaError::Time(e.to_string());
    let not_before = Date::from_calendar_date(2024, Month::January, 1)
        .map_err(bad)?
        .midnight()
        .assume_utc();
    let not_after = Date::from_calendar_date(9999, Month::December, 31)
        .map_err(bad)?
        .with_hms(23, 59, 59)
        .map_err(bad)?
        .assume_utc();
    Ok((not_before, not_after))
}

fn printable(s: &str) -> Result<DnValue, SimNvidiaError> {
    Ok(DnValue::PrintableString(PrintableString::try_from(s)?))
}

/// The parameters of one CA, the same on generation and on load (the
/// distinguished name, key usages and key-identifier method are what an
/// `Issuer` takes from them).
fn ca_params(which: usize) -> Result<CertificateParams, SimNvidiaError> {
    let mut dn = DistinguishedName::new();
    match which {
        0 => {
            dn.push(DnType::CommonName, ROOT_CN);
            dn.push(DnType::OrganizationName, ROOT_ORG);
        }
        1 => {
            dn.push(DnType::CommonName, IDENTITY_CN);
            dn.push(DnType::OrganizationName, ORG);
        }
        _ => {
            let cn = if which == 2 {
                GPU_PROVISIONER_CN
            } else {
                SWITCH_PROVISIONER_CN
            };
            dn.push(DnType::CommonName, cn);
            dn.push(DnType::OrganizationName, ORG);
            dn.push(DnType::CountryName, printable("US")?);
        }
    }
    let (not_before, not_after) = validity()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = which != 0;
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

const CA_NAMES: [&str; 4] = [
    ROOT_CN,
    IDENTITY_CN,
    GPU_PROVISIONER_CN,
    SWITCH_PROVISIONER_CN,
];

/// A positive serial number of `N` random bytes.
fn random_serial<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], SimNvidiaError> {
    let mut s = random::<N>(rng)?;
    if let Some(first) = s.first_mut() {
        *first = (*first & 0x7f).max(1);
    }
    Ok(s)
}

/// The legacy DICE extension as on NVIDIA's leaves:
/// SEQUENCE { INTEGER 1, issuer's SubjectPublicKeyInfo,
/// SEQUENCE { id-sha384, OCTET STRING fwid } }.
fn dice_extension(issuer_spki: &[u8], fwid: &[u8; FWID_LEN]) -> Vec<u8> {
    let digest = [der(0x06, &OID_SHA384_DER), der(0x04, fwid)].concat();
    let body = [der(0x02, &[1]), issuer_spki.to_vec(), der(0x30, &digest)].concat();
    der(0x30, &body)
}

fn device_dn(serial: &str, cn: String) -> Result<DistinguishedName, SimNvidiaError> {
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
        printable(serial)?,
    );
    dn.push(DnType::CountryName, printable("US")?);
    dn.push(DnType::OrganizationName, ORG);
    dn.push(DnType::CommonName, cn);
    Ok(dn)
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), SimNvidiaError> {
    super::write_file(path, data, secret).map_err(|source| SimNvidiaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, SimNvidiaError> {
    fs::read_to_string(path).map_err(|source| SimNvidiaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The DER of the one certificate in a PEM file.
fn read_cert(path: &Path) -> Result<Vec<u8>, SimNvidiaError> {
    let text = read_text(path)?;
    let load = |reason: String| SimNvidiaError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| load(format!("not a PEM certificate: {e}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(load(format!("a PEM {}, not a CERTIFICATE", pem.label)));
    }
    Ok(pem.contents)
}

/// Load one CA: its certificate must carry the expected name and the key's public half.
fn load_ca(dir: &Path, which: usize) -> Result<Ca, SimNvidiaError> {
    let (cert_file, key_file) = FILES[which];
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let der = read_cert(&cert_path)?;
    let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| SimNvidiaError::Load {
        path: key_path.clone(),
        reason: format!("not a PKCS#8 private key: {e}"),
    })?;
    if key.algorithm() != &PKCS_ECDSA_P384_SHA384 {
        return Err(SimNvidiaError::Load {
            path: key_path,
            reason: "not an ECDSA P-384 key".into(),
        });
    }
    let load = |reason: String| SimNvidiaError::Load {
        path: cert_path.clone(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| load(format!("not X.509: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if cn != CA_NAMES[which] {
        return Err(load(format!(
            "common name {cn:?}, expected {:?}",
            CA_NAMES[which]
        )));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(load(format!(
            "the certificate is not for the key in {key_file}"
        )));
    }
    Ok(Ca {
        params: ca_params(which)?,
        key,
        der,
    })
}

impl SimNvidia {
    /// A fresh hierarchy: root, GH100 identity CA, GH100 and LS_10 provisioner CAs.
    pub fn generate() -> Result<Self, SimNvidiaError> {
        let rng = SystemRandom::new();
        let make = |which: usize, issuer: Option<&Ca>| -> Result<Ca, SimNvidiaError> {
            let mut params = ca_params(which)?;
            params.serial_number = Some(SerialNumber::from_slice(&random_serial::<16>(&rng)?));
            let key = new_key()?;
            let cert = match issuer {
                None => params.self_signed(&key)?,
                Some(issuer) => params.signed_by(&key, &issuer.issuer())?,
            };
            Ok(Ca {
                der: cert.der().to_vec(),
                params,
                key,
            })
        };
        let root = make(0, None)?;
        let identity = make(1, Some(&root))?;
        let gpu_provisioner = make(2, Some(&identity))?;
        let switch_provisioner = make(3, Some(&identity))?;
        Ok(SimNvidia {
            root,
            identity,
            gpu_provisioner,
            switch_provisioner,
        })
    }

    fn cas(&self) -> [&Ca; 4] {
        [
            &self.root,
            &self.identity,
            &self.gpu_provisioner,
            &self.switch_provisioner,
        ]
    }

    /// Write every certificate (PEM) and key (PKCS#8 PEM, mode 0600) to
    /// `dir` as `nvidia-*.pem` / `nvidia-*.key`, creating it if needed.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), SimNvidiaError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| SimNvidiaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (ca, (cert_file, key_file)) in self.cas().into_iter().zip(FILES) {
            write_file(
                &dir.join(cert_file),
                super::pem("CERTIFICATE", &ca.der).as_bytes(),
                false,
            )?;
            write_file(&dir.join(key_file), ca.key.serialize_pem().as_bytes(), true)?;
        }
        Ok(())
    }

    /// Read back what [`save`](Self::save) wrote.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, SimNvidiaError> {
        let dir = dir.as_ref();
        Ok(SimNvidia {
            root: load_ca(dir, 0)?,
            identity: load_ca(dir, 1)?,
            gpu_provisioner: load_ca(dir, 2)?,
            switch_provisioner: load_ca(dir, 3)?,
        })
    }

    /// Only the root certificate (DER) from a directory [`save`](Self::save)
    /// wrote: what a validator's devnet policy trusts. No key is read.
    pub fn load_root_der(dir: impl AsRef<Path>) -> Result<Vec<u8>, SimNvidiaError> {
        read_cert(&dir.as_ref().join(ROOT_FILE))
    }

    /// The simulated root certificate (DER): `DeviceRoot::Simulated`.
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// The CA certificates (DER) above a device's BROM certificate, nearest
    /// first, root last.
    fn ca_chain(&self, kind: SimDeviceKind) -> Vec<Vec<u8>> {
        let provisioner = match kind {
            SimDeviceKind::Gpu => &self.gpu_provisioner,
            SimDeviceKind::Switch => &self.switch_provisioner,
        };
        vec![
            provisioner.der.clone(),
            self.identity.der.clone(),
            self.root.der.clone(),
        ]
    }

    /// A new device: a BROM certificate with a random identity from the
    /// provisioner CA, and under it the attestation (leaf) key whose
    /// certificate names `fwid` in its DICE extension.
    pub fn issue_device(
        &self,
        kind: SimDeviceKind,
        fwid: &[u8; FWID_LEN],
    ) -> Result<SimDevice, SimNvidiaError> {
        let rng = SystemRandom::new();
        let provisioner = match kind {
            SimDeviceKind::Gpu => &self.gpu_provisioner,
            SimDeviceKind::Switch => &self.switch_provisioner,
        };

        // BROM: its serial number, and subject serialNumber, is the identity.
        let mut id = [0u8; 1 + PDI_LEN];
        id[0] = kind.type_byte();
        id[1..].copy_from_slice(&random::<PDI_LEN>(&rng)?);
        let (not_before, not_after) = validity()?;
        let brom_key = new_key()?;
        let mut brom = CertificateParams::default();
        brom.distinguished_name = device_dn(&hex::encode_upper(id), kind.brom_cn())?;
        brom.serial_number = Some(SerialNumber::from_slice(&id));
        brom.not_before = not_before;
        brom.not_after = not_after;
        brom.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        brom.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        brom.use_authority_key_identifier_extension = true;
        let brom_cert = brom.signed_by(&brom_key, &provisioner.issuer())?;

        // Leaf: serial, subject serialNumber and key identifier are one
        // 20-byte value derived from its key.
        let leaf_key = new_key()?;
        let digest = Sha256::digest(leaf_key.public_key_raw());
        let mut kid = [0u8; 20];
        kid.copy_from_slice(&digest[..20]);
        kid[0] = (kid[0] & 0x7f).max(1);
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = device_dn(&hex::encode_upper(kid), kind.leaf_cn())?;
        leaf.serial_number = Some(SerialNumber::from_slice(&kid));
        leaf.not_before = not_before;
        leaf.not_after = not_after;
        leaf.is_ca = IsCa::NoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.use_authority_key_identifier_extension = true;
        leaf.subject_alt_names = vec![SanType::OtherName((
            OID_NVIDIA_SAN.to_vec(),
            OtherNameValue::Utf8String(format!(
                "SIMULATED:{}:{}",
                kind.chip(),
                hex::encode_upper(random::<8>(&rng)?)
            )),
        ))];
        // rcgen writes a subject key identifier only with basic constraints;
        // NVIDIA's leaves have the one and not the other.
        leaf.custom_extensions = vec![
            CustomExtension::from_oid_content(&OID_SUBJECT_KEY_IDENTIFIER, der(0x04, &kid)),
            CustomExtension::from_oid_content(
                &OID_DICE_LEGACY,
                dice_extension(&brom_key.subject_public_key_info(), fwid),
            ),
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::from_params(&brom, &brom_key))?;

        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            leaf_key.serialized_der(),
            &rng,
        )
        .map_err(|e| SimNvidiaError::Key(e.to_string()))?;

        let mut chain = vec![leaf_cert.der().to_vec(), brom_cert.der().to_vec()];
        chain.extend(self.ca_chain(kind));
        Ok(SimDevice {
            kind,
            id,
            fwid: *fwid,
            chain,
            leaf_key: signer,
            rng,
        })
    }
}

/// One simulated GPU or NVSwitch: its certificate chain and attestation key.
#[derive(Debug)]
pub struct SimDevice {
    kind: SimDeviceKind,
    /// The BROM serial number: type byte ‖ PDI.
    id: [u8; 1 + PDI_LEN],
    fwid: [u8; FWID_LEN],
    chain: Vec<Vec<u8>>,
    leaf_key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SimDevice {
    pub fn kind(&self) -> SimDeviceKind {
        self.kind
    }

    /// The device identity as the verifier reports it (`device_id`): the
    /// lowercase hex BROM serial number, 9 bytes.
    pub fn identity(&self) -> String {
        hex::encode(self.id)
    }

    /// The platform device identifier (the identity without its type byte),
    /// as NVLink topology fields carry it.
    pub fn pdi(&self) -> [u8; PDI_LEN] {
        let mut pdi = [0u8; PDI_LEN];
        pdi.copy_from_slice(&self.id[1..]);
        pdi
    }

    /// The firmware digest the leaf certificate names.
    pub fn fwid(&self) -> &[u8; FWID_LEN] {
        &self.fwid
    }

    /// DER certificates as a real device returns them (GET_CERTIFICATE):
    /// leaf, BROM, provisioner CA, GH100 identity CA, root — leaf first, root last.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.clone()
    }

    /// The attestation (leaf) key.
    pub fn leaf_key(&self) -> &EcdsaKeyPair {
        &self.leaf_key
    }

    /// ECDSA P-384 over SHA-384 of `msg`, r‖s (96 bytes), as SPDM carries it.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; SIGNATURE_LEN], SimNvidiaError> {
        let sig = self
            .leaf_key
            .sign(&self.rng, msg)
            .map_err(|_| SimNvidiaError::Sign)?;
        <[u8; SIGNATURE_LEN]>::try_from(sig.as_ref()).map_err(|_| SimNvidiaError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{KeyPair as _, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

    fn cn(der: &[u8]) -> String {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        let name = c
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        name
    }

    #[test]
    fn every_name_says_simulated() {
        let sim = SimNvidia::generate().unwrap();
        for kind in [SimDeviceKind::Gpu, SimDeviceKind::Switch] {
            let dev = sim.issue_device(kind, &[7; 48]).unwrap();
            let chain = dev.chain_der();
            assert_eq!(chain.len(), 5);
            for der in &chain {
                let (rest, c) = X509Certificate::from_der(der).unwrap();
                assert!(rest.is_empty());
                assert!(
                    c.subject().to_string().contains("SIMULATED"),
                    "{}",
                    c.subject()
                );
                assert!(
                    c.issuer().to_string().contains("SIMULATED"),
                    "{}",
                    c.issuer()
                );
            }
            assert_eq!(chain.last().unwrap(), sim.root_der());
            assert!(cn(&chain[2]).contains("Provisioner ICA"));
        }
        assert_eq!(cn(sim.root_der()), ROOT_CN);
    }

    #[test]
    fn chain_verifies_to_the_simulated_root_only() {
        let sim = SimNvidia::generate().unwrap();
        let dev = sim.issue_device(SimDeviceKind::Gpu, &[1; 48]).unwrap();
        let chain = dev.chain_der();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(
            tvm_certs::verify_chain(&chain, sim.root_der(), now)
                .unwrap()
                .len(),
            4
        );
        let other = SimNvidia::generate().unwrap();
        assert!(tvm_certs::verify_chain(&chain, other.root_der(), now).is_err());
    }

    #[test]
    fn leaf_carries_fwid_and_brom_the_identity() {
        let sim = SimNvidia::generate().unwrap();
        let fwid: [u8; 48] = core::array::from_fn(|i| i as u8);
        let dev = sim.issue_device(SimDeviceKind::Gpu, &fwid).unwrap();
        let chain = dev.chain_der();
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        let ext = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.23.133.5.4.1")
            .unwrap();
        assert!(ext.value.ends_with(&fwid));
        assert_eq!(ext.value[ext.value.len() - 50..][..2], [0x04, 48]);
        assert!(cn(&chain[0]).contains("GH100"));
        let (_, brom) = X509Certificate::from_der(&chain[1]).unwrap();
        let serial = brom
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(serial, dev.identity());
        assert_eq!(dev.identity().len(), 18);
        assert!(dev.identity().starts_with("41"));
        assert_eq!(hex::encode(dev.pdi()), dev.identity()[2..]);
        assert_eq!(dev.fwid(), &fwid);

        let sig = dev.sign(b"hello").unwrap();
        let key = UnparsedPublicKey::new(
            &ECDSA_P384_SHA384_FIXED,
            leaf.public_key().subject_public_key.data.as_ref(),
        );
        key.verify(b"hello", &sig).unwrap();
        assert_eq!(
            dev.leaf_key().public_key().as_ref(),
            leaf.public_key().subject_public_key.data.as_ref()
        );

        let other = sim.issue_device(SimDeviceKind::Gpu, &fwid).unwrap();
        assert_ne!(other.identity(), dev.identity());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "tvm-sim-nvidia-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        let sim = SimNvidia::generate().unwrap();
        sim.save(&dir).unwrap();
        for (cert, key) in FILES {
            assert!(cert.starts_with("nvidia-") && key.starts_with("nvidia-"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        let loaded = SimNvidia::load(&dir).unwrap();
        assert_eq!(loaded.root_der(), sim.root_der());
        assert_eq!(SimNvidia::load_root_der(&dir).unwrap(), sim.root_der());
        for (a, b) in loaded.cas().iter().zip(sim.cas()) {
            assert_eq!(a.der, b.der);
        }
        // The loaded CAs still issue devices that chain to the same root.
        let dev = loaded
            .issue_device(SimDeviceKind::Switch, &[3; 48])
            .unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        tvm_certs::verify_chain(&dev.chain_der(), sim.root_der(), now).unwrap();

        // A mismatched key is refused.
        fs::copy(dir.join(FILES[1].1), dir.join(FILES[0].1)).unwrap();
        assert!(matches!(
            SimNvidia::load(&dir),
            Err(SimNvidiaError::Load { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
