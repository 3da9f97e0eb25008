//! Fetch a release from an image service: its signed manifest, verified
//! under the operator keys before anything is written, then every file it
//! lists, resumed where a cut connection left it and checked by size and
//! SHA-256.
//!
//! The service's tree (as `tvm image serve` or any static host serves it):
//! `v1/manifests/<node-type>.json` (the current signed manifest for that
//! node type) and `v1/files/<name>/<version>/<file>`. A file is written as
//! `<file>.part` and renamed only once its hash matches; the manifest is
//! written last, so a folder holding `manifest.signed.json` is complete.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tvm_image::manifest::{self, KeySet, Manifest, MAX_SIGNED_BYTES};

use crate::check::NodeType;
use crate::launch::safe_name;

/// The manifest's name in a release folder.
pub const MANIFEST: &str = "manifest.signed.json";
/// Attempts per file before giving up (each resumes the last).
const ATTEMPTS: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the manifest from {url} is not accepted: {source} (nothing was downloaded)")]
    Manifest {
        url: String,
        source: Box<manifest::ManifestError>,
    },
    #[error(
        "the manifest {release} is for node types {listed:?}, not {wanted} (is --node-type right?)"
    )]
    NodeType {
        release: String,
        listed: Vec<String>,
        wanted: String,
    },
    #[error("the manifest {0} names a file or version {1:?} that is not a plain name; report it to the operator")]
    BadName(String, String),
    #[error("{file}: SHA-256 {got}, the manifest lists {want}; the download was deleted (run again; if it repeats, the service or a proxy serves another file)")]
    Hash {
        file: String,
        got: String,
        want: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The manifest class of a node type (`gpu` or `cpu`), as manifests list them.
pub fn manifest_class(node: NodeType) -> &'static str {
    match node {
        NodeType::Hopper | NodeType::Blackwell => "gpu",
        NodeType::Cpu | NodeType::ValiCpu => "cpu",
    }
}

/// An HTTP(S) client for image services: Mozilla's roots, bounded connect
/// and per-read timeouts (a download may take hours, a stall may not).
pub fn client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("tvm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// What was fetched.
#[derive(Debug)]
pub struct Release {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Bytes transferred this run (0 when every file was already there).
    pub fetched: u64,
}

fn url_of(service: &str, path: &str) -> String {
    format!("{}/{path}", service.trim_end_matches('/'))
}

/// Fetch the current release for `node` from `service` into
/// `dest/<name>-<version>/`.
pub async fn fetch_release(
    client: &reqwest::Client,
    service: &str,
    node: NodeType,
    keys: &KeySet,
    dest: &Path,
    now: i64,
) -> Result<Release, DownloadError> {
    let url = url_of(service, &format!("v1/manifests/{}.json", node.as_str()));
    let signed = get_small(client, &url, MAX_SIGNED_BYTES).await?;
    let m = manifest::verify(&signed, keys, now).map_err(|source| DownloadError::Manifest {
        url: url.clone(),
        source: Box::new(source),
    })?;
    let class = manifest_class(node);
    if !m
        .node_types
        .iter()
        .any(|t| t == class || t == node.as_str())
    {
        return Err(DownloadError::NodeType {
            release: m.release(),
            listed: m.node_types.clone(),
            wanted: format!("{} ({class})", node.as_str()),
        });
    }
    for name in [&m.name, &m.version]
        .into_iter()
        .chain(m.files.iter().map(|f| &f.path))
    {
        // Our own names (`.part`, the manifest) cannot be a listed file.
        if !safe_name(name) || name.ends_with(".part") || name == MANIFEST {
            return Err(DownloadError::BadName(m.release(), name.clone()));
        }
    }
    let dir = dest.join(format!("{}-{}", m.name, m.version));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // A symlinked release folder would have everything written elsewhere.
    if !std::fs::symlink_metadata(&dir)
        .map_err(io(&dir))?
        .file_type()
        .is_dir()
    {
        return Err(io(&dir)(std::io::Error::other(
            "not a folder (a symlink?): remove it and run again",
        )));
    }
    // One install at a time fills a release folder.
    let lock_path = dir.join(".lock");
    let lock = open_nofollow(&lock_path, OpenMode::Lock).map_err(io(&lock_path))?;
    if let Err(e) = lock.try_lock() {
        return Err(io(&lock_path)(std::io::Error::other(format!(
            "{e}: another tvm install is fetching into this folder; wait for it"
        ))));
    }
    let manifest_path = dir.join(MANIFEST);
    let mut pending = Vec::new();
    for f in &m.files {
        if !complete(&dir.join(&f.path), f.size, &f.sha256)? {
            pending.push(f);
        }
    }
    // The folder says "complete" only once every file is there again.
    if !pending.is_empty() {
        remove_if_there(&manifest_path)?;
    }
    let mut fetched = 0;
    for f in pending {
        let file_url = url_of(
            service,
            &format!("v1/files/{}/{}/{}", m.name, m.version, f.path),
        );
        fetched += fetch_file(client, &file_url, &dir.join(&f.path), f.size, &f.sha256).await?;
    }
    let tmp = dir.join(format!("{MANIFEST}.part"));
    let mut out = open_nofollow(&tmp, OpenMode::Truncate).map_err(io(&tmp))?;
    out.write_all(&signed)
        .and_then(|()| out.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &manifest_path).map_err(io(&manifest_path))?;
    // The renames reach the disk before the folder is called complete.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    drop(lock);
    Ok(Release {
        dir,
        manifest: m,
        fetched,
    })
}

enum OpenMode {
    /// Create or keep (a lock file).
    Lock,
    /// Create or empty.
    Truncate,
    /// Create or add to the end.
    Append,
}

/// Open a file this install writes, never through a symlink: a link left in
/// the download folder would have root write where the link points.
fn open_nofollow(path: &Path, mode: OpenMode) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            std::fs::remove_file(path)?;
        }
    }
    let mut o = std::fs::OpenOptions::new();
    o.create(true).custom_flags(libc::O_NOFOLLOW).mode(0o644);
    match mode {
        OpenMode::Lock => o.write(true),
        OpenMode::Truncate => o.write(true).truncate(true),
        OpenMode::Append => o.append(true),
    };
    o.open(path)
}

fn remove_if_there(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Whether `path` already holds the listed file; anything else there (a
/// link, a folder, another file) is removed.
fn complete(path: &Path, size: u64, sha256: &str) -> Result<bool, DownloadError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(false);
    };
    if meta.file_type().is_file() && meta.len() == size {
        let mut h = Sha256::new();
        sha256_file(path, &mut h).map_err(io(path))?;
        if hex::encode(h.finalize()).eq_ignore_ascii_case(sha256) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            progress_done(&name, size, 0, Duration::ZERO);
            return Ok(true);
        }
    }
    if meta.file_type().is_dir() {
        std::fs::remove_dir_all(path).map_err(io(path))?;
    } else {
        std::fs::remove_file(path).map_err(io(path))?;
    }
    Ok(false)
}

/// A small document (a manifest), at most `limit` bytes.
async fn get_small(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, DownloadError> {
    let http = |reason: String| DownloadError::Http {
        url: url.to_string(),
        reason,
    };
    let mut resp = client
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| http(format!("{e} (is --service-url right and the service up?)")))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(http(
            "HTTP 404: the service publishes no release for this node type (is --node-type right?)"
                .into(),
        ));
    }
    if !resp.status().is_success() {
        return Err(http(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| http(e.to_string()))? {
        if body.len() + chunk.len() > limit {
            return Err(http(format!("larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn sha256_file(path: &Path, h: &mut Sha256) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// One file, resumed from its `.part` (HTTP range request) or fetched
/// whole; renamed into place only once size and SHA-256 match (and the
/// bytes are on disk). Returns the bytes transferred.
async fn fetch_file(
    client: &reqwest::Client,
    url: &str,
    path: &Path,
    size: u64,
    sha256: &str,
) -> Result<u64, DownloadError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = path.with_file_name(format!("{name}.part"));
    let started = Instant::now();
    let mut fetched = 0u64;
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        match fetch_part(client, url, &part, size, &name, &mut fetched).await {
            Ok(()) => break,
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => last_error = e,
        }
    }
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have != size {
        return Err(DownloadError::Http {
            url: url.to_string(),
            reason: format!(
                "{last_error}; {have} of {size} bytes after {ATTEMPTS} attempts (kept as {}; run again to resume)",
                part.display()
            ),
        });
    }
    let mut h = Sha256::new();
    sha256_file(&part, &mut h).map_err(io(&part))?;
    let got = hex::encode(h.finalize());
    if !got.eq_ignore_ascii_case(sha256) {
        let _ = std::fs::remove_file(&part);
        return Err(DownloadError::Hash {
            file: path.display().to_string(),
            got,
            want: sha256.to_string(),
        });
    }
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io(&part))?;
    std::fs::rename(&part, path).map_err(io(path))?;
    progress_done(&name, size, fetched, started.elapsed());
    Ok(fetched)
}

enum Attempt {
    Retry(String),
    Fatal(DownloadError),
}

/// Append to `part` from where it ends until it holds `size` bytes.
async fn fetch_part(
    client: &reqwest::Client,
    url: &str,
    part: &Path,
    size: u64,
    name: &str,
    fetched: &mut u64,
) -> Result<(), Attempt> {
    let fatal = |reason: String| {
        Attempt::Fatal(DownloadError::Http {
            url: url.to_string(),
            reason,
        })
    };
    // A link or folder in its place is removed by open_nofollow; only a
    // regular file is resumed.
    let mut have = std::fs::symlink_metadata(part)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.len())
        .unwrap_or(0);
    if have > size {
        std::fs::remove_file(part).map_err(|e| Attempt::Fatal(io(part)(e)))?;
        have = 0;
    }
    if have == size {
        return Ok(());
    }
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Attempt::Retry(e.to_string()))?;
    let status = resp.status();
    let append = match status.as_u16() {
        206 => {
            // The range must start where the part ends.
            let start = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                // Start the file again rather than splice the wrong bytes.
                let _ = std::fs::remove_file(part);
                return Err(Attempt::Retry(format!(
                    "asked for bytes from {have}, the service answered another range ({}); starting the file again",
                    start.map(|s| format!("from {s}")).unwrap_or_else(|| "unreadable".into())
                )));
            }
            true
        }
        // The part is no prefix the service knows: start again.
        416 => {
            let _ = std::fs::remove_file(part);
            return Err(Attempt::Retry(
                "HTTP 416: the service has no such range; starting the file again".into(),
            ));
        }
        200 => false,
        404 => {
            return Err(fatal(
                "HTTP 404: the service does not have this file".into(),
            ))
        }
        s if (500..600).contains(&s) || s == 429 => {
            return Err(Attempt::Retry(format!("HTTP {status}")))
        }
        _ => return Err(fatal(format!("HTTP {status}"))),
    };
    let mode = if append {
        OpenMode::Append
    } else {
        OpenMode::Truncate
    };
    let mut file = open_nofollow(part, mode).map_err(|e| Attempt::Fatal(io(part)(e)))?;
    let mut at = if append { have } else { 0 };
    let bar = std::io::stderr().is_terminal();
    let mut last_draw = Instant::now();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = file.flush();
                return Err(Attempt::Retry(format!("connection cut at byte {at}: {e}")));
            }
        };
        if at + chunk.len() as u64 > size {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err(fatal(format!(
                "the service sends more than the manifest's {size} bytes"
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| Attempt::Fatal(io(part)(e)))?;
        at += chunk.len() as u64;
        *fetched += chunk.len() as u64;
        if bar && last_draw.elapsed() > Duration::from_millis(200) {
            last_draw = Instant::now();
            eprint!(
                "\r  {name}  {:.1} / {:.1} MiB  {:>3}%",
                at as f64 / 1048576.0,
                size as f64 / 1048576.0,
                at.saturating_mul(100) / size.max(1)
            );
        }
    }
    file.flush().map_err(|e| Attempt::Fatal(io(part)(e)))?;
    if at < size {
        return Err(Attempt::Retry(format!(
            "the connection ended at byte {at} of {size}"
        )));
    }
    Ok(())
}

fn progress_done(name: &str, size: u64, fetched: u64, took: Duration) {
    let mib = size as f64 / 1048576.0;
    if fetched == 0 {
        eprintln!("\r  {name}  {mib:.1} MiB  already here, SHA-256 matches");
    } else {
        let rate = fetched as f64 / 1048576.0 / took.as_secs_f64().max(0.001);
        eprintln!("\r  {name}  {mib:.1} MiB  SHA-256 matches ({rate:.1} MiB/s)");
    }
}
