//! `tvm check` on fixture trees of real host kinds (tests/fixtures/hosts):
//! each gives the expected result per check, the reviewed JSON, and the
//! documented exit code.
//!
//! A fixture is a `root/` tree (proc, sys, dev, etc as the host shows them)
//! and `commands.json` (recorded outputs of dmesg, systemctl, qemu…). A
//! fixture with a `base` file is that base plus its own files, minus the
//! paths in `removed`, with its commands merged over the base's.

use std::collections::BTreeMap;
use std::net::TcpListener;

use tvm::check::{self, NodeType, Status};

mod common;
use common::{tvm, Fixture};

/// Each check's status by id.
fn statuses(r: &check::Report) -> BTreeMap<&'static str, Status> {
    r.checks.iter().map(|c| (c.id, c.status)).collect()
}

fn saw<'a>(r: &'a check::Report, id: &str) -> &'a str {
    &r.checks.iter().find(|c| c.id == id).unwrap().saw
}

/// The JSON report matches its reviewed golden file and the exit code is
/// the documented one.
fn golden(name: &str, node_type: &str, want_exit: i32) {
    let f = Fixture::new(name);
    let (code, out, err) = f.cli(node_type, &["--json"]);
    assert_eq!(code, want_exit, "{name}: exit code; stderr: {err}");
    common::golden(&format!("fixtures/hosts/{name}/expected.json"), &out);
}

#[test]
fn a_good_tdx_host_with_eight_h100s_and_four_nvswitches_is_ready() {
    golden("tdx-h100x8-good", "hopper", 0);
    let f = Fixture::new("tdx-h100x8-good");
    let (h, _) = f.host();
    let r = check::run(&h, &f.options(NodeType::Hopper));
    let bad = r
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .map(|c| (c.id, c.status))
        .collect::<Vec<_>>();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(r.ready);
    assert!(saw(&r, "gpu.devices").starts_with("8 GPUs: 0000:18:00.0 H100 SXM5 80GB"));
    assert!(saw(&r, "tee.module").contains("major_version 1, minor_version 5"));
    assert!(saw(&r, "gpu.cc_mode").contains("0000:08:00.0: "));
    // What install gives the CVM.
    let (gpus, switches) = check::devices(&h, NodeType::Hopper);
    assert_eq!(gpus.len(), 8);
    assert_eq!(
        switches,
        [
            "0000:05:00.0",
            "0000:06:00.0",
            "0000:07:00.0",
            "0000:08:00.0"
        ]
    );
}

#[test]
fn tdx_off_in_the_bios() {
    golden("tdx-bios-off", "hopper", 1);
    let f = Fixture::new("tdx-bios-off");
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    for id in ["tee.bios", "tee.kvm", "tee.module", "cpu.tme"] {
        assert_eq!(s[id], Status::Fail, "{id}");
    }
    assert!(saw(&r, "tee.module").contains("the BIOS gave TDX no KeyIDs"));
    assert!(saw(&r, "tee.bios").contains("no TDX private KeyIDs available"));
    // Everything else about the host is fine.
    assert_eq!(s["gpu.vfio"], Status::Pass);
    assert_eq!(s["dcap.qgs"], Status::Pass);
    assert!(!r.ready);
}

#[test]
fn nohibernate_missing() {
    golden("tdx-nohibernate-missing", "hopper", 1);
    let f = Fixture::new("tdx-nohibernate-missing");
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    assert_eq!(s["tee.bios"], Status::Pass);
    assert_eq!(s["kernel.cmdline"], Status::Fail);
    assert!(saw(&r, "kernel.cmdline").contains("nohibernate is missing"));
    assert_eq!(s["tee.module"], Status::Fail);
    assert!(saw(&r, "tee.module").contains("Hibernation support is enabled"));
}

#[test]
fn pccs_without_a_pcs_key_and_a_platform_not_registered() {
    golden("tdx-pccs-unregistered", "hopper", 1);
    let f = Fixture::new("tdx-pccs-unregistered");
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    assert_eq!(s["dcap.pccs"], Status::Fail);
    assert!(saw(&r, "dcap.pccs").contains("ApiKey is empty"));
    assert_eq!(s["dcap.registration"], Status::Fail);
    assert!(saw(&r, "dcap.registration").contains("Registration is in progress."));
    assert_eq!(r.summary.fail, 2, "{s:?}");
}

#[test]
fn an_sev_snp_cpu_host() {
    golden("snp-genoa-cpu", "cpu", 0);
    let f = Fixture::new("snp-genoa-cpu");
    let r = check::run(&f.host().0, &f.options(NodeType::Cpu));
    let s = statuses(&r);
    assert_eq!(s["cpu.generation"], Status::Pass);
    assert!(saw(&r, "cpu.generation").contains("Genoa, AMD SEV-SNP"));
    assert!(saw(&r, "tee.module").contains("kvm_amd: SEV-SNP enabled (ASIDs 1 - 99)"));
    assert!(saw(&r, "qemu").contains("sev-snp-guest: present"));
    // No TDX-only checks, no GPU checks.
    assert!(!s.contains_key("dcap.pccs"));
    assert_eq!(s["gpu.devices"], Status::Skip);
    // The same host cannot be a GPU node.
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    assert_eq!(statuses(&r)["gpu.devices"], Status::Fail);
}

#[test]
fn gpus_not_bound_to_vfio() {
    golden("tdx-gpus-not-vfio", "hopper", 1);
    let f = Fixture::new("tdx-gpus-not-vfio");
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    assert_eq!(s["gpu.vfio"], Status::Fail);
    let gpu = saw(&r, "gpu.vfio");
    assert!(gpu.contains("0000:18:00.0 is bound to nvidia"), "{gpu}");
    assert!(gpu.contains("0000:3a:00.0 is bound to nvidia"), "{gpu}");
    assert!(!gpu.contains("0000:5d:00.0 is bound"), "{gpu}");
    assert_eq!(s["host.nvidia"], Status::Fail);
    assert_eq!(s["host.fabricmanager"], Status::Warn);
    assert_eq!(s["nvswitch.vfio"], Status::Pass);
}

#[test]
fn nvswitches_missing_from_vfio() {
    golden("tdx-switches-not-vfio", "hopper", 1);
    let f = Fixture::new("tdx-switches-not-vfio");
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    assert_eq!(s["gpu.vfio"], Status::Pass);
    assert_eq!(s["nvswitch.vfio"], Status::Fail);
    let sw = saw(&r, "nvswitch.vfio");
    assert!(sw.contains("0000:07:00.0 has no driver"), "{sw}");
    assert!(sw.contains("0000:08:00.0 has no driver"), "{sw}");
    assert_eq!(s["gpu.cc_mode"], Status::Fail);
    assert!(saw(&r, "gpu.cc_mode").contains("not in protected PCIe mode: 0000:07:00.0"));
}

#[test]
fn a_device_sharing_an_iommu_group_with_a_host_driver_is_not_viable() {
    let f = Fixture::new("tdx-h100x8-good");
    // The host NIC joins GPU 0's group.
    let nic = f
        .root()
        .join("sys/bus/pci/devices/0000:31:00.0/iommu_group");
    std::fs::remove_file(&nic).unwrap();
    std::os::unix::fs::symlink("../../../../kernel/iommu_groups/20", &nic).unwrap();
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    assert_eq!(statuses(&r)["gpu.vfio"], Status::Fail);
    assert!(saw(&r, "gpu.vfio").contains(
        "IOMMU group 20 of 0000:18:00.0 also holds 0000:31:00.0, bound to ice (group not viable)"
    ));
}

#[test]
fn one_h100_wants_cc_mode_and_no_switches() {
    let f = Fixture::new("tdx-h100x8-good");
    // Seven GPUs leave the board: one remains.
    for b in ["2a", "3a", "5d", "9a", "ab", "ba", "db"] {
        std::fs::remove_dir_all(f.root().join(format!("sys/bus/pci/devices/0000:{b}:00.0")))
            .unwrap();
    }
    let r = check::run(&f.host().0, &f.options(NodeType::Hopper));
    let s = statuses(&r);
    assert_eq!(
        s["nvswitch.vfio"],
        Status::Warn,
        "{}",
        saw(&r, "nvswitch.vfio")
    );
    // The fixture recorded only the PPCIe query: the CC query is a command it does not have.
    assert_eq!(s["gpu.cc_mode"], Status::Skip);
    let (gpus, switches) = check::devices(&f.host().0, NodeType::Hopper);
    assert_eq!((gpus.len(), switches.len()), (1, 0));
}

#[test]
fn a_blackwell_node_refuses_hopper_gpus() {
    let f = Fixture::new("tdx-h100x8-good");
    let r = check::run(&f.host().0, &f.options(NodeType::Blackwell));
    assert_eq!(statuses(&r)["gpu.devices"], Status::Fail);
    assert!(saw(&r, "gpu.devices").contains("not Blackwell: 0000:18:00.0 H100 SXM5 80GB"));
}

#[test]
fn storage_declared_beyond_the_free_space_fails() {
    let f = Fixture::new("snp-genoa-cpu");
    let mut o = f.options(NodeType::Cpu);
    o.storage_bytes = Some(21 * check::TB);
    let r = check::run(&f.host().0, &o);
    assert_eq!(
        statuses(&r)["storage"],
        Status::Fail,
        "{}",
        saw(&r, "storage")
    );
    assert!(saw(&r, "storage").contains("21.00 TB declared, 3.50 TB free in /var/lib/tvm"));
    o.storage_bytes = Some(3 * check::TB);
    assert_eq!(
        statuses(&check::run(&f.host().0, &o))["storage"],
        Status::Pass
    );
    o.storage_bytes = None;
    assert_eq!(
        statuses(&check::run(&f.host().0, &o))["storage"],
        Status::Warn
    );
}

#[test]
fn an_unreachable_pccs_and_service_fail_with_the_address() {
    let f = Fixture::new("tdx-h100x8-good");
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = f.root().join("etc/sgx_default_qcnl.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&f.port.to_string(), &closed.to_string());
    std::fs::write(&conf, text).unwrap();
    let mut o = f.options(NodeType::Hopper);
    o.service_url = Some(format!("http://127.0.0.1:{closed}/"));
    let r = check::run(&f.host().0, &o);
    let s = statuses(&r);
    assert_eq!(s["dcap.pccs"], Status::Fail);
    assert!(saw(&r, "dcap.pccs").contains("not reachable"));
    assert_eq!(s["network"], Status::Fail);
}

#[test]
fn fix_warnings_applies_only_the_safe_fixes() {
    let f = Fixture::new("tdx-gpus-not-vfio");
    let (h, log) = f.host();
    let r = check::run(&h, &f.options(NodeType::Hopper));
    log.lock().unwrap().clear();
    let done = check::apply_fixes(&h, &r);
    // The blacklist is written under the root; the fabric manager stopped.
    let blacklist =
        std::fs::read_to_string(f.root().join("etc/modprobe.d/tvm-blacklist-nvidia.conf")).unwrap();
    assert!(blacklist.contains("blacklist nvidia\n"));
    let ran = log.lock().unwrap().clone();
    assert_eq!(ran, ["systemctl disable --now nvidia-fabricmanager"]);
    assert_eq!(done.len(), 2, "{done:?}");
    // Rebinding GPUs in use is never automatic: it stays a printed fix.
    let r = check::run(&h, &f.options(NodeType::Hopper));
    let gpu = r.checks.iter().find(|c| c.id == "gpu.vfio").unwrap();
    assert!(gpu.auto_fix.is_empty());
    assert!(gpu.fix.as_deref().unwrap().contains("driver_override"));
}

#[test]
fn compact_text_shows_only_what_did_not_pass() {
    let f = Fixture::new("tdx-pccs-unregistered");
    let (code, out, _) = f.cli("hopper", &["--compact"]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  dcap.pccs"), "{out}");
    assert!(out.contains("fix: subscribe to Intel's Provisioning Certification Service"));
    assert!(!out.contains("PASS"), "{out}");
    assert!(out.ends_with("this host cannot mine yet (fix every FAIL above)\n"));
    // --output keeps a copy.
    let copy = f.dir.path().join("report.json");
    let (code, out, _) = f.cli("hopper", &["--json", "--output", copy.to_str().unwrap()]);
    assert_eq!(code, 1);
    let written = std::fs::read_to_string(&copy).unwrap();
    assert_eq!(written.replace(&f.port.to_string(), "@PCCS_PORT@"), out);
}

#[test]
fn bad_usage_exits_2() {
    let (code, _, err) = tvm(&["check", "--node-type", "gpu"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = tvm(&[
        "check",
        "--node-type",
        "cpu",
        "--host-machine-storage",
        "lots",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("give terabytes, as 21 or 21TB"), "{err}");
}

#[test]
fn storage_is_given_in_terabytes_with_or_without_the_unit() {
    assert_eq!(check::parse_storage("21").unwrap(), 21 * check::TB);
    assert_eq!(check::parse_storage("21TB").unwrap(), 21 * check::TB);
    assert_eq!(check::parse_storage("1.5tb").unwrap(), 1_500_000_000_000);
    assert!(check::parse_storage("0").is_err());
    assert!(check::parse_storage("-3TB").is_err());
    assert!(check::parse_storage("NaN").is_err());
}
