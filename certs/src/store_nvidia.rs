//! NVIDIA items in the collateral store: OCSP answers for device and RIM
//! certificates, and RIMs from NVIDIA's RIM service, cached on disk.

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{io, write_atomic, CollateralStore, Source, StoreError};
use crate::ocsp::{self, Answer};

/// A cached OCSP answer with what it is about, so it can be checked again
/// (and travel in a bundle).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OcspItem {
    pub cert: String,
    pub issuer: String,
    pub answer: String,
}

/// A RIM as cached: its id and the XML (checked when used, by the verifier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RimItem {
    pub id: String,
    pub xml: String,
}

/// NVIDIA RIM ids are like `NV_GPU_DRIVER_GH100_550.90.07`.
pub fn valid_rim_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[derive(Deserialize)]
struct RimServiceAnswer {
    id: String,
    rim: String,
}

impl CollateralStore {
    fn ocsp_path(&self, cert: &[u8], issuer: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update((cert.len() as u64).to_be_bytes());
        h.update(cert);
        h.update(issuer);
        self.cfg
            .dir
            .join("nvidia")
            .join("ocsp")
            .join(format!("{}.json", hex::encode(h.finalize())))
    }

    fn rim_path(&self, id: &str) -> PathBuf {
        self.cfg
            .dir
            .join("nvidia")
            .join("rim")
            .join(format!("{id}.xml"))
    }

    fn load_ocsp(&self, cert: &[u8], issuer: &[u8]) -> Option<Vec<u8>> {
        let data = std::fs::read(self.ocsp_path(cert, issuer)).ok()?;
        let item: OcspItem = serde_json::from_slice(&data).ok()?;
        hex::decode(item.answer).ok()
    }

    pub(super) fn save_ocsp(
        &self,
        cert: &[u8],
        issuer: &[u8],
        answer: &[u8],
    ) -> Result<(), StoreError> {
        let item = OcspItem {
            cert: hex::encode(cert),
            issuer: hex::encode(issuer),
            answer: hex::encode(answer),
        };
        let json = serde_json::to_vec(&item).map_err(|e| StoreError::Bundle(e.to_string()))?;
        write_atomic(&self.ocsp_path(cert, issuer), &json)
    }

    /// NVIDIA's OCSP answer about `cert` (issued by `issuer`), checked at
    /// `at`: from the cache while it is current (and not within
    /// `refresh_before_seconds` of its nextUpdate), else from the responder; if
    /// that fails, a cached answer still within `grace_seconds` is used.
    pub async fn nvidia_ocsp(
        &self,
        cert: &[u8],
        issuer: &[u8],
        at: i64,
        grace_seconds: u64,
    ) -> Result<(Answer, Source), StoreError> {
        let key = self.ocsp_path(cert, issuer).display().to_string();
        let lock = self.item_lock(&key);
        let _guard = lock.lock().await;
        let cached = self.load_ocsp(cert, issuer).and_then(|der| {
            ocsp::check(&der, cert, issuer, at, 0)
                .ok()
                .map(|a| (der, a))
        });
        if let Some((_, a)) = &cached {
            if a.valid_until() > at + self.cfg.refresh_before_seconds as i64 {
                return Ok((a.clone(), Source::Cache));
            }
        }
        let request = ocsp::request(cert, issuer).map_err(|e| StoreError::Invalid {
            what: "OCSP request".into(),
            reason: e.to_string(),
        })?;
        let fetched = self
            .fetcher
            .post(
                &self.cfg.nvidia_ocsp_url,
                "application/ocsp-request",
                request,
            )
            .await;
        match fetched {
            Ok(resp) => {
                let answer = ocsp::check(&resp.body, cert, issuer, at, 0).map_err(|e| {
                    StoreError::Invalid {
                        what: format!("OCSP answer from {}", self.cfg.nvidia_ocsp_url),
                        reason: e.to_string(),
                    }
                })?;
                self.save_ocsp(cert, issuer, &resp.body)?;
                Ok((answer, Source::Fetched))
            }
            Err(e) => {
                let stale = self
                    .load_ocsp(cert, issuer)
                    .and_then(|der| ocsp::check(&der, cert, issuer, at, grace_seconds).ok());
                match stale {
                    Some(a) => Ok((a, Source::StaleCache(e.to_string()))),
                    None => Err(e.into()),
                }
            }
        }
    }

    /// A RIM by its NVIDIA id (e.g. `NV_GPU_DRIVER_GH100_550.90.07`): from the
    /// cache, else from NVIDIA's RIM service. The XML is returned unchecked;
    /// the verifier checks its signature and chain each time it uses it.
    pub async fn nvidia_rim(&self, id: &str) -> Result<(Vec<u8>, Source), StoreError> {
        if !valid_rim_id(id) {
            return Err(StoreError::Invalid {
                what: "RIM id".into(),
                reason: format!("{id:?} is not an NVIDIA RIM id"),
            });
        }
        let path = self.rim_path(id);
        let lock = self.item_lock(&path.display().to_string());
        let _guard = lock.lock().await;
        if let Ok(xml) = std::fs::read(&path) {
            return Ok((xml, Source::Cache));
        }
        let url = format!(
            "{}/v1/rim/{id}",
            self.cfg.nvidia_rim_url.trim_end_matches('/')
        );
        let resp = self.fetcher.get(&url).await?;
        let invalid = |reason: String| StoreError::Invalid {
            what: format!("RIM service answer for {id}"),
            reason,
        };
        let answer: RimServiceAnswer = serde_json::from_slice(&resp.body)
            .map_err(|e| invalid(format!("not the RIM service's JSON: {e}")))?;
        if answer.id != id {
            return Err(invalid(format!("it is for {:?}", answer.id)));
        }
        let xml = base64::engine::general_purpose::STANDARD
            .decode(answer.rim.trim())
            .map_err(|e| invalid(format!("rim is not base64: {e}")))?;
        write_atomic(&path, &xml)?;
        Ok((xml, Source::Fetched))
    }

    pub(super) fn export_nvidia(&self) -> Result<(Vec<OcspItem>, Vec<RimItem>), StoreError> {
        let mut ocsp_items = Vec::new();
        for entry in super::read_dir_sorted(&self.cfg.dir.join("nvidia").join("ocsp"))? {
            let data = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
            if let Ok(item) = serde_json::from_slice::<OcspItem>(&data) {
                ocsp_items.push(item);
            }
        }
        let mut rims = Vec::new();
        for entry in super::read_dir_sorted(&self.cfg.dir.join("nvidia").join("rim"))? {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".xml") else {
                continue;
            };
            let xml = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
            rims.push(RimItem {
                id: id.to_string(),
                xml: String::from_utf8_lossy(&xml).into_owned(),
            });
        }
        Ok((ocsp_items, rims))
    }

    /// OCSP answers are checked (signer, certificate) before they are written;
    /// RIMs are checked by the verifier whenever they are used.
    pub(super) fn import_nvidia(
        &self,
        ocsp_items: &[OcspItem],
        rims: &[RimItem],
    ) -> Result<usize, StoreError> {
        let mut written = 0;
        for (i, item) in ocsp_items.iter().enumerate() {
            let bad = |r: String| StoreError::Bundle(format!("nvidia_ocsp item {i}: {r}"));
            let hexd = |s: &str| hex::decode(s).map_err(|e| bad(e.to_string()));
            let (cert, issuer, answer) =
                (hexd(&item.cert)?, hexd(&item.issuer)?, hexd(&item.answer)?);
            let new =
                ocsp::check_signed(&answer, &cert, &issuer).map_err(|e| bad(e.to_string()))?;
            let old = self
                .load_ocsp(&cert, &issuer)
                .and_then(|d| ocsp::check_signed(&d, &cert, &issuer).ok());
            if old.is_some_and(|o| o.this_update >= new.this_update) {
                continue;
            }
            self.save_ocsp(&cert, &issuer, &answer)?;
            written += 1;
        }
        for (i, item) in rims.iter().enumerate() {
            if !valid_rim_id(&item.id) {
                return Err(StoreError::Bundle(format!(
                    "nvidia_rim item {i}: bad id {:?}",
                    item.id
                )));
            }
            write_atomic(&self.rim_path(&item.id), item.xml.as_bytes())?;
            written += 1;
        }
        Ok(written)
    }
}
