//! The guest image boots under software emulation (TCG, no TEE), as `tvm
//! launch` lays the VM out: the init maps the root through dm-verity with
//! the root hash on the kernel command line, encrypts the data disk, brings
//! the network up and starts the agent (the `tcg-sim` variant: SIMULATED
//! TEE and GPU). From the host, through the forwarded port, `/health`
//! answers and `tvm-verifier check` accepts a fresh evidence bundle under
//! the devnet policy. A root image with one flipped bit, in its data or in
//! its hash tree, stops the boot.
//!
//! Needs an image built by `image/build --variant tcg-sim` (TVM_IMAGE_DIR),
//! its simulated hierarchy (TVM_IMAGE_SIM_DIR), qemu-system-x86_64 and
//! qemu-img; `.ci/run` builds them and sets TVM_REQUIRE_IMAGE, so there it
//! fails rather than skips.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tvm::launch::{qemu_args_for, Accel, Host, Shape};

const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

struct Image {
    dir: PathBuf,
    sim: PathBuf,
    build: serde_json::Value,
}

fn image() -> Option<Image> {
    let require = std::env::var_os("TVM_REQUIRE_IMAGE").is_some();
    let dir = std::env::var_os("TVM_IMAGE_DIR").map(PathBuf::from);
    let sim = std::env::var_os("TVM_IMAGE_SIM_DIR").map(PathBuf::from);
    let tools = ["qemu-system-x86_64", "qemu-img"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let (Some(dir), Some(sim), true) = (dir, sim, tools) else {
        assert!(
            !require,
            "TVM_REQUIRE_IMAGE: needs TVM_IMAGE_DIR (image/build --variant tcg-sim), TVM_IMAGE_SIM_DIR, qemu-system-x86_64 and qemu-img"
        );
        eprintln!("SKIP: no TVM_IMAGE_DIR / TVM_IMAGE_SIM_DIR, or no QEMU");
        return None;
    };
    let build: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(
        build["variant"], "tcg-sim",
        "TVM_IMAGE_DIR must be a tcg-sim build"
    );
    Some(Image { dir, sim, build })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Guest {
    child: Child,
    serial: PathBuf,
    started: Instant,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guest {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits until the serial log shows `line` (true) or QEMU exits (false).
    fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        loop {
            if self.log().contains(line) {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return self.log().contains(line);
            }
            assert!(
                self.started.elapsed() < limit,
                "no {line:?} in {limit:?}; serial:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Boots `root` (the release's or a damaged copy) the way `tvm launch`
/// lays the VM out, with the agent's port forwarded to `port`.
fn boot(img: &Image, root: &Path, work: &Path, port: u16) -> Guest {
    let data = work.join("data.qcow2");
    let _ = std::fs::remove_file(&data);
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&data)
        .arg("1G")
        .status()
        .unwrap();
    assert!(made.success());
    let miner = work.join("miner");
    std::fs::write(&miner, format!("hotkey={ALICE}\nallow=any-signer\n")).unwrap();
    let serial = work.join(format!(
        "serial-{}.log",
        root.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&serial);
    let host = Host {
        name: "tvm-image-test".into(),
        firmware: img.dir.join("OVMF.fd"),
        kernel: img.dir.join("vmlinuz"),
        initrd: img.dir.join("initrd.img"),
        cmdline: img.build["cmdline"].as_str().unwrap().to_string(),
        root: root.to_path_buf(),
        data: Some(data),
        gpus: vec![],
        switches: vec![],
        ports: vec![8080],
        listen: "127.0.0.1".parse().unwrap(),
        qgs_port: 4050,
        serial_log: serial.clone(),
        miner_config: Some(miner),
    };
    let shape = Shape::from_launch(
        &[("platform", "tdx"), ("vcpus", "2"), ("memory_gib", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap();
    let mut args = qemu_args_for(&shape, &host, Accel::DangerousTcgWithoutTee).unwrap();
    // tvm launch forwards the same port on both sides; a test takes a free
    // one on the host.
    let net = args
        .iter_mut()
        .find(|a| a.starts_with("user,id=net0"))
        .unwrap();
    *net = net.replace("127.0.0.1:8080-:8080", &format!("127.0.0.1:{port}-:8080"));
    let child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guest {
        child,
        serial,
        started: Instant::now(),
    }
}

fn health(port: u16) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The agent's certificate is its own (RA-TLS): what binds it is the
        // evidence, which tvm-verifier checks below.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let r = client
            .get(format!("https://127.0.0.1:{port}/health"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn flip_bit(from: &Path, to: &Path, offset: u64) {
    std::fs::copy(from, to).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(to)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x10;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

#[test]
fn the_image_boots_its_verified_root_and_its_agent_passes_the_devnet_policy() {
    let Some(img) = image() else { return };
    let verifier = Path::new(env!("CARGO_BIN_EXE_tvm")).with_file_name("tvm-verifier");
    assert!(
        verifier.exists(),
        "{} missing: cargo build -p tvm-validator",
        verifier.display()
    );
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut guest = boot(&img, &img.dir.join("root.img"), work.path(), port);
    assert!(
        guest.wait_for("tvm-agent serving", Duration::from_secs(300)),
        "the guest stopped before its agent served:\n{}",
        guest.log()
    );
    let booted = guest.started.elapsed();
    let log = guest.log();
    let root_hash = img.build["verity"]["root_hash"].as_str().unwrap();
    for line in [
        format!("tvm-init: root mapped through dm-verity, root hash {root_hash}"),
        "tvm-init: root mounted read-only".into(),
        "tvm-init: data disk: 1 GiB, aes-xts-plain64, key made in this guest".into(),
        "tvm-init: network: eth0 10.0.2.15/24 via 10.0.2.2".into(),
        format!("tvm-init: miner hotkey {ALICE}"),
        "SIMULATED".into(),
    ] {
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }
    eprintln!("TCG boot to a serving agent: {:.1} s", booted.as_secs_f64());

    let (status, body) = health(port);
    assert_eq!(status, 200, "{body}");

    let out = Command::new(&verifier)
        .args([
            "check",
            &format!("127.0.0.1:{port}"),
            "--miner-hotkey",
            ALICE,
        ])
        .arg("--policy")
        .arg(img.sim.join("policy-devnet.yaml"))
        .arg("--manifests")
        .arg(img.sim.join("manifests"))
        .arg("--collateral")
        .arg(img.sim.join("tdx-collateral.json"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(RA-TLS)"), "{text}");
    assert!(text.contains("NODE ACCEPTED (1 devices)"), "{text}");
    assert!(!text.contains("FAIL "), "{text}");
    drop(guest);

    // One flipped bit in the file system's first block, or in the first
    // block of its hash tree: the root does not match the measured root
    // hash, the guest stops, its agent never serves.
    let blocks = img.build["verity"]["data_blocks"].as_u64().unwrap();
    for (name, offset, says) in [
        ("data.img", 100, "data block 0 is corrupted"),
        ("hash.img", blocks * 4096 + 100, "is corrupted"),
    ] {
        let bad = work.path().join(name);
        flip_bit(&img.dir.join("root.img"), &bad, offset);
        let mut guest = boot(&img, &bad, work.path(), free_port());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = guest.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "{name}: the guest ran on for 300 s:\n{}",
                guest.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let log = guest.log();
        assert!(log.contains("device-mapper: verity"), "{name}:\n{log}");
        assert!(log.contains(says), "{name}: no {says:?} in:\n{log}");
        assert!(log.contains("Kernel panic"), "{name}:\n{log}");
        assert!(!log.contains("tvm-agent serving"), "{name}:\n{log}");
        assert!(!log.contains("stage 2"), "{name}:\n{log}");
        eprintln!(
            "{name}: the guest stopped after {:.1} s ({status})",
            t.elapsed().as_secs_f64()
        );
    }
}

/// The production build stops on a way into the CVM, and on any extra file
/// its lock does not pin. Runs image/build on the binaries and the package
/// cache `image/reproduce` left (TVM_IMAGE_DIR's sibling `bin/`).
#[test]
fn a_build_refuses_a_login_path_or_an_unpinned_file() {
    let Some(img) = image() else { return };
    let bin = img.dir.parent().unwrap().join("bin");
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/build");
    let work = tempfile::tempdir().unwrap();
    // A production build from the same binaries with one --extra folder.
    let build_with = |extra: &Path| {
        Command::new(&build)
            .args(["--variant", "production", "--agent"])
            .arg(bin.join("tvm-agent"))
            .arg("--init")
            .arg(bin.join("tvm-init"))
            .arg("--extra")
            .arg(extra)
            .arg("--out")
            .arg(work.path().join("out"))
            .output()
            .unwrap()
    };
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    // (file in the extra folder, executable, what extra.lock says of it, the refusal)
    let cases: [(&str, bool, Option<&[u8]>, &str); 6] = [
        ("usr/bin/sh", true, None, "has no shell or login program"),
        (
            "usr/lib/x86_64-linux-gnu/busybox",
            false,
            None,
            "has no shell or login program",
        ),
        (
            "etc/tvm/agent.yaml",
            false,
            None,
            "never replaces the image's",
        ),
        ("usr/bin/helper", true, None, "programs beyond tvm-agent"),
        (
            "usr/share/model.txt",
            false,
            Some(b"other bytes"),
            "SHA-256",
        ),
        ("etc/unlisted", false, Some(b""), "is not in"),
    ];
    for (i, (file, exec, listed, refusal)) in cases.into_iter().enumerate() {
        let extra = work.path().join(format!("extra{i}"));
        let path = extra.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes = b"#!/bin/false\n";
        std::fs::write(&path, bytes).unwrap();
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let lock = match listed {
            None => format!("{}  {file}\n", sha(bytes)),
            Some(b"") => String::new(),
            Some(other) => format!("{}  {file}\n", sha(other)),
        };
        std::fs::write(extra.join("extra.lock"), lock).unwrap();
        let out = build_with(&extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: built anyway");
        assert!(err.contains(refusal), "{file}: no {refusal:?} in {err}");
        assert!(
            !work.path().join("out/root.img").exists(),
            "{file}: a root image was left behind"
        );
    }
    // A pinned data file goes in, and build.json names its lock.
    let extra = work.path().join("runtime");
    std::fs::create_dir_all(extra.join("usr/share/tvm")).unwrap();
    std::fs::write(extra.join("usr/share/tvm/models.txt"), b"toy\n").unwrap();
    std::fs::write(
        extra.join("extra.lock"),
        format!("{}  ./usr/share/tvm/models.txt\n", sha(b"toy\n")),
    )
    .unwrap();
    let out = build_with(&extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("out/build.json")).unwrap())
            .unwrap();
    assert_eq!(
        b["inputs"]["extra:runtime"],
        sha(&std::fs::read(extra.join("extra.lock")).unwrap())
    );
    assert_ne!(
        b["artifacts"]["root.img"]["sha256"],
        img.build["artifacts"]["root.img"]["sha256"]
    );
}
