//! `tvm launch`'s QEMU command lines for the three shapes a release is
//! measured for, against reviewed golden files (one argument per line in
//! `tests/golden/`). `TVM_BLESS=1 cargo test -p tvm --test launch` rewrites
//! them; review the diff before committing it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tvm::launch::{qemu_args, shell_line, Host, LaunchError, PciAddress, Shape};

mod common;
use common::{public_key, tvm};

fn shape(pairs: &[(&str, &str)]) -> Shape {
    let m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Shape::from_launch(&m).unwrap()
}

fn pci(list: &[&str]) -> Vec<PciAddress> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn host(gpus: &[&str], switches: &[&str]) -> Host {
    let img = PathBuf::from("/var/lib/tvm/images/tvm-gpu-2026.12");
    Host {
        name: "tvm-cvm0".into(),
        firmware: img.join("OVMF.fd"),
        kernel: img.join("vmlinuz"),
        initrd: img.join("initrd.img"),
        cmdline: "console=ttyS0 root=/dev/mapper/root ro tvm.verity=0a1b2c".into(),
        root: img.join("root.img"),
        data: Some(PathBuf::from("/var/lib/tvm/disks/tvm-cvm0.qcow2")),
        gpus: pci(gpus),
        switches: pci(switches),
        ports: vec![8080, 8980],
        listen: "0.0.0.0".parse().unwrap(),
        qgs_port: 4050,
        serial_log: PathBuf::from("/var/log/tvm/tvm-cvm0.serial.log"),
        miner_config: Some(PathBuf::from("/var/lib/tvm/vm/cvm0.miner")),
    }
}

/// TDX with an HGX board: 8 GPUs and 4 NVSwitches.
fn hgx_shape() -> Shape {
    shape(&[
        ("platform", "tdx"),
        ("vcpus", "96"),
        ("memory_gib", "1024"),
        ("gpus", "8"),
        ("switches", "4"),
        // 8 × an H100's 128 GiB BAR1, and room.
        ("pci_mmio64_mb", "2097152"),
    ])
}

const GPUS8: [&str; 8] = [
    "0000:19:00.0",
    "0000:3b:00.0",
    "0000:4c:00.0",
    "0000:5d:00.0",
    "0000:9b:00.0",
    "0000:bb:00.0",
    "0000:cb:00.0",
    "0000:db:00.0",
];
const SWITCHES4: [&str; 4] = [
    "0000:05:00.0",
    "0000:06:00.0",
    "0000:07:00.0",
    "0000:08:00.0",
];

fn golden(name: &str, args: &[String]) {
    common::golden(&format!("golden/{name}.args"), &(args.join("\n") + "\n"));
}

#[test]
fn tdx_with_eight_gpus_and_four_nvswitches() {
    let s = hgx_shape();
    let args = qemu_args(&s, &host(&GPUS8, &SWITCHES4)).unwrap();
    golden("tdx_8gpu_4switch", &args);
    // Each of the 12 devices on a root port of its own, behind one iommufd.
    assert_eq!(
        args.iter().filter(|a| a.starts_with("vfio-pci,")).count(),
        12
    );
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with("pcie-root-port,"))
            .count(),
        12
    );
    assert_eq!(
        args.iter().filter(|a| *a == "iommufd,id=iommufd0").count(),
        1
    );
}

#[test]
fn tdx_with_one_gpu() {
    let s = shape(&[
        ("platform", "tdx"),
        ("vcpus", "16"),
        ("memory_gib", "128"),
        ("gpus", "1"),
        ("pci_mmio64_mb", "262144"),
    ]);
    let args = qemu_args(&s, &host(&GPUS8[..1], &[])).unwrap();
    golden("tdx_1gpu", &args);
}

#[test]
fn sev_snp_cpu_only() {
    let s = shape(&[
        ("platform", "sev-snp"),
        ("vcpus", "8"),
        ("memory_gib", "32"),
        ("data_disk", "false"),
    ]);
    let mut h = host(&[], &[]);
    h.data = None;
    let args = qemu_args(&s, &h).unwrap();
    // The data disk is part of the shape: a device more or less is another
    // PCI layout.
    assert_eq!(
        qemu_args(&s, &host(&[], &[])).unwrap_err(),
        LaunchError::UnexpectedDataDisk
    );
    golden("snp_cpu", &args);
    assert!(!args
        .iter()
        .any(|a| a.contains("vfio") || a.contains("X-PciMmio64Mb")));
    let line = shell_line("qemu-system-x86_64", &args);
    assert!(
        line.contains("-append 'console=ttyS0 root=/dev/mapper/root ro tvm.verity=0a1b2c'"),
        "{line}"
    );
}

#[test]
fn a_host_of_another_shape_is_refused_before_qemu_starts() {
    let s = hgx_shape();
    // Seven GPUs (one not bound to vfio, say): the guest's ACPI tables, so
    // RTMR0, would not be the manifest's.
    let e = qemu_args(&s, &host(&GPUS8[..7], &SWITCHES4)).unwrap_err();
    assert_eq!(
        e,
        LaunchError::Shape {
            what: "GPUs",
            want: 8,
            have: 7
        }
    );
    assert!(e.to_string().contains("fails `measurement`"), "{e}");
    let e = qemu_args(&s, &host(&GPUS8, &SWITCHES4[..3])).unwrap_err();
    assert!(
        matches!(
            e,
            LaunchError::Shape {
                what: "NVSwitches",
                ..
            }
        ),
        "{e}"
    );
    // One device twice.
    let mut twice = GPUS8;
    twice[7] = GPUS8[0];
    let e = qemu_args(&s, &host(&twice, &SWITCHES4)).unwrap_err();
    assert_eq!(e, LaunchError::Duplicate(GPUS8[0].parse().unwrap()));
    // One port twice.
    let mut h = host(&GPUS8, &SWITCHES4);
    h.ports = vec![8080, 8080];
    assert_eq!(
        qemu_args(&s, &h).unwrap_err(),
        LaunchError::DuplicatePort(8080)
    );
    // No data disk for a release that has one.
    let mut h = host(&GPUS8, &SWITCHES4);
    h.data = None;
    assert_eq!(qemu_args(&s, &h).unwrap_err(), LaunchError::NoDataDisk);
    // A comma in a path cannot add drive options: QEMU reads ",," as ",".
    let mut h = host(&GPUS8, &SWITCHES4);
    h.root = PathBuf::from("/img/root.img,snapshot=on");
    let args = qemu_args(&s, &h).unwrap();
    let want = "file=/img/root.img,,snapshot=on,if=none,id=root,format=raw,readonly=on";
    assert!(args.iter().any(|a| a == want), "{args:?}");
    h.root = PathBuf::from("/img/root\u{7}.img");
    assert!(matches!(qemu_args(&s, &h), Err(LaunchError::Path(_))));
    let mut h = host(&GPUS8, &SWITCHES4);
    h.name = "cvm0,debug-threads=off".into();
    assert!(matches!(qemu_args(&s, &h), Err(LaunchError::Name(_))));
}

/// `tvm launch --dry-run` as a miner runs it: the release verified under the
/// operator's keys, its boot files checked, the host's GPUs against the
/// release's shape, then the QEMU command.
#[test]
fn launch_verifies_the_release_and_its_files_before_printing_qemu() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let (code, out, err) = tvm(&["image", "keygen", "--out", &p("k")]);
    assert_eq!(code, 0, "{err}");
    let public = public_key(&out);
    let keys = serde_json::json!({"keys": [{"public_key": public,
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z"}]});
    std::fs::write(p("keys.json"), keys.to_string()).unwrap();
    let image = dir.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let mut files = Vec::new();
    for (name, bytes) in [
        ("OVMF.fd", &b"firmware"[..]),
        ("vmlinuz", b"kernel"),
        ("initrd.img", b"initramfs"),
        ("root.img", b"root file system"),
    ] {
        std::fs::write(image.join(name), bytes).unwrap();
        files.push(serde_json::json!({"path": name,
            "sha256": hex::encode(Sha256::digest(bytes)), "size": bytes.len()}));
    }
    let manifest = serde_json::json!({
        "format": 1, "name": "tvm-gpu", "version": "2026.12", "node_types": ["gpu"],
        "files": files,
        "launch": {"platform": "tdx", "vcpus": "16", "memory_gib": "128", "gpus": "1",
            "pci_mmio64_mb": "262144", "data_disk": "false",
            "firmware": "OVMF.fd", "kernel": "vmlinuz", "initrd": "initrd.img", "root": "root.img",
            "cmdline": "console=ttyS0 ro"},
        "measurements": [{"platform": "tdx", "shape": "1xH100", "registers": {"mrtd": "00".repeat(48), "rtmr1": "01".repeat(48), "rtmr2": "02".repeat(48)}}],
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z",
    });
    std::fs::write(p("m.json"), manifest.to_string()).unwrap();
    let (code, _, err) = tvm(&[
        "image",
        "sign",
        "--key",
        &p("k"),
        "--manifest",
        &p("m.json"),
        "--out",
        &p("m.signed.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        p("cvm0.miner"),
        "hotkey=5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY\nallow=any-signer\n",
    )
    .unwrap();
    let launch = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "launch".into(),
            "--manifest".into(),
            p("m.signed.json"),
            "--keys".into(),
            p("keys.json"),
            "--image-dir".into(),
            image.display().to_string(),
            "--miner-config".into(),
            p("cvm0.miner"),
            "--dry-run".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        tvm(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, out, err) = launch(&["--gpu", "0000:19:00.0"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("qemu-system-x86_64 -name tvm-cvm0"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "-fw_cfg name=opt/tvm/miner,file={}",
            p("cvm0.miner")
        )),
        "{out}"
    );
    // Without the miner settings the guest would stop at boot: refused first.
    std::fs::rename(p("cvm0.miner"), p("away")).unwrap();
    let (code, _, err) = launch(&["--gpu", "0000:19:00.0"]);
    assert_ne!(code, 0);
    assert!(err.contains("tvm install --launch-vm writes it"), "{err}");
    std::fs::rename(p("away"), p("cvm0.miner")).unwrap();
    assert!(
        out.contains("vfio-pci,host=0000:19:00.0,bus=rp0,iommufd=iommufd0"),
        "{out}"
    );
    assert!(
        out.contains("hostfwd=tcp:0.0.0.0:8080-:8080,hostfwd=tcp:0.0.0.0:8980-:8980"),
        "{out}"
    );
    assert!(out.contains("-append 'console=ttyS0 ro'"), "{out}");
    // No GPU given for a one-GPU release.
    let (code, _, err) = launch(&[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("measured for 1 GPUs; this host gives 0"),
        "{err}"
    );
    // Not a PCI address.
    let (code, _, err) = launch(&["--gpu", "19:00.0"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a PCI address"), "{err}");
    // A boot file that is not the release's.
    std::fs::write(image.join("vmlinuz"), b"kernal").unwrap();
    let (code, _, err) = launch(&["--gpu", "0000:19:00.0"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("vmlinuz: SHA-256") && err.contains("download it again"),
        "{err}"
    );
    // A manifest no pinned key signed.
    let (_, out2, _) = tvm(&["image", "keygen", "--out", &p("other")]);
    let other = public_key(&out2);
    let keys = serde_json::json!({"keys": [{"public_key": other,
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z"}]});
    std::fs::write(p("keys.json"), keys.to_string()).unwrap();
    let (code, _, err) = launch(&["--gpu", "0000:19:00.0"]);
    assert_eq!(code, 2);
    assert!(err.contains("m.signed.json"), "{err}");
}

/// An ELF64 executable without a program interpreter (PT_INTERP).
fn is_static_elf64(b: &[u8]) -> bool {
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|x| x.try_into().ok())
            .map(|x: [u8; 8]| u64::from_le_bytes(x) as usize)
    };
    if !b.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).all(|i| {
        b.get(phoff + i * size..phoff + i * size + 4)
            .is_some_and(|t| t != [3, 0, 0, 0])
    })
}

/// A `newc` cpio archive (what the kernel unpacks as its initramfs):
/// directories, files and character devices, then the trailer.
/// One archive entry: name, mode, contents, device (major, minor).
type Entry<'a> = (&'a str, u32, &'a [u8], (u32, u32));

fn cpio(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |name: &str, mode: u32, data: &[u8], rdev: (u32, u32), ino: u32| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data, rdev)) in entries.iter().enumerate() {
        put(name, *mode, data, *rdev, i as u32 + 1);
    }
    put("TRAILER!!!", 0, &[], (0, 0), 0);
    out
}

/// The generated command line, minus the confidential parts, boots a tiny
/// guest under TCG: the kernel and initramfs given as the release's, the
/// kernel command line passed, the root image attached, the serial console
/// in its log, and the guest powering off. It needs qemu-system-x86_64, a
/// kernel (TVM_SMOKE_KERNEL) and a static busybox; CI provides them and sets
/// TVM_REQUIRE_QEMU, so there it fails rather than skips without them.
#[test]
fn the_command_line_boots_a_tiny_guest_under_tcg() {
    use tvm::launch::{qemu_args_for, Accel};
    let require = std::env::var_os("TVM_REQUIRE_QEMU").is_some();
    let kernel = std::env::var_os("TVM_SMOKE_KERNEL").map(PathBuf::from);
    let busybox = PathBuf::from("/bin/busybox");
    let qemu_ok = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // A static busybox: a dynamic one has no loader in the initramfs.
    let static_busybox = std::fs::read(&busybox).is_ok_and(|b| is_static_elf64(&b));
    let (Some(kernel), true, true) = (kernel, qemu_ok, static_busybox) else {
        assert!(
            !require,
            "TVM_REQUIRE_QEMU: needs qemu-system-x86_64, TVM_SMOKE_KERNEL and /bin/busybox (static)"
        );
        eprintln!("SKIP: no qemu-system-x86_64, TVM_SMOKE_KERNEL or static /bin/busybox");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let init = b"#!/bin/busybox sh\n\
/bin/busybox mount -t proc proc /proc\n\
/bin/busybox echo \"TVM-SMOKE init ran; cmdline: $(/bin/busybox cat /proc/cmdline)\"\n\
/bin/busybox poweroff -f\n";
    let bb = std::fs::read(&busybox).unwrap();
    let initrd = cpio(&[
        ("bin", 0o040755, &[], (0, 0)),
        ("bin/busybox", 0o100755, &bb, (0, 0)),
        ("dev", 0o040755, &[], (0, 0)),
        ("dev/console", 0o020600, &[], (5, 1)),
        ("proc", 0o040755, &[], (0, 0)),
        ("init", 0o100755, init, (0, 0)),
    ]);
    std::fs::write(dir.path().join("initrd.img"), initrd).unwrap();
    std::fs::write(dir.path().join("root.img"), vec![0u8; 1 << 20]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serial = dir.path().join("serial.log");
    let host = Host {
        name: "tvm-smoke".into(),
        // SeaBIOS, as QEMU ships it: OVMF is the release's real firmware.
        firmware: PathBuf::from("bios-256k.bin"),
        kernel,
        initrd: dir.path().join("initrd.img"),
        cmdline: "console=ttyS0 panic=-1 tvm.smoke=1".into(),
        root: dir.path().join("root.img"),
        data: None,
        gpus: vec![],
        switches: vec![],
        ports: vec![port],
        listen: "127.0.0.1".parse().unwrap(),
        qgs_port: 4050,
        serial_log: serial.clone(),
        miner_config: None,
    };
    let s = shape(&[
        ("platform", "tdx"),
        ("vcpus", "1"),
        ("memory_gib", "1"),
        ("data_disk", "false"),
    ]);
    let args = qemu_args_for(&s, &host, Accel::DangerousTcgWithoutTee).unwrap();
    assert!(args
        .iter()
        .all(|a| !a.contains("tdx") && !a.contains("sev")));
    let t = std::time::Instant::now();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(240) {
            let _ = child.kill();
            panic!(
                "the guest did not power off in 240 s; serial:\n{}",
                std::fs::read_to_string(&serial).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    eprintln!("TCG boot to power-off: {:.1} s", t.elapsed().as_secs_f64());
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("Linux version"), "{log}");
    assert!(
        log.contains("TVM-SMOKE init ran; cmdline: console=ttyS0 panic=-1 tvm.smoke=1"),
        "{log}"
    );
}
