//! Fetching a release from an image service over loopback: verified before
//! anything is written, resumed after a cut connection, and nothing that
//! looks complete left behind by a bad signature, a bad hash or a missing
//! file. And the service itself: cache headers, ranges, report intake.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tvm::check::NodeType;
use tvm::download::{fetch_release, DownloadError, MANIFEST};

mod common;
use common::{boot_files, publish, serve};

const NOW: i64 = 1_800_000_000;

fn service(srv: &Path) -> axum::Router {
    tvm::image_service::router(srv, &srv.join("../reports"))
}

/// Fetch the node type's release from `url` into `dest`, as install does.
async fn fetch(
    url: &str,
    node: NodeType,
    keys: &tvm_image::manifest::KeySet,
    dest: &Path,
) -> Result<tvm::download::Release, DownloadError> {
    fetch_release(
        &tvm::download::client().unwrap(),
        url,
        node,
        keys,
        dest,
        NOW,
    )
    .await
}

fn names(dir: &Path) -> Vec<String> {
    let mut v = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|_| Vec::new());
    v.sort();
    v
}

#[tokio::test]
async fn a_release_is_fetched_checked_and_marked_complete_last() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(3 << 20));
    let url = serve(service(&p.srv)).await;
    let dest = dir.path().join("vm");
    let r = fetch(&url, NodeType::Hopper, &p.keys, &dest).await.unwrap();
    assert_eq!(r.dir, dest.join("tvm-gpu-2026.12"));
    assert_eq!(
        r.fetched,
        p.files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    for (name, bytes) in &p.files {
        assert_eq!(&std::fs::read(r.dir.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(
        names(&r.dir),
        [
            ".lock",
            "OVMF.fd",
            "initrd.img",
            MANIFEST,
            "root.img",
            "vmlinuz"
        ]
    );
    // Run again: every file is checked, none fetched.
    let again = fetch(&url, NodeType::Hopper, &p.keys, &dest).await.unwrap();
    assert_eq!(again.fetched, 0);
    // A damaged file is fetched again, not trusted by its name.
    std::fs::write(r.dir.join("vmlinuz"), b"kernal").unwrap();
    let again = fetch(&url, NodeType::Hopper, &p.keys, &dest).await.unwrap();
    assert_eq!(again.fetched, 6);
    assert_eq!(std::fs::read(r.dir.join("vmlinuz")).unwrap(), b"kernel");
}

#[tokio::test]
async fn a_part_left_by_an_earlier_run_is_resumed_with_a_range_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(2 << 20));
    let url = serve(service(&p.srv)).await;
    let release = dir.path().join("vm/tvm-gpu-2026.12");
    std::fs::create_dir_all(&release).unwrap();
    let root = &p.files[3].1;
    std::fs::write(release.join("root.img.part"), &root[..1_000_000]).unwrap();
    let r = fetch(&url, NodeType::Hopper, &p.keys, &dir.path().join("vm"))
        .await
        .unwrap();
    let small = 8 + 6 + 9;
    assert_eq!(r.fetched, small + (root.len() as u64 - 1_000_000));
    assert_eq!(&std::fs::read(release.join("root.img")).unwrap(), root);
}

/// A server that serves one file, cuts the first response after `cut`
/// bytes, and records the Range header of every request.
async fn cutting_server(body: Vec<u8>, cut: usize) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
            let range = text
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .map(|r| r.trim().to_string());
            seen.lock().unwrap().push(range.clone());
            let start = range
                .as_deref()
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
                .unwrap_or(0);
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            s.write_all(head.as_bytes()).await.unwrap();
            let end = if first { cut } else { body.len() };
            first = false;
            let _ = s.write_all(&body[start..end]).await;
            let _ = s.shutdown().await;
        }
    });
    (format!("http://{addr}"), ranges)
}

/// The service in front of a cutting server for `root.img`.
async fn with_cut(
    srv: &Path,
    root: Vec<u8>,
    cut: usize,
) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let (cutter, ranges) = cutting_server(root, cut).await;
    let files = service(srv);
    let proxy = axum::Router::new()
        .route(
            "/v1/files/tvm-gpu/2026.12/root.img",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let cutter = cutter.clone();
                async move {
                    // Redirect to the cutting server: reqwest follows it.
                    let _ = headers;
                    axum::response::Redirect::temporary(&format!("{cutter}/root.img"))
                }
            }),
        )
        .merge(files);
    (serve(proxy).await, ranges)
}

#[tokio::test]
async fn a_cut_connection_is_resumed_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let files = boot_files(3 << 20);
    let p = publish(dir.path(), "hopper", "gpu", &files);
    let (url, ranges) = with_cut(&p.srv, files[3].1.clone(), 1 << 20).await;
    let r = fetch(&url, NodeType::Hopper, &p.keys, &dir.path().join("vm"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(r.dir.join("root.img")).unwrap(), files[3].1);
    // The second request asked only for what was missing.
    assert_eq!(
        *ranges.lock().unwrap(),
        [None, Some(format!("{}-", 1 << 20))]
    );
}

#[tokio::test]
async fn a_bad_signature_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(1000));
    let path = p.srv.join("v1/manifests/hopper.json");
    let mut signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // The manifest changed after signing: a file swapped for another.
    let text = signed["manifest"]
        .as_str()
        .unwrap()
        .replace("\"size\":6", "\"size\":7");
    signed["manifest"] = text.into();
    std::fs::write(&path, signed.to_string()).unwrap();
    let url = serve(service(&p.srv)).await;
    let dest = dir.path().join("vm");
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Manifest { .. }), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(err.to_string().contains("nothing was downloaded"), "{err}");
    assert!(!dest.exists());
    // Keys the operator never used: unknown key, nothing written either.
    let other = publish(&dir.path().join("other"), "hopper", "gpu", &boot_files(10));
    let p2 = publish(&dir.path().join("p2"), "hopper", "gpu", &boot_files(10));
    let url = serve(service(&p2.srv)).await;
    let err = fetch(&url, NodeType::Hopper, &other.keys, &dest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no key of the operator's key set signed"),
        "{err}"
    );
    assert!(!dest.exists());
}

#[tokio::test]
async fn a_bad_hash_leaves_nothing_that_looks_complete() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(1 << 20));
    // The service holds another root of the same size.
    let served = p.srv.join("v1/files/tvm-gpu/2026.12/root.img");
    let mut bytes = std::fs::read(&served).unwrap();
    bytes[123_456] ^= 1;
    std::fs::write(&served, bytes).unwrap();
    let url = serve(service(&p.srv)).await;
    let dest = dir.path().join("vm");
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Hash { .. }), "{err}");
    assert!(err.to_string().contains("root.img: SHA-256"), "{err}");
    let release = dest.join("tvm-gpu-2026.12");
    let left = names(&release);
    assert!(
        !left
            .iter()
            .any(|n| n == "root.img" || n == "root.img.part" || n == MANIFEST),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(1000));
    std::fs::remove_file(p.srv.join("v1/files/tvm-gpu/2026.12/initrd.img")).unwrap();
    let url = serve(service(&p.srv)).await;
    let dest = dir.path().join("vm");
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("initrd.img: HTTP 404: the service does not have this file"),
        "{err}"
    );
    assert!(!dest.join("tvm-gpu-2026.12").join(MANIFEST).exists());
    // No manifest for the node type at all.
    let err = fetch(&url, NodeType::Blackwell, &p.keys, &dest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("v1/manifests/blackwell.json: HTTP 404"),
        "{err}"
    );
}

#[tokio::test]
async fn a_release_for_another_node_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The operator published a CPU image where a GPU one belongs.
    let p = publish(dir.path(), "hopper", "cpu", &boot_files(10));
    let url = serve(service(&p.srv)).await;
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dir.path().join("vm"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is for node types [\"cpu\"], not hopper (gpu)"),
        "{err}"
    );
}

#[tokio::test]
async fn more_bytes_than_the_manifest_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = boot_files(1 << 20);
    let p = publish(dir.path(), "hopper", "gpu", &files);
    let mut longer = files[3].1.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    let n = longer.len();
    let (url, _) = with_cut(&p.srv, longer, n).await;
    let dest = dir.path().join("vm");
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dest)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("sends more than the manifest's"),
        "{err}"
    );
    assert!(!names(&dest.join("tvm-gpu-2026.12"))
        .iter()
        .any(|n| n.starts_with("root.img")));
}

#[tokio::test]
async fn the_service_answers_ranges_and_caches_release_files_not_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(4096));
    let url = serve(service(&p.srv)).await;
    let c = tvm::download::client().unwrap();
    let r = c
        .get(format!("{url}/v1/files/tvm-gpu/2026.12/root.img"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.headers()["content-range"], "bytes 100-199/4096");
    assert_eq!(&r.bytes().await.unwrap()[..], &p.files[3].1[100..200]);
    let r = c
        .get(format!("{url}/v1/manifests/hopper.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let modified = r.headers()["last-modified"].clone();
    let r = c
        .get(format!("{url}/v1/manifests/hopper.json"))
        .header("If-Modified-Since", modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Nothing outside the tree: not the reports, not the key set.
    for path in [
        "/v1/files/../../operator-keys.json",
        "/v1/files/%2e%2e/%2e%2e/operator-keys.json",
        "/v1/reports",
    ] {
        let r = c.get(format!("{url}{path}")).send().await.unwrap();
        assert!(
            r.status() == 404 || r.status() == 405 || r.status() == 400,
            "{path}: {}",
            r.status()
        );
    }
}

/// Links left in the download folder (by another user, or an earlier
/// mishap) are never written through: install runs as root.
#[tokio::test]
async fn links_in_the_download_folder_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(1 << 20));
    let url = serve(service(&p.srv)).await;
    let release = dir.path().join("vm/tvm-gpu-2026.12");
    std::fs::create_dir_all(&release).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // A part that points at the victim, and a "finished" file that does.
    std::os::unix::fs::symlink(&victim, release.join("root.img.part")).unwrap();
    std::os::unix::fs::symlink(&victim, release.join("vmlinuz")).unwrap();
    std::os::unix::fs::symlink(&victim, release.join("initrd.img.part")).unwrap();
    let r = fetch(&url, NodeType::Hopper, &p.keys, &dir.path().join("vm"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for (name, bytes) in &p.files {
        let path = r.dir.join(name);
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_file(),
            "{name}"
        );
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{name}");
    }
    // A release folder that is a link is refused.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("vm2")).unwrap();
    std::os::unix::fs::symlink(&victim, other.join("vm2/tvm-gpu-2026.12")).unwrap();
    let err = fetch(&url, NodeType::Hopper, &p.keys, &other.join("vm2"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tvm-gpu-2026.12"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[tokio::test]
async fn two_installs_do_not_fill_one_folder_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish(dir.path(), "hopper", "gpu", &boot_files(1000));
    let url = serve(service(&p.srv)).await;
    let release = dir.path().join("vm/tvm-gpu-2026.12");
    std::fs::create_dir_all(&release).unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(release.join(".lock"))
        .unwrap();
    held.lock().unwrap();
    let err = fetch(&url, NodeType::Hopper, &p.keys, &dir.path().join("vm"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another tvm install is fetching into this folder"),
        "{err}"
    );
    drop(held);
}
