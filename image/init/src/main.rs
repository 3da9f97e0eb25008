//! `tvm-init`: PID 1 of the tvm guest image, in two stages.
//!
//! 1. In the initramfs (`/init`): load the modules the root needs, map the
//!    root disk (PCI 00:02.0) through dm-verity with the root hash from the
//!    measured kernel command line, mount it read-only and switch to it.
//! 2. In the verified root (`/usr/sbin/tvm-init`): tmpfs for /run and
//!    /tmp, the data disk (PCI 00:03.0) through dm-crypt with a key made
//!    here and never written anywhere, the network, the miner's settings
//!    from fw_cfg, the image's services, then `tvm-agent`, restarted when it
//!    exits.
//!
//! Nothing here reads a terminal: the image has no shell, no getty, no SSH.
//! Every failure is printed on the serial console with what to do; a root
//! that fails verification stops the VM.

mod cmdline;
mod dm;
mod miner;
mod net;
mod sys;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT_SLOT: &str = "0000:00:02.0";
const DATA_SLOT: &str = "0000:00:03.0";
/// Present only in the initramfs.
const STAGE1_MARK: &str = "/etc/tvm-initramfs";
/// The modules to load, in order: one per line, its path, `?` after the
/// path for one whose hardware may be absent (the TEE guest drivers on the
/// other platform), then its parameters if any (`nvidia.ko NVreg_...=...`).
const MODULES: &str = "/etc/tvm/modules";
/// Programs the image starts before the agent (the GPU stack's daemons),
/// one command line per line, measured with the root.
const SERVICES: &str = "/usr/lib/tvm/services";
const AGENT: &str = "/usr/bin/tvm-agent";
const AGENT_CONFIG: &str = "/etc/tvm/agent.yaml";
const MINER_CONFIG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/tvm/miner/raw";
const STATE: &str = "/var/lib/tvm";

/// A line on the serial console. Never panics: PID 1 must not exit.
fn say(msg: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout(), "tvm-init: {msg}");
}

/// Stops the VM with `msg`: PID 1 must not exit, and a CVM that cannot
/// start what it was measured to run is better off than half-started.
fn halt(msg: impl std::fmt::Display) -> ! {
    say(format!("FATAL: {msg}"));
    say("powering off");
    let _ = std::io::stdout().flush();
    // SAFETY: sync and reboot(2) take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "tvm-init is the tvm guest image's PID 1 (the kernel starts it); it does nothing elsewhere"
        );
        std::process::exit(2);
    }
    if std::path::Path::new(STAGE1_MARK).exists() {
        stage1()
    } else {
        stage2()
    }
}

fn load_modules() {
    let list = match std::fs::read_to_string(MODULES) {
        Ok(l) => l,
        Err(e) => halt(format!("{MODULES}: {e}")),
    };
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (path, params) = line.split_once(' ').unwrap_or((line, ""));
        let (path, optional) = match path.strip_suffix('?') {
            Some(p) => (p, true),
            None => (path, false),
        };
        match sys::load_module(std::path::Path::new(path), params.trim()) {
            Ok(true) => {}
            Ok(false) if optional => say(format!("{path}: no such device here (optional)")),
            Ok(false) => halt(format!("{path}: no such device")),
            Err(e) if optional => say(format!("{path}: {e} (optional)")),
            Err(e) => halt(format!("module {path}: {e}")),
        }
    }
}

fn stage1() -> ! {
    for (src, dir, fs) in [
        ("devtmpfs", "/dev", "devtmpfs"),
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
    ] {
        if let Err(e) = sys::mount(src, dir, fs, libc::MS_NOSUID, "") {
            halt(e)
        }
    }
    say("stage 1: initramfs");
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let root = match cmdline::verity_root(&line) {
        Ok(r) => r,
        Err(e) => halt(e),
    };
    load_modules();
    let Some((_, dev, sectors)) = sys::disk_on_slot(ROOT_SLOT, Duration::from_secs(20)) else {
        halt(format!(
            "no root disk on PCI {ROOT_SLOT} (start the VM with tvm launch and the release's root image)"
        ))
    };
    let (want, table) = root.table(&sys::major_minor(dev));
    if sectors < (root.hash_start + 1) * 8 || sectors < want {
        halt(format!(
            "the root disk has {sectors} sectors, too few for this release's file system and hash tree (a truncated or other root image)"
        ));
    }
    let mapped = match dm::create("tvm-root", "verity", want, &table, true) {
        Ok(d) => d,
        Err(e) => halt(e),
    };
    if let Err(e) = sys::mknod_block("/dev/tvm-root", mapped) {
        halt(format!("/dev/tvm-root: {e}"))
    }
    say(format!(
        "root mapped through dm-verity, root hash {}: every block is checked as it is read",
        root.root_hash
    ));
    if let Err(e) = sys::mount(
        "/dev/tvm-root",
        "/newroot",
        "squashfs",
        libc::MS_RDONLY | libc::MS_NODEV,
        "",
    ) {
        halt(format!(
            "{e}: the root image does not match the measured root hash (or is damaged); download the release again"
        ))
    }
    say("root mounted read-only");
    for dir in ["/dev", "/proc", "/sys"] {
        if let Err(e) = sys::move_mount(dir, &format!("/newroot{dir}")) {
            halt(e)
        }
    }
    if let Err(e) = std::env::set_current_dir("/newroot")
        .and_then(|_| sys::move_mount(".", "/"))
        .and_then(|_| sys::chroot_here())
        .and_then(|_| std::env::set_current_dir("/"))
    {
        halt(format!("switching to the root: {e}"))
    }
    use std::os::unix::process::CommandExt;
    let e = Command::new("/usr/sbin/tvm-init").exec();
    halt(format!("/usr/sbin/tvm-init: {e}"))
}

fn stage2() -> ! {
    say("stage 2: verified root");
    for dir in ["/run", "/tmp"] {
        if let Err(e) = sys::mount(
            "tmpfs",
            dir,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ) {
            halt(e)
        }
    }
    // configfs-tsm: where the agent asks for TDX quotes and SNP reports.
    if let Err(e) = sys::mount("configfs", "/sys/kernel/config", "configfs", 0, "") {
        halt(e)
    }
    // No magic SysRq from the host's serial line.
    let _ = sys::sysctl("/proc/sys/kernel/sysrq", "0");
    if std::path::Path::new(MODULES).exists() {
        load_modules();
    }
    // The image's modules are loaded: nothing else may be.
    if let Err(e) = sys::sysctl("/proc/sys/kernel/modules_disabled", "1") {
        halt(e)
    }
    data_disk();
    match net::configure() {
        Ok(nic) => say(format!(
            "network: {nic} {}/24 via {}",
            net::ADDRESS,
            net::GATEWAY
        )),
        Err(e) => halt(format!("network: {e}")),
    }
    let miner = read_miner();
    start_services();
    supervise(&miner)
}

/// The data disk through dm-crypt, keyed from this guest's random
/// generator: the key exists only in this VM's (encrypted) memory, so the
/// host sees ciphertext and a reboot starts from an empty disk.
fn data_disk() {
    let Some((_, dev, sectors)) = sys::disk_on_slot(DATA_SLOT, Duration::from_secs(10)) else {
        say(format!(
            "no data disk on PCI {DATA_SLOT}: state on tmpfs (memory) only"
        ));
        if let Err(e) = sys::mount(
            "tmpfs",
            STATE,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "mode=0700,size=25%",
        ) {
            halt(e)
        }
        return;
    };
    let mut key = [0u8; 64];
    if let Err(e) = sys::random(&mut key) {
        halt(format!("no randomness for the data disk's key: {e}"))
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = String::with_capacity(256);
    table.push_str("aes-xts-plain64 ");
    for b in key {
        table.push(HEX[(b >> 4) as usize] as char);
        table.push(HEX[(b & 15) as usize] as char);
    }
    key.fill(0);
    table.push_str(&format!(" 0 {} 0", sys::major_minor(dev)));
    let made = dm::create("tvm-data", "crypt", sectors, &table, false);
    // SAFETY: zero bytes keep the string valid UTF-8.
    unsafe { table.as_bytes_mut().fill(0) };
    let mapped = match made {
        Ok(d) => d,
        Err(e) => halt(format!("{e}: the data disk cannot be encrypted")),
    };
    if let Err(e) = sys::mknod_block("/dev/tvm-data", mapped) {
        halt(format!("/dev/tvm-data: {e}"))
    }
    let made = Command::new("/usr/sbin/mke2fs")
        .stdin(Stdio::null())
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            "-L",
            "tvm-data",
            "/dev/tvm-data",
        ])
        .status();
    match made {
        Ok(s) if s.success() => {}
        Ok(s) => halt(format!("mke2fs on the data disk: {s}")),
        Err(e) => halt(format!("/usr/sbin/mke2fs: {e}")),
    }
    // Nothing runs from the disk the host holds; a file system the host
    // damaged stops the VM rather than feeding the agent odd data.
    if let Err(e) = sys::mount(
        "/dev/tvm-data",
        STATE,
        "ext4",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "errors=panic",
    ) {
        halt(e)
    }
    say(format!(
        "data disk: {} GiB, aes-xts-plain64, key made in this guest, at {STATE}",
        sectors / 2 / 1024 / 1024
    ));
}

fn read_miner() -> miner::MinerConfig {
    let mut text = String::new();
    let read = std::fs::File::open(MINER_CONFIG).and_then(|f| {
        f.take(miner::MAX_BYTES as u64 + 1)
            .read_to_string(&mut text)
    });
    if let Err(e) = read {
        halt(format!(
            "no miner settings (fw_cfg opt/tvm/miner: {e}): start the VM with tvm launch --miner-config FILE"
        ))
    }
    match miner::parse(&text) {
        Ok(m) => {
            say(format!("miner hotkey {}", m.hotkey));
            m
        }
        Err(e) => halt(format!("the miner settings (fw_cfg opt/tvm/miner): {e}")),
    }
}

fn start_services() {
    let Ok(list) = std::fs::read_to_string(SERVICES) else {
        return;
    };
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        // The console is the host's serial line: no child reads it.
        match Command::new(program)
            .args(words)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => say(format!("started {program} (pid {})", c.id())),
            Err(e) => halt(format!("{program}: {e}")),
        }
    }
}

/// The agent's log file is rotated at this size (one older file kept).
const LOG_CAP: u64 = 64 * 1024 * 1024;

/// Copies the agent's log lines to the console and to the data disk.
fn tee_log(mut from: impl Read + Send + 'static) {
    let dir = format!("{STATE}/log");
    let _ = std::fs::create_dir_all(&dir);
    let path = format!("{dir}/agent.log");
    let open = |path: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    };
    let spawned = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            let mut file = open(&path);
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = std::io::stdout().write_all(&buf[..n]);
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&buf[..n]);
                    if f.metadata().is_ok_and(|m| m.len() > LOG_CAP) {
                        let _ = std::fs::rename(&path, format!("{path}.1"));
                        file = open(&path);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        say(format!("no log thread ({e}): the agent's log is lost"));
    }
}

fn supervise(m: &miner::MinerConfig) -> ! {
    let mut args = vec![
        "run".to_string(),
        "--config".into(),
        AGENT_CONFIG.into(),
        "--hotkey".into(),
        m.hotkey.clone(),
    ];
    match &m.access {
        miner::Access::AnySigner => args.push("--any-signer".into()),
        miner::Access::Validators(list) => {
            let path = "/run/tvm/allowlist";
            let _ = std::fs::create_dir_all("/run/tvm");
            if let Err(e) = std::fs::write(path, list.join("\n") + "\n") {
                halt(format!("{path}: {e}"))
            }
            args.extend(["--allowlist".into(), path.into()]);
        }
    }
    loop {
        let child = Command::new(AGENT)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => halt(format!("{AGENT}: {e}")),
        };
        if let Some(out) = child.stdout.take() {
            tee_log(out);
        }
        if let Some(err) = child.stderr.take() {
            tee_log(err);
        }
        let pid = child.id() as libc::pid_t;
        say(format!("tvm-agent started (pid {pid})"));
        // Reap every child (PID 1 adopts orphans) until the agent ends.
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer.
            let got = unsafe { libc::waitpid(-1, &mut status, 0) };
            if got == pid {
                say(format!(
                    "tvm-agent exited (wait status {status}); restarting in 5 s"
                ));
                break;
            }
            if got < 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}
