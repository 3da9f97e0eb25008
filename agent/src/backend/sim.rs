//! The SIMULATED backends: a TDX "platform" and NVIDIA "GPUs" whose keys are
//! certified by the local hierarchy in `sim.dir` (made on first use). The
//! evidence is in the real formats and verifies with the real code — but
//! only against the simulated roots, which a validator trusts only under a
//! devnet policy (`dangerous_trust_simulated`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::hexbytes::HexBytes;
use tvm_sim::intel::SimIntel;
use tvm_sim::nvidia::{SimDevice, SimDeviceKind, SimNvidia};

use super::{gather, BackendError, DeviceSet, Devices, Gather, Readiness, Tee, TeeKind};
use crate::config::{SimConfig, SimGpuModel, SimImage};
use tvm_sim::gpu::{default_fwid, GpuProfile, HopperProfile, NvSwitchProfile, SimGpu};
use tvm_sim::tdx::{SimTd, TdMeasurements};

const WHAT: &str = "the simulated TEE";

fn failed(reason: impl ToString) -> BackendError {
    BackendError::Failed {
        what: WHAT,
        reason: reason.to_string(),
    }
}

/// The file a devnet validator's policy includes to trust the hierarchy.
pub const POLICY_FILE: &str = "policy-devnet.yaml";
/// TDX collateral for the simulated platform (valid 30 days from `sim-init`).
pub const COLLATERAL_FILE: &str = "tdx-collateral.json";
/// The devnet's image operator key (PKCS#8 Ed25519): it signs the manifest
/// of the simulated image, and the devnet policy pins it.
pub const IMAGE_KEY_FILE: &str = "image-operator.pk8";
/// The folder of signed manifests a devnet validator loads.
pub const MANIFESTS_DIR: &str = "manifests";
/// The signed manifest of the simulated image, in [`MANIFESTS_DIR`].
pub const MANIFEST_FILE: &str = "tvm-simulated.json";
/// The simulated image's release.
pub const SIM_RELEASE: (&str, &str) = ("tvm-simulated", "devnet");

/// Load the hierarchy in `dir`, or make it. Concurrent agents starting on
/// the same folder agree on one hierarchy: it is built aside and renamed into
/// place, and whoever loses the rename loads the winner's.
pub fn hierarchy(dir: &Path) -> Result<(SimIntel, SimNvidia), BackendError> {
    if !dir.join(tvm_sim::nvidia::ROOT_FILE).exists() {
        let tmp = PathBuf::from(format!("{}.tmp-{}", dir.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| failed(format!("cannot create {}: {e}", tmp.display())))?;
        let intel = SimIntel::generate().map_err(failed)?;
        let nvidia = SimNvidia::generate().map_err(failed)?;
        intel.save(&tmp).map_err(failed)?;
        nvidia.save(&tmp).map_err(failed)?;
        devnet_files(&tmp, &intel, &nvidia)?;
        if std::fs::rename(&tmp, dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join(tvm_sim::nvidia::ROOT_FILE).exists() {
                return Err(failed(format!(
                    "cannot put the simulated hierarchy at {} (a non-empty folder of other files is there?)",
                    dir.display()
                )));
            }
        }
    }
    let intel = SimIntel::load(dir).map_err(failed)?;
    let nvidia = SimNvidia::load(dir).map_err(failed)?;
    Ok((intel, nvidia))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The devnet image operator key in `dir`, made on first use.
fn image_key(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), BackendError> {
    let path = dir.join(IMAGE_KEY_FILE);
    let pkcs8 = match std::fs::read(&path) {
        Ok(k) => k,
        Err(_) => {
            let (k, _) = tvm_image::manifest::keygen().map_err(failed)?;
            crate::tls::write_private(&path, &k)
                .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
            k
        }
    };
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map(|k| ring::signature::KeyPair::public_key(&k).as_ref().to_vec())
        .map_err(|_| failed(format!("{} is not a PKCS#8 Ed25519 key", path.display())))?;
    Ok((pkcs8, public))
}

/// The manifest of the simulated image: its registers as the SIMULATED TD
/// shows them (RTMR3 is the runtime's, checked by replaying its events).
pub fn simulated_manifest(now: i64) -> String {
    let m = tvm_sim::tdx::TdMeasurements::simulated_image();
    let mut registers = std::collections::BTreeMap::new();
    registers.insert("mrtd".to_string(), hex::encode(m.mrtd));
    for i in 0..3 {
        registers.insert(format!("rtmr{i}"), hex::encode(m.rtmr[i]));
    }
    serde_json::json!({
        "format": tvm_image::manifest::FORMAT,
        "name": SIM_RELEASE.0,
        "version": SIM_RELEASE.1,
        "node_types": ["gpu", "cpu"],
        "files": [],
        "launch": {"tee": "SIMULATED TDX (tvm-sim)"},
        "measurements": [{
            "platform": "tdx",
            "shape": "simulated",
            "registers": registers,
            "source": "computed: the SIMULATED TD's labelled registers",
        }],
        "valid_from": rfc3339(now - 86_400),
        "valid_until": rfc3339(now + 30 * 86_400),
    })
    .to_string()
}

/// The devnet policy and the signed manifest of the simulated image.
fn devnet_files(dir: &Path, intel: &SimIntel, nvidia: &SimNvidia) -> Result<(), BackendError> {
    let now = unix_now();
    let (pkcs8, public) = image_key(dir)?;
    let signed = tvm_image::manifest::sign(&simulated_manifest(now), &pkcs8).map_err(failed)?;
    let manifests = dir.join(MANIFESTS_DIR);
    std::fs::create_dir_all(&manifests)
        .map_err(|e| failed(format!("cannot create {}: {e}", manifests.display())))?;
    let json = serde_json::to_vec_pretty(&signed).map_err(failed)?;
    std::fs::write(manifests.join(MANIFEST_FILE), json)
        .map_err(|e| failed(format!("cannot write the devnet manifest: {e}")))?;
    std::fs::write(
        dir.join(POLICY_FILE),
        policy_snippet(intel, nvidia, &public, now),
    )
    .map_err(|e| failed(format!("cannot write the devnet policy: {e}")))
}

/// The validator policy that trusts this hierarchy and the devnet's image
/// operator key (and nothing else new).
pub fn policy_snippet(intel: &SimIntel, nvidia: &SimNvidia, image_key: &[u8], now: i64) -> String {
    let indent = |pem: &str| {
        pem.trim_end()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let nvidia_pem = tvm_sim::pem("CERTIFICATE", nvidia.root_der());
    format!(
        "# DEVNET ONLY: trusts SIMULATED evidence signed by this hierarchy.\n\
         # Anyone with the keys in this folder can forge it; never use on a real validator.\n\
         dangerous_trust_simulated:\n  intel_root: |\n{}  nvidia_root: |\n{}\
         gpu:\n  # Simulated GPUs have no NVIDIA reference values or OCSP answers.\n  require_rims: false\n  require_revocation_check: false\n\
         images:\n  # The devnet's image operator key ({key_file}): it signed {manifests}/{manifest}.\n  \
         operator_keys:\n    keys:\n      - public_key: {key}\n        valid_from: {from}\n        valid_until: {until}\n",
        indent(intel.root_pem()),
        indent(&nvidia_pem),
        key_file = IMAGE_KEY_FILE,
        manifests = MANIFESTS_DIR,
        manifest = MANIFEST_FILE,
        key = hex::encode(image_key),
        from = rfc3339(now - 86_400),
        until = rfc3339(now + 365 * 86_400),
    )
}

/// `tvm-agent sim-init`: make (or load) the hierarchy, write the devnet
/// policy and fresh TDX collateral next to it, and say where they are.
pub fn init(dir: &Path) -> Result<String, BackendError> {
    let (intel, nvidia) = hierarchy(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let collateral = intel.collateral(now).map_err(failed)?;
    let json = serde_json::to_vec_pretty(&collateral).map_err(failed)?;
    std::fs::write(dir.join(COLLATERAL_FILE), json)
        .map_err(|e| failed(format!("cannot write the collateral: {e}")))?;
    devnet_files(dir, &intel, &nvidia)?;
    Ok(format!(
        "SIMULATED hierarchy in {dir}\n  validator policy (devnet only): {dir}/{POLICY_FILE}\n  image manifests (devnet key):   {dir}/{MANIFESTS_DIR}\n  TDX collateral (30 days):       {dir}/{COLLATERAL_FILE}\n  agent: tvm-agent run --sim --sim-dir {dir} ...",
        dir = dir.display()
    ))
}

/// A simulated TDX platform (a fresh PCK key per agent start: one machine).
pub struct SimTee {
    /// Locked only to extend RTMR3 (at start) and to quote.
    td: std::sync::Mutex<SimTd>,
}

impl SimTee {
    pub fn open(cfg: &SimConfig) -> Result<Self, BackendError> {
        let (intel, _) = hierarchy(&cfg.dir)?;
        let platform = intel.issue_platform().map_err(failed)?;
        let measurements = match cfg.image {
            SimImage::Published => TdMeasurements::simulated_image(),
            SimImage::Unlisted => TdMeasurements::unlisted_image(),
        };
        Ok(SimTee {
            td: std::sync::Mutex::new(
                SimTd::with_measurements(platform, measurements).map_err(failed)?,
            ),
        })
    }
}

impl Tee for SimTee {
    fn kind(&self) -> TeeKind {
        TeeKind::Tdx
    }
    fn describe(&self) -> String {
        "SIMULATED TDX".into()
    }
    fn simulated(&self) -> bool {
        true
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError> {
        let td = self.td.lock().unwrap_or_else(|p| p.into_inner());
        Ok(TeeEvidence::Tdx {
            quote: HexBytes(td.quote(report_data).map_err(failed)?),
            event_log: None,
        })
    }
    fn rtmr3(&self) -> Result<Option<[u8; 48]>, BackendError> {
        let td = self.td.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some(td.measurements().rtmr[3]))
    }
    fn extend_rtmr3(&self, digest: &[u8; 48]) -> Result<(), BackendError> {
        let mut td = self.td.lock().unwrap_or_else(|p| p.into_inner());
        td.extend_rtmr(3, digest);
        Ok(())
    }
}

/// How many simulated GPUs and switches a node has, and which board.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub gpus: usize,
    pub switches: usize,
    pub model: SimGpuModel,
}

impl Shape {
    /// `gpus` of the default board, no switches.
    pub fn gpus(gpus: usize) -> Self {
        Shape {
            gpus,
            ..Shape::default()
        }
    }
}

/// Simulated GPUs (and switches), each with its own device identity.
pub struct SimDevices {
    gpus: Vec<SimGpu>,
    switches: Vec<SimGpu>,
    model: SimGpuModel,
    latency: Duration,
}

impl SimDevices {
    pub fn open(cfg: &SimConfig) -> Result<Self, BackendError> {
        let (_, nvidia) = hierarchy(&cfg.dir)?;
        Self::issue(
            &nvidia,
            Shape {
                gpus: cfg.gpus,
                switches: cfg.switches,
                model: cfg.gpu_model,
            },
            Duration::from_millis(cfg.gpu_latency_ms),
        )
    }

    /// New devices of the hierarchy. With switches, the node is wired as an
    /// HGX board in protected-PCIe mode: each GPU's NVLinks reach every
    /// switch, and each switch lists every GPU, by their signed PDIs.
    pub fn issue(
        nvidia: &SimNvidia,
        shape: Shape,
        latency: Duration,
    ) -> Result<Self, BackendError> {
        let issue = |kind: SimDeviceKind| {
            nvidia
                .issue_device(kind, &default_fwid(kind))
                .map_err(failed)
        };
        let gpus: Vec<SimDevice> = (0..shape.gpus)
            .map(|_| issue(SimDeviceKind::Gpu))
            .collect::<Result<_, _>>()?;
        let switches: Vec<SimDevice> = (0..shape.switches)
            .map(|_| issue(SimDeviceKind::Switch))
            .collect::<Result<_, _>>()?;
        let switch_pdis: Vec<_> = switches.iter().map(SimDevice::pdi).collect();
        let gpu_pdis: Vec<_> = gpus.iter().map(SimDevice::pdi).collect();
        let board = || {
            let mut p = match shape.model {
                SimGpuModel::H100Pcie => HopperProfile::h100(),
                SimGpuModel::H200Sxm => HopperProfile::h200(),
            };
            p.ppcie_switches = (!switch_pdis.is_empty()).then(|| switch_pdis.clone());
            GpuProfile::Hopper(p)
        };
        let fabric = || {
            let mut p = NvSwitchProfile::ls10();
            p.gpus = gpu_pdis.clone();
            GpuProfile::NvSwitch(p)
        };
        Ok(SimDevices {
            gpus: gpus
                .into_iter()
                .map(|d| SimGpu::new(d, board()).map_err(failed))
                .collect::<Result<_, _>>()?,
            switches: switches
                .into_iter()
                .map(|d| SimGpu::new(d, fabric()).map_err(failed))
                .collect::<Result<_, _>>()?,
            model: shape.model,
            latency,
        })
    }

    /// The NVIDIA-signed identities of the simulated GPUs.
    pub fn gpu_identities(&self) -> Vec<String> {
        self.gpus.iter().map(SimGpu::identity).collect()
    }
}

impl Devices for SimDevices {
    fn describe(&self) -> String {
        format!(
            "SIMULATED {} {} GPUs, {} NVSwitches",
            self.gpus.len(),
            self.model.name(),
            self.switches.len()
        )
    }
    fn simulated(&self) -> bool {
        true
    }
    fn gpu_count(&self) -> usize {
        self.gpus.len()
    }
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
    fn evidence(&self, nonce: &[u8; 32], how: Gather) -> Result<DeviceSet, BackendError> {
        let all: Vec<&SimGpu> = self.gpus.iter().chain(&self.switches).collect();
        let mut reports = gather(all.len(), how, |i| {
            if !self.latency.is_zero() {
                std::thread::sleep(self.latency);
            }
            all[i].evidence(nonce).map_err(failed)
        })?;
        let switches = reports.split_off(self.gpus.len());
        Ok(DeviceSet {
            gpus: reports,
            switches,
        })
    }
}
