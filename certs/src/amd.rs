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
        // Strict DER (the der crate refuses non-canonical encodings and
        // trailing bytes), and RFC 5280 5.1.1.2: the unsigned outer
        // algorithm equals the signed one. x509-parser, which verifies the
        // signature below with the signed one, checks neither.
        let strict = <x509_cert::crl::CertificateList as der::Decode>::from_der(der)
            .map_err(|e| CrlError::NotCrl(e.to_string()))?;
        if strict.signature_algorithm != strict.tbs_cert_list.signature {
            return Err(CrlError::NotCrl(
                "its outer signature algorithm differs from the signed one".into(),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// openpcc's archive of AMD KDS answers (testdata/README.md): among
    /// them AMD's real Milan and Genoa VCEK CRLs, as PEM sections.
    const ARCHIVE: &str = include_str!("../../testdata/snp/openpcc_sev_certificates.txt");

    fn crl(name: &str) -> Vec<u8> {
        let head = format!("-- {name} --\n");
        let start = ARCHIVE.find(&head).expect("section") + head.len();
        let rest = &ARCHIVE[start..];
        let end = rest.find("\n-- ").unwrap_or(rest.len());
        let (_, pem) = x509_parser::pem::parse_x509_pem(&rest.as_bytes()[..end]).expect("PEM");
        pem.contents
    }

    #[test]
    fn amds_real_crls_verify_under_the_pinned_arks_with_their_dates_and_serials() {
        let milan = AmdCrl::check(
            &crl("test_amd_milan_crl.pem"),
            AmdProduct::Milan,
            AmdSigner::Vcek,
        )
        .expect("Milan CRL");
        // CRL #6: 2025-05-06T12:39:06Z .. 2026-05-12T00:00:00Z, nothing revoked.
        assert_eq!(
            (milan.this_update, milan.next_update),
            (1746535146, 1778544000)
        );
        assert!(milan.revoked.is_empty());
        let genoa = AmdCrl::check(
            &crl("test_amd_genoa_crl.pem"),
            AmdProduct::Genoa,
            AmdSigner::Vcek,
        )
        .expect("Genoa CRL");
        // CRL #4: 2024-10-23T04:36:24Z .. 2025-11-03T01:00:00Z, revoking the
        // earlier Genoa ASK (serial 0x020001; the pinned one is 0x020002).
        assert_eq!(
            (genoa.this_update, genoa.next_update),
            (1729658184, 1762131600)
        );
        assert_eq!(genoa.revoked, vec![vec![0x02, 0x00, 0x01]]);
        let ask = anchors::amd_ca(AmdProduct::Genoa, AmdSigner::Vcek)
            .unwrap()
            .ask;
        assert!(
            !genoa.revokes(&ask),
            "the pinned Genoa ASK is not the revoked one"
        );
        // Each product's CRL is refused under another product's ARK.
        for (name, other) in [
            ("test_amd_milan_crl.pem", AmdProduct::Genoa),
            ("test_amd_milan_crl.pem", AmdProduct::Turin),
            ("test_amd_genoa_crl.pem", AmdProduct::Milan),
        ] {
            assert!(
                matches!(
                    AmdCrl::check(&crl(name), other, AmdSigner::Vcek),
                    Err(CrlError::NotSignedByArk(p)) if p == other
                ),
                "{name} under {other}"
            );
        }
        // Every byte flipped is refused: the signed part fails the signature,
        // the rest does not parse or is not AMD's signature.
        let der = crl("test_amd_milan_crl.pem");
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            assert!(
                AmdCrl::check(&bad, AmdProduct::Milan, AmdSigner::Vcek).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }
}
