//! Where evidence comes from. One trait for the CPU TEE (TDX or SEV-SNP: the
//! quote or report that carries report_data) and one for the node's NVIDIA
//! devices (one SPDM report per GPU and NVSwitch, all answering the same
//! nonce). Real backends talk to the kernel and NVML; `sim` signs with the
//! local test hierarchy.

pub mod nscq;
pub mod nvml;
pub mod rtmr;
pub mod sev_guest;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tdx_guest;
pub mod tsm;

use std::path::Path;

use tvm_protocol::evidence::{DeviceEvidence, TeeEvidence};

use crate::config::{Config, GpuChoice, TeeChoice};

/// What went wrong producing evidence, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The interface is not there at all (not a CVM, module not loaded, no driver).
    #[error("{what} is not available: {reason}")]
    Unavailable { what: &'static str, reason: String },
    /// The interface is there but refused or failed.
    #[error("{what} failed: {reason}")]
    Failed { what: &'static str, reason: String },
    /// GPUs are present but not in confidential-computing mode, not ready,
    /// or (protected PCIe) their NVSwitches cannot be attested.
    #[error("{0}")]
    NotConfidential(String),
    /// Busy with another request's hardware call: try again (503).
    #[error("{0}")]
    Busy(String),
}

/// The CPU TEE kind a backend produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    Tdx,
    SevSnp,
}

/// A CPU TEE: turns 64 bytes of report_data into a quote or report.
pub trait Tee: Send + Sync {
    fn kind(&self) -> TeeKind;
    /// What the backend is, for `/api/v1/info` and logs (e.g. "configfs-tsm (tdx_guest)").
    fn describe(&self) -> String;
    fn simulated(&self) -> bool {
        false
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError>;
    /// RTMR3 now, on a TEE that has it (TDX); `None` on one that has no
    /// run-time register (SEV-SNP: the runtime is bound by report_data).
    fn rtmr3(&self) -> Result<Option<[u8; 48]>, BackendError> {
        Ok(None)
    }
    /// Extend RTMR3 with `digest`.
    fn extend_rtmr3(&self, _digest: &[u8; 48]) -> Result<(), BackendError> {
        Err(BackendError::Unavailable {
            what: "RTMR3",
            reason: format!("{} has no run-time measurement register", self.describe()),
        })
    }
}

/// Whether the node's GPUs may run confidential work now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum Readiness {
    Ready,
    /// Why not, in words a miner can act on.
    NotReady(String),
}

/// The node's GPUs and NVSwitches.
pub trait Devices: Send + Sync {
    fn describe(&self) -> String;
    fn simulated(&self) -> bool {
        false
    }
    fn gpu_count(&self) -> usize;
    fn readiness(&self) -> Readiness;
    /// One report per GPU and per switch, each answering `nonce`, gathered
    /// as `gather` says (parallel in service; sequential only to measure).
    fn evidence(&self, nonce: &[u8; 32], gather: Gather) -> Result<DeviceSet, BackendError>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSet {
    pub gpus: Vec<DeviceEvidence>,
    pub switches: Vec<DeviceEvidence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gather {
    #[default]
    Parallel,
    Sequential,
}

/// A CPU TEE shared by several evidence sources (the scale bench's many
/// simulated CVMs on one simulated platform).
impl<T: Tee + ?Sized> Tee for std::sync::Arc<T> {
    fn kind(&self) -> TeeKind {
        (**self).kind()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn simulated(&self) -> bool {
        (**self).simulated()
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError> {
        (**self).evidence(report_data)
    }
    fn rtmr3(&self) -> Result<Option<[u8; 48]>, BackendError> {
        (**self).rtmr3()
    }
    fn extend_rtmr3(&self, digest: &[u8; 48]) -> Result<(), BackendError> {
        (**self).extend_rtmr3(digest)
    }
}

/// Devices shared between agents: the devnet's cloned GPU (one physical
/// device claimed by two CVMs, which validators must catch).
impl<T: Devices + ?Sized> Devices for std::sync::Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn simulated(&self) -> bool {
        (**self).simulated()
    }
    fn gpu_count(&self) -> usize {
        (**self).gpu_count()
    }
    fn readiness(&self) -> Readiness {
        (**self).readiness()
    }
    fn evidence(&self, nonce: &[u8; 32], gather: Gather) -> Result<DeviceSet, BackendError> {
        (**self).evidence(nonce, gather)
    }
}

/// A CPU-only node: no devices, always ready.
pub struct NoDevices;

impl Devices for NoDevices {
    fn describe(&self) -> String {
        "no GPUs (CPU node)".into()
    }
    fn gpu_count(&self) -> usize {
        0
    }
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
    fn evidence(&self, _: &[u8; 32], _: Gather) -> Result<DeviceSet, BackendError> {
        Ok(DeviceSet::default())
    }
}

/// Run `f` over `0..n`, on one thread per item or one after another; results in order.
pub fn gather<T: Send>(
    n: usize,
    how: Gather,
    f: impl Fn(usize) -> Result<T, BackendError> + Sync,
) -> Result<Vec<T>, BackendError> {
    match how {
        Gather::Sequential => (0..n).map(&f).collect(),
        Gather::Parallel => std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BackendError::Failed {
                            what: "device evidence",
                            reason: "a device thread panicked".into(),
                        })
                    })
                })
                .collect()
        }),
    }
}

#[cfg(feature = "sim")]
fn sim_tee(cfg: &Config) -> Result<Box<dyn Tee>, BackendError> {
    Ok(Box::new(sim::SimTee::open(&cfg.sim)?))
}

/// NVIDIA's NSCQ library, for a protected-PCIe node's NVSwitches.
fn load_nscq() -> Result<Box<dyn nscq::SwitchSource>, nscq::NscqError> {
    let n = nscq::Nscq::load()?;
    tracing::info!(api = %n.version(), "NSCQ loaded: NVSwitch evidence joins each bundle");
    Ok(Box::new(n))
}

#[cfg(feature = "sim")]
fn sim_devices(cfg: &Config) -> Result<Box<dyn Devices>, BackendError> {
    Ok(Box::new(sim::SimDevices::open(&cfg.sim)?))
}

#[cfg(not(feature = "sim"))]
fn no_sim() -> BackendError {
    BackendError::Unavailable {
        what: "the simulated TEE",
        reason: "this agent was built without it (cargo feature `sim`); use a real TEE, or an agent built with the default features".into(),
    }
}

#[cfg(not(feature = "sim"))]
fn sim_tee(_: &Config) -> Result<Box<dyn Tee>, BackendError> {
    Err(no_sim())
}

#[cfg(not(feature = "sim"))]
fn sim_devices(_: &Config) -> Result<Box<dyn Devices>, BackendError> {
    Err(no_sim())
}

/// A CPU TEE and the node's devices.
pub type Backends = (Box<dyn Tee>, Box<dyn Devices>);

/// The backends the configuration asks for. `auto` tries the real interfaces
/// in order and names each one that failed; it never falls back to `sim`.
pub fn select(cfg: &Config) -> Result<Backends, BackendError> {
    use self::nvml::NvmlApi as _;
    let tee: Box<dyn Tee> = match cfg.tee {
        TeeChoice::Sim => sim_tee(cfg)?,
        TeeChoice::Tsm => Box::new(tsm::Tsm::open_default(cfg.snp_vmpl)?),
        TeeChoice::TdxGuest => Box::new(tdx_guest::TdxGuest::open(Path::new(tdx_guest::DEVICE))?),
        TeeChoice::SevGuest => Box::new(sev_guest::SevGuest::open(cfg.snp_vmpl)?),
        TeeChoice::Auto => {
            let mut tried = Vec::new();
            let mut found: Option<Box<dyn Tee>> = None;
            match tsm::Tsm::open(
                tsm::RealFs,
                Path::new(tsm::DEFAULT_ROOT),
                Some(cfg.snp_vmpl),
            ) {
                Ok(t) => found = Some(Box::new(t)),
                Err(e) => tried.push(e.to_string()),
            }
            if found.is_none() {
                match tdx_guest::TdxGuest::open(Path::new(tdx_guest::DEVICE)) {
                    Ok(t) => found = Some(Box::new(t)),
                    Err(e) => tried.push(e.to_string()),
                }
            }
            if found.is_none() {
                match sev_guest::SevGuest::open(cfg.snp_vmpl) {
                    Ok(t) => found = Some(Box::new(t)),
                    Err(e) => tried.push(e.to_string()),
                }
            }
            found.ok_or_else(|| BackendError::Unavailable {
                what: "a CPU TEE",
                reason: format!(
                    "none found — {}. Run the agent inside a TDX or SEV-SNP guest, or use `tee: sim` on a development machine",
                    tried.join("; ")
                ),
            })?
        }
    };
    let devices: Box<dyn Devices> = match cfg.gpus {
        GpuChoice::None => Box::new(NoDevices),
        GpuChoice::Sim => sim_devices(cfg)?,
        GpuChoice::Nvml => Box::new(
            nvml::NvmlDevices::new(nvml::RealNvml::init()?, cfg.set_gpus_ready)?
                .load_switches(load_nscq),
        ),
        GpuChoice::Auto => match nvml::RealNvml::init() {
            Ok(api) if api.gpu_count().unwrap_or(0) > 0 => {
                Box::new(nvml::NvmlDevices::new(api, cfg.set_gpus_ready)?.load_switches(load_nscq))
            }
            Ok(_) => {
                tracing::info!("NVML loaded but sees no GPU: serving as a CPU node");
                Box::new(NoDevices)
            }
            Err(e) => {
                tracing::info!(reason = %e, "no NVML: serving as a CPU node");
                Box::new(NoDevices)
            }
        },
    };
    Ok((tee, devices))
}
