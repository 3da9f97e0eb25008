//! The CVM's identity and RA-TLS key, one and the same: a P-256 key made
//! inside the VM, never chosen by the miner and never leaving the VM. The
//! CVM id is the SHA-256 of its SubjectPublicKeyInfo; the claims carry it,
//! the TEE quote binds the claims, and a validator compares it with the key
//! its TLS connection saw, so the id is proven by possession of the key in
//! the same exchange. The certificate is self-signed: what makes it
//! trustworthy is the quote, not an issuer.
//!
//! The key is kept only in memory, or in a file on the VM's tmpfs (`/run`,
//! `cvm_key_file`) so that an agent restart keeps the id until the VM reboots.

use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use sha2::{Digest, Sha256};
use tvm_protocol::hexbytes::Digest32;

pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    key_der: zeroize::Zeroizing<Vec<u8>>,
    /// The CVM id: SHA-256 of the key's SubjectPublicKeyInfo (DER).
    pub spki_sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the agent's TLS key or certificate: {0}")]
    Generate(String),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(String),
    #[error("{path} is not a CVM key (PKCS#8 P-256): remove it and restart to make a new one")]
    Malformed { path: String },
    #[error("cannot {op} the CVM key file {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl TlsIdentity {
    /// A fresh P-256 key and a self-signed certificate naming `names`.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        Self::with_key(key, names)
    }

    /// The key in `path`, or a new one stored there (mode 0600); the
    /// certificate is made anew each start.
    pub fn load_or_generate(path: &Path, names: &[String]) -> Result<Self, TlsError> {
        let io = |op, source| TlsError::Io {
            op,
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                let key = KeyPair::try_from(bytes.as_slice())
                    .ok()
                    .filter(|k| k.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256)
                    .ok_or_else(|| TlsError::Malformed {
                        path: path.display().to_string(),
                    })?;
                Self::with_key(key, names)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
                }
                let der = zeroize::Zeroizing::new(key.serialize_der());
                write_private(path, &der).map_err(|e| io("write", e))?;
                Self::with_key(key, names)
            }
            Err(e) => Err(io("read", e)),
        }
    }

    fn with_key(key: KeyPair, names: &[String]) -> Result<Self, TlsError> {
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "tvm-agent RA-TLS (key attested in the TEE quote)",
        );
        params.distinguished_name = dn;
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into().map_err(g)?),
                });
        }
        let cert = params.self_signed(&key).map_err(g)?;
        let spki_sha256 = Sha256::digest(key.subject_public_key_info()).into();
        Ok(TlsIdentity {
            cert_der: cert.der().to_vec(),
            key_der: zeroize::Zeroizing::new(key.serialize_der()),
            spki_sha256,
        })
    }

    /// The CVM id the claims carry.
    pub fn cvm_id(&self) -> Digest32 {
        Digest32(self.spki_sha256)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.to_vec().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone().into()], key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Write a secret readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_hash_is_the_certificates_key() {
        let t = TlsIdentity::generate(&["127.0.0.1".into(), "cvm.example".into()]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&t.cert_der).unwrap();
        let spki: [u8; 32] = Sha256::digest(cert.public_key().raw).into();
        assert_eq!(spki, t.spki_sha256);
        assert_eq!(t.cvm_id().0, spki);
        assert!(t.server_config().is_ok());
        let other = TlsIdentity::generate(&[]).unwrap();
        assert_ne!(other.spki_sha256, t.spki_sha256);
    }

    #[test]
    fn ids_are_fresh_per_vm_and_kept_across_restarts_via_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run/tvm/cvm.key");
        let first = TlsIdentity::load_or_generate(&p, &[]).unwrap();
        let again = TlsIdentity::load_or_generate(&p, &["10.0.0.1".into()]).unwrap();
        assert_eq!(first.cvm_id(), again.cvm_id());
        assert!(again.server_config().is_ok());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let elsewhere = TlsIdentity::load_or_generate(&dir.path().join("other.key"), &[]).unwrap();
        assert_ne!(elsewhere.cvm_id(), first.cvm_id());
        std::fs::write(&p, b"junk").unwrap();
        let e = TlsIdentity::load_or_generate(&p, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("remove it"), "{e}");
        // A PKCS#8 key of another kind (Ed25519, the old CVM key) is refused too.
        let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap();
        std::fs::write(&p, ed.as_ref()).unwrap();
        assert!(matches!(
            TlsIdentity::load_or_generate(&p, &[]),
            Err(TlsError::Malformed { .. })
        ));
    }
}
