//! Path validation for the short, fixed chains of hardware vendors (NVIDIA
//! device and RIM chains): leaf first, each certificate signed by the next,
//! the last one signed by (or equal to) a pinned root, every one valid at the
//! given time, every issuer a CA.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Signatures already found valid: SHA-256(certificate ‖ issuer key). A
/// signature's validity depends on nothing but those bytes, so remembering it
/// is safe; it spares the P-384 work for the intermediates every GPU shares
/// and for devices attested again. Bounded: cleared when full.
fn verified_signatures() -> &'static Mutex<HashSet<[u8; 32]>> {
    static CACHE: OnceLock<Mutex<HashSet<[u8; 32]>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashSet::new()))
}
const MAX_REMEMBERED: usize = 16_384;

/// Forget every remembered signature (to measure the cold path).
pub fn forget_verified_signatures() {
    if let Ok(mut seen) = verified_signatures().lock() {
        seen.clear();
    }
}

fn signed_by(cert: &X509Certificate<'_>, der: &[u8], issuer: &X509Certificate<'_>) -> bool {
    let key = issuer.public_key().raw;
    let mut h = Sha256::new();
    h.update((der.len() as u64).to_be_bytes());
    h.update(der);
    h.update(key);
    let id: [u8; 32] = h.finalize().into();
    if let Ok(seen) = verified_signatures().lock() {
        if seen.contains(&id) {
            return true;
        }
    }
    let ok = cert.verify_signature(Some(issuer.public_key())).is_ok();
    if ok {
        if let Ok(mut seen) = verified_signatures().lock() {
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            seen.insert(id);
        }
    }
    ok
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "the chain holds only the root; it needs the device's leaf certificate and its issuers up to the root"
    )]
    OnlyRoot,
    #[error("the chain is empty")]
    Empty,
    #[error("certificate {index} of the chain is not valid DER X.509: {reason}")]
    Malformed { index: usize, reason: String },
    #[error(
        "certificate {index} ({subject}) is not signed by the next one ({issuer}): the chain is broken or a certificate is missing (its issuer should be {expected_issuer})"
    )]
    BadSignature {
        index: usize,
        subject: String,
        issuer: String,
        expected_issuer: String,
    },
    #[error("the last certificate ({subject}) is not issued by the pinned {root}")]
    WrongRoot { subject: String, root: String },
    #[error("certificate {index} ({subject}) expired at {not_after}")]
    Expired {
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("certificate {index} ({subject}) is not valid before {not_before}")]
    NotYetValid {
        index: usize,
        subject: String,
        not_before: String,
    },
    #[error("certificate {index} ({subject}) issues another but is not a CA")]
    NotCa { index: usize, subject: String },
}

/// Verify `chain` (DER, leaf first) up to `root` at Unix time `at`. The root
/// itself may end the chain or be left out. Returns the chain without the root.
pub fn verify_chain<'c>(
    chain: &'c [Vec<u8>],
    root: &[u8],
    at: i64,
) -> Result<&'c [Vec<u8>], ChainError> {
    let chain = match chain.split_last() {
        None => return Err(ChainError::Empty),
        Some((last, rest)) if last.as_slice() == root => {
            if rest.is_empty() {
                return Err(ChainError::OnlyRoot);
            }
            rest
        }
        Some(_) => chain,
    };
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(index, der)| match X509Certificate::from_der(der) {
            Ok(([], c)) => Ok(c),
            Ok(_) => Err(ChainError::Malformed {
                index,
                reason: "trailing bytes after the certificate".into(),
            }),
            Err(e) => Err(ChainError::Malformed {
                index,
                reason: e.to_string(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (_, root_cert) = X509Certificate::from_der(root).map_err(|e| ChainError::Malformed {
        index: chain.len(),
        reason: format!("pinned root: {e}"),
    })?;
    for (index, cert) in parsed.iter().enumerate() {
        let subject = cert.subject().to_string();
        let issuer = parsed.get(index + 1).unwrap_or(&root_cert);
        if !signed_by(cert, &chain[index], issuer) {
            if index + 1 == parsed.len() {
                return Err(ChainError::WrongRoot {
                    subject,
                    root: root_cert.subject().to_string(),
                });
            }
            return Err(ChainError::BadSignature {
                index,
                subject,
                issuer: issuer.subject().to_string(),
                expected_issuer: cert.issuer().to_string(),
            });
        }
        if index > 0 && !cert.is_ca() {
            return Err(ChainError::NotCa { index, subject });
        }
        let v = cert.validity();
        if at < v.not_before.timestamp() {
            return Err(ChainError::NotYetValid {
                index,
                subject,
                not_before: v.not_before.to_string(),
            });
        }
        if at > v.not_after.timestamp() {
            return Err(ChainError::Expired {
                index,
                subject,
                not_after: v.not_after.to_string(),
            });
        }
    }
    let v = root_cert.validity();
    if at > v.not_after.timestamp() || at < v.not_before.timestamp() {
        return Err(ChainError::Expired {
            index: chain.len(),
            subject: root_cert.subject().to_string(),
            not_after: v.not_after.to_string(),
        });
    }
    Ok(chain)
}
