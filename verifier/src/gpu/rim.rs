//! NVIDIA Reference Integrity Manifests: SWID tags (ISO 19770-2) signed with
//! enveloped XML-DSig (ECDSA P-384, C14N 1.1), the signer chain embedded in
//! X509Data up to the NVIDIA CoRIM signing Root CA. They hold the golden
//! values of a driver or VBIOS (or NVSwitch firmware) version.
//!
//! The XML signature is checked by `bergshamra` (pure Rust, no libxml2 or
//! OpenSSL; C14N 1.1 and enveloped transforms as NVIDIA uses them), with the
//! leaf as the only trusted key and XML-wrapping protection on, and only after
//! we validated the embedded chain ourselves against the pinned root.

use base64::Engine as _;
use bergshamra_dsig::verify::{verify_document_with_source, VerifyResult};
use bergshamra_dsig::DsigContext;
use bergshamra_keys::KeysManager;
use serde::Serialize;
use tvm_certs::{anchors, verify_chain, ChainError};
use uppsala::{Document, NodeId};

use crate::gpu::spdm::{MeasurementReport, DIGEST_LEN};

/// A RIM is a few tens of KB; bound the parser's work.
pub const MAX_RIM_BYTES: usize = 1024 * 1024;

const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RimError {
    #[error("RIM is not a well-formed NVIDIA SWID tag: {0}")]
    Malformed(String),
    #[error("RIM signer chain: {0}")]
    Chain(#[from] ChainError),
    #[error("RIM XML signature does not verify: {0}")]
    Signature(String),
}

impl RimError {
    /// The signer chain is fine but not at this time (e.g. past its notAfter).
    pub fn is_expired(&self) -> bool {
        matches!(
            self,
            RimError::Chain(ChainError::Expired { .. } | ChainError::NotYetValid { .. })
        )
    }
}

/// Which component a RIM describes, told from its version's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    /// The GPU driver (`550.90.07`).
    Driver,
    /// GPU VBIOS or NVSwitch firmware (`96.00.74.00.1A`).
    Vbios,
}

impl RimKind {
    pub fn name(&self) -> &'static str {
        match self {
            RimKind::Driver => "driver",
            RimKind::Vbios => "vbios",
        }
    }
}

/// One golden measurement: RIM index i is SPDM block i + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Golden {
    pub index: u16,
    pub active: bool,
    pub name: String,
    /// Any of these values is acceptable.
    pub alternatives: Vec<[u8; DIGEST_LEN]>,
}

/// A RIM whose signature and chain verified. Only [`Rim::verify`] makes
/// one, so reference values cannot be handed to the appraisal unverified.
#[derive(Debug, Clone)]
pub struct Rim {
    pub(crate) kind: RimKind,
    pub(crate) tag_id: String,
    pub(crate) product: String,
    pub(crate) version: String,
    pub(crate) golden: Vec<Golden>,
    pub(crate) signer_chain: Vec<Vec<u8>>,
}

impl Rim {
    pub fn kind(&self) -> RimKind {
        self.kind
    }

    pub fn tag_id(&self) -> &str {
        &self.tag_id
    }

    /// `Meta@product`, e.g. GH100.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// `Meta@colloquialVersion`, the driver or VBIOS version it describes.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn golden(&self) -> &[Golden] {
        &self.golden
    }

    /// The signer chain, leaf first, root excluded (DER).
    pub fn signer_chain(&self) -> &[Vec<u8>] {
        &self.signer_chain
    }

    /// Parse a RIM, validate its signer chain to the pinned NVIDIA RIM root
    /// at `at` and verify its XML signature.
    pub fn verify(xml: &[u8], at: i64) -> Result<Rim, RimError> {
        if xml.len() > MAX_RIM_BYTES {
            return Err(RimError::Malformed(format!(
                "{} bytes, more than the {MAX_RIM_BYTES}-byte limit",
                xml.len()
            )));
        }
        let text =
            std::str::from_utf8(xml).map_err(|e| RimError::Malformed(format!("not UTF-8: {e}")))?;
        let doc = uppsala::parse(text).map_err(|e| RimError::Malformed(e.to_string()))?;
        let root = doc
            .document_element()
            .ok_or_else(|| RimError::Malformed("no root element".into()))?;
        if !is(&doc, root, SWID_NS, "SoftwareIdentity") {
            return Err(RimError::Malformed(
                "the root element is not a SWID SoftwareIdentity".into(),
            ));
        }
        let signatures = descendants(&doc, root, DSIG_NS, "Signature");
        let [signature] = signatures.as_slice() else {
            return Err(RimError::Malformed(format!(
                "{} XML signatures, expected exactly one",
                signatures.len()
            )));
        };
        if doc.parent(*signature) != Some(root) {
            return Err(RimError::Malformed(
                "the signature is not a child of SoftwareIdentity".into(),
            ));
        }

        let chain = descendants(&doc, *signature, DSIG_NS, "X509Certificate")
            .into_iter()
            .map(|n| {
                let b64: String = doc
                    .text_content_deep(n)
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| RimError::Malformed(format!("X509Certificate is not base64: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rim_root =
            anchors::nvidia_rim_root().map_err(|e| RimError::Malformed(e.to_string()))?;
        let chain = verify_chain(&chain, rim_root, at)?.to_vec();

        // The leaf is the only key bergshamra may use; the document's own
        // KeyInfo cannot introduce another.
        let leaf = bergshamra_keys::loader::load_x509_cert_der(&chain[0])
            .map_err(|e| RimError::Signature(format!("signer key: {e}")))?;
        let mut keys = KeysManager::new();
        keys.add_key(leaf);
        // Certificate times are ours to check (at `at`, above).
        let ctx = DsigContext::new(keys).with_skip_time_checks(true);
        match verify_document_with_source(&ctx, &doc, Some(text)) {
            Ok(VerifyResult::Valid { references, .. }) => {
                // One reference, to the whole document (enveloped).
                if references.len() != 1 || !references[0].uri.is_empty() {
                    return Err(RimError::Signature(
                        "the signature does not cover exactly the whole document".into(),
                    ));
                }
            }
            Ok(VerifyResult::Invalid { reason }) => return Err(RimError::Signature(reason)),
            Err(e) => return Err(RimError::Signature(e.to_string())),
        }

        let meta = children(&doc, root, SWID_NS, "Meta")
            .into_iter()
            .next()
            .ok_or_else(|| RimError::Malformed("no Meta element".into()))?;
        let attr = |n: NodeId, a: &str| doc.get_attribute(n, a).map(str::to_string);
        let version = attr(meta, "colloquialVersion")
            .ok_or_else(|| RimError::Malformed("Meta has no colloquialVersion".into()))?;
        let kind = if version.split('.').count() == 5 {
            RimKind::Vbios
        } else {
            RimKind::Driver
        };
        let mut golden = Vec::new();
        for payload in children(&doc, root, SWID_NS, "Payload") {
            for res in children(&doc, payload, SWID_NS, "Resource") {
                if doc.get_attribute(res, "type") != Some("Measurement") {
                    continue;
                }
                golden.push(parse_golden(&doc, res)?);
            }
        }
        if golden.is_empty() {
            return Err(RimError::Malformed("no Measurement resources".into()));
        }
        Ok(Rim {
            kind,
            tag_id: attr(root, "tagId").unwrap_or_default(),
            product: attr(meta, "product").unwrap_or_default(),
            version,
            golden,
            signer_chain: chain,
        })
    }

    /// The measurements the RIM says the device must report.
    pub fn active(&self) -> impl Iterator<Item = &Golden> {
        self.golden.iter().filter(|g| g.active)
    }
}

fn parse_golden(doc: &Document<'_>, res: NodeId) -> Result<Golden, RimError> {
    let bad = |m: String| RimError::Malformed(m);
    let get = |a: &str| doc.get_attribute(res, a);
    let index: u16 = get("index")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("a Measurement without a numeric index".into()))?;
    let active = match get("active") {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        other => return Err(bad(format!("measurement {index}: active is {other:?}"))),
    };
    let count: usize = get("alternatives")
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| bad(format!("measurement {index}: bad alternatives count")))?;
    let element = doc
        .element(res)
        .ok_or_else(|| bad(format!("measurement {index}: not an element")))?;
    let mut alternatives = Vec::with_capacity(count);
    for k in 0..count {
        let name = format!("Hash{k}");
        let v = element
            .get_attribute_ns(SHA384_NS, &name)
            .ok_or_else(|| bad(format!("measurement {index}: no SHA-384 {name}")))?;
        let bytes = hex::decode(v)
            .ok()
            .and_then(|b| <[u8; DIGEST_LEN]>::try_from(b).ok())
            .ok_or_else(|| bad(format!("measurement {index}: {name} is not 48 hex bytes")))?;
        alternatives.push(bytes);
    }
    Ok(Golden {
        index,
        active,
        name: get("name").unwrap_or_default().to_string(),
        alternatives,
    })
}

fn is(doc: &Document<'_>, n: NodeId, ns: &str, local: &str) -> bool {
    doc.element(n).is_some_and(|e| e.matches_name_ns(ns, local))
}

fn children(doc: &Document<'_>, n: NodeId, ns: &str, local: &str) -> Vec<NodeId> {
    doc.children(n)
        .into_iter()
        .filter(|c| is(doc, *c, ns, local))
        .collect()
}

fn descendants(doc: &Document<'_>, n: NodeId, ns: &str, local: &str) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut stack = vec![n];
    while let Some(x) = stack.pop() {
        if x != n && is(doc, x, ns, local) {
            out.push(x);
        }
        let mut kids = doc.children(x);
        kids.reverse();
        stack.extend(kids);
    }
    out
}

/// How a report compares with one RIM's version.
pub fn version_matches(rim: &Rim, report: &MeasurementReport) -> Result<String, String> {
    let reported = match rim.kind {
        RimKind::Driver => report.driver_version(),
        RimKind::Vbios => report.vbios_version(),
    };
    let Some(reported) = reported else {
        return Err(format!(
            "the report has no {} version to compare with the RIM's {}",
            rim.kind.name(),
            rim.version
        ));
    };
    if reported.eq_ignore_ascii_case(&rim.version) {
        Ok(reported)
    } else {
        Err(format!(
            "the report's {} version {reported} is not the RIM's {}: fetch the RIM for {reported}",
            rim.kind.name(),
            rim.version
        ))
    }
}

/// The outcome of comparing a report with its RIMs' golden values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Comparison {
    /// RIM indices (0-based) that matched one of their alternatives.
    pub matched: Vec<u16>,
    /// RIM indices whose value differs: (index, reported hex, first golden hex).
    pub mismatched: Vec<(u16, String, String)>,
    /// Active RIM indices the report has no block for.
    pub missing: Vec<u16>,
    /// Indices active in more than one RIM (ambiguous golden values).
    pub conflicting: Vec<u16>,
    /// Active indices not compared, and why.
    pub skipped: Vec<(u16, &'static str)>,
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty() && self.missing.is_empty() && self.conflicting.is_empty()
    }

    pub fn mismatched_indices(&self) -> Vec<u16> {
        self.mismatched.iter().map(|m| m.0).collect()
    }
}

/// RIM index 35 measures the NVDEC engine; NVIDIA's verifiers skip it when
/// the GPU reports NVDEC0 disabled (0x55).
const NVDEC_INDEX: u16 = 35;
const NVDEC_DISABLED: u8 = 0x55;

/// Compare every active golden measurement of `rims` with the report.
pub fn compare(report: &MeasurementReport, rims: &[&Rim]) -> Comparison {
    let mut c = Comparison::default();
    let mut seen = std::collections::BTreeSet::new();
    let nvdec_off =
        report.field(crate::gpu::spdm::field::NVDEC0_STATUS) == Some(&[NVDEC_DISABLED][..]);
    for rim in rims {
        for g in rim.active() {
            if !seen.insert(g.index) {
                c.conflicting.push(g.index);
                continue;
            }
            if g.index == NVDEC_INDEX && nvdec_off {
                c.skipped.push((g.index, "NVDEC0 is disabled"));
                continue;
            }
            let block = u8::try_from(g.index + 1).ok().and_then(|i| report.block(i));
            match block {
                None => c.missing.push(g.index),
                Some(b) if g.alternatives.iter().any(|a| a.as_slice() == b.value) => {
                    c.matched.push(g.index)
                }
                Some(b) => c.mismatched.push((
                    g.index,
                    hex::encode(&b.value),
                    g.alternatives.first().map(hex::encode).unwrap_or_default(),
                )),
            }
        }
    }
    c.matched.sort_unstable();
    c.mismatched.sort();
    c
}
