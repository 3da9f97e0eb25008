//! Path validation for the short, fixed chains of hardware vendors (NVIDIA
//! device and RIM chains): leaf first, each certificate signed by the next,
//! the last one signed by (or equal to) a pinned root, every one valid at the
//! given time, every issuer a CA.

use x509_parser::prelude::{FromDer, X509Certificate};

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
        if cert.verify_signature(Some(issuer.public_key())).is_err() {
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
