//! The collateral store: Intel PCS collateral per FMSPC and AMD VCEKs per chip
//! and TCB, fetched over HTTPS, cached on disk, checked against the pinned
//! roots whenever it is fetched or loaded, refreshed before it expires, and
//! exported/imported as one offline bundle that validators can share.
//!
//! During an outage the store keeps serving what it has; whether collateral
//! past its `nextUpdate` may still be used is the verifier's policy (grace).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::amd::AmdCrl;
pub use crate::amd::SnpTcb;
use crate::anchors::{self, AmdProduct, AmdSigner};
use crate::fetch::{FetchError, Fetcher};
use crate::intel;

/// Where collateral comes from. Base URLs are configurable so a PCCS or a
/// mirror can stand in for Intel and AMD.
#[path = "store_nvidia.rs"]
mod store_nvidia;
pub use store_nvidia::valid_rim_id;
#[path = "store_images.rs"]
mod store_images;
pub use store_images::{manifests_in_folders, FoundManifests, MANIFEST_REFRESH_SECONDS};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Intel PCS (or a PCCS speaking its v4 API).
    pub pcs_url: String,
    /// Intel SGX Root CA CRL.
    pub root_crl_url: String,
    /// AMD Key Distribution Service.
    pub kds_url: String,
    /// NVIDIA's OCSP responder (device and RIM certificates).
    pub nvidia_ocsp_url: String,
    /// NVIDIA's RIM service (`{url}/v1/rim/{id}`).
    pub nvidia_rim_url: String,
    /// Fetch again this long before `nextUpdate`.
    pub refresh_before_seconds: u64,
    pub timeout_seconds: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("collateral"),
            pcs_url: "https://api.trustedservices.intel.com".into(),
            root_crl_url: "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
                .into(),
            kds_url: "https://kdsintf.amd.com".into(),
            nvidia_ocsp_url: "https://ocsp.ndis.nvidia.com/".into(),
            nvidia_rim_url: "https://rim.attestation.nvidia.com".into(),
            refresh_before_seconds: 24 * 3600,
            timeout_seconds: 20,
        }
    }
}

pub use crate::intel::PckCa;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// From the disk cache, before its refresh time.
    Cache,
    /// Fetched now.
    Fetched,
    /// From the cache because fetching failed (the reason); may be past `nextUpdate`.
    StaleCache(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collateral cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{what} is not valid collateral: {reason}")]
    Invalid { what: String, reason: String },
    #[error("offline bundle: {0}")]
    Bundle(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write via a temporary file and rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

pub struct CollateralStore {
    cfg: StoreConfig,
    fetcher: Fetcher,
    intel_root: Vec<u8>,
    /// One fetch per item at a time, shared by all callers asking for it.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn valid_fmspc(fmspc: &str) -> bool {
    fmspc.len() == 12 && fmspc.bytes().all(|b| b.is_ascii_hexdigit())
}

impl CollateralStore {
    /// `extra_roots`: TLS roots to trust besides Mozilla's (e.g. a PCCS's).
    pub fn open(cfg: StoreConfig, extra_roots: &[Vec<u8>]) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        let fetcher = Fetcher::new(extra_roots, Duration::from_secs(cfg.timeout_seconds.max(1)))?;
        let intel_root = anchors::intel_sgx_root()
            .map_err(|e| StoreError::Invalid {
                what: "Intel SGX Root CA".into(),
                reason: e.to_string(),
            })?
            .to_vec();
        Ok(CollateralStore {
            cfg,
            fetcher,
            intel_root,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Requests sent to PCS/KDS so far (not counting those refused by backoff).
    pub fn requests_sent(&self) -> u64 {
        self.fetcher.requests_sent()
    }

    fn item_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn tdx_path(&self, fmspc: &str, ca: PckCa) -> PathBuf {
        self.cfg.dir.join("tdx").join(format!(
            "{}-{}.json",
            fmspc.to_ascii_uppercase(),
            ca.as_str()
        ))
    }

    /// Check collateral against the pinned Intel root: readable, dated, and
    /// every issuer and CRL signature chains to the root.
    fn check_tdx(&self, what: &str, c: &QuoteCollateralV3) -> Result<i64, StoreError> {
        let invalid = |e: intel::CollateralError| StoreError::Invalid {
            what: what.to_string(),
            reason: e.to_string(),
        };
        let next = intel::next_update(c).map_err(invalid)?;
        intel::check_issuers(c, &self.intel_root).map_err(invalid)?;
        Ok(next)
    }

    fn load_tdx(&self, fmspc: &str, ca: PckCa) -> Option<(QuoteCollateralV3, i64)> {
        let path = self.tdx_path(fmspc, ca);
        let data = std::fs::read(&path).ok()?;
        let c = intel::parse_collateral(&data).ok()?;
        // A cached file that no longer verifies is ignored, never used.
        let next = self.check_tdx(&path.display().to_string(), &c).ok()?;
        Some((c, next))
    }

    /// TDX collateral for a platform (FMSPC, 12 hex) as of `now` (Unix seconds).
    pub async fn tdx(
        &self,
        fmspc: &str,
        ca: PckCa,
        now: i64,
    ) -> Result<(QuoteCollateralV3, Source), StoreError> {
        if !valid_fmspc(fmspc) {
            return Err(StoreError::Invalid {
                what: format!("FMSPC {fmspc:?}"),
                reason: "an FMSPC is 12 hex characters".into(),
            });
        }
        let key = format!("tdx/{}/{}", fmspc.to_ascii_uppercase(), ca.as_str());
        let lock = self.item_lock(&key);
        let _one_at_a_time = lock.lock().await;
        let cached = self.load_tdx(fmspc, ca);
        if let Some((c, next)) = &cached {
            if now.saturating_add(self.cfg.refresh_before_seconds as i64) < *next {
                return Ok((c.clone(), Source::Cache));
            }
        }
        match self.fetch_tdx(fmspc, ca).await {
            Ok(c) => {
                let next = self.check_tdx(&format!("collateral fetched for FMSPC {fmspc}"), &c)?;
                // Never replace newer collateral with older (a stale mirror).
                if let Some((old, old_next)) = cached {
                    if old_next > next {
                        return Ok((old, Source::Cache));
                    }
                }
                let json = serde_json::to_vec(&c).map_err(|e| StoreError::Bundle(e.to_string()))?;
                write_atomic(&self.tdx_path(fmspc, ca), &json)?;
                Ok((c, Source::Fetched))
            }
            Err(e) => match cached {
                Some((c, _)) => Ok((c, Source::StaleCache(e.to_string()))),
                None => Err(e),
            },
        }
    }

    async fn fetch_tdx(&self, fmspc: &str, ca: PckCa) -> Result<QuoteCollateralV3, StoreError> {
        let pcs = self.cfg.pcs_url.trim_end_matches('/');
        let tcb = self
            .fetcher
            .get(&format!("{pcs}/tdx/certification/v4/tcb?fmspc={fmspc}"))
            .await?;
        let (tcb_info, tcb_sig) = signed_json(&tcb.body, "tcbInfo")?;
        let qe = self
            .fetcher
            .get(&format!("{pcs}/tdx/certification/v4/qe/identity"))
            .await?;
        let (qe_identity, qe_sig) = signed_json(&qe.body, "enclaveIdentity")?;
        let crl = self
            .fetcher
            .get(&format!(
                "{pcs}/sgx/certification/v4/pckcrl?ca={}&encoding=der",
                ca.as_str()
            ))
            .await?;
        let root_crl = self.fetcher.get(&self.cfg.root_crl_url).await?;
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain: chain_header(&crl.headers, "SGX-PCK-CRL-Issuer-Chain")?,
            root_ca_crl: root_crl.body,
            pck_crl: crl.body,
            tcb_info_issuer_chain: chain_header(&tcb.headers, "TCB-Info-Issuer-Chain")?,
            tcb_info,
            tcb_info_signature: tcb_sig,
            qe_identity_issuer_chain: chain_header(
                &qe.headers,
                "SGX-Enclave-Identity-Issuer-Chain",
            )?,
            qe_identity,
            qe_identity_signature: qe_sig,
            pck_certificate_chain: None,
        })
    }

    fn vcek_path(&self, product: AmdProduct, hwid: &[u8], tcb: &SnpTcb) -> PathBuf {
        let fmc = tcb.fmc.map(|f| format!("_{f}")).unwrap_or_default();
        self.cfg
            .dir
            .join("snp")
            .join("vcek")
            .join(product.name())
            .join(format!(
                "{}_{}_{}_{}_{}{fmc}.der",
                hex::encode(hwid),
                tcb.bootloader,
                tcb.tee,
                tcb.snp,
                tcb.microcode
            ))
    }

    /// A VCEK is checked against the pinned ASK and must carry the TCB asked for.
    fn check_vcek(product: AmdProduct, tcb: &SnpTcb, der: &[u8]) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::Invalid {
            what: format!("VCEK for {product}"),
            reason,
        };
        let ca = anchors::amd_ca(product, AmdSigner::Vcek).map_err(|e| invalid(e.to_string()))?;
        let (_, ask) =
            X509Certificate::from_der(&ca.ask).map_err(|e| invalid(format!("ASK: {e}")))?;
        let (_, vek) =
            X509Certificate::from_der(der).map_err(|e| invalid(format!("not DER X.509: {e}")))?;
        vek.verify_signature(Some(ask.public_key()))
            .map_err(|_| invalid(format!("not signed by AMD's {product} ASK")))?;
        let spl = |oid: &str| {
            vek.extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == oid)
                .and_then(|e| x509_parser::der_parser::der::parse_der_integer(e.value).ok())
                .and_then(|(_, o)| o.as_u64().ok())
        };
        for (name, oid, want) in [
            ("bootloader", "1.3.6.1.4.1.3704.1.3.1", tcb.bootloader),
            ("tee", "1.3.6.1.4.1.3704.1.3.2", tcb.tee),
            ("snp", "1.3.6.1.4.1.3704.1.3.3", tcb.snp),
            ("microcode", "1.3.6.1.4.1.3704.1.3.8", tcb.microcode),
        ] {
            if spl(oid) != Some(u64::from(want)) {
                return Err(invalid(format!(
                    "issued for another TCB ({name} {:?}, asked {want})",
                    spl(oid)
                )));
            }
        }
        Ok(())
    }

    /// The VCEK of a chip (`chip_id` from its report) at a TCB.
    pub async fn vcek(
        &self,
        product: AmdProduct,
        chip_id: &[u8; 64],
        tcb: SnpTcb,
    ) -> Result<(Vec<u8>, Source), StoreError> {
        // Turin's KDS takes the first 8 bytes of the chip ID.
        let hwid: &[u8] = if product == AmdProduct::Turin {
            &chip_id[..8]
        } else {
            &chip_id[..]
        };
        let path = self.vcek_path(product, hwid, &tcb);
        let lock = self.item_lock(&path.display().to_string());
        let _one_at_a_time = lock.lock().await;
        if let Ok(der) = std::fs::read(&path) {
            if Self::check_vcek(product, &tcb, &der).is_ok() {
                return Ok((der, Source::Cache));
            }
        }
        let kds = self.cfg.kds_url.trim_end_matches('/');
        let fmc = tcb.fmc.map(|f| format!("&fmcSPL={f}")).unwrap_or_default();
        let url = format!(
            "{kds}/vcek/v1/{}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}{fmc}",
            product.name(),
            hex::encode(hwid),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        );
        let der = self.fetcher.get(&url).await?.body;
        Self::check_vcek(product, &tcb, &der)?;
        write_atomic(&path, &der)?;
        Ok((der, Source::Fetched))
    }

    fn crl_path(&self, product: AmdProduct, signer: AmdSigner) -> PathBuf {
        self.cfg.dir.join("snp").join("crl").join(format!(
            "{}-{}.der",
            product.name(),
            signer_path(signer)
        ))
    }

    fn load_crl(&self, product: AmdProduct, signer: AmdSigner) -> Option<(Vec<u8>, AmdCrl)> {
        let der = std::fs::read(self.crl_path(product, signer)).ok()?;
        let crl = AmdCrl::check(&der, product, signer).ok()?;
        Some((der, crl))
    }

    /// AMD's CRL for a product and key kind (it lists revoked ASKs/ASVKs and keys).
    pub async fn amd_crl(
        &self,
        product: AmdProduct,
        signer: AmdSigner,
        now: i64,
    ) -> Result<(Vec<u8>, Source), StoreError> {
        let path = self.crl_path(product, signer);
        let lock = self.item_lock(&path.display().to_string());
        let _one_at_a_time = lock.lock().await;
        let cached = self.load_crl(product, signer);
        if let Some((der, crl)) = &cached {
            if now.saturating_add(self.cfg.refresh_before_seconds as i64) < crl.next_update {
                return Ok((der.clone(), Source::Cache));
            }
        }
        let kds = self.cfg.kds_url.trim_end_matches('/');
        let url = format!("{kds}/{}/v1/{}/crl", signer_path(signer), product.name());
        match self.fetcher.get(&url).await {
            Ok(resp) => {
                let crl = AmdCrl::check(&resp.body, product, signer).map_err(|reason| {
                    StoreError::Invalid {
                        what: format!("AMD {product} {signer} CRL from {url}"),
                        reason: reason.to_string(),
                    }
                })?;
                if let Some((old, old_crl)) = cached {
                    if old_crl.next_update > crl.next_update {
                        return Ok((old, Source::Cache));
                    }
                }
                write_atomic(&path, &resp.body)?;
                Ok((resp.body, Source::Fetched))
            }
            Err(e) => match cached {
                Some((der, _)) => Ok((der, Source::StaleCache(e.to_string()))),
                None => Err(e.into()),
            },
        }
    }

    /// Everything cached, as one file another validator can import.
    pub fn export_bundle(&self) -> Result<Vec<u8>, StoreError> {
        let (nvidia_ocsp, nvidia_rim) = self.export_nvidia()?;
        let mut bundle = Bundle {
            version: BUNDLE_VERSION,
            tdx: Vec::new(),
            vcek: Vec::new(),
            crl: Vec::new(),
            nvidia_ocsp,
            nvidia_rim,
            images: self.export_images()?,
        };
        let tdx_dir = self.cfg.dir.join("tdx");
        for entry in read_dir_sorted(&tdx_dir)? {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Some((fmspc, ca)) = stem.split_once('-') else {
                continue;
            };
            let ca = match ca {
                "platform" => PckCa::Platform,
                "processor" => PckCa::Processor,
                _ => continue,
            };
            if let Some((collateral, _)) = self.load_tdx(fmspc, ca) {
                bundle.tdx.push(TdxItem {
                    fmspc: fmspc.to_string(),
                    ca,
                    collateral,
                });
            }
        }
        for product in AmdProduct::ALL {
            let dir = self.cfg.dir.join("snp").join("vcek").join(product.name());
            for entry in read_dir_sorted(&dir)? {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(stem) = name.strip_suffix(".der") else {
                    continue;
                };
                let parts: Vec<&str> = stem.split('_').collect();
                let num = |i: usize| parts.get(i).and_then(|s| s.parse::<u8>().ok());
                let (Some(hwid), Some(bl), Some(tee), Some(snp), Some(ucode)) = (
                    parts.first().and_then(|h| hex::decode(h).ok()),
                    num(1),
                    num(2),
                    num(3),
                    num(4),
                ) else {
                    continue;
                };
                let tcb = SnpTcb {
                    bootloader: bl,
                    tee,
                    snp,
                    microcode: ucode,
                    fmc: num(5),
                };
                let der = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
                if Self::check_vcek(product, &tcb, &der).is_ok() {
                    bundle.vcek.push(VcekItem {
                        product,
                        hwid: hex::encode(hwid),
                        tcb,
                        der: hex::encode(der),
                    });
                }
            }
        }
        for product in AmdProduct::ALL {
            for signer in [AmdSigner::Vcek, AmdSigner::Vlek] {
                if let Some((der, _)) = self.load_crl(product, signer) {
                    bundle.crl.push(CrlItem {
                        product,
                        signer,
                        der: hex::encode(der),
                    });
                }
            }
        }
        serde_json::to_vec_pretty(&bundle).map_err(|e| StoreError::Bundle(e.to_string()))
    }

    /// Import a bundle: every item is checked against the pinned roots before
    /// it is written; collateral older than what the cache holds is skipped.
    /// Returns how many items were written.
    pub fn import_bundle(&self, data: &[u8]) -> Result<usize, StoreError> {
        let bundle: Bundle = serde_json::from_slice(data)
            .map_err(|e| StoreError::Bundle(format!("not a tvm collateral bundle: {e}")))?;
        if bundle.version != BUNDLE_VERSION {
            return Err(StoreError::Bundle(format!(
                "bundle version {} is not supported (this build reads {BUNDLE_VERSION})",
                bundle.version
            )));
        }
        let mut written = 0;
        for (i, item) in bundle.tdx.iter().enumerate() {
            if !valid_fmspc(&item.fmspc) {
                return Err(StoreError::Bundle(format!(
                    "tdx item {i}: bad FMSPC {:?}",
                    item.fmspc
                )));
            }
            let next = self.check_tdx(
                &format!("bundle tdx item {i} (FMSPC {})", item.fmspc),
                &item.collateral,
            )?;
            if let Some((_, cached_next)) = self.load_tdx(&item.fmspc, item.ca) {
                if cached_next >= next {
                    continue;
                }
            }
            let json = serde_json::to_vec(&item.collateral)
                .map_err(|e| StoreError::Bundle(e.to_string()))?;
            write_atomic(&self.tdx_path(&item.fmspc, item.ca), &json)?;
            written += 1;
        }
        for (i, item) in bundle.vcek.iter().enumerate() {
            let bad = |r: String| StoreError::Bundle(format!("vcek item {i}: {r}"));
            let hwid = hex::decode(&item.hwid).map_err(|e| bad(format!("hwid: {e}")))?;
            let der = hex::decode(&item.der).map_err(|e| bad(format!("der: {e}")))?;
            Self::check_vcek(item.product, &item.tcb, &der)?;
            write_atomic(&self.vcek_path(item.product, &hwid, &item.tcb), &der)?;
            written += 1;
        }
        for (i, item) in bundle.crl.iter().enumerate() {
            let der = hex::decode(&item.der)
                .map_err(|e| StoreError::Bundle(format!("crl item {i}: {e}")))?;
            let crl = AmdCrl::check(&der, item.product, item.signer)
                .map_err(|e| StoreError::Bundle(format!("crl item {i}: {e}")))?;
            if let Some((_, cached)) = self.load_crl(item.product, item.signer) {
                if cached.next_update >= crl.next_update {
                    continue;
                }
            }
            write_atomic(&self.crl_path(item.product, item.signer), &der)?;
            written += 1;
        }
        written += self.import_nvidia(&bundle.nvidia_ocsp, &bundle.nvidia_rim)?;
        written += self.import_images(&bundle.images)?;
        Ok(written)
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::fs::DirEntry>, StoreError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
        Ok(rd) => {
            let mut v: Vec<_> = rd.filter_map(Result::ok).collect();
            v.sort_by_key(|e| e.file_name());
            Ok(v)
        }
    }
}

const BUNDLE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    version: u32,
    #[serde(default)]
    tdx: Vec<TdxItem>,
    #[serde(default)]
    vcek: Vec<VcekItem>,
    #[serde(default)]
    crl: Vec<CrlItem>,
    #[serde(default)]
    nvidia_ocsp: Vec<store_nvidia::OcspItem>,
    #[serde(default)]
    nvidia_rim: Vec<store_nvidia::RimItem>,
    /// Signed image manifests (checked by the verifier when loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrlItem {
    product: AmdProduct,
    signer: AmdSigner,
    der: String,
}

fn signer_path(signer: AmdSigner) -> &'static str {
    match signer {
        AmdSigner::Vcek => "vcek",
        AmdSigner::Vlek => "vlek",
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxItem {
    fmspc: String,
    ca: PckCa,
    collateral: QuoteCollateralV3,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VcekItem {
    product: AmdProduct,
    hwid: String,
    tcb: SnpTcb,
    der: String,
}

/// PCS answers `{"<field>": {...}, "signature": "<hex>"}`; the signature is
/// over the exact bytes of the inner object, so keep them verbatim.
fn signed_json(body: &[u8], field: &str) -> Result<(String, Vec<u8>), StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        what: format!("PCS {field} response"),
        reason,
    };
    let map: HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let inner = map
        .get(field)
        .ok_or_else(|| invalid(format!("no {field}")))?;
    let sig: String = map
        .get("signature")
        .ok_or_else(|| invalid("no signature".into()))
        .and_then(|s| {
            serde_json::from_str(s.get()).map_err(|e| invalid(format!("signature: {e}")))
        })?;
    let sig = hex::decode(sig).map_err(|e| invalid(format!("signature is not hex: {e}")))?;
    Ok((inner.get().to_string(), sig))
}

/// Issuer chains travel URL-encoded in a response header.
fn chain_header(headers: &reqwest::header::HeaderMap, name: &str) -> Result<String, StoreError> {
    let v = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| StoreError::Invalid {
            what: "PCS response".into(),
            reason: format!("missing header {name}"),
        })?;
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| StoreError::Invalid {
            what: format!("header {name}"),
            reason: e.to_string(),
        })
}
