//! The roots every hardware evidence chain must end in.

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::pem::Pem;

/// Intel SGX Root CA (DER), the anchor of every DCAP quote (SGX and TDX).
const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("../anchors/intel_sgx_root_ca.der");
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("trust anchor {name} does not match its pin: SHA-256 is {actual}, pinned {pinned}")]
    PinMismatch {
        name: String,
        actual: String,
        pinned: &'static str,
    },
    #[error("trust anchor {name} is not a PEM pair of ASK/ASVK then ARK: {reason}")]
    Malformed { name: String, reason: String },
}

fn check_pin(name: &str, der: &[u8], pinned: &'static str) -> Result<(), AnchorError> {
    let actual = hex::encode(Sha256::digest(der));
    if actual != pinned {
        return Err(AnchorError::PinMismatch {
            name: name.to_string(),
            actual,
            pinned,
        });
    }
    Ok(())
}

/// The Intel SGX Root CA, checked against its pin.
pub fn intel_sgx_root() -> Result<&'static [u8], AnchorError> {
    check_pin(
        "Intel SGX Root CA",
        INTEL_SGX_ROOT_CA,
        INTEL_SGX_ROOT_CA_SHA256,
    )?;
    Ok(INTEL_SGX_ROOT_CA)
}

/// AMD EPYC generations with SEV-SNP.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum AmdProduct {
    #[serde(alias = "milan")]
    Milan,
    #[serde(alias = "genoa")]
    Genoa,
    #[serde(alias = "turin")]
    Turin,
}

impl AmdProduct {
    pub const ALL: [AmdProduct; 3] = [AmdProduct::Milan, AmdProduct::Genoa, AmdProduct::Turin];

    /// The name AMD's KDS and certificates use.
    pub fn name(&self) -> &'static str {
        match self {
            AmdProduct::Milan => "Milan",
            AmdProduct::Genoa => "Genoa",
            AmdProduct::Turin => "Turin",
        }
    }
}

impl fmt::Display for AmdProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which endorsement key signed an SNP report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AmdSigner {
    /// Versioned Chip Endorsement Key: per chip and TCB, issued by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key: per cloud provider, issued by the ASVK.
    Vlek,
}

impl fmt::Display for AmdSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmdSigner::Vcek => "VCEK",
            AmdSigner::Vlek => "VLEK",
        })
    }
}

/// AMD's root (ARK) and intermediate (ASK for VCEKs, ASVK for VLEKs), DER.
#[derive(Clone, PartialEq, Eq)]
pub struct AmdCa {
    pub product: AmdProduct,
    pub signer: AmdSigner,
    pub ark: Vec<u8>,
    pub ask: Vec<u8>,
}

impl fmt::Debug for AmdCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmdCa({} {})", self.product, self.signer)
    }
}

struct AmdAnchor {
    product: AmdProduct,
    signer: AmdSigner,
    pem: &'static [u8],
    ask_sha256: &'static str,
    ark_sha256: &'static str,
}

const ARK_MILAN: &str = "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd";
const ARK_GENOA: &str = "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1";
const ARK_TURIN: &str = "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a";

const AMD_ANCHORS: [AmdAnchor; 6] = [
    AmdAnchor {
        product: AmdProduct::Milan,
        signer: AmdSigner::Vcek,
        pem: include_bytes!("../anchors/amd_ask_ark_milan.pem"),
        ask_sha256: "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
        ark_sha256: ARK_MILAN,
    },
    AmdAnchor {
        product: AmdProduct::Milan,
        signer: AmdSigner::Vlek,
        pem: include_bytes!("../anchors/amd_ask_ark_milan_vlek.pem"),
        ask_sha256: "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
        ark_sha256: ARK_MILAN,
    },
    AmdAnchor {
        product: AmdProduct::Genoa,
        signer: AmdSigner::Vcek,
        pem: include_bytes!("../anchors/amd_ask_ark_genoa.pem"),
        ask_sha256: "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
        ark_sha256: ARK_GENOA,
    },
    AmdAnchor {
        product: AmdProduct::Genoa,
        signer: AmdSigner::Vlek,
        pem: include_bytes!("../anchors/amd_ask_ark_genoa_vlek.pem"),
        ask_sha256: "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
        ark_sha256: ARK_GENOA,
    },
    AmdAnchor {
        product: AmdProduct::Turin,
        signer: AmdSigner::Vcek,
        pem: include_bytes!("../anchors/amd_ask_ark_turin_vcek.pem"),
        ask_sha256: "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
        ark_sha256: ARK_TURIN,
    },
    AmdAnchor {
        product: AmdProduct::Turin,
        signer: AmdSigner::Vlek,
        pem: include_bytes!("../anchors/amd_ask_ark_turin_vlek.pem"),
        ask_sha256: "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
        ark_sha256: ARK_TURIN,
    },
];

/// A PEM bundle that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad PEM: {0}")]
pub struct PemError(String);

/// Split a PEM bundle into DER certificates, in file order.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    let mut out = Vec::new();
    for p in Pem::iter_from_buffer(pem) {
        let p = p.map_err(|e| PemError(e.to_string()))?;
        if p.label == "CERTIFICATE" {
            out.push(p.contents);
        }
    }
    Ok(out)
}

/// The pinned AMD CA for a product and signer kind.
pub fn amd_ca(product: AmdProduct, signer: AmdSigner) -> Result<AmdCa, AnchorError> {
    let a = AMD_ANCHORS
        .iter()
        .find(|a| a.product == product && a.signer == signer)
        .ok_or_else(|| AnchorError::Malformed {
            name: format!("{product} {signer}"),
            reason: "no such anchor".into(),
        })?;
    let name = format!("AMD {product} {signer} CA");
    let certs = pem_certificates(a.pem).map_err(|reason| AnchorError::Malformed {
        name: name.clone(),
        reason: reason.to_string(),
    })?;
    let [ask, ark] = <[Vec<u8>; 2]>::try_from(certs).map_err(|v| AnchorError::Malformed {
        name: name.clone(),
        reason: format!("{} certificates, expected 2", v.len()),
    })?;
    check_pin(&format!("{name} intermediate"), &ask, a.ask_sha256)?;
    check_pin(&format!("{name} root (ARK)"), &ark, a.ark_sha256)?;
    Ok(AmdCa {
        product,
        signer,
        ark,
        ask,
    })
}

/// True when `der` is the pinned ARK of some product (used to name a wrong root).
pub fn is_pinned_ark(der: &[u8]) -> Option<AmdProduct> {
    let h = hex::encode(Sha256::digest(der));
    AMD_ANCHORS
        .iter()
        .find(|a| a.ark_sha256 == h)
        .map(|a| a.product)
}

/// NVIDIA Device Identity CA (P-384): the root of every GPU and NVSwitch
/// device certificate chain.
const NVIDIA_DEVICE_ROOT: &[u8] = include_bytes!("../anchors/nvidia_device_identity_root.der");
pub const NVIDIA_DEVICE_ROOT_SHA256: &str =
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48";

/// NVIDIA CoRIM signing Root CA: the root of the RIM (reference value) signers.
const NVIDIA_RIM_ROOT: &[u8] = include_bytes!("../anchors/nvidia_rim_root.der");
pub const NVIDIA_RIM_ROOT_SHA256: &str =
    "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1";

/// The NVIDIA Device Identity CA, checked against its pin.
pub fn nvidia_device_root() -> Result<&'static [u8], AnchorError> {
    check_pin(
        "NVIDIA Device Identity CA",
        NVIDIA_DEVICE_ROOT,
        NVIDIA_DEVICE_ROOT_SHA256,
    )?;
    Ok(NVIDIA_DEVICE_ROOT)
}

/// The NVIDIA CoRIM signing Root CA, checked against its pin.
pub fn nvidia_rim_root() -> Result<&'static [u8], AnchorError> {
    check_pin(
        "NVIDIA CoRIM signing Root CA",
        NVIDIA_RIM_ROOT,
        NVIDIA_RIM_ROOT_SHA256,
    )?;
    Ok(NVIDIA_RIM_ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn all_anchors_load_and_match_their_pins() {
        let intel = intel_sgx_root().unwrap();
        let (_, cert) = X509Certificate::from_der(intel).unwrap();
        assert!(cert.subject().to_string().contains("Intel SGX Root CA"));
        let (_, nv) = X509Certificate::from_der(nvidia_device_root().unwrap()).unwrap();
        assert!(nv
            .subject()
            .to_string()
            .contains("NVIDIA Device Identity CA"));
        let (_, rim) = X509Certificate::from_der(nvidia_rim_root().unwrap()).unwrap();
        assert!(rim
            .subject()
            .to_string()
            .contains("NVIDIA CoRIM signing Root CA"));
        for p in AmdProduct::ALL {
            for s in [AmdSigner::Vcek, AmdSigner::Vlek] {
                let ca = amd_ca(p, s).unwrap();
                let (_, ark) = X509Certificate::from_der(&ca.ark).unwrap();
                let (_, ask) = X509Certificate::from_der(&ca.ask).unwrap();
                assert!(
                    ark.subject()
                        .to_string()
                        .contains(&format!("ARK-{}", p.name())),
                    "{ark:?}"
                );
                let want = match s {
                    AmdSigner::Vcek => format!("SEV-{}", p.name()),
                    AmdSigner::Vlek => format!("SEV-VLEK-{}", p.name()),
                };
                assert!(
                    ask.subject().to_string().contains(&want),
                    "{}",
                    ask.subject()
                );
                assert_eq!(is_pinned_ark(&ca.ark), Some(p));
            }
        }
    }

    #[test]
    fn a_changed_anchor_fails_its_pin() {
        let mut der = INTEL_SGX_ROOT_CA.to_vec();
        der[100] ^= 1;
        assert!(matches!(
            check_pin("x", &der, INTEL_SGX_ROOT_CA_SHA256),
            Err(AnchorError::PinMismatch { .. })
        ));
        assert_eq!(is_pinned_ark(&der), None);
    }
}
