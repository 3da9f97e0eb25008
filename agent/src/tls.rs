//! RA-TLS: the agent's TLS key is made in memory at start and never leaves
//! the VM; its certificate is self-signed, and what makes it trustworthy is
//! that the SHA-256 of its SubjectPublicKeyInfo is in the claims the TEE
//! quote binds. A validator compares the key its TLS connection saw with
//! the attested one.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use sha2::{Digest, Sha256};

pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
    pub spki_sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the agent's TLS key or certificate: {0}")]
    Generate(String),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(String),
}

impl TlsIdentity {
    /// A fresh P-256 key and a self-signed certificate naming `names`.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = KeyPair::generate().map_err(g)?;
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
            key_der: key.serialize_der(),
            spki_sha256,
        })
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_hash_is_the_certificates_key() {
        let t = TlsIdentity::generate(&["127.0.0.1".into(), "cvm.example".into()]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&t.cert_der).unwrap();
        let spki: [u8; 32] = Sha256::digest(cert.public_key().raw).into();
        assert_eq!(spki, t.spki_sha256);
        assert!(t.server_config().is_ok());
        let other = TlsIdentity::generate(&[]).unwrap();
        assert_ne!(other.spki_sha256, t.spki_sha256);
    }
}
