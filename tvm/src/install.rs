//! `tvm install`: what `./tvm/install` runs. Check the host, send the report
//! (`--submit`), fetch and verify the release (`--service-url`), and start
//! the CVM under systemd (`--launch-vm`); `tvm status` shows what runs.
//!
//! Exit codes (also `tvm check`'s first two):
//! 0 done; 1 the host is not ready (a check failed; nothing fetched or
//! started); 2 bad usage; 3 the release could not be fetched or verified;
//! 4 the report was not accepted; 5 the CVM could not be started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tvm_image::manifest::KeySet;
use tvm_protocol::keys::Hotkey;

use crate::check::host::{Host, Ran};
use crate::check::Report;

pub const EXIT_NOT_READY: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_IMAGE: u8 = 3;
pub const EXIT_SUBMIT: u8 = 4;
pub const EXIT_LAUNCH: u8 = 5;

/// Where `tvm install --launch-vm` records the CVMs it started (under the root).
pub const STATE_DIR: &str = "/var/lib/tvm/cvms";
/// Where their systemd units go (under the root).
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Where the key set the unit verifies with is kept (under the root).
pub const KEYS_PATH: &str = "/etc/tvm/operator-keys.json";
/// Where the tvm binary the unit runs is kept (under the root).
pub const BIN_DIR: &str = "/usr/local/lib/tvm";

/// A CVM name that is also a systemd unit name part and no option:
/// letters, digits, `._-`, not starting with `-` or `.`.
pub fn unit_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The effective user id of this process.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// As root, the release folder must be root's alone: whoever can write
/// it could change what root boots at the next restart.
pub fn check_owned_by_root(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if effective_uid() != Some(0) {
        return Ok(());
    }
    let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is owned by uid {} with mode {:o}: other users could change what root boots; use a folder only root writes (the default /var/lib/tvm)",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Copy this tvm binary to `BIN_DIR/tvm-<version>` (under the root) for the
/// unit: a build in a user's checkout can be replaced or cleaned away.
pub fn install_binary(h: &Host) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("the tvm binary: {e}"))?;
    let bytes = std::fs::read(&me).map_err(|e| format!("{}: {e}", me.display()))?;
    let path = format!("{BIN_DIR}/tvm-{}", env!("CARGO_PKG_VERSION"));
    h.write_mode(&path, &bytes, 0o755)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(PathBuf::from(path))
}

/// The operator key set this build pins: none yet. No image is published
/// under a key of this project, so a miner gives the subnet operator's key
/// set with `--operator-keys`; a release build pins it here.
pub const PINNED_KEYS: &str = include_str!("../operator-keys.json");

/// The key set at `path`, or the pinned one.
pub fn operator_keys(path: Option<&Path>) -> Result<(KeySet, String), String> {
    let (text, from) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (PINNED_KEYS.to_string(), "the key set built into tvm".into()),
    };
    let keys: KeySet = serde_json::from_str(&text).map_err(|e| format!("{from}: {e}"))?;
    if keys.keys.is_empty() {
        return Err(format!(
            "{from} holds no operator key: give the subnet operator's key set with --operator-keys FILE"
        ));
    }
    Ok((keys, text))
}

/// Sign and send a report to `service`'s intake.
pub async fn submit(
    client: &reqwest::Client,
    service: &str,
    hotkey: &Hotkey,
    report: &Report,
) -> Result<String, String> {
    let url = format!("{}/v1/reports", service.trim_end_matches('/'));
    let body = report.json().into_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let signed = tvm_protocol::epistula::sign(hotkey, &body, None, now);
    let mut req = client
        .post(&url)
        .timeout(Duration::from_secs(20))
        .header("Content-Type", "application/json");
    for (k, v) in signed.to_pairs() {
        req = req.header(k, v);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text.trim().to_string())
    } else {
        Err(format!("{url}: HTTP {status}: {}", text.trim()))
    }
}

/// A CVM `tvm install --launch-vm` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cvm {
    pub name: String,
    pub release: String,
    pub unit: String,
    /// Host ports forwarded to the agent (the first answers `/health`).
    pub ports: Vec<u16>,
    pub image_dir: String,
}

/// What `--launch-vm` needs besides the release.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub name: String,
    /// The `tvm` binary systemd runs.
    pub exe: PathBuf,
    /// The verified release folder (host path).
    pub image_dir: PathBuf,
    pub release: String,
    /// The key set file the unit verifies with (host path).
    pub keys: PathBuf,
    pub gpus: Vec<String>,
    pub switches: Vec<String>,
    /// The data disk (host path) and its size in bytes.
    pub data_disk: Option<(PathBuf, u64)>,
    pub ports: Vec<u16>,
    /// TDX: the host QGS's vsock port.
    pub qgs_port: u32,
    pub serial_log: PathBuf,
    /// The miner's settings the guest reads (fw_cfg `opt/tvm/miner`).
    pub miner_config: PathBuf,
}

/// The guest's miner settings: the hotkey its agent answers for, and the
/// validators allowed to ask (none listed: any signed request).
pub fn miner_config_text(
    hotkey: &tvm_protocol::keys::AccountId,
    validators: &[String],
) -> Result<String, String> {
    let mut text = format!(
        "# Written by tvm install --launch-vm: what the CVM's agent answers for.\nhotkey={}\n",
        hotkey.to_ss58()
    );
    if validators.is_empty() {
        text.push_str("allow=any-signer\n");
    } else {
        for v in validators {
            tvm_protocol::keys::AccountId::from_ss58(v.trim())
                .map_err(|e| format!("--validators {v}: {e}"))?;
        }
        let list: Vec<&str> = validators.iter().map(|v| v.trim()).collect();
        text.push_str(&format!("validators={}\n", list.join(",")));
    }
    Ok(text)
}

/// systemd quoting of one ExecStart word.
fn unit_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:+-=,@".contains(&b))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
                .replace('$', "$$")
        )
    }
}

/// The unit that keeps the CVM running (`tvm launch` in the foreground).
pub fn unit_text(p: &LaunchPlan) -> Result<String, String> {
    let mut args = vec![
        p.exe.display().to_string(),
        "launch".into(),
        "--manifest".into(),
        p.image_dir
            .join(crate::download::MANIFEST)
            .display()
            .to_string(),
        "--keys".into(),
        p.keys.display().to_string(),
        "--image-dir".into(),
        p.image_dir.display().to_string(),
        "--name".into(),
        p.name.clone(),
        "--serial-log".into(),
        p.serial_log.display().to_string(),
    ];
    for g in &p.gpus {
        args.extend(["--gpu".into(), g.clone()]);
    }
    for s in &p.switches {
        args.extend(["--switch".into(), s.clone()]);
    }
    if let Some((disk, _)) = &p.data_disk {
        args.extend(["--data-disk".into(), disk.display().to_string()]);
    }
    for port in &p.ports {
        args.extend(["--port".into(), port.to_string()]);
    }
    args.extend(["--qgs-port".into(), p.qgs_port.to_string()]);
    args.extend([
        "--miner-config".into(),
        p.miner_config.display().to_string(),
    ]);
    if let Some(bad) = args.iter().find(|a| a.chars().any(char::is_control)) {
        return Err(format!(
            "{bad:?}: a control character cannot go in a systemd unit"
        ));
    }
    let exec = args
        .iter()
        .map(|a| unit_word(a))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!(
        "# Written by tvm install --launch-vm. Remove with: systemctl disable --now {unit}\n\
         [Unit]\n\
         Description=tvm confidential VM {name} ({release})\n\
         Wants=network-online.target\n\
         After=network-online.target qgsd.service\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         # QEMU powers the guest off on SIGTERM; give it time to.\n\
         TimeoutStopSec=120\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        unit = unit_name(&p.name),
        name = p.name,
        release = p.release,
    ))
}

pub fn unit_name(name: &str) -> String {
    format!("tvm-{name}.service")
}

/// Write the unit and the state record, make the data disk if it is not
/// there, and enable and start the unit, through `h` (its root and runner).
pub fn start_under_systemd(h: &Host, p: &LaunchPlan) -> Result<Cvm, String> {
    if let Some((disk, bytes)) = &p.data_disk {
        let disk_s = disk.display().to_string();
        if !h.exists(&disk_s) {
            match h.run(
                "qemu-img",
                &["create", "-f", "qcow2", &disk_s, &bytes.to_string()],
            ) {
                Ran::Exited { code: 0, .. } => {}
                other => return Err(format!("qemu-img create {disk_s}: {}", ran_error(&other))),
            }
        }
    }
    let unit = unit_name(&p.name);
    let unit_path = format!("{UNIT_DIR}/{unit}");
    h.write(&unit_path, &unit_text(p)?)
        .map_err(|e| format!("{unit_path}: {e}"))?;
    let cvm = Cvm {
        name: p.name.clone(),
        release: p.release.clone(),
        unit: unit.clone(),
        ports: p.ports.clone(),
        image_dir: p.image_dir.display().to_string(),
    };
    let state = format!("{STATE_DIR}/{}.json", p.name);
    let text = serde_json::to_string_pretty(&cvm).map_err(|e| e.to_string())?;
    h.write(&state, &format!("{text}\n"))
        .map_err(|e| format!("{state}: {e}"))?;
    // restart, not start: a CVM of the last release is replaced by this one.
    for args in [
        vec!["daemon-reload"],
        vec!["enable", unit.as_str()],
        vec!["restart", unit.as_str()],
    ] {
        match h.run("systemctl", &args) {
            Ran::Exited { code: 0, .. } => {}
            other => {
                return Err(format!(
                    "systemctl {}: {} (see journalctl -u {unit})",
                    args.join(" "),
                    ran_error(&other)
                ))
            }
        }
    }
    Ok(cvm)
}

fn ran_error(r: &Ran) -> String {
    match r {
        Ran::Exited { code, stderr, .. } => format!("exit {code}: {}", stderr.trim()),
        Ran::NotFound => "not installed".into(),
        Ran::Failed(e) => e.clone(),
    }
}

/// The CVMs recorded under `h`'s root.
pub fn recorded(h: &Host) -> Vec<Result<Cvm, String>> {
    h.list(STATE_DIR)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let path = format!("{STATE_DIR}/{n}");
            h.read(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .map_err(|e| format!("{path}: {e}"))
        })
        .collect()
}

/// `tvm status`: each recorded CVM, its unit's state and its agent's
/// `/health`. `Ok(true)` when every CVM runs and its agent answers.
pub async fn status(h: &Host, client: &reqwest::Client) -> (String, bool) {
    let cvms = recorded(h);
    if cvms.is_empty() {
        return (
            format!("no CVM recorded in {STATE_DIR} (start one with tvm install --launch-vm)\n"),
            false,
        );
    }
    let mut out = String::new();
    let mut all_ok = true;
    for c in cvms {
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                all_ok = false;
                out.push_str(&format!("?  {e}\n"));
                continue;
            }
        };
        let unit = match h.run("systemctl", &["is-active", &c.unit]) {
            Ran::Exited { stdout, .. } => stdout.trim().to_string(),
            other => ran_error(&other),
        };
        let health = match c.ports.first() {
            None => "no port forwarded".to_string(),
            Some(port) => {
                let url = format!("http://127.0.0.1:{port}/health");
                match client
                    .get(&url)
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let body = r.bytes().await.unwrap_or_default();
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let ready = v.get("ready").and_then(|x| x.as_bool()) == Some(true);
                        let sim = v.get("simulated").and_then(|x| x.as_bool()) == Some(true);
                        if !ready {
                            all_ok = false;
                        }
                        format!(
                            "agent {}{}",
                            if ready {
                                "ready"
                            } else {
                                "NOT READY (its devices are not all up)"
                            },
                            if sim { ", SIMULATED" } else { "" }
                        )
                    }
                    Ok(r) => {
                        all_ok = false;
                        format!("agent answered HTTP {}", r.status())
                    }
                    Err(e) => {
                        all_ok = false;
                        format!("agent unreachable at {url}: {e}")
                    }
                }
            }
        };
        if unit != "active" {
            all_ok = false;
        }
        out.push_str(&format!(
            "{}  {}  unit {} {}  {}\n",
            c.name, c.release, c.unit, unit, health
        ));
    }
    (out, all_ok)
}
