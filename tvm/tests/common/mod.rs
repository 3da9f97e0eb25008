//! What the `tvm` command-line tests share.
#![allow(dead_code)] // each test binary uses a part

/// Run the built `tvm` with `args`: exit code, stdout, stderr.
pub fn tvm(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tvm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The public key `tvm image keygen` printed.
pub fn public_key(keygen_out: &str) -> String {
    keygen_out
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .unwrap()
        .trim()
        .to_string()
}

/// Compare `got` with the reviewed file `tests/<rel>`; `TVM_BLESS=1`
/// rewrites it (then review the diff).
pub fn golden(rel: &str, got: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel);
    if std::env::var_os("TVM_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TVM_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got, want,
        "{rel} changed: review the difference, then bless"
    );
}

/// A release published in an image service tree, as an operator does it:
/// `srv/v1/manifests/<node>.json` signed by a fresh key, its files under
/// `srv/v1/files/<name>/<version>/`, and the key set that pins the key.
pub struct Published {
    pub srv: std::path::PathBuf,
    pub keys: tvm_image::manifest::KeySet,
    pub keys_path: std::path::PathBuf,
    pub files: Vec<(String, Vec<u8>)>,
}

/// A one-GPU TDX release (launch parameters as `tvm launch` takes them)
/// with `files` (name, bytes): the boot files must be among them.
pub fn publish(
    dir: &std::path::Path,
    node: &str,
    class: &str,
    files: &[(&str, Vec<u8>)],
) -> Published {
    publish_for(dir, node, class, files, 1)
}

/// [`publish`] for a shape of `gpus` GPUs (8: with 4 NVSwitches).
pub fn publish_for(
    dir: &std::path::Path,
    node: &str,
    class: &str,
    files: &[(&str, Vec<u8>)],
    gpus: usize,
) -> Published {
    use sha2::{Digest, Sha256};
    let srv = dir.join("srv");
    let (pkcs8, public) = tvm_image::manifest::keygen().unwrap();
    let keys: tvm_image::manifest::KeySet = serde_json::from_value(serde_json::json!({"keys": [{
        "public_key": hex::encode(&public),
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z"}]}))
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let keys_path = dir.join("operator-keys.json");
    std::fs::write(&keys_path, serde_json::to_vec(&keys).unwrap()).unwrap();
    let release = srv.join("v1/files/tvm-gpu/2026.12");
    std::fs::create_dir_all(&release).unwrap();
    let mut listed = Vec::new();
    for (name, bytes) in files {
        std::fs::write(release.join(name), bytes).unwrap();
        listed.push(serde_json::json!({"path": name,
            "sha256": hex::encode(Sha256::digest(bytes)), "size": bytes.len()}));
    }
    let manifest = serde_json::json!({
        "format": 1, "name": "tvm-gpu", "version": "2026.12", "node_types": [class],
        "files": listed,
        "launch": {"platform": "tdx", "vcpus": "16", "memory_gib": "128", "gpus": gpus.to_string(),
            "switches": if gpus == 8 { "4" } else { "0" },
            "pci_mmio64_mb": (262144 * gpus).to_string(), "data_disk": "true",
            "firmware": "OVMF.fd", "kernel": "vmlinuz", "initrd": "initrd.img", "root": "root.img",
            "cmdline": "console=ttyS0 ro"},
        "measurements": [{"platform": "tdx", "shape": "1xH100", "registers": {"mrtd": "00".repeat(48), "rtmr1": "01".repeat(48), "rtmr2": "02".repeat(48)}}],
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z",
    });
    let signed = tvm_image::manifest::sign(&manifest.to_string(), &pkcs8).unwrap();
    std::fs::create_dir_all(srv.join("v1/manifests")).unwrap();
    std::fs::write(
        srv.join(format!("v1/manifests/{node}.json")),
        serde_json::to_vec(&signed).unwrap(),
    )
    .unwrap();
    Published {
        srv,
        keys,
        keys_path,
        files: files
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect(),
    }
}

/// The four boot files of a release, the root `root_len` bytes of a
/// pattern (no two MiB alike, so a misplaced range shows).
pub fn boot_files(root_len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let root = (0..root_len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3])
        .collect();
    vec![
        ("OVMF.fd", b"firmware".to_vec()),
        ("vmlinuz", b"kernel".to_vec()),
        ("initrd.img", b"initramfs".to_vec()),
        ("root.img", root),
    ]
}

/// Serve `router` on a loopback port; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use tvm::check::host::{Host, Recorded, Runner};
use tvm::check::{self, NodeType, Options};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts")
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        let ty = e.file_type().unwrap();
        if ty.is_symlink() {
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else if ty.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            let _ = std::fs::remove_file(&dst);
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn substitute(dir: &Path, port: u16) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            substitute(&e.path(), port);
        } else if ty.is_file() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains("@PCCS_PORT@") {
                std::fs::write(e.path(), text.replace("@PCCS_PORT@", &port.to_string())).unwrap();
            }
        }
    }
}

/// A fixture host made real in a temporary folder, with a loopback
/// listener standing in for its PCCS and the image service.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    _service: TcpListener,
    pub port: u16,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut commands: BTreeMap<String, Option<Recorded>> = BTreeMap::new();
        let mut layers = vec![fixtures().join(name)];
        if let Ok(base) = std::fs::read_to_string(layers[0].join("base")) {
            layers.insert(0, fixtures().join(base.trim()));
        }
        for layer in &layers {
            if layer.join("root").is_dir() {
                copy_tree(&layer.join("root"), &root);
            }
            if let Ok(removed) = std::fs::read_to_string(layer.join("removed")) {
                for p in removed.lines().filter(|l| !l.is_empty()) {
                    let p = root.join(p.trim_start_matches('/'));
                    let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
                }
            }
            if let Ok(text) = std::fs::read_to_string(layer.join("commands.json")) {
                let more: BTreeMap<String, Option<Recorded>> = serde_json::from_str(&text).unwrap();
                commands.extend(more);
            }
        }
        let commands = commands
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect::<BTreeMap<_, _>>();
        std::fs::write(
            dir.path().join("commands.json"),
            serde_json::to_string_pretty(&commands).unwrap(),
        )
        .unwrap();
        let service = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = service.local_addr().unwrap().port();
        substitute(dir.path(), port);
        Fixture {
            dir,
            _service: service,
            port,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn commands(&self) -> PathBuf {
        self.dir.path().join("commands.json")
    }

    pub fn host(&self) -> (Host, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let outputs: BTreeMap<String, Recorded> =
            serde_json::from_str(&std::fs::read_to_string(self.commands()).unwrap()).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (
            Host::new(
                self.root(),
                Runner::Table {
                    outputs,
                    log: log.clone(),
                },
            ),
            log,
        )
    }

    pub fn options(&self, node_type: NodeType) -> Options {
        Options {
            node_type,
            service_url: Some(format!("http://127.0.0.1:{}/", self.port)),
            storage_bytes: Some(2 * check::TB),
            vm_dir: "/var/lib/tvm".into(),
        }
    }

    /// `tvm check` on this fixture: exit code, stdout with the port made stable.
    pub fn cli(&self, node_type: &str, extra: &[&str]) -> (i32, String, String) {
        let root = self.root().display().to_string();
        let commands = self.commands().display().to_string();
        let url = format!("http://127.0.0.1:{}/", self.port);
        let mut args = vec![
            "check",
            "--node-type",
            node_type,
            "--root",
            &root,
            "--fixture-commands",
            &commands,
            "--vm-download-dir",
            "/var/lib/tvm",
            "--host-machine-storage",
            "2TB",
            "--service-url",
            &url,
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = tvm(&args);
        (
            code,
            out.replace(&self.port.to_string(), "@PCCS_PORT@"),
            err,
        )
    }
}
