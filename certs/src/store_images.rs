//! Signed image manifests in the collateral store. An operator publishes
//! them at a URL (one signed manifest, or a JSON array of them) or a
//! validator keeps them in a folder; the store caches what it fetched under
//! `images/`, serves the cache when the URL cannot be reached, and carries
//! the cache in the offline bundle. Nothing here trusts a manifest: the
//! verifier checks each one's signatures under the policy's operator keys
//! every time it loads them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io, read_dir_sorted, write_atomic, CollateralStore, StoreError};

/// A URL's manifests are fetched again when the cached copy is this old.
pub const MANIFEST_REFRESH_SECONDS: u64 = 3600;
/// Manifest files larger than this are not read (a signed manifest is a few
/// KiB; a published set of them stays far below).
pub const MAX_MANIFEST_FILE: u64 = 4 * 1024 * 1024;
/// Manifests read from one file (or one URL's answer) at most.
pub const MAX_MANIFESTS: usize = 256;

/// Manifests as found, each with where it came from, and what went wrong
/// on the way (a source that could not be read or fetched).
#[derive(Debug, Default)]
pub struct FoundManifests {
    pub manifests: Vec<(String, Vec<u8>)>,
    pub problems: Vec<String>,
}

/// Split a file into signed manifests: a JSON array of them, or one.
fn split(source: &str, bytes: &[u8], out: &mut FoundManifests) {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(items)) => {
            if items.len() > MAX_MANIFESTS {
                out.problems.push(format!(
                    "{source}: {} manifests, only the first {MAX_MANIFESTS} are read",
                    items.len()
                ));
            }
            for (i, item) in items.into_iter().take(MAX_MANIFESTS).enumerate() {
                match serde_json::to_vec(&item) {
                    Ok(b) => out.manifests.push((format!("{source}[{i}]"), b)),
                    Err(e) => out.problems.push(format!("{source}[{i}]: {e}")),
                }
            }
        }
        Ok(_) => out.manifests.push((source.to_string(), bytes.to_vec())),
        Err(e) => out.problems.push(format!(
            "{source}: not JSON (a signed manifest or an array of them): {e}"
        )),
    }
}

/// A regular file (a FIFO or a device would block or never end), read to
/// at most [`MAX_MANIFEST_FILE`] bytes.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let shown = |e: std::io::Error| format!("{}: {e}", path.display());
    if !std::fs::metadata(path).map_err(shown)?.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut data = Vec::new();
    std::fs::File::open(path)
        .map_err(shown)?
        .take(MAX_MANIFEST_FILE + 1)
        .read_to_end(&mut data)
        .map_err(shown)?;
    if data.len() as u64 > MAX_MANIFEST_FILE {
        return Err(format!(
            "{}: more than the {MAX_MANIFEST_FILE} bytes read",
            path.display()
        ));
    }
    Ok(data)
}

/// How many entries of a JSON answer look like signed manifests (an object
/// with `manifest` and `signatures`): an answer with none is not taken.
fn signed_shaped(bytes: &[u8]) -> usize {
    let shaped =
        |v: &serde_json::Value| v.get("manifest").is_some() && v.get("signatures").is_some();
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(items)) => items.iter().filter(|v| shaped(v)).count(),
        Ok(v) => usize::from(shaped(&v)),
        Err(_) => 0,
    }
}

/// A source given as a URL: `https://`, or plain `http://` to this machine
/// (a local mirror, tests). Anything else on plain HTTP could be replaced
/// on the way.
fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_url(source: &str) -> bool {
    let s = source.to_ascii_lowercase();
    s.starts_with("https://") || s.starts_with("http://")
}

/// The `*.json` files of a folder, sorted by name; a folder that is not
/// there is a problem when it was configured (`required`).
fn read_folder(dir: &Path, required: bool, out: &mut FoundManifests) {
    if required && !dir.is_dir() {
        let what = if dir.exists() {
            "not a folder (a manifests source is a folder or an https:// URL)"
        } else {
            "no such folder (a manifests source in the configuration)"
        };
        out.problems.push(format!("{}: {what}", dir.display()));
        return;
    }
    match read_dir_sorted(dir) {
        Err(e) => out.problems.push(e.to_string()),
        Ok(entries) => {
            for e in entries {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                match read_limited(&path) {
                    Ok(b) => split(&path.display().to_string(), &b, out),
                    Err(why) => out.problems.push(why),
                }
            }
        }
    }
}

/// Signed manifests from folders only (no store, no network): what a
/// devnet or an offline check reads.
pub fn manifests_in_folders(folders: &[String]) -> FoundManifests {
    let mut out = FoundManifests::default();
    for f in folders {
        if is_url(f) {
            out.problems.push(format!(
                "{f}: a URL, and manifests are read from folders here"
            ));
        } else {
            read_folder(Path::new(f), true, &mut out);
        }
    }
    out
}

impl CollateralStore {
    fn images_dir(&self) -> PathBuf {
        self.cfg.dir.join("images")
    }

    fn image_url_path(&self, url: &str) -> PathBuf {
        let h = Sha256::digest(url.as_bytes());
        self.images_dir()
            .join(format!("url-{}.json", hex::encode(&h[..16])))
    }

    /// Every signed manifest from `sources` (folders, or `https://` URLs
    /// fetched when their cached copy is over an hour old), then every one
    /// cached or imported into the store. Unchecked: the caller verifies.
    /// `accepts` is the caller's check of one signed manifest: a URL's
    /// answer replaces its cached copy only when it passes for at least
    /// one, so whoever answers there cannot wipe the copy with `[]`, an
    /// error page or manifests no pinned key signed.
    pub async fn image_manifests(
        &self,
        sources: &[String],
        accepts: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> FoundManifests {
        let mut out = FoundManifests::default();
        for source in sources {
            if !is_url(source) {
                read_folder(Path::new(source), true, &mut out);
            } else if !url_allowed(source) {
                out.problems.push(format!(
                    "{source}: manifests are fetched over https:// (plain http:// only from this machine)"
                ));
            } else if let Err(e) = self.refresh_image_url(source, accepts).await {
                out.problems.push(format!(
                    "{source}: {e} (the copy cached before, if any, is used)"
                ));
            }
        }
        read_folder(&self.images_dir(), false, &mut out);
        out
    }

    async fn refresh_image_url(
        &self,
        url: &str,
        accepts: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<(), StoreError> {
        let path = self.image_url_path(url);
        let lock = self.item_lock(&path.display().to_string());
        let _guard = lock.lock().await;
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < MANIFEST_REFRESH_SECONDS);
        if fresh {
            return Ok(());
        }
        let body = self.fetcher.get(url).await?.body;
        // An answer with no manifest the caller accepts (an error page,
        // `[]`, junk) must not replace a good cached copy: every node would
        // then fail.
        let mut found = FoundManifests::default();
        split(url, &body, &mut found);
        if !found.manifests.iter().any(|(_, m)| accepts(m)) {
            return Err(StoreError::Invalid {
                what: format!("manifests at {url}"),
                reason: "no manifest in the answer is accepted under this validator's keys".into(),
            });
        }
        write_atomic(&path, &body)
    }

    /// The cached and imported manifest files, for the offline bundle.
    pub(super) fn export_images(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut items = Vec::new();
        let mut found = FoundManifests::default();
        read_folder(&self.images_dir(), false, &mut found);
        for (_, bytes) in found.manifests {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                items.push(v);
            }
        }
        Ok(items)
    }

    /// Write a bundle's manifests as one file under `images/` (replacing
    /// what an earlier import wrote); they are checked when loaded.
    pub(super) fn import_images(&self, items: &[serde_json::Value]) -> Result<usize, StoreError> {
        if items.is_empty() {
            return Ok(0);
        }
        let bytes = serde_json::to_vec(items).map_err(|e| StoreError::Bundle(e.to_string()))?;
        // What the store would refuse to read back is refused now, before
        // it replaces the manifests imported earlier.
        if items.len() > MAX_MANIFESTS || bytes.len() as u64 > MAX_MANIFEST_FILE {
            return Err(StoreError::Bundle(format!(
                "{} image manifests in {} bytes: at most {MAX_MANIFESTS} in {MAX_MANIFEST_FILE}",
                items.len(),
                bytes.len()
            )));
        }
        if signed_shaped(&bytes) != items.len() {
            return Err(StoreError::Bundle(
                "an image manifest item is not a signed manifest (manifest and signatures)".into(),
            ));
        }
        let path = self.images_dir().join("imported.json");
        std::fs::create_dir_all(self.images_dir()).map_err(io(&self.images_dir()))?;
        write_atomic(&path, &bytes)?;
        Ok(items.len())
    }
}
