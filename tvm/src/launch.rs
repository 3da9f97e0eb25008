//! `tvm launch`: the QEMU command line of a confidential guest, built from
//! the release's launch parameters (the VM shape its measurements were
//! taken for: vCPUs, memory, CPU model, GPUs, NVSwitches, the 64-bit MMIO
//! window) and this host's devices and paths.
//!
//! The VM's shape changes its measurements: the devices and their slots
//! change the guest's ACPI tables and so TDX's RTMR0; vCPUs, the CPU model,
//! firmware and kernel change SEV-SNP's launch digest. A host that differs
//! from the manifest's shape is refused here, before QEMU starts, rather
//! than found out by every validator as a `measurement` failure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The confidential-computing technology of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Tdx,
    SevSnp,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Tdx => "tdx",
            Platform::SevSnp => "sev-snp",
        })
    }
}

/// A PCI function on the host, `dddd:bb:dd.f` (as `lspci -D` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl std::str::FromStr for PciAddress {
    type Err = LaunchError;
    fn from_str(s: &str) -> Result<Self, LaunchError> {
        let bad = || LaunchError::PciAddress(s.to_string());
        let (domain, rest) = s.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (device, function) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |t: &str, len: usize| {
            (t.len() == len && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(t, 16).ok())
                .flatten()
                .ok_or_else(bad)
        };
        let a = PciAddress {
            domain: hex(domain, 4)?,
            bus: hex(bus, 2)? as u8,
            device: hex(device, 2)? as u8,
            function: hex(function, 1)? as u8,
        };
        if a.device > 0x1f || a.function > 7 {
            return Err(bad());
        }
        Ok(a)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("{0:?} is not a PCI address: give it as lspci -D prints it, e.g. 0000:19:00.0")]
    PciAddress(String),
    #[error("the manifest's launch parameter {key} is {value:?}: {why}")]
    Parameter {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("the release was measured for {want} {what}; this host gives {have}: a guest of another shape fails `measurement` at every validator (give --gpu/--switch once per device, as lspci -Dnd 10de: lists them, each bound to vfio-pci)")]
    Shape {
        what: &'static str,
        want: usize,
        have: usize,
    },
    #[error("{0} is passed through twice")]
    Duplicate(PciAddress),
    #[error("NVSwitches are passed through only with all 8 GPUs of an HGX board (protected PCIe); this launch has {gpus} GPUs")]
    SwitchesWithoutBoard { gpus: usize },
    #[error("port {0} is forwarded twice")]
    DuplicatePort(u16),
    #[error("GPUs and NVSwitches are passed through only under KVM with a TEE")]
    PassthroughNeedsKvm,
    #[error("the path {0:?} holds control characters")]
    Path(String),
    #[error("the release has a data disk and none was given (--data-disk FILE.qcow2)")]
    NoDataDisk,
    #[error("the release was measured without a data disk; drop --data-disk")]
    UnexpectedDataDisk,
    #[error("the VM name {0:?} must be letters, digits and ._+- (at most 128)")]
    Name(String),
}

/// The VM shape a release was measured for: the manifest's `launch`
/// parameters that change its measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub platform: Platform,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub gpus: usize,
    pub switches: usize,
    /// The guest's 64-bit PCI MMIO window (OVMF's `X-PciMmio64Mb`), needed
    /// for the GPUs' large BARs; 0 leaves OVMF's default.
    pub pci_mmio64_mb: u64,
    /// SEV-SNP only: the vCPU model whose VMSA was measured.
    pub cpu: String,
    /// SEV-SNP only: the guest policy (QEMU's `policy=`).
    pub snp_policy: u64,
    /// Whether the guest has its writable data disk: a device more or less
    /// is another PCI layout, and so other measurements.
    pub data_disk: bool,
}

/// A name QEMU takes as it is: letters, digits and `._+-`, not starting
/// with a dot, at most 128 characters (no comma can split an option).
pub fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// A path inside a QEMU option value: commas doubled, as QEMU reads them.
fn opt_path(p: &std::path::Path) -> Result<String, LaunchError> {
    let s = p.display().to_string();
    if s.chars().any(char::is_control) {
        return Err(LaunchError::Path(s));
    }
    Ok(s.replace(',', ",,"))
}

impl Shape {
    /// From a manifest's `launch` parameters: `platform` (tdx | sev-snp),
    /// `vcpus`, `memory_gib`, `gpus`, `switches` (default 0),
    /// `pci_mmio64_mb` (required with GPUs), `data_disk` (default true),
    /// and for SEV-SNP `cpu` (default EPYC-v4) and `snp_policy` (default
    /// 0x30000).
    pub fn from_launch(launch: &BTreeMap<String, String>) -> Result<Self, LaunchError> {
        fn num<T: std::str::FromStr>(
            launch: &BTreeMap<String, String>,
            key: &'static str,
            default: Option<T>,
        ) -> Result<T, LaunchError> {
            match (launch.get(key), default) {
                (Some(v), _) => v.trim().parse().map_err(|_| LaunchError::Parameter {
                    key,
                    value: v.clone(),
                    why: "not a whole number",
                }),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(LaunchError::Parameter {
                    key,
                    value: String::new(),
                    why: "missing: the manifest must say what the release was measured for",
                }),
            }
        }
        let platform = match launch.get("platform").map(String::as_str) {
            Some("tdx") => Platform::Tdx,
            Some("sev-snp") => Platform::SevSnp,
            other => {
                return Err(LaunchError::Parameter {
                    key: "platform",
                    value: other.unwrap_or_default().to_string(),
                    why: "must be tdx or sev-snp",
                })
            }
        };
        let gpus: usize = num(launch, "gpus", Some(0))?;
        let shape = Shape {
            platform,
            vcpus: num(launch, "vcpus", None)?,
            memory_gib: num(launch, "memory_gib", None)?,
            gpus,
            switches: num(launch, "switches", Some(0))?,
            // With GPUs the window must hold every GPU's BAR1 (an
            // H100's is 128 GiB): the release says what it measured.
            pci_mmio64_mb: num(launch, "pci_mmio64_mb", (gpus == 0).then_some(0))?,
            data_disk: match launch.get("data_disk").map(String::as_str) {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => {
                    return Err(LaunchError::Parameter {
                        key: "data_disk",
                        value: v.to_string(),
                        why: "must be true or false",
                    })
                }
            },
            cpu: launch
                .get("cpu")
                .cloned()
                .unwrap_or_else(|| "EPYC-v4".into()),
            snp_policy: match launch.get("snp_policy") {
                None => 0x30000,
                Some(v) => v
                    .trim()
                    .strip_prefix("0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| LaunchError::Parameter {
                        key: "snp_policy",
                        value: v.clone(),
                        why: "not a 0x-prefixed hexadecimal number",
                    })?,
            },
        };
        if shape.vcpus == 0 || shape.vcpus > 512 {
            return Err(LaunchError::Parameter {
                key: "vcpus",
                value: shape.vcpus.to_string(),
                why: "must be 1 to 512",
            });
        }
        if shape.memory_gib == 0 || shape.memory_gib > 4096 {
            return Err(LaunchError::Parameter {
                key: "memory_gib",
                value: shape.memory_gib.to_string(),
                why: "must be 1 to 4096",
            });
        }
        if shape.gpus > 8 || shape.switches > 4 {
            return Err(LaunchError::Parameter {
                key: "gpus",
                value: format!("{} GPUs, {} switches", shape.gpus, shape.switches),
                why: "an HGX board has at most 8 GPUs and 4 NVSwitches",
            });
        }
        if shape.switches > 0 && shape.gpus != 8 {
            return Err(LaunchError::SwitchesWithoutBoard { gpus: shape.gpus });
        }
        if shape.platform == Platform::SevSnp && (shape.snp_policy >> 17) & 1 == 0 {
            return Err(LaunchError::Parameter {
                key: "snp_policy",
                value: format!("{:#x}", shape.snp_policy),
                why: "bit 17 (reserved, must be one) is clear",
            });
        }
        if shape.platform == Platform::SevSnp && (shape.snp_policy >> 19) & 1 == 1 {
            return Err(LaunchError::Parameter {
                key: "snp_policy",
                value: format!("{:#x}", shape.snp_policy),
                why: "bit 19 allows debugging: the host could read the guest's memory",
            });
        }
        if !safe_name(&shape.cpu) {
            return Err(LaunchError::Parameter {
                key: "cpu",
                value: shape.cpu.clone(),
                why: "not a QEMU CPU model name",
            });
        }
        Ok(shape)
    }
}

/// This host's side of a launch: files, devices, ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub firmware: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// The read-only root file system image (dm-verity inside the guest).
    pub root: PathBuf,
    /// The writable disk for models and logs (encrypted inside the guest).
    pub data: Option<PathBuf>,
    pub gpus: Vec<PciAddress>,
    pub switches: Vec<PciAddress>,
    /// Host ports forwarded to the same guest ports (the agent's 8080, 8980).
    pub ports: Vec<u16>,
    /// The host address they listen on (validators must reach them).
    pub listen: std::net::IpAddr,
    /// TDX: the vsock port of the host's quote generation service (QGS).
    pub qgs_port: u32,
    /// Where the guest's serial console is written.
    pub serial_log: PathBuf,
    /// The miner's settings for the guest (hotkey, who may ask), given to
    /// it as fw_cfg `opt/tvm/miner`: the one host input a tvm image reads
    /// that its measurements do not cover (its agent records them).
    pub miner_config: Option<PathBuf>,
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM with the TEE: what miners run.
    Kvm,
    /// Software emulation with the confidential parts left out (no TEE
    /// object, no private memory, no passthrough): only to rehearse a
    /// release's boot on a machine without a TEE. Nothing such a guest
    /// shows could pass as attested.
    DangerousTcgWithoutTee,
}

/// The QEMU arguments (after the program name) for `shape` on `host`.
pub fn qemu_args(shape: &Shape, host: &Host) -> Result<Vec<String>, LaunchError> {
    qemu_args_for(shape, host, Accel::Kvm)
}

/// [`qemu_args`] under the given accelerator.
pub fn qemu_args_for(shape: &Shape, host: &Host, accel: Accel) -> Result<Vec<String>, LaunchError> {
    for (what, want, have) in [
        ("GPUs", shape.gpus, host.gpus.len()),
        ("NVSwitches", shape.switches, host.switches.len()),
    ] {
        if want != have {
            return Err(LaunchError::Shape { what, want, have });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in host.gpus.iter().chain(&host.switches) {
        if !seen.insert(*a) {
            return Err(LaunchError::Duplicate(*a));
        }
    }
    match (shape.data_disk, &host.data) {
        (true, None) => return Err(LaunchError::NoDataDisk),
        (false, Some(_)) => return Err(LaunchError::UnexpectedDataDisk),
        _ => {}
    }
    if !safe_name(&host.name) {
        return Err(LaunchError::Name(host.name.clone()));
    }
    let mut ports = std::collections::BTreeSet::new();
    for p in &host.ports {
        if !ports.insert(*p) {
            return Err(LaunchError::DuplicatePort(*p));
        }
    }
    let mut a: Vec<String> = Vec::new();
    let mut arg = |parts: &[&str]| a.extend(parts.iter().map(|s| s.to_string()));
    let name = &host.name;
    arg(&["-name", &format!("{name},process={name},debug-threads=on")]);
    let mem = format!("{}G", shape.memory_gib);
    if accel == Accel::DangerousTcgWithoutTee {
        if !host.gpus.is_empty() || !host.switches.is_empty() {
            return Err(LaunchError::PassthroughNeedsKvm);
        }
        arg(&[
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
            "-no-user-config",
        ]);
        arg(&["-machine", "q35,hpet=off", "-cpu", "max", "-m", &mem]);
    } else {
        arg(&[
            "-accel",
            "kvm",
            "-nodefaults",
            "-nographic",
            "-no-user-config",
        ]);
    }
    match (accel, shape.platform) {
        (Accel::DangerousTcgWithoutTee, _) => {}
        (Accel::Kvm, Platform::Tdx) => {
            arg(&[
                "-machine",
                "q35,kernel_irqchip=split,confidential-guest-support=tdx0,hpet=off",
            ]);
            let tdx = format!(
                r#"{{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{{"type":"vsock","cid":"2","port":"{}"}}}}"#,
                host.qgs_port
            );
            arg(&["-object", &tdx, "-cpu", "host"]);
            arg(&["-m", &mem]);
        }
        (Accel::Kvm, Platform::SevSnp) => {
            arg(&[
                "-machine",
                "q35,confidential-guest-support=sev0,memory-backend=ram0,hpet=off",
            ]);
            arg(&[
                "-object",
                &format!("memory-backend-memfd,id=ram0,size={mem},share=true,prealloc=false"),
            ]);
            arg(&[
                "-object",
                &format!(
                    "sev-snp-guest,id=sev0,policy={:#x},cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
                    shape.snp_policy
                ),
            ]);
            arg(&["-cpu", &shape.cpu, "-m", &mem]);
        }
    }
    arg(&["-smp", &shape.vcpus.to_string()]);
    arg(&["-bios", &host.firmware.display().to_string()]);
    arg(&["-kernel", &host.kernel.display().to_string()]);
    arg(&["-initrd", &host.initrd.display().to_string()]);
    arg(&["-append", &host.cmdline]);
    // Every device at a fixed slot: the guest's PCI layout (its ACPI
    // tables, RTMR0) is the manifest's whatever else changes.
    arg(&[
        "-drive",
        &format!(
            "file={},if=none,id=root,format=raw,readonly=on",
            opt_path(&host.root)?
        ),
        "-device",
        "virtio-blk-pci,drive=root,addr=0x2",
    ]);
    if let Some(data) = &host.data {
        arg(&[
            "-drive",
            &format!("file={},if=none,id=data,format=qcow2", opt_path(data)?),
            "-device",
            "virtio-blk-pci,drive=data,addr=0x3",
        ]);
    }
    let fwd: String = host
        .ports
        .iter()
        .map(|p| match host.listen {
            std::net::IpAddr::V4(a) => format!(",hostfwd=tcp:{a}:{p}-:{p}"),
            std::net::IpAddr::V6(a) => format!(",hostfwd=tcp:[{a}]:{p}-:{p}"),
        })
        .collect();
    arg(&[
        "-netdev",
        &format!("user,id=net0{fwd}"),
        "-device",
        "virtio-net-pci,netdev=net0,addr=0x4",
    ]);
    arg(&["-serial", &format!("file:{}", opt_path(&host.serial_log)?)]);
    if let Some(m) = &host.miner_config {
        arg(&[
            "-fw_cfg",
            &format!("name=opt/tvm/miner,file={}", opt_path(m)?),
        ]);
    }
    // A guest that stops is not restarted behind the validators' backs.
    arg(&["-no-reboot"]);
    let devices: Vec<&PciAddress> = host.gpus.iter().chain(&host.switches).collect();
    if !devices.is_empty() {
        // One iommufd for every device; each on a root port of its own, so
        // the guest driver sees the topology it expects.
        arg(&["-object", "iommufd,id=iommufd0"]);
        for (i, d) in devices.iter().enumerate() {
            arg(&[
                "-device",
                &format!(
                    "pcie-root-port,id=rp{i},bus=pcie.0,chassis={},slot={},addr={:#x}",
                    i + 1,
                    i + 1,
                    0x10 + i
                ),
                "-device",
                &format!("vfio-pci,host={d},bus=rp{i},iommufd=iommufd0"),
            ]);
        }
    }
    if shape.pci_mmio64_mb > 0 {
        arg(&[
            "-fw_cfg",
            &format!("name=opt/ovmf/X-PciMmio64Mb,string={}", shape.pci_mmio64_mb),
        ]);
    }
    Ok(a)
}

/// The command as one shell line (each argument quoted where it needs it).
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pci_addresses_as_lspci_prints_them() {
        let a: PciAddress = "0000:1b:00.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:1b:00.0");
        assert_eq!(a.bus, 0x1b);
        for bad in [
            "1b:00.0",
            "0000:1b:00",
            "0000:1b:20.0",
            "0000:1b:00.8",
            "0000:zz:00.0",
            "00000:1b:00.0",
            "",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_are_read_with_their_defaults_and_bounds() {
        let s = Shape::from_launch(&launch(&[
            ("platform", "tdx"),
            ("vcpus", "32"),
            ("memory_gib", "256"),
            ("gpus", "8"),
            ("switches", "4"),
            ("pci_mmio64_mb", "2097152"),
        ]))
        .unwrap();
        assert_eq!((s.gpus, s.switches, s.pci_mmio64_mb), (8, 4, 2_097_152));
        assert!(s.data_disk);
        let cpu = Shape::from_launch(&launch(&[
            ("platform", "sev-snp"),
            ("vcpus", "4"),
            ("memory_gib", "16"),
        ]))
        .unwrap();
        assert_eq!(
            (cpu.pci_mmio64_mb, cpu.cpu.as_str(), cpu.snp_policy),
            (0, "EPYC-v4", 0x30000)
        );
        for (pairs, key) in [
            (vec![("vcpus", "4"), ("memory_gib", "16")], "platform"),
            (
                vec![("platform", "sgx"), ("vcpus", "4"), ("memory_gib", "16")],
                "platform",
            ),
            (vec![("platform", "tdx"), ("memory_gib", "16")], "vcpus"),
            (
                vec![("platform", "tdx"), ("vcpus", "0"), ("memory_gib", "16")],
                "vcpus",
            ),
            (
                vec![("platform", "tdx"), ("vcpus", "four"), ("memory_gib", "16")],
                "vcpus",
            ),
            (
                vec![("platform", "tdx"), ("vcpus", "4"), ("memory_gib", "0")],
                "memory_gib",
            ),
            (
                vec![
                    ("platform", "tdx"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("gpus", "9"),
                    ("pci_mmio64_mb", "1"),
                ],
                "gpus",
            ),
            (
                vec![
                    ("platform", "sev-snp"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("snp_policy", "0x10000"),
                ],
                "snp_policy",
            ),
            (
                vec![
                    ("platform", "sev-snp"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("snp_policy", "xyz"),
                ],
                "snp_policy",
            ),
            (
                vec![
                    ("platform", "sev-snp"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("snp_policy", "0xb0000"),
                ],
                "snp_policy",
            ),
            (
                vec![
                    ("platform", "sev-snp"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("snp_policy", "30000"),
                ],
                "snp_policy",
            ),
            (
                vec![
                    ("platform", "sev-snp"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("cpu", "EPYC-v4,+debug"),
                ],
                "cpu",
            ),
            (
                vec![
                    ("platform", "tdx"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("gpus", "1"),
                ],
                "pci_mmio64_mb",
            ),
            (
                vec![
                    ("platform", "tdx"),
                    ("vcpus", "4"),
                    ("memory_gib", "8"),
                    ("data_disk", "yes"),
                ],
                "data_disk",
            ),
        ] {
            match Shape::from_launch(&launch(&pairs)) {
                Err(LaunchError::Parameter { key: k, .. }) => assert_eq!(k, key, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        assert_eq!(
            Shape::from_launch(&launch(&[
                ("platform", "tdx"),
                ("vcpus", "4"),
                ("memory_gib", "8"),
                ("gpus", "1"),
                ("switches", "4"),
                ("pci_mmio64_mb", "262144"),
            ])),
            Err(LaunchError::SwitchesWithoutBoard { gpus: 1 })
        );
    }

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let line = shell_line(
            "qemu-system-x86_64",
            &[
                "-append".into(),
                "console=ttyS0 root=/dev/vda".into(),
                "it's".into(),
            ],
        );
        assert_eq!(
            line,
            r#"qemu-system-x86_64 -append 'console=ttyS0 root=/dev/vda' 'it'\''s'"#
        );
    }
}

/// What the miner gives `tvm launch` besides the release.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub name: String,
    pub image_dir: PathBuf,
    pub data: Option<PathBuf>,
    pub gpus: Vec<PciAddress>,
    pub switches: Vec<PciAddress>,
    pub ports: Vec<u16>,
    pub qgs_port: u32,
    pub serial_log: PathBuf,
    pub miner_config: Option<PathBuf>,
}

/// Why a release cannot be launched from its files.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("the manifest's launch parameter {0} is missing: it names the {1} file the measurements were taken with")]
    Role(&'static str, &'static str),
    #[error("the manifest lists no file {0:?} (its launch parameter {1} names it)")]
    Unlisted(String, &'static str),
    #[error("the manifest names {0:?} as its {1} file: not a plain file name (report it to the operator)")]
    BadName(String, &'static str),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// The release's boot files, checked in `image_dir` against the manifest's
/// sizes and SHA-256 (a file that differs would boot other measurements),
/// and the QEMU arguments for them on this host.
pub fn plan(m: &tvm_image::manifest::Manifest, o: &HostOptions) -> Result<Vec<String>, PlanError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let shape = Shape::from_launch(&m.launch)?;
    let file = |key: &'static str, what: &'static str| -> Result<PathBuf, PlanError> {
        let name = m.launch.get(key).ok_or(PlanError::Role(key, what))?;
        let listed = m
            .files
            .iter()
            .find(|f| f.path == *name)
            .ok_or_else(|| PlanError::Unlisted(name.clone(), key))?;
        // A listed name is a plain file name in the image folder.
        if !safe_name(name) {
            return Err(PlanError::BadName(name.clone(), key));
        }
        let path = o.image_dir.join(name);
        let bad = |reason: String| PlanError::File {
            path: path.display().to_string(),
            reason,
        };
        let mut f = std::fs::File::open(&path).map_err(|e| {
            bad(format!(
                "{e} (download the release's files into --image-dir first)"
            ))
        })?;
        let size = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        if size != listed.size {
            return Err(bad(format!(
                "{size} bytes; the manifest lists {} (an incomplete or other file)",
                listed.size
            )));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if !got.eq_ignore_ascii_case(&listed.sha256) {
            return Err(bad(format!(
                "SHA-256 {got}; the manifest lists {} (download it again)",
                listed.sha256
            )));
        }
        Ok(path)
    };
    let host = Host {
        name: o.name.clone(),
        firmware: file("firmware", "firmware (OVMF/TDVF)")?,
        kernel: file("kernel", "kernel")?,
        initrd: file("initrd", "initramfs")?,
        cmdline: m
            .launch
            .get("cmdline")
            .cloned()
            .ok_or(PlanError::Role("cmdline", "kernel command line"))?,
        root: file("root", "root file system")?,
        data: o.data.clone(),
        gpus: o.gpus.clone(),
        switches: o.switches.clone(),
        ports: o.ports.clone(),
        listen: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        qgs_port: o.qgs_port,
        serial_log: o.serial_log.clone(),
        miner_config: o.miner_config.clone(),
    };
    Ok(qemu_args(&shape, &host)?)
}
