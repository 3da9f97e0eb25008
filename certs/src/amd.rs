//! AMD's certificate revocation lists (one per product and key kind, signed by
//! the ARK with RSA-PSS): checked against the pinned ARK, with their dates and
//! the serial numbers they revoke.

use x509_parser::prelude::{parse_x509_crl, FromDer, X509Certificate};

use crate::anchors::{self, AmdProduct, AmdSigner};

/// An SNP TCB version: the security patch level of each firmware component,
/// as reports carry it, VCEKs are issued for it, and policies set minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// Turin and later only.
    #[serde(default)]
    pub fmc: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCrl {
    pub this_update: i64,
    pub next_update: i64,
    /// Revoked serial numbers, big-endian bytes without leading zeros.
    pub revoked: Vec<Vec<u8>>,
}

fn trim(serial: &[u8]) -> Vec<u8> {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    serial[first..].to_vec()
}

/// Why an AMD CRL is not usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Anchor(#[from] anchors::AnchorError),
    #[error("ARK: {0}")]
    Ark(String),
    #[error("the AMD CRL is not a DER CRL: {0}")]
    NotCrl(String),
    #[error("the CRL is not signed by AMD's {0} ARK")]
    NotSignedByArk(AmdProduct),
    #[error("the AMD CRL has no nextUpdate")]
    NoNextUpdate,
}

impl AmdCrl {
    /// Parse a DER CRL and check that AMD's pinned ARK for `product` signed it.
    pub fn check(der: &[u8], product: AmdProduct, signer: AmdSigner) -> Result<Self, CrlError> {
        let ca = anchors::amd_ca(product, signer)?;
        let (_, ark) =
            X509Certificate::from_der(&ca.ark).map_err(|e| CrlError::Ark(e.to_string()))?;
        let (_, crl) = parse_x509_crl(der).map_err(|e| CrlError::NotCrl(e.to_string()))?;
        crl.verify_signature(ark.public_key())
            .map_err(|_| CrlError::NotSignedByArk(product))?;
        let next_update = crl.next_update().ok_or(CrlError::NoNextUpdate)?.timestamp();
        Ok(AmdCrl {
            this_update: crl.last_update().timestamp(),
            next_update,
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| trim(r.raw_serial()))
                .collect(),
        })
    }

    /// True when the certificate (DER) is listed.
    pub fn revokes(&self, cert_der: &[u8]) -> bool {
        X509Certificate::from_der(cert_der)
            .map(|(_, c)| self.revoked.contains(&trim(c.raw_serial())))
            .unwrap_or(false)
    }
}
