//! `tvm check`: can this host run a confidential VM of the given node type?
//!
//! Each check reads the host (through [`host::Host`]: files under a root and
//! a command runner, so fixture trees stand in for real hosts in tests) and
//! says PASS, WARN, FAIL or SKIP with what it saw and how to fix it. The
//! checks follow what miners hit in the field: TDX or SEV-SNP off in the
//! BIOS, the TDX module not initialised (`nohibernate`), the wrong module for
//! the CPU generation, PCCS and QGS misconfigured, GPUs and NVSwitches not on
//! vfio-pci or not in CC / protected-PCIe mode, the host's NVIDIA driver or
//! fabric manager holding them, and storage declared wrongly.

pub mod host;
pub mod pci;
pub mod report;

use std::collections::BTreeSet;
use std::fmt;

use host::{Host, Ran};
use pci::{Arch, Part};
pub use report::{Action, Finding, Report, Status};

/// What the host is for, as Targon's installer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NodeType {
    /// A CPU-only confidential VM.
    Cpu,
    /// H100/H200 GPUs (1 to 8; 8 with NVSwitches in protected-PCIe mode).
    Hopper,
    /// B200 GPUs.
    Blackwell,
    /// A validator's CPU host.
    ValiCpu,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Cpu => "cpu",
            NodeType::Hopper => "hopper",
            NodeType::Blackwell => "blackwell",
            NodeType::ValiCpu => "vali-cpu",
        }
    }

    fn arch(self) -> Option<Arch> {
        match self {
            NodeType::Hopper => Some(Arch::Hopper),
            NodeType::Blackwell => Some(Arch::Blackwell),
            NodeType::Cpu | NodeType::ValiCpu => None,
        }
    }
}

/// What the checks are asked about besides the host.
#[derive(Debug, Clone)]
pub struct Options {
    pub node_type: NodeType,
    /// The image service (`http://host:port/…`), checked for reachability.
    pub service_url: Option<String>,
    /// Storage the miner declares for the CVM's data disk, bytes.
    pub storage_bytes: Option<u64>,
    /// Where the image and the data disk go (a host path).
    pub vm_dir: String,
}

/// 10^12: storage is declared in decimal terabytes, as disks are sold.
pub const TB: u64 = 1_000_000_000_000;

/// `21`, `21TB`, `21tb`, `1.5TB` → bytes.
pub fn parse_storage(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let num = t
        .strip_suffix("TB")
        .or_else(|| t.strip_suffix("tb"))
        .or_else(|| t.strip_suffix("T"))
        .unwrap_or(t)
        .trim();
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give terabytes, as 21 or 21TB"))?;
    if !(v.is_finite() && v > 0.0 && v <= 10_000.0) {
        return Err(format!("{s:?}: give terabytes between 0 and 10000"));
    }
    Ok((v * TB as f64).round() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Intel,
    Amd,
    Other,
}

/// The TEE a CPU generation provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tee {
    Tdx,
    SevSnp,
}

#[derive(Debug, Clone)]
struct Cpu {
    vendor: Vendor,
    vendor_id: String,
    family: u32,
    model: u32,
    name: String,
    flags: BTreeSet<String>,
}

impl Cpu {
    fn read(h: &Host) -> Option<Cpu> {
        let text = h.read("/proc/cpuinfo").ok()?;
        // The first processor's block describes them all.
        let block = text.split("\n\n").next().unwrap_or_default();
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, v) = l.split_once(':')?;
                (key.trim() == k).then(|| v.trim().to_string())
            })
        };
        let vendor_id = field("vendor_id").unwrap_or_default();
        Some(Cpu {
            vendor: match vendor_id.as_str() {
                "GenuineIntel" => Vendor::Intel,
                "AuthenticAMD" => Vendor::Amd,
                _ => Vendor::Other,
            },
            vendor_id,
            family: field("cpu family")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            model: field("model").and_then(|v| v.parse().ok()).unwrap_or(0),
            name: field("model name").unwrap_or_default(),
            flags: field("flags")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        })
    }

    /// The server generation, when it is one with TDX or SEV-SNP.
    fn generation(&self) -> Option<(&'static str, Tee)> {
        match (self.vendor, self.family, self.model) {
            (Vendor::Intel, 6, 143) => Some(("Sapphire Rapids", Tee::Tdx)),
            (Vendor::Intel, 6, 207) => Some(("Emerald Rapids", Tee::Tdx)),
            (Vendor::Intel, 6, 173 | 174) => Some(("Granite Rapids", Tee::Tdx)),
            (Vendor::Amd, 25, 0x00..=0x0f) => Some(("Milan", Tee::SevSnp)),
            (Vendor::Amd, 25, 0x10..=0x1f) => Some(("Genoa", Tee::SevSnp)),
            (Vendor::Amd, 25, 0xa0..=0xaf) => Some(("Bergamo/Siena", Tee::SevSnp)),
            (Vendor::Amd, 26, 0x00..=0x1f) => Some(("Turin", Tee::SevSnp)),
            _ => None,
        }
    }

    fn tee(&self) -> Option<Tee> {
        match self.vendor {
            Vendor::Intel => Some(Tee::Tdx),
            Vendor::Amd => Some(Tee::SevSnp),
            Vendor::Other => None,
        }
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, family {} model {})",
            self.name, self.vendor_id, self.family, self.model
        )
    }
}

/// One PCI function of the host.
#[derive(Debug, Clone)]
struct Device {
    bdf: String,
    part: Part,
    driver: Option<String>,
    group: Option<String>,
}

impl Device {
    fn name(&self) -> &str {
        match &self.part {
            Part::Gpu { name, .. } | Part::Switch { name } => name,
            Part::Other => "device",
        }
    }
}

fn hex_value(h: &Host, path: &str) -> Option<u32> {
    let v = h.value(path)?;
    u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// NVIDIA GPUs and NVSwitches, and the drivers of every PCI function by
/// IOMMU group (for group viability).
/// (address, driver, IOMMU group) of every PCI function but bridges.
type Functions = Vec<(String, Option<String>, Option<String>)>;

fn pci_devices(h: &Host) -> (Vec<Device>, Functions) {
    let mut nvidia = Vec::new();
    let mut all = Vec::new();
    for bdf in h.list("/sys/bus/pci/devices").unwrap_or_default() {
        let dir = format!("/sys/bus/pci/devices/{bdf}");
        let driver = h.link_name(&format!("{dir}/driver"));
        let group = h.link_name(&format!("{dir}/iommu_group"));
        let class = hex_value(h, &format!("{dir}/class")).unwrap_or(0);
        // PCI bridges (not NVSwitches, class 0680) share a group harmlessly.
        let bridge = class >> 16 == 0x06 && class >> 8 != 0x0680;
        if !bridge {
            all.push((bdf.clone(), driver.clone(), group.clone()));
        }
        if hex_value(h, &format!("{dir}/vendor")) != Some(pci::NVIDIA as u32) {
            continue;
        }
        let device = hex_value(h, &format!("{dir}/device")).unwrap_or(0) as u16;
        let part = pci::part(device, class);
        if part != Part::Other {
            nvidia.push(Device {
                bdf,
                part,
                driver,
                group,
            });
        }
    }
    (nvidia, all)
}

/// The kernel log of this boot: `dmesg`, or the journal when the ring
/// buffer has rotated past the boot messages (hosts up for weeks).
fn kernel_log(h: &Host) -> Result<String, String> {
    let dmesg = h.run("dmesg", &[]);
    if let Some(out) = dmesg.ok() {
        if out.contains("Linux version") {
            return Ok(out.to_string());
        }
    }
    let journal = h.run("journalctl", &["-k", "-b", "--no-pager", "-o", "cat"]);
    match (dmesg.ok(), journal.ok()) {
        (_, Some(j)) if j.contains("Linux version") => Ok(j.to_string()),
        // Judging a log without its boot messages would fail healthy hosts.
        (Some(_), _) => Err(
            "the kernel log has rotated past the boot messages and the journal (journalctl -k -b) does not have them: reboot, or check with journalctl -k -b | grep -e virt/tdx -e SEV"
                .into(),
        ),
        _ => Err(match dmesg {
            Ran::Exited { stderr, .. } => format!(
                "dmesg: {} (run tvm check as root to read the kernel log)",
                stderr.trim()
            ),
            Ran::NotFound => "neither dmesg nor journalctl is installed".into(),
            Ran::Failed(e) => e,
        }),
    }
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// A kernel log line without its `[   12.345678] ` stamp.
fn unstamped(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((_, rest)) => rest,
        None => line,
    }
}

/// The GPUs of the node type's architecture and, on an 8-GPU Hopper board,
/// its NVSwitches (PCI addresses): what a CVM of this node type is given.
pub fn devices(h: &Host, node: NodeType) -> (Vec<String>, Vec<String>) {
    let Some(arch) = node.arch() else {
        return (Vec::new(), Vec::new());
    };
    let (nvidia, _) = pci_devices(h);
    let gpus = nvidia
        .iter()
        .filter(|d| matches!(&d.part, Part::Gpu { arch: a, .. } if *a == arch))
        .map(|d| d.bdf.clone())
        .collect::<Vec<_>>();
    let switches = if node == NodeType::Hopper && gpus.len() == 8 {
        nvidia
            .iter()
            .filter(|d| matches!(d.part, Part::Switch { .. }))
            .map(|d| d.bdf.clone())
            .collect()
    } else {
        Vec::new()
    };
    (gpus, switches)
}

/// Run every check.
pub fn run(h: &Host, o: &Options) -> Report {
    let mut out = Vec::new();
    let cpu = Cpu::read(h);
    let log = kernel_log(h);
    let cmdline = h.value("/proc/cmdline").unwrap_or_default();
    let (nvidia, all) = pci_devices(h);

    out.push(check_cpu(cpu.as_ref()));
    let tee = cpu.as_ref().and_then(Cpu::tee);
    out.push(check_bios(cpu.as_ref(), tee, &log));
    out.push(check_kvm(h, tee, &cmdline));
    out.push(check_module(cpu.as_ref(), tee, &log));
    out.push(check_cmdline(h, tee, &cmdline));
    if tee == Some(Tee::Tdx) {
        out.push(check_tme(cpu.as_ref(), &log));
        out.push(check_sgx(h, cpu.as_ref()));
        out.push(check_pccs(h));
        out.push(check_registration(h));
        out.push(check_qgs(h));
    }
    out.push(check_iommu(h, &cmdline));
    out.push(check_vfio(h));
    let gpu_node = o.node_type.arch().is_some();
    let gpus = nvidia
        .iter()
        .filter(|d| matches!(d.part, Part::Gpu { .. }))
        .cloned()
        .collect::<Vec<_>>();
    let switches = nvidia
        .iter()
        .filter(|d| matches!(d.part, Part::Switch { .. }))
        .cloned()
        .collect::<Vec<_>>();
    if gpu_node {
        out.push(check_gpus(o.node_type, &gpus));
        out.push(check_bound(
            "gpu.vfio",
            "GPUs bound to vfio-pci",
            &gpus,
            &all,
        ));
        out.push(check_switches(o.node_type, &gpus, &switches, &all));
        out.push(check_cc_mode(h, o.node_type, &gpus, &switches));
        out.push(check_host_driver(h));
        out.push(check_fabric_manager(h));
    } else {
        out.push(Finding::new(
            "gpu.devices",
            "GPUs",
            Status::Skip,
            format!(
                "node type {}: no GPU is passed to the CVM",
                o.node_type.as_str()
            ),
        ));
    }
    out.push(check_qemu(h, tee));
    out.push(check_memory(h, gpu_node));
    out.push(check_storage(h, o));
    out.push(check_network(h, o));
    Report::new(o.node_type, out)
}

fn check_cpu(cpu: Option<&Cpu>) -> Finding {
    const ID: &str = "cpu.generation";
    const T: &str = "CPU with TDX or SEV-SNP";
    let Some(cpu) = cpu else {
        return Finding::new(ID, T, Status::Fail, "/proc/cpuinfo cannot be read")
            .fix("run tvm check on the host itself (or give --root the host's root)");
    };
    if cpu.flags.contains("hypervisor") {
        return Finding::new(
            ID,
            T,
            Status::Fail,
            format!("{cpu}, running under a hypervisor (cpuinfo flag \"hypervisor\")"),
        )
        .fix("run on the bare-metal host: a confidential VM cannot be launched from inside another VM");
    }
    match (cpu.generation(), cpu.vendor) {
        (Some((generation, tee)), _) => Finding::new(
            ID,
            T,
            Status::Pass,
            format!(
                "{cpu}: {generation}, {}",
                match tee {
                    Tee::Tdx => "Intel TDX",
                    Tee::SevSnp => "AMD SEV-SNP",
                }
            ),
        ),
        (None, Vendor::Intel | Vendor::Amd) => Finding::new(
            ID,
            T,
            Status::Warn,
            format!("{cpu}: not a generation tvm knows to have TDX (Sapphire, Emerald, Granite Rapids) or SEV-SNP (EPYC Milan, Genoa, Bergamo, Siena, Turin)"),
        )
        .fix("check the CPU's TDX or SEV-SNP support with its vendor; the checks below tell whether it is enabled"),
        (None, Vendor::Other) => Finding::new(
            ID,
            T,
            Status::Fail,
            format!("{cpu}: neither Intel nor AMD"),
        )
        .fix("a miner host needs an Intel Xeon with TDX (4th generation or later) or an AMD EPYC with SEV-SNP (Milan or later)"),
    }
}

fn check_bios(cpu: Option<&Cpu>, tee: Option<Tee>, log: &Result<String, String>) -> Finding {
    const ID: &str = "tee.bios";
    const T: &str = "TDX / SEV-SNP enabled in the BIOS";
    let (Some(cpu), Some(tee)) = (cpu, tee) else {
        return Finding::new(ID, T, Status::Skip, "no Intel or AMD CPU");
    };
    let (flag, fix) = match tee {
        Tee::Tdx => ("tdx_host_platform", "in the BIOS: enable TME, TME-MT (with a non-zero TDX key split), TDX, the SEAM loader and SGX; disable \"Limit CPU PA to 46 bits\"; then reboot"),
        Tee::SevSnp => ("sev_snp", "in the BIOS: enable SMEE, SEV-SNP, SNP memory coverage and the IOMMU; then reboot"),
    };
    let bios_lines = log
        .as_ref()
        .map(|l| {
            lines_with(l, "private KeyID")
                .into_iter()
                .chain(lines_with(l, "TDX not supported by the host platform"))
                .chain(lines_with(
                    l,
                    "Memory for the RMP table has not been reserved",
                ))
                .map(unstamped)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    if cpu.flags.contains(flag) {
        Finding::new(
            ID,
            T,
            Status::Pass,
            format!("cpuinfo flag \"{flag}\" present"),
        )
    } else {
        let mut saw = format!("cpuinfo flag \"{flag}\" absent: the firmware did not enable it");
        if !bios_lines.is_empty() {
            saw.push_str(&format!("\nkernel: {bios_lines}"));
        }
        Finding::new(ID, T, Status::Fail, saw).fix(fix)
    }
}

fn check_kvm(h: &Host, tee: Option<Tee>, cmdline: &str) -> Finding {
    const ID: &str = "tee.kvm";
    const T: &str = "KVM with TDX / SEV-SNP";
    let kernel = h
        .value("/proc/sys/kernel/osrelease")
        .unwrap_or_else(|| "?".into());
    let Some(tee) = tee else {
        return Finding::new(
            ID,
            T,
            Status::Skip,
            format!("kernel {kernel}; no Intel or AMD CPU"),
        );
    };
    if !h.exists("/dev/kvm") {
        return Finding::new(
            ID,
            T,
            Status::Fail,
            format!("kernel {kernel}; /dev/kvm absent"),
        )
        .fix(match tee {
            Tee::Tdx => {
                "load KVM: modprobe kvm_intel tdx=1 (and enable virtualisation in the BIOS)"
            }
            Tee::SevSnp => "load KVM: modprobe kvm_amd (and enable SVM in the BIOS)",
        });
    }
    let (param, fix) = match tee {
        Tee::Tdx => (
            "/sys/module/kvm_intel/parameters/tdx",
            "boot with kvm_intel.tdx=1 (or options kvm_intel tdx=1 in /etc/modprobe.d); a kernel without this parameter has no TDX host support: use upstream 6.16 or later, or your distribution's TDX host kernel (Ubuntu 24.04: canonical/tdx)",
        ),
        Tee::SevSnp => (
            "/sys/module/kvm_amd/parameters/sev_snp",
            "use a kernel with SEV-SNP host support (upstream 6.11 or later) and load kvm_amd with sev_snp=1",
        ),
    };
    let asked = cmdline
        .split_whitespace()
        .any(|w| w == "kvm_intel.tdx=1" || w == "kvm_amd.sev_snp=1")
        || h.list("/etc/modprobe.d")
            .unwrap_or_default()
            .iter()
            .filter_map(|f| h.read(&format!("/etc/modprobe.d/{f}")).ok())
            .any(|t| t.contains("kvm_intel tdx=1") || t.contains("kvm_amd sev_snp=1"));
    match h.value(param).as_deref() {
        Some("Y") | Some("1") => {
            Finding::new(ID, T, Status::Pass, format!("kernel {kernel}; {param} = Y"))
        }
        // KVM turns the parameter off when the TDX module or SNP firmware
        // did not come up, even when the command line asked for it.
        Some(v) if asked => Finding::new(
            ID,
            T,
            Status::Fail,
            format!("kernel {kernel}; {param} = {v} although the kernel was asked for it: KVM turned it off"),
        )
        .fix("see tee.module and tee.bios: KVM turns TDX / SEV-SNP off when the module or firmware does not initialise"),
        Some(v) => Finding::new(
            ID,
            T,
            Status::Fail,
            format!("kernel {kernel}; {param} = {v}"),
        )
        .fix(fix),
        None => Finding::new(
            ID,
            T,
            Status::Fail,
            format!("kernel {kernel}; {param} absent"),
        )
        .fix(fix),
    }
}

/// The TDX module's version from the kernel log → (major, minor, line):
/// `TDX module: … major_version 1, minor_version 5, …` (Canonical's 6.8),
/// `TDX module 1.5.06.00.0744, build number …` (other vendor kernels),
/// `Module version: 1.5.24` (upstream from 7.0). Upstream 6.16 to 6.19
/// print none.
fn tdx_module_version(log: &str) -> Option<(u32, u32, String)> {
    for l in log.lines().filter(|l| l.contains("virt/tdx:")) {
        let text = unstamped(l);
        let num = |key: &str| -> Option<u32> {
            let rest = text.split(key).nth(1)?;
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if let (Some(major), Some(minor)) = (num("major_version"), num("minor_version")) {
            return Some((major, minor, text.to_string()));
        }
        let dotted = text
            .split("Module version: ")
            .nth(1)
            .or_else(|| text.split("TDX module ").nth(1));
        if let Some(rest) = dotted {
            let mut parts = rest.split('.');
            let major = parts.next().and_then(|p| p.trim().parse().ok());
            let minor = parts.next().and_then(|p| p.trim().parse().ok());
            if let (Some(major), Some(minor)) = (major, minor) {
                return Some((major, minor, text.to_string()));
            }
        }
    }
    None
}

fn check_module(cpu: Option<&Cpu>, tee: Option<Tee>, log: &Result<String, String>) -> Finding {
    const ID: &str = "tee.module";
    const T: &str = "TDX module / SEV-SNP firmware initialised";
    let Some(tee) = tee else {
        return Finding::new(ID, T, Status::Skip, "no Intel or AMD CPU");
    };
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            return Finding::new(ID, T, Status::Skip, format!("kernel log unreadable: {e}"))
                .fix("run as root")
        }
    };
    match tee {
        Tee::Tdx => {
            // "module initialized" (6.8 to 6.19), "TDX-Module initialized" (7.x).
            let init = log
                .lines()
                .filter(|l| {
                    l.contains("virt/tdx: module initialized")
                        || l.contains("virt/tdx: TDX-Module initialized")
                })
                .collect::<Vec<_>>();
            let errors = lines_with(log, "virt/tdx:")
                .into_iter()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("fail")
                        || l.contains("error")
                        || l.contains("disabled")
                        || l.contains("not supported")
                        || l.contains("not loaded")
                        || l.contains("upgrade")
                })
                .map(unstamped)
                .collect::<Vec<_>>();
            if init.is_empty() {
                let mut saw = "no \"virt/tdx: module initialized\" in the kernel log".to_string();
                if lines_with(log, "virt/tdx: BIOS enabled: private KeyID range").is_empty() {
                    saw.push_str(" and no \"BIOS enabled: private KeyID range\": the BIOS gave TDX no KeyIDs");
                }
                for e in &errors {
                    saw.push_str(&format!("\nkernel: {e}"));
                }
                return Finding::new(ID, T, Status::Fail, saw).fix(
                    "boot with nohibernate and kvm_intel.tdx=1, install the TDX module for this CPU generation (/lib/firmware/intel-seam or the BIOS's SEAM loader), then reboot",
                );
            }
            let generation = cpu.and_then(Cpu::generation).map(|(g, _)| g);
            match (tdx_module_version(log), generation) {
                (Some((major, minor, line)), Some(g)) => {
                    let needed = if g == "Granite Rapids" { (2, 0) } else { (1, 5) };
                    let ok = if needed.0 == 2 {
                        major >= 2
                    } else {
                        major == 1 && minor >= 5
                    };
                    let saw = format!("module initialized; {line}");
                    if ok {
                        Finding::new(ID, T, Status::Pass, saw)
                    } else {
                        Finding::new(ID, T, Status::Fail, format!("{saw}; {g} needs TDX module {}.{}.x", needed.0, needed.1))
                            .fix(format!("install TDX module {}.{}.x for {g} (Intel's tdx-module releases) and reboot", needed.0, needed.1))
                    }
                }
                (None, _) => Finding::new(
                    ID,
                    T,
                    Status::Warn,
                    "module initialized; its version is not in the kernel log",
                )
                .fix("check the TDX module version matches the CPU: 1.5.x for Sapphire and Emerald Rapids, 2.0.x for Granite Rapids"),
                (Some((_, _, line)), None) => Finding::new(ID, T, Status::Pass, format!("module initialized; {line}")),
            }
        }
        Tee::SevSnp => {
            let enabled = lines_with(log, "SEV-SNP enabled");
            let api = lines_with(log, "SEV API:")
                .into_iter()
                .chain(lines_with(log, "SEV-SNP API:"))
                .map(unstamped)
                .collect::<Vec<_>>();
            let mut saw = match enabled.first() {
                Some(l) => unstamped(l).to_string(),
                None => "no \"SEV-SNP enabled\" in the kernel log".to_string(),
            };
            if let Some(a) = api.first() {
                saw.push_str(&format!("; {a}"));
            }
            if enabled.is_empty() {
                Finding::new(ID, T, Status::Fail, saw).fix(
                    "enable SEV-SNP and SNP memory coverage in the BIOS, update the SEV firmware (amd_sev_fam19h_*.sbin in /lib/firmware/amd), load kvm_amd with sev_snp=1, then reboot",
                )
            } else {
                Finding::new(ID, T, Status::Pass, saw)
            }
        }
    }
}

fn check_cmdline(h: &Host, tee: Option<Tee>, cmdline: &str) -> Finding {
    const ID: &str = "kernel.cmdline";
    const T: &str = "kernel command line";
    let words = cmdline.split_whitespace().collect::<BTreeSet<_>>();
    let has = |w: &str| words.contains(w);
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    match tee {
        Some(Tee::Tdx) => {
            if !has("nohibernate") {
                fail.push("nohibernate is missing: the TDX module does not initialise while hibernation is possible");
            }
            let param_on = matches!(
                h.value("/sys/module/kvm_intel/parameters/tdx").as_deref(),
                Some("Y")
            );
            if !has("kvm_intel.tdx=1") && !param_on {
                fail.push("kvm_intel.tdx=1 is missing (and kvm_intel's tdx parameter is not on)");
            }
            if !has("intel_iommu=on") {
                warn.push("intel_iommu=on is missing: GPU passthrough needs the IOMMU on");
            }
        }
        Some(Tee::SevSnp) => {
            if words
                .iter()
                .any(|w| *w == "amd_iommu=off" || *w == "iommu=off")
            {
                fail.push("the IOMMU is switched off: SEV-SNP needs it");
            }
            if has("mem_encrypt=off") {
                fail.push("mem_encrypt=off: SME/SEV is switched off");
            }
        }
        None => {}
    }
    let saw = format!("/proc/cmdline: {cmdline}");
    let fix = "add the missing words to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, run update-grub, reboot";
    if !fail.is_empty() {
        let mut all = fail;
        all.extend(warn);
        Finding::new(ID, T, Status::Fail, format!("{saw}\n{}", all.join("\n"))).fix(fix)
    } else if !warn.is_empty() {
        Finding::new(ID, T, Status::Warn, format!("{saw}\n{}", warn.join("\n"))).fix(fix)
    } else {
        Finding::new(ID, T, Status::Pass, saw)
    }
}

fn check_tme(cpu: Option<&Cpu>, log: &Result<String, String>) -> Finding {
    const ID: &str = "cpu.tme";
    const T: &str = "TME / TME-MT memory encryption";
    let flag = cpu.is_some_and(|c| c.flags.contains("tme"));
    let Ok(log) = log else {
        return Finding::new(ID, T, Status::Skip, "kernel log unreadable").fix("run as root");
    };
    let lines = lines_with(log, "x86/tme:")
        .into_iter()
        .chain(lines_with(log, "x86/mktme:"))
        .map(unstamped)
        .collect::<Vec<_>>();
    let off = lines
        .iter()
        .any(|l| l.contains("not enabled by BIOS") || l.contains("BIOS disabled"));
    let on = lines
        .iter()
        .any(|l| l.contains("enabled by BIOS") && !l.contains("not enabled"));
    let saw = format!(
        "cpuinfo flag \"tme\" {}; kernel: {}",
        if flag { "present" } else { "absent" },
        if lines.is_empty() {
            "no x86/tme lines".to_string()
        } else {
            lines.join("; ")
        }
    );
    let fix = "enable Total Memory Encryption and its multi-tenant mode (TME-MT) in the BIOS, with a non-zero TDX key split";
    if off || !flag {
        Finding::new(ID, T, Status::Fail, saw).fix(fix)
    } else if on {
        Finding::new(ID, T, Status::Pass, saw)
    } else {
        // Kernels from 6.7 no longer print TME's state; the TDX module
        // does not initialise without it, so tee.module speaks for it.
        Finding::new(ID, T, Status::Pass, format!("{saw} (tee.module covers it)"))
    }
}

fn check_sgx(h: &Host, cpu: Option<&Cpu>) -> Finding {
    const ID: &str = "cpu.sgx";
    const T: &str = "SGX (the quoting enclave signs TDX quotes)";
    let flag = cpu.is_some_and(|c| c.flags.contains("sgx"));
    let enclave = h.exists("/dev/sgx_enclave");
    let provision = h.exists("/dev/sgx_provision");
    let saw = format!(
        "cpuinfo flag \"sgx\" {}; /dev/sgx_enclave {}; /dev/sgx_provision {}",
        if flag { "present" } else { "absent" },
        if enclave { "present" } else { "absent" },
        if provision { "present" } else { "absent" }
    );
    if flag && enclave && provision {
        Finding::new(ID, T, Status::Pass, saw)
    } else {
        Finding::new(ID, T, Status::Fail, saw)
            .fix("enable SGX in the BIOS (with a PRMRR size of at least 64 MB) and use a kernel with the in-tree SGX driver (5.11 or later)")
    }
}

/// `pccs_url` from the DCAP client's configuration, as (url, host, port).
fn pccs_url(h: &Host) -> Result<(String, String, u16), String> {
    const CONF: &str = "/etc/sgx_default_qcnl.conf";
    let text = h.read(CONF).map_err(|e| format!("{CONF}: {e}"))?;
    // The file is JSON with comments.
    let stripped = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let v: serde_json::Value =
        serde_json::from_str(&stripped).map_err(|e| format!("{CONF}: not valid JSON: {e}"))?;
    let url = v
        .get("pccs_url")
        .and_then(|u| u.as_str())
        .ok_or_else(|| format!("{CONF}: no pccs_url"))?
        .to_string();
    let (host, port) =
        host_port(&url).ok_or_else(|| format!("{CONF}: pccs_url {url:?} is not an http(s) URL"))?;
    Ok((url, host, port))
}

/// `scheme://host[:port]/…` → (host, port).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Some((host.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

fn check_pccs(h: &Host) -> Finding {
    const ID: &str = "dcap.pccs";
    const T: &str = "PCCS (collateral for TDX quotes)";
    const PCCS_CONF: &str = "/opt/intel/sgx-dcap-pccs/config/default.json";
    let (url, host, port) = match pccs_url(h) {
        Ok(u) => u,
        Err(e) => {
            return Finding::new(ID, T, Status::Fail, e).fix(
                "install Intel's DCAP client (libsgx-dcap-default-qpl) and set pccs_url in /etc/sgx_default_qcnl.conf to your PCCS (https://localhost:8081/sgx/certification/v4/ for a local one)",
            )
        }
    };
    let mut saw = format!("pccs_url {url}");
    if let Err(e) = h.connect(&host, port) {
        saw.push_str(&format!("; not reachable: {e}"));
        return Finding::new(ID, T, Status::Fail, saw)
            .fix("start the PCCS (systemctl start pccs) or correct pccs_url; quotes come back empty (QCNL 0xb010/0xb033) without it");
    }
    saw.push_str("; reachable");
    let local = host == "localhost" || host == "127.0.0.1" || host == "::1";
    if local {
        match h
            .read(PCCS_CONF)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            Some(v) => {
                let key = v.get("ApiKey").and_then(|k| k.as_str()).unwrap_or_default();
                if key.trim().is_empty() {
                    saw.push_str(&format!("; {PCCS_CONF}: ApiKey is empty"));
                    return Finding::new(ID, T, Status::Fail, saw).fix(
                        "subscribe to Intel's Provisioning Certification Service (api.portal.trustedservices.intel.com), put the primary key in ApiKey, restart pccs",
                    );
                }
                saw.push_str("; PCS API key set");
            }
            None => saw.push_str(&format!("; {PCCS_CONF} unreadable (not checked)")),
        }
    }
    Finding::new(ID, T, Status::Pass, saw)
}

fn check_registration(h: &Host) -> Finding {
    const ID: &str = "dcap.registration";
    const T: &str = "platform registered with Intel (MPA)";
    const LOG: &str = "/var/log/mpa_registration.log";
    let fix = "install sgx-ra-service (Intel's multi-package registration agent), enable SGX Auto MP Registration in the BIOS, reboot, and check /var/log/mpa_registration.log; multi-socket hosts need it before their PCK certificates exist";
    // Its exit code is the status; its words say which.
    if let Ran::Exited { stdout, .. } = h.run("mpa_manage", &["-get_registration_status"]) {
        let t = stdout.trim();
        return if t.contains("completed successfully") {
            Finding::new(ID, T, Status::Pass, format!("mpa_manage: {t}"))
        } else {
            Finding::new(ID, T, Status::Fail, format!("mpa_manage: {t}")).fix(fix)
        };
    }
    match h.read(LOG) {
        Ok(text) => {
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            if last.contains("passed successfully") || last.contains("completed successfully") {
                Finding::new(ID, T, Status::Pass, format!("{LOG}: {}", last.trim()))
            } else {
                Finding::new(ID, T, Status::Fail, format!("{LOG}: {}", last.trim())).fix(fix)
            }
        }
        Err(_) => Finding::new(ID, T, Status::Warn, format!("no mpa_manage and no {LOG}")).fix(fix),
    }
}

/// `port = N` in /etc/qgs.conf, as written.
fn qgs_port_setting(h: &Host) -> Option<String> {
    h.read("/etc/qgs.conf").ok().and_then(|t| {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix("port")
                    .map(|r| r.trim_start_matches([' ', '=']).trim().to_string())
            })
    })
}

/// The vsock port QGS listens on (its default, 4050, when unset).
pub fn qgs_port(h: &Host) -> u32 {
    qgs_port_setting(h)
        .and_then(|p| p.parse().ok())
        .unwrap_or(4050)
}

fn check_qgs(h: &Host) -> Finding {
    const ID: &str = "dcap.qgs";
    const T: &str = "QGS (TDX quote generation service)";
    let active = h.run("systemctl", &["is-active", "qgsd"]);
    let state = match &active {
        Ran::Exited { stdout, stderr, .. } if stdout.trim().is_empty() => {
            format!("unknown (systemctl: {})", stderr.trim())
        }
        Ran::Exited { stdout, .. } => stdout.trim().to_string(),
        Ran::NotFound => "systemctl not found".into(),
        Ran::Failed(e) => e.clone(),
    };
    let port = qgs_port_setting(h);
    let saw = format!(
        "qgsd: {state}; /etc/qgs.conf port: {}",
        port.as_deref().unwrap_or("not set (4050)")
    );
    if state != "active" {
        return Finding::new(ID, T, Status::Fail, saw)
            .fix("install tdx-qgs and start it: systemctl enable --now qgsd (it has been seen to die after days: check it with tvm status)")
            .auto(vec![Action::Run {
                argv: vec!["systemctl".into(), "start".into(), "qgsd".into()],
            }]);
    }
    match port.as_deref() {
        Some(p) if p != "4050" => Finding::new(ID, T, Status::Warn, saw).fix(format!(
            "QGS listens on vsock port {p}: start the CVM with tvm launch --qgs-port {p}"
        )),
        _ => Finding::new(ID, T, Status::Pass, saw),
    }
}

fn check_iommu(h: &Host, cmdline: &str) -> Finding {
    const ID: &str = "iommu";
    const T: &str = "IOMMU on";
    let groups = h.list("/sys/kernel/iommu_groups").unwrap_or_default().len();
    if groups > 0 {
        Finding::new(ID, T, Status::Pass, format!("{groups} IOMMU groups"))
    } else {
        Finding::new(
            ID,
            T,
            Status::Fail,
            "no IOMMU groups in /sys/kernel/iommu_groups",
        )
        .fix(if cmdline.contains("intel_iommu=on") || cmdline.contains("amd_iommu") {
            "enable VT-d (Intel) or AMD-Vi (AMD) in the BIOS"
        } else {
            "enable VT-d (Intel) or AMD-Vi (AMD) in the BIOS; on Intel also boot with intel_iommu=on"
        })
    }
}

fn check_vfio(h: &Host) -> Finding {
    const ID: &str = "vfio";
    const T: &str = "vfio-pci and iommufd";
    let mut saw = Vec::new();
    let mut missing = Vec::new();
    for (module, dev) in [("vfio_pci", "/dev/vfio/vfio"), ("iommufd", "/dev/iommu")] {
        // Built-in modules have no /sys/module entry without parameters; the device node tells.
        let loaded = h.exists(&format!("/sys/module/{module}")) || h.exists(dev);
        match h.mode(dev) {
            Some((mode, uid, gid)) => saw.push(format!("{dev} mode {mode:o} uid {uid} gid {gid}")),
            None => saw.push(format!("{dev} absent")),
        }
        if !loaded || !h.exists(dev) {
            missing.push(module);
        }
    }
    if missing.is_empty() {
        Finding::new(ID, T, Status::Pass, saw.join("; "))
    } else {
        let mut actions = missing
            .iter()
            .map(|m| Action::Run {
                argv: vec!["modprobe".into(), m.replace('_', "-")],
            })
            .collect::<Vec<_>>();
        actions.push(Action::Write {
            path: "/etc/modules-load.d/tvm-vfio.conf".into(),
            contents: "# Written by tvm check --fix-warnings: GPU passthrough to the CVM.\nvfio-pci\niommufd\n".into(),
        });
        Finding::new(ID, T, Status::Fail, format!("{} not loaded; {}", missing.join(", "), saw.join("; ")))
            .fix("load them (modprobe vfio-pci; modprobe iommufd) and at boot (/etc/modules-load.d); tvm launch runs QEMU as root, other users need udev rules for /dev/vfio and /dev/iommu")
            .auto(actions)
    }
}

fn check_gpus(node: NodeType, gpus: &[Device]) -> Finding {
    const ID: &str = "gpu.devices";
    const T: &str = "GPUs for the node type";
    let Some(arch) = node.arch() else {
        return Finding::new(ID, T, Status::Skip, "no GPUs needed");
    };
    let list = gpus
        .iter()
        .map(|g| format!("{} {}", g.bdf, g.name()))
        .collect::<Vec<_>>()
        .join(", ");
    if gpus.is_empty() {
        return Finding::new(ID, T, Status::Fail, "no NVIDIA GPU on the PCI bus").fix(format!(
            "node type {} needs {arch} GPUs; use --node-type cpu for a CPU-only node",
            node.as_str()
        ));
    }
    let wrong = gpus
        .iter()
        .filter(|g| !matches!(g.part, Part::Gpu { arch: a, .. } if a == arch))
        .map(|g| format!("{} {}", g.bdf, g.name()))
        .collect::<Vec<_>>();
    if !wrong.is_empty() {
        return Finding::new(
            ID,
            T,
            Status::Fail,
            format!(
                "{} GPUs: {list}; not {arch}: {}",
                gpus.len(),
                wrong.join(", ")
            ),
        )
        .fix(format!(
            "node type {} passes only {arch} GPUs to its CVM: choose the node type of these GPUs",
            node.as_str()
        ));
    }
    if gpus.len() > 8 {
        return Finding::new(ID, T, Status::Fail, format!("{} GPUs: {list}", gpus.len()))
            .fix("a CVM takes at most 8 GPUs");
    }
    Finding::new(ID, T, Status::Pass, format!("{} GPUs: {list}", gpus.len()))
}

/// Every device bound to vfio-pci, and no other device in its IOMMU group
/// bound to a host driver (QEMU refuses a group that is not viable).
fn check_bound(
    id: &'static str,
    title: &'static str,
    devices: &[Device],
    all: &Functions,
) -> Finding {
    if devices.is_empty() {
        return Finding::new(id, title, Status::Skip, "none on this host");
    }
    let mut bad = Vec::new();
    let mut unbound = Vec::new();
    let mut saw = Vec::new();
    for d in devices {
        let driver = d.driver.as_deref().unwrap_or("no driver");
        saw.push(format!("{} {}: {driver}", d.bdf, d.name()));
        if driver != "vfio-pci" {
            bad.push(match &d.driver {
                Some(driver) => format!("{} is bound to {driver}", d.bdf),
                None => format!("{} has no driver", d.bdf),
            });
            unbound.push(d.bdf.as_str());
            continue;
        }
        let Some(group) = &d.group else {
            bad.push(format!("{} has no IOMMU group", d.bdf));
            continue;
        };
        for (other, drv, g) in all {
            if g.as_ref() == Some(group) && other != &d.bdf {
                match drv.as_deref() {
                    Some("vfio-pci") | None => {}
                    Some(drv) => bad.push(format!(
                        "IOMMU group {group} of {} also holds {other}, bound to {drv} (group not viable)",
                        d.bdf
                    )),
                }
            }
        }
    }
    if bad.is_empty() {
        return Finding::new(id, title, Status::Pass, saw.join("\n"));
    }
    let f = Finding::new(
        id,
        title,
        Status::Fail,
        format!("{}\n{}", saw.join("\n"), bad.join("\n")),
    );
    if unbound.is_empty() {
        f.fix("give every device of the group to vfio-pci, or move the card to a slot with its own IOMMU group (ACS)")
    } else {
        f.fix(format!(
            "bind them to vfio-pci (stop anything using them first): for d in {}; do echo vfio-pci > /sys/bus/pci/devices/$d/driver_override; echo $d > /sys/bus/pci/devices/$d/driver/unbind 2>/dev/null; echo $d > /sys/bus/pci/drivers_probe; done; make it permanent with the vfio-pci.ids= kernel parameter or a udev rule",
            unbound.join(" ")
        ))
    }
}

fn check_switches(
    node: NodeType,
    gpus: &[Device],
    switches: &[Device],
    all: &Functions,
) -> Finding {
    const ID: &str = "nvswitch.vfio";
    const T: &str = "NVSwitches (8-GPU boards, protected PCIe)";
    let hopper8 = node == NodeType::Hopper && gpus.len() == 8;
    if !hopper8 {
        return match switches.len() {
            0 => Finding::new(ID, T, Status::Skip, format!("{} GPUs: no NVSwitch is passed through", gpus.len())),
            n => Finding::new(ID, T, Status::Warn, format!("{n} NVSwitches, {} GPUs: the switches are passed through only with 8 Hopper GPUs", gpus.len()))
                .fix("pass all 8 GPUs of the board to one CVM (protected PCIe), or none of its switches"),
        };
    }
    if switches.len() != 4 {
        return Finding::new(
            ID,
            T,
            Status::Fail,
            format!("8 Hopper GPUs and {} NVSwitches (an HGX board has 4)", switches.len()),
        )
        .fix("an 8-GPU node runs in protected-PCIe mode with its 4 NVSwitches passed through: check the board and that no switch is hidden by the BIOS");
    }
    check_bound(ID, T, switches, all)
}

/// `nvidia_gpu_tools.py` (NVIDIA's gpu-admin-tools) reports the mode of a
/// device; hosts bound to vfio-pci have no NVML to ask.
fn query_mode(h: &Host, bdf: &str, what: &str) -> Result<String, Ran> {
    let arg = format!("--devices={bdf}");
    let flag = format!("--query-{what}-mode");
    match h.run("nvidia_gpu_tools.py", &[&arg, &flag]) {
        // It reports through Python's logging, on stderr.
        Ran::Exited {
            code: 0,
            stdout,
            stderr,
        } => Ok(format!("{stdout}{stderr}")),
        other => Err(other),
    }
}

fn check_cc_mode(h: &Host, node: NodeType, gpus: &[Device], switches: &[Device]) -> Finding {
    const ID: &str = "gpu.cc_mode";
    const T: &str = "GPU confidential-computing mode";
    if gpus.is_empty() {
        return Finding::new(ID, T, Status::Skip, "no GPUs");
    }
    let ppcie = node == NodeType::Hopper && gpus.len() == 8;
    let (what, want) = if ppcie {
        ("ppcie", "protected PCIe")
    } else {
        ("cc", "CC")
    };
    let mut saw = Vec::new();
    let mut off = Vec::new();
    let devices = gpus.iter().chain(if ppcie { switches } else { &[] });
    for d in devices {
        match query_mode(h, &d.bdf, what) {
            Ok(out) => {
                // "… GPU 0000:1b:00.0 H100 … CC mode is on" / "PPCIe mode is off".
                let line = out
                    .lines()
                    .rev()
                    .find(|l| l.contains(" mode is "))
                    .unwrap_or(out.trim())
                    .trim()
                    .to_string();
                let value = line.rsplit(" mode is ").next().unwrap_or_default().trim();
                let on = line.contains(" mode is ") && value == "on";
                if !on {
                    off.push(d.bdf.clone());
                }
                // The words from "CC"/"PPCIe" on, without the log's stamp.
                let said = match line.rfind(" mode is ") {
                    Some(i) => {
                        let start = line[..i].rfind(' ').map(|j| j + 1).unwrap_or(0);
                        &line[start..]
                    }
                    None => line.as_str(),
                };
                saw.push(format!("{}: {said}", d.bdf));
            }
            Err(Ran::NotFound) => {
                return Finding::new(ID, T, Status::Skip, "nvidia_gpu_tools.py is not installed: the mode cannot be read on the host")
                    .fix("install NVIDIA's gpu-admin-tools (github.com/NVIDIA/gpu-admin-tools) and put nvidia_gpu_tools.py on PATH; the validator checks the mode from the evidence either way");
            }
            Err(Ran::Exited { stderr, .. }) => {
                off.push(d.bdf.clone());
                saw.push(format!(
                    "{}: nvidia_gpu_tools.py failed: {}",
                    d.bdf,
                    stderr.trim()
                ));
            }
            Err(Ran::Failed(e)) => {
                off.push(d.bdf.clone());
                saw.push(format!("{}: {e}", d.bdf));
            }
        }
    }
    if off.is_empty() {
        Finding::new(ID, T, Status::Pass, saw.join("\n"))
    } else {
        let set = if ppcie {
            "--set-ppcie-mode=on --reset-after-ppcie-mode-switch (every GPU and NVSwitch)"
        } else {
            "--set-cc-mode=on --reset-after-cc-mode-switch"
        };
        Finding::new(ID, T, Status::Fail, format!("{}\nnot in {want} mode: {}", saw.join("\n"), off.join(", ")))
            .fix(format!("nvidia_gpu_tools.py --gpu-bdf=BDF {set}; then reboot the host: GPU attestation fails after a mode switch until it does"))
    }
}

fn check_host_driver(h: &Host) -> Finding {
    const ID: &str = "host.nvidia";
    const T: &str = "host NVIDIA driver kept off the GPUs";
    let loaded = ["nvidia", "nouveau"]
        .into_iter()
        .filter(|m| h.exists(&format!("/sys/module/{m}")))
        .collect::<Vec<_>>();
    let blacklisted = h
        .list("/etc/modprobe.d")
        .unwrap_or_default()
        .iter()
        .filter_map(|f| h.read(&format!("/etc/modprobe.d/{f}")).ok())
        .any(|t| {
            t.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["blacklist", "nvidia"])
        });
    let write = Action::Write {
        path: "/etc/modprobe.d/tvm-blacklist-nvidia.conf".into(),
        contents: "# Written by tvm check --fix-warnings: the GPUs belong to the CVM (vfio-pci), not to a host driver.\nblacklist nvidia\nblacklist nvidia_drm\nblacklist nvidia_modeset\nblacklist nvidia_uvm\nblacklist nouveau\n".into(),
    };
    let saw = format!(
        "loaded: {}; blacklisted in /etc/modprobe.d: {}",
        if loaded.is_empty() {
            "none".into()
        } else {
            loaded.join(", ")
        },
        if blacklisted { "yes" } else { "no" }
    );
    if !loaded.is_empty() {
        let mut f = Finding::new(ID, T, Status::Fail, saw)
            .fix("blacklist the host's NVIDIA modules and reboot (or rmmod them once nothing uses the GPUs)");
        if !blacklisted {
            f = f.auto(vec![write]);
        }
        f
    } else if !blacklisted {
        Finding::new(ID, T, Status::Warn, saw)
            .fix("blacklist nvidia and nouveau so that a host update cannot take the GPUs from vfio-pci")
            .auto(vec![write])
    } else {
        Finding::new(ID, T, Status::Pass, saw)
    }
}

fn check_fabric_manager(h: &Host) -> Finding {
    const ID: &str = "host.fabricmanager";
    const T: &str = "host fabric manager stopped (the CVM runs its own)";
    match h.run("systemctl", &["is-active", "nvidia-fabricmanager"]) {
        Ran::Exited { stdout, .. } if stdout.trim() == "active" => Finding::new(
            ID,
            T,
            Status::Warn,
            "nvidia-fabricmanager is active on the host",
        )
        .fix("stop and disable it on the host: the NVSwitches belong to the CVM, whose image runs the fabric manager")
        .auto(vec![Action::Run {
            argv: vec!["systemctl".into(), "disable".into(), "--now".into(), "nvidia-fabricmanager".into()],
        }]),
        // No systemd (a container): nothing to say.
        Ran::Exited { stdout, stderr, .. } if stdout.trim().is_empty() => {
            Finding::new(ID, T, Status::Skip, format!("systemctl: {}", stderr.trim()))
        }
        Ran::Exited { stdout, .. } => Finding::new(ID, T, Status::Pass, format!("nvidia-fabricmanager: {}", stdout.trim())),
        Ran::NotFound => Finding::new(ID, T, Status::Skip, "systemctl not found"),
        Ran::Failed(e) => Finding::new(ID, T, Status::Skip, e),
    }
}

fn check_qemu(h: &Host, tee: Option<Tee>) -> Finding {
    const ID: &str = "qemu";
    const T: &str = "QEMU with TDX / SEV-SNP guests";
    const QEMU: &str = "qemu-system-x86_64";
    let version = match h.run(QEMU, &["--version"]) {
        Ran::Exited { code: 0, stdout, .. } => stdout.lines().next().unwrap_or_default().trim().to_string(),
        Ran::NotFound => {
            return Finding::new(ID, T, Status::Fail, format!("{QEMU} not found"))
                .fix("install QEMU with TDX support (10.1 or later, or your distribution's TDX build) or SEV-SNP support (9.1 or later)")
        }
        other => return Finding::new(ID, T, Status::Fail, format!("{QEMU} --version: {other:?}")).fix("reinstall QEMU"),
    };
    let objects = h.run(QEMU, &["-object", "help"]);
    let objects = objects.ok().unwrap_or_default();
    let object = match tee {
        Some(Tee::Tdx) => "tdx-guest",
        Some(Tee::SevSnp) => "sev-snp-guest",
        None => {
            return Finding::new(
                ID,
                T,
                Status::Skip,
                format!("{version}; no Intel or AMD CPU"),
            )
        }
    };
    let has = objects.lines().any(|l| l.trim() == object);
    let saw = format!(
        "{version}; object {object}: {}; firmware comes with the release (checked at launch)",
        if has { "present" } else { "absent" }
    );
    if has {
        Finding::new(ID, T, Status::Pass, saw)
    } else {
        Finding::new(ID, T, Status::Fail, saw).fix(format!(
            "this QEMU cannot start a {object}: install QEMU {} or a distribution build with it",
            if object == "tdx-guest" {
                "10.1 or later"
            } else {
                "9.1 or later"
            }
        ))
    }
}

fn meminfo(h: &Host, key: &str) -> Option<u64> {
    let text = h.read("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut w = rest.split_whitespace();
        let n: u64 = w.next()?.parse().ok()?;
        Some(match w.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        })
    })
}

fn check_memory(h: &Host, gpu_node: bool) -> Finding {
    const ID: &str = "memory";
    const T: &str = "memory";
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let Some(total) = meminfo(h, "MemTotal") else {
        return Finding::new(ID, T, Status::Skip, "/proc/meminfo unreadable");
    };
    let huge = meminfo(h, "HugePages_Total").unwrap_or(0);
    let saw = format!(
        "{:.0} GiB; {huge} huge pages reserved (a TD's private memory comes from guest_memfd, not huge pages)",
        gib(total)
    );
    // Each GPU's CVM needs its model in memory; 64 GiB is the least such a host has.
    if gpu_node && total < 64 << 30 {
        Finding::new(ID, T, Status::Warn, saw).fix("a GPU node's CVM needs at least 64 GiB")
    } else {
        Finding::new(ID, T, Status::Pass, saw)
    }
}

fn check_storage(h: &Host, o: &Options) -> Finding {
    const ID: &str = "storage";
    const T: &str = "storage for the image and the data disk";
    let tb = |b: u64| b as f64 / TB as f64;
    // A folder install will create is on its nearest existing parent's disk.
    let mut at = std::path::Path::new(&o.vm_dir);
    let free = loop {
        let got = match h.run("df", &["-B1", "--output=avail", &at.display().to_string()]) {
            Ran::Exited {
                code: 0, stdout, ..
            } => stdout
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok()),
            _ => None,
        };
        match (got, at.parent()) {
            (Some(free), _) => break Some(free),
            (None, Some(parent)) if at.is_absolute() => at = parent,
            (None, _) => break None,
        }
    };
    let Some(free) = free else {
        return Finding::new(
            ID,
            T,
            Status::Fail,
            format!("cannot read the free space of {}", o.vm_dir),
        )
        .fix("create the folder given by --vm-download-dir");
    };
    match o.storage_bytes {
        None => Finding::new(ID, T, Status::Warn, format!("{:.2} TB free in {}; --host-machine-storage not given", tb(free), o.vm_dir))
            .fix("declare the storage the CVM may use with --host-machine-storage <TB>: its data disk is made that size"),
        Some(want) if want > free => Finding::new(
            ID,
            T,
            Status::Fail,
            format!("{:.2} TB declared, {:.2} TB free in {}", tb(want), tb(free), o.vm_dir),
        )
        .fix("declare at most the free space (the disk could not grow and the node would stop earning), or free space"),
        Some(want) => Finding::new(ID, T, Status::Pass, format!("{:.2} TB declared, {:.2} TB free in {}", tb(want), tb(free), o.vm_dir)),
    }
}

fn check_network(h: &Host, o: &Options) -> Finding {
    const ID: &str = "network";
    const T: &str = "the image service is reachable";
    let Some(url) = &o.service_url else {
        return Finding::new(ID, T, Status::Skip, "no --service-url");
    };
    let Some((host, port)) = host_port(url) else {
        return Finding::new(ID, T, Status::Fail, format!("{url}: not an http(s) URL"))
            .fix("give --service-url http(s)://host[:port]");
    };
    match h.connect(&host, port) {
        Ok(a) => Finding::new(ID, T, Status::Pass, format!("{url}: connected to {a}")),
        Err(e) => Finding::new(ID, T, Status::Fail, format!("{url}: {e}"))
            .fix("check the host's network, DNS and firewall, and the service URL"),
    }
}

/// `--fix-warnings`: apply the automatic fixes of every finding that did
/// not pass. Returns what was done and what failed.
pub fn apply_fixes(h: &Host, report: &Report) -> Vec<String> {
    let mut done = Vec::new();
    for f in report.checks.iter().filter(|f| f.status != Status::Pass) {
        for a in &f.auto_fix {
            let result = match a {
                Action::Write { path, contents } => {
                    h.write(path, contents).map_err(|e| e.to_string())
                }
                Action::Run { argv } => {
                    let (p, args) = argv
                        .split_first()
                        .map(|(p, a)| (p.as_str(), a))
                        .unwrap_or(("", &[]));
                    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
                    match h.run(p, &args) {
                        Ran::Exited { code: 0, .. } => Ok(()),
                        Ran::Exited { code, stderr, .. } => {
                            Err(format!("exit {code}: {}", stderr.trim()))
                        }
                        Ran::NotFound => Err("not found".into()),
                        Ran::Failed(e) => Err(e),
                    }
                }
            };
            done.push(match result {
                Ok(()) => format!("{}: done ({})", f.id, a.describe()),
                Err(e) => format!("{}: FAILED {}: {e}", f.id, a.describe()),
            });
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tdx_module_version_in_each_kernel_s_words() {
        let canonical = "[   18.3] virt/tdx: TDX module: attributes 0x0, vendor_id 0x8086, major_version 1, minor_version 5, build_date 20240129, build_num 698";
        assert_eq!(
            tdx_module_version(canonical).map(|v| (v.0, v.1)),
            Some((1, 5))
        );
        let upstream = "[    2.1] virt/tdx: Module version: 2.0.08";
        assert_eq!(
            tdx_module_version(upstream).map(|v| (v.0, v.1)),
            Some((2, 0))
        );
        let other = "virt/tdx: TDX module 1.5.06.00.0744, build number 744, build date 0a1b2c3d";
        assert_eq!(tdx_module_version(other).map(|v| (v.0, v.1)), Some((1, 5)));
        assert_eq!(tdx_module_version("virt/tdx: module initialized"), None);
        assert_eq!(
            tdx_module_version("x86/tme: major_version 9, minor_version 9"),
            None
        );
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("https://localhost:8081/sgx/certification/v4/"),
            Some(("localhost".into(), 8081))
        );
        assert_eq!(
            host_port("http://tvm.example"),
            Some(("tvm.example".into(), 80))
        );
        assert_eq!(host_port("https://[::1]/x"), Some(("::1".into(), 443)));
        assert_eq!(host_port("ftp://x"), None);
        assert_eq!(host_port("http://h:notaport/"), None);
    }

    #[test]
    fn kernel_log_stamps_are_dropped() {
        assert_eq!(
            unstamped("[   20.926129] virt/tdx: module initialized"),
            "virt/tdx: module initialized"
        );
        assert_eq!(
            unstamped("kvm_amd: SEV-SNP enabled"),
            "kvm_amd: SEV-SNP enabled"
        );
    }
}
