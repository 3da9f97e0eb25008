//! NVIDIA GPUs through NVML (`nvml-wrapper`, loaded at run time, so the agent
//! runs on machines without a driver): the system's confidential-computing
//! state, the GPUs-ready switch, and per GPU the SPDM attestation report for
//! a nonce (`nvmlDeviceGetConfComputeGpuAttestationReport`) and the device's
//! attestation certificate chain (`nvmlDeviceGetConfComputeGpuCertificate`),
//! through the `-sys` bindings since the wrapper does not cover those two.
//!
//! NVSwitches answer through NVIDIA's NSCQ library, not NVML (`nscq`): when
//! NVML says the GPUs run in protected-PCIe mode, their switches' evidence
//! joins the bundle, and without NSCQ the node gives no evidence at all
//! (evidence without its switches could only fail the validator's topology
//! check).

use std::sync::Mutex;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use nvml_wrapper_sys::bindings as sys;
use tvm_protocol::evidence::DeviceEvidence;
use tvm_protocol::hexbytes::HexBytes;

use super::nscq::{NscqError, SwitchSource};
use super::{gather, BackendError, DeviceSet, Devices, Gather, Readiness};

const WHAT: &str = "NVML";

/// The system-wide confidential-computing state NVML reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcState {
    pub cc_enabled: bool,
    pub environment: CcEnvironment,
    pub devtools: bool,
}

/// NVML's multi-GPU mode (`nvmlSystemGetConfComputeSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiGpuMode {
    None,
    /// Hopper HGX: 8 GPUs and their 4 NVSwitches in one CVM.
    ProtectedPcie,
    /// Blackwell: NVLink encrypted, switches outside the trusted base.
    NvlinkEncryption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcEnvironment {
    Unavailable,
    /// NVIDIA's CC simulation environment: not real protection.
    Simulation,
    Production,
}

/// What the backend needs from NVML; the real library or a test model.
pub trait NvmlApi: Send + Sync {
    fn gpu_count(&self) -> Result<u32, String>;
    fn cc_state(&self) -> Result<CcState, String>;
    fn gpus_ready(&self) -> Result<bool, String>;
    fn set_gpus_ready(&self) -> Result<(), String>;
    fn multi_gpu_mode(&self) -> Result<MultiGpuMode, String>;
    /// The raw SPDM report (request ‖ response) for `nonce`.
    fn attestation_report(&self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, String>;
    /// The attestation certificate chain as NVML returns it (PEM or DER).
    fn attestation_chain(&self, index: u32) -> Result<Vec<u8>, String>;
}

/// NVML's error, with what a miner should check.
pub fn explain(e: &NvmlError) -> String {
    let hint = match e {
        NvmlError::LibloadingError(_) => {
            " (libnvidia-ml.so could not be loaded: is the NVIDIA driver installed in the CVM?)"
        }
        NvmlError::DriverNotLoaded => " (load the nvidia kernel module: the GPU must be passed through to the CVM)",
        NvmlError::NoPermission => " (run the agent as root)",
        NvmlError::NotSupported => " (this GPU or driver does not support confidential computing: H100/H200/B200 with driver ≥ 535 needed)",
        NvmlError::FailedToLoadSymbol(_) => " (the driver is too old for confidential computing: 535 or later needed)",
        NvmlError::InvalidArg => " (the GPU is not in confidential-computing mode, or the call is malformed)",
        _ => "",
    };
    format!("{e}{hint}")
}

/// The real NVML.
pub struct RealNvml {
    nvml: Nvml,
}

impl RealNvml {
    pub fn init() -> Result<Self, BackendError> {
        Nvml::init()
            .map(|nvml| RealNvml { nvml })
            .map_err(|e| BackendError::Unavailable {
                what: WHAT,
                reason: explain(&e),
            })
    }

    fn sym<T: Copy, E>(&self, s: &Result<T, E>, name: &str) -> Result<T, String> {
        s.as_ref().copied().map_err(|_| {
            format!("{name} is missing from libnvidia-ml: the driver is too old for confidential computing (535 or later needed)")
        })
    }

    fn handle(&self, index: u32) -> Result<sys::nvmlDevice_t, String> {
        let d = self
            .nvml
            .device_by_index(index)
            .map_err(|e| format!("GPU {index}: {}", explain(&e)))?;
        // SAFETY: the handle stays valid while `self.nvml` is alive; we use it only inside calls on `self`.
        Ok(unsafe { d.handle() })
    }
}

fn nvml_rc(rc: sys::nvmlReturn_t, call: &str) -> Result<(), String> {
    if rc == sys::nvmlReturn_enum_NVML_SUCCESS {
        Ok(())
    } else {
        Err(format!("{call}: {}", explain(&NvmlError::from(rc))))
    }
}

impl NvmlApi for RealNvml {
    fn gpu_count(&self) -> Result<u32, String> {
        self.nvml.device_count().map_err(|e| explain(&e))
    }

    fn cc_state(&self) -> Result<CcState, String> {
        let f = self.sym(
            &self.nvml.lib().nvmlSystemGetConfComputeState,
            "nvmlSystemGetConfComputeState",
        )?;
        // SAFETY: plain C struct filled by NVML.
        let mut st: sys::nvmlConfComputeSystemState_t = unsafe { std::mem::zeroed() };
        nvml_rc(unsafe { f(&mut st) }, "nvmlSystemGetConfComputeState")?;
        Ok(CcState {
            cc_enabled: st.ccFeature == sys::NVML_CC_SYSTEM_FEATURE_ENABLED,
            environment: match st.environment {
                sys::NVML_CC_SYSTEM_ENVIRONMENT_PROD => CcEnvironment::Production,
                sys::NVML_CC_SYSTEM_ENVIRONMENT_SIM => CcEnvironment::Simulation,
                _ => CcEnvironment::Unavailable,
            },
            devtools: st.devToolsMode == sys::NVML_CC_SYSTEM_DEVTOOLS_MODE_ON,
        })
    }

    fn multi_gpu_mode(&self) -> Result<MultiGpuMode, String> {
        let f = self.sym(
            &self.nvml.lib().nvmlSystemGetConfComputeSettings,
            "nvmlSystemGetConfComputeSettings",
        )?;
        // SAFETY: plain C struct filled by NVML; version 1 as its header makes it.
        let mut st: sys::nvmlSystemConfComputeSettings_t = unsafe { std::mem::zeroed() };
        st.version = std::mem::size_of::<sys::nvmlSystemConfComputeSettings_t>() as u32 | (1 << 24);
        nvml_rc(unsafe { f(&mut st) }, "nvmlSystemGetConfComputeSettings")?;
        Ok(match st.multiGpuMode {
            sys::NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE => MultiGpuMode::ProtectedPcie,
            sys::NVML_CC_SYSTEM_MULTIGPU_NVLE => MultiGpuMode::NvlinkEncryption,
            _ => MultiGpuMode::None,
        })
    }

    fn gpus_ready(&self) -> Result<bool, String> {
        let f = self.sym(
            &self.nvml.lib().nvmlSystemGetConfComputeGpusReadyState,
            "nvmlSystemGetConfComputeGpusReadyState",
        )?;
        let mut ready: std::os::raw::c_uint = 0;
        // SAFETY: NVML writes one unsigned int.
        nvml_rc(
            unsafe { f(&mut ready) },
            "nvmlSystemGetConfComputeGpusReadyState",
        )?;
        Ok(ready == sys::NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE)
    }

    fn set_gpus_ready(&self) -> Result<(), String> {
        let f = self.sym(
            &self.nvml.lib().nvmlSystemSetConfComputeGpusReadyState,
            "nvmlSystemSetConfComputeGpusReadyState",
        )?;
        // SAFETY: by-value argument.
        nvml_rc(
            unsafe { f(sys::NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE) },
            "nvmlSystemSetConfComputeGpusReadyState",
        )
    }

    fn attestation_report(&self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, String> {
        let f = self.sym(
            &self.nvml.lib().nvmlDeviceGetConfComputeGpuAttestationReport,
            "nvmlDeviceGetConfComputeGpuAttestationReport",
        )?;
        let h = self.handle(index)?;
        // The struct is 12 KiB: keep it off the (small) thread stacks.
        // SAFETY: plain C struct; NVML reads the nonce and fills the rest.
        let mut r: Box<sys::nvmlConfComputeGpuAttestationReport_t> =
            Box::new(unsafe { std::mem::zeroed() });
        r.nonce = *nonce;
        nvml_rc(
            unsafe { f(h, &mut *r) },
            "nvmlDeviceGetConfComputeGpuAttestationReport",
        )?;
        let n = (r.attestationReportSize as usize).min(r.attestationReport.len());
        Ok(r.attestationReport[..n].to_vec())
    }

    fn attestation_chain(&self, index: u32) -> Result<Vec<u8>, String> {
        let f = self.sym(
            &self.nvml.lib().nvmlDeviceGetConfComputeGpuCertificate,
            "nvmlDeviceGetConfComputeGpuCertificate",
        )?;
        let h = self.handle(index)?;
        // SAFETY: plain C struct filled by NVML.
        let mut c: Box<sys::nvmlConfComputeGpuCertificate_t> =
            Box::new(unsafe { std::mem::zeroed() });
        nvml_rc(
            unsafe { f(h, &mut *c) },
            "nvmlDeviceGetConfComputeGpuCertificate",
        )?;
        let n = (c.attestationCertChainSize as usize).min(c.attestationCertChain.len());
        Ok(c.attestationCertChain[..n].to_vec())
    }
}

/// Split NVML's chain into DER certificates: PEM blocks, or DER back to back.
pub fn split_chain(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.windows(11).any(|w| w == b"-----BEGIN ") {
        return tvm_certs::anchors::pem_certificates(raw).map_err(|e| e.to_string());
    }
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() && rest[0] == 0x30 {
        let len = der_len(rest).ok_or("a DER certificate has a malformed length")?;
        let (cert, tail) = rest.split_at(len.min(rest.len()));
        if cert.len() != len {
            return Err("the chain ends inside a certificate".into());
        }
        out.push(cert.to_vec());
        rest = tail;
    }
    if out.is_empty() {
        return Err("no certificate in NVML's chain".into());
    }
    Ok(out)
}

/// Total length of the DER element at the start of `d`.
fn der_len(d: &[u8]) -> Option<usize> {
    let first = *d.get(1)?;
    if first < 0x80 {
        return Some(2 + first as usize);
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *d.get(2 + i)? as usize;
    }
    Some(2 + n + len)
}

/// Where the node's NVSwitch evidence comes from.
pub enum Switches {
    /// The GPUs are not in protected-PCIe mode: no switch is attested.
    NotNeeded,
    Source(Box<dyn SwitchSource>),
    /// Protected PCIe is on but the switches cannot be read: why.
    Unavailable(String),
}

/// The node's GPUs through an [`NvmlApi`].
pub struct NvmlDevices<A: NvmlApi> {
    api: A,
    count: u32,
    /// NVML said protected PCIe at start.
    ppcie: bool,
    /// Why NVML could not say the multi-GPU mode, if it could not.
    mode_error: Option<String>,
    switches: Switches,
    set_ready: bool,
    /// Readiness is re-read at most this often (NVML calls cost ~ms).
    cached: Mutex<Option<(std::time::Instant, Readiness)>>,
}

impl<A: NvmlApi> NvmlDevices<A> {
    /// Count the GPUs, check CC mode, and (when asked) switch the GPUs to
    /// accepting work — NVIDIA leaves that to the guest once it trusts them.
    pub fn new(api: A, set_ready: bool) -> Result<Self, BackendError> {
        let count = api
            .gpu_count()
            .map_err(|reason| BackendError::Unavailable { what: WHAT, reason })?;
        // Protected PCIe runs with the CC-mode setting off: the mode, not
        // `cc_enabled`, says the GPUs are confidential (as NVIDIA's SDK
        // takes it: CC on or PPCIe on).
        let (ppcie, switches, mode_error) = match api.multi_gpu_mode() {
            Ok(MultiGpuMode::ProtectedPcie) => (
                true,
                Switches::Unavailable("protected PCIe is on, and NSCQ was not loaded".into()),
                None,
            ),
            Ok(_) => (false, Switches::NotNeeded, None),
            // Drivers without the call have no protected PCIe either; and the
            // validator reads the mode from the GPUs' signed reports anyway.
            Err(e) => {
                tracing::warn!(reason = %e, "cannot read the multi-GPU mode; reading no NVSwitch");
                (false, Switches::NotNeeded, Some(e))
            }
        };
        let dev = NvmlDevices {
            api,
            count,
            ppcie,
            mode_error,
            switches,
            set_ready,
            cached: Mutex::new(None),
        };
        // A protected-PCIe board is set ready only once its switches are
        // read (`load_switches`), as NVIDIA's PPCIe verifier does.
        if !dev.ppcie {
            dev.make_ready()?;
        }
        Ok(dev)
    }

    /// Switch the GPUs to accepting work when asked to and they are in CC
    /// (or protected-PCIe) mode.
    fn make_ready(&self) -> Result<(), BackendError> {
        if !self.set_ready || self.count == 0 {
            return Ok(());
        }
        if let Readiness::NotReady(why) = self.cc_readiness() {
            tracing::warn!(reason = %why, "GPUs are not in confidential-computing mode; not setting them ready");
        } else if !self.api.gpus_ready().unwrap_or(false) {
            self.api
                .set_gpus_ready()
                .map_err(|reason| BackendError::Failed { what: WHAT, reason })?;
            tracing::info!("GPUs set ready to accept confidential work");
        }
        Ok(())
    }

    /// On a protected-PCIe node, the switches' source (NSCQ): `load` runs
    /// only there.
    pub fn load_switches(
        mut self,
        load: impl FnOnce() -> Result<Box<dyn SwitchSource>, NscqError>,
    ) -> Self {
        if matches!(self.switches, Switches::NotNeeded) {
            return self;
        }
        // Read every switch once before trusting the board (all locked,
        // every report and chain readable), then set the GPUs ready.
        let checked =
            load().and_then(|s| s.switch_evidence(&[0; 32]).map(|found| (s, found.len())));
        self.switches = match checked {
            Ok((s, n)) => {
                tracing::info!(
                    switches = n,
                    "NVSwitches read through NSCQ: each bundle carries them"
                );
                Switches::Source(s)
            }
            Err(e) => {
                tracing::error!(reason = %e, "protected PCIe is on but the NVSwitches cannot be attested: this node gives no evidence");
                Switches::Unavailable(e.to_string())
            }
        };
        if matches!(self.switches, Switches::Source(_)) {
            if let Err(e) = self.make_ready() {
                self.switches = Switches::Unavailable(e.to_string());
            }
        }
        self
    }

    /// CC mode alone (before the ready switch).
    fn cc_readiness(&self) -> Readiness {
        match self.api.cc_state() {
            Err(e) => Readiness::NotReady(format!("cannot read the confidential-computing state: {e}")),
                        Ok(s) if !s.cc_enabled && !self.ppcie => Readiness::NotReady(format!(
                "CC mode off: the GPUs are not in confidential-computing mode (set it on the host with NVIDIA's gpu-admin-tools: --set-cc-mode=on, or --set-ppcie-mode=on for an HGX board's 8 GPUs and 4 NVSwitches, then reset the GPUs){}",
                match &self.mode_error {
                    Some(e) => format!("; NVML could not say whether protected PCIe is on ({e}), so it was not taken as on: a driver of the 550 branch or later reports it"),
                    None => String::new(),
                }
            )),
            Ok(s) if s.devtools => Readiness::NotReady(
                "CC devtools mode is on: GPU memory is open to debugging tools; set --set-cc-mode=on (not devtools)".into(),
            ),
            Ok(s) if s.environment != CcEnvironment::Production => Readiness::NotReady(format!(
                "the CC environment is {:?}, not production: the CPU TEE is not recognised by the driver",
                s.environment
            )),
            Ok(_) => Readiness::Ready,
        }
    }

    fn readiness_now(&self) -> Readiness {
        if self.count == 0 {
            return Readiness::NotReady("no NVIDIA GPU found".into());
        }
        if let Switches::Unavailable(why) = &self.switches {
            return Readiness::NotReady(why.clone());
        }
        match self.cc_readiness() {
            Readiness::Ready => match self.api.gpus_ready() {
                Ok(true) => Readiness::Ready,
                Ok(false) => Readiness::NotReady(
                    "CC mode on but the GPUs are not set ready to accept work (the agent sets them ready at start when set_gpus_ready is true)".into(),
                ),
                Err(e) => Readiness::NotReady(format!("cannot read the GPUs-ready state: {e}")),
            },
            not => not,
        }
    }
}

impl<A: NvmlApi> Devices for NvmlDevices<A> {
    fn describe(&self) -> String {
        match &self.switches {
            Switches::NotNeeded => format!("NVML ({} GPUs)", self.count),
            Switches::Source(_) => format!("NVML ({} GPUs, protected PCIe) + NSCQ", self.count),
            Switches::Unavailable(_) => format!(
                "NVML ({} GPUs, protected PCIe; NSCQ unavailable)",
                self.count
            ),
        }
    }

    fn gpu_count(&self) -> usize {
        self.count as usize
    }

    fn readiness(&self) -> Readiness {
        let mut c = match self.cached.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some((at, r)) = c.as_ref() {
            if at.elapsed() < std::time::Duration::from_secs(5) {
                return r.clone();
            }
        }
        let r = self.readiness_now();
        *c = Some((std::time::Instant::now(), r.clone()));
        r
    }

    fn evidence(&self, nonce: &[u8; 32], how: Gather) -> Result<DeviceSet, BackendError> {
        if let Readiness::NotReady(why) = self.cc_readiness() {
            return Err(BackendError::NotConfidential(why));
        }
        let gpus = gather(self.count as usize, how, |i| {
            let i = i as u32;
            let fail = |reason: String| BackendError::Failed {
                what: WHAT,
                reason: format!("GPU {i}: {reason}"),
            };
            let report = self.api.attestation_report(i, nonce).map_err(fail)?;
            let chain = self.api.attestation_chain(i).map_err(fail)?;
            let chain = split_chain(&chain).map_err(fail)?;
            Ok(DeviceEvidence {
                report: HexBytes(report),
                cert_chain: chain.into_iter().map(HexBytes).collect(),
            })
        })?;
        let switches = match &self.switches {
            Switches::NotNeeded => Vec::new(),
            // Not ready to be attested (503), as with CC mode off.
            Switches::Unavailable(why) => return Err(BackendError::NotConfidential(why.clone())),
            Switches::Source(s) => {
                let fail = |reason: String| BackendError::Failed {
                    what: "NSCQ",
                    reason,
                };
                s.switch_evidence(nonce)
                    .map_err(|e| match e {
                        NscqError::Busy => BackendError::Busy(e.to_string()),
                        e => fail(e.to_string()),
                    })?
                    .into_iter()
                    .map(|e| {
                        let chain = split_chain(&e.cert_chain)
                            .map_err(|why| fail(format!("switch {}: {why}", e.label)))?;
                        Ok(DeviceEvidence {
                            report: HexBytes(e.report),
                            cert_chain: chain.into_iter().map(HexBytes).collect(),
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(DeviceSet { gpus, switches })
    }
}

/// One line of a hardware probe: what was asked, and what came back.
pub type ProbeLine = (String, Result<String, String>);

/// What NVML shows on this machine and whether the agent would give
/// evidence, step by step (`tvm-agent gpu-probe`, tests/hardware/gpu.sh):
/// on a GPU outside a CVM every refusal is named.
pub fn probe<A: NvmlApi>(api: A, nonce: &[u8; 32]) -> Vec<ProbeLine> {
    let mut lines: Vec<ProbeLine> = Vec::new();
    let count = api.gpu_count();
    lines.push(("GPUs".into(), count.clone().map(|n| n.to_string())));
    lines.push((
        "confidential computing".into(),
        api.cc_state().map(|s| format!("{s:?}")),
    ));
    lines.push((
        "multi-GPU mode".into(),
        api.multi_gpu_mode().map(|m| format!("{m:?}")),
    ));
    lines.push(("GPUs ready".into(), api.gpus_ready().map(|r| r.to_string())));
    for i in 0..count.unwrap_or(0) {
        lines.push((
            format!("GPU {i} attestation report"),
            api.attestation_report(i, nonce).map(|r| {
                let answers = r.get(4..36) == Some(&nonce[..]);
                format!("{} bytes; answers our nonce: {answers}", r.len())
            }),
        ));
        lines.push((
            format!("GPU {i} certificate chain"),
            api.attestation_chain(i)
                .and_then(|c| split_chain(&c))
                .map(|c| format!("{} certificates", c.len())),
        ));
    }
    match NvmlDevices::new(api, false) {
        Err(e) => lines.push(("agent".into(), Err(e.to_string()))),
        Ok(d) => {
            let d = d.load_switches(|| {
                super::nscq::Nscq::load().map(|n| Box::new(n) as Box<dyn SwitchSource>)
            });
            lines.push(("agent devices".into(), Ok(d.describe())));
            lines.push((
                "agent readiness".into(),
                match d.readiness() {
                    Readiness::Ready => Ok("ready".into()),
                    Readiness::NotReady(why) => Err(format!("refuses: {why}")),
                },
            ));
            lines.push((
                "agent evidence".into(),
                d.evidence(nonce, Gather::Sequential)
                    .map(|s| {
                        format!(
                            "{} GPU and {} switch reports",
                            s.gpus.len(),
                            s.switches.len()
                        )
                    })
                    .map_err(|e| format!("refuses: {e}")),
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nscq::SwitchEvidence;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// NVML as the fixtures say: real NV-1 report bytes and chain from testdata.
    struct Model {
        state: Result<CcState, String>,
        ready: AtomicBool,
        count: u32,
        report_error: Option<NvmlError>,
        multi_gpu: MultiGpuMode,
    }

    fn on() -> CcState {
        CcState {
            cc_enabled: true,
            environment: CcEnvironment::Production,
            devtools: false,
        }
    }

    fn model(state: Result<CcState, String>) -> Model {
        Model {
            state,
            ready: AtomicBool::new(false),
            count: 2,
            report_error: None,
            multi_gpu: MultiGpuMode::None,
        }
    }

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../testdata/nvidia/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    impl NvmlApi for Model {
        fn gpu_count(&self) -> Result<u32, String> {
            Ok(self.count)
        }
        fn cc_state(&self) -> Result<CcState, String> {
            self.state.clone()
        }
        fn gpus_ready(&self) -> Result<bool, String> {
            Ok(self.ready.load(Ordering::SeqCst))
        }
        fn set_gpus_ready(&self) -> Result<(), String> {
            self.ready.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn multi_gpu_mode(&self) -> Result<MultiGpuMode, String> {
            Ok(self.multi_gpu)
        }
        fn attestation_report(&self, _: u32, _: &[u8; 32]) -> Result<Vec<u8>, String> {
            if let Some(e) = &self.report_error {
                return Err(explain(e));
            }
            let hex = String::from_utf8(testdata("nvtrust_hopper_report.hex")).unwrap();
            Ok(hex::decode(hex.trim()).unwrap())
        }
        fn attestation_chain(&self, _: u32) -> Result<Vec<u8>, String> {
            Ok(testdata("nvtrust_hopper_cert_chain.pem"))
        }
    }

    #[test]
    fn cc_on_sets_ready_and_gathers_every_gpu() {
        let d = NvmlDevices::new(model(Ok(on())), true).unwrap();
        assert_eq!(d.readiness(), Readiness::Ready);
        let set = d.evidence(&[0; 32], Gather::Parallel).unwrap();
        assert_eq!(set.gpus.len(), 2);
        assert_eq!(
            set.gpus[0].cert_chain.len(),
            5,
            "PEM chain split into 5 DER certificates"
        );
        assert_eq!(set.gpus[0].cert_chain[0].0[0], 0x30);
        let seq = d.evidence(&[0; 32], Gather::Sequential).unwrap();
        assert_eq!(seq, set);
    }

    #[test]
    fn cc_off_is_reported_cleanly_and_nothing_is_set_ready() {
        let mut s = on();
        s.cc_enabled = false;
        let d = NvmlDevices::new(model(Ok(s)), true).unwrap();
        assert!(!d.api.ready.load(Ordering::SeqCst));
        match d.readiness() {
            Readiness::NotReady(why) => assert!(why.starts_with("CC mode off"), "{why}"),
            r => panic!("{r:?}"),
        }
        let e = d.evidence(&[0; 32], Gather::Parallel).unwrap_err();
        assert!(matches!(e, BackendError::NotConfidential(_)), "{e}");
    }

    #[test]
    fn devtools_and_simulation_environments_are_not_ready() {
        let mut s = on();
        s.devtools = true;
        let d = NvmlDevices::new(model(Ok(s)), false).unwrap();
        assert!(matches!(d.readiness(), Readiness::NotReady(w) if w.contains("devtools")));
        let mut s = on();
        s.environment = CcEnvironment::Simulation;
        let d = NvmlDevices::new(model(Ok(s)), false).unwrap();
        assert!(matches!(d.readiness(), Readiness::NotReady(w) if w.contains("Simulation")));
        // CC on but nobody set the GPUs ready.
        let d = NvmlDevices::new(model(Ok(on())), false).unwrap();
        assert!(matches!(d.readiness(), Readiness::NotReady(w) if w.contains("not set ready")));
    }

    #[test]
    fn nvml_errors_say_what_to_check() {
        let mut m = model(Ok(on()));
        m.report_error = Some(NvmlError::NotSupported);
        let d = NvmlDevices::new(m, true).unwrap();
        let e = d
            .evidence(&[0; 32], Gather::Parallel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPU 0") || e.contains("GPU 1"), "{e}");
        assert!(e.contains("driver ≥ 535"), "{e}");
        let d = NvmlDevices::new(model(Err(explain(&NvmlError::DriverNotLoaded))), true).unwrap();
        assert!(matches!(d.readiness(), Readiness::NotReady(w) if w.contains("passed through")));
    }

    #[test]
    fn missing_library_is_unavailable_not_a_panic() {
        // No NVIDIA driver on CI: init must fail cleanly with the hint.
        let r = Nvml::builder()
            .lib_path(std::ffi::OsStr::new("libnvidia-ml-does-not-exist.so"))
            .init();
        let Err(e) = r else {
            panic!("a library that does not exist loaded")
        };
        assert!(
            explain(&e).contains("NVIDIA driver installed"),
            "{}",
            explain(&e)
        );
    }

    #[test]
    fn chains_split_from_pem_and_der() {
        let pem = testdata("nvtrust_hopper_cert_chain.pem");
        let ders = split_chain(&pem).unwrap();
        // NVML's buffer may carry NUL padding after the last certificate.
        let mut padded = pem.clone();
        padded.extend_from_slice(&[0; 64]);
        assert_eq!(split_chain(&padded).unwrap(), ders);
        let joined: Vec<u8> = ders.concat();
        assert_eq!(split_chain(&joined).unwrap(), ders);
        assert!(split_chain(&joined[..joined.len() - 3]).is_err());
        assert!(split_chain(b"").is_err());
    }

    /// NSCQ as a test says: these switches, or this error.
    /// NSCQ as a test says: these switches, or, from call `fails_from` on
    /// (0: from the start's check), this error.
    struct Switchboard {
        switches: Vec<SwitchEvidence>,
        error: Option<(usize, NscqError)>,
        calls: std::sync::atomic::AtomicUsize,
    }

    fn switchboard(
        switches: Vec<SwitchEvidence>,
        error: Option<(usize, NscqError)>,
    ) -> Box<dyn SwitchSource> {
        Box::new(Switchboard {
            switches,
            error,
            calls: Default::default(),
        })
    }

    impl SwitchSource for Switchboard {
        fn switch_evidence(&self, _: &[u8; 32]) -> Result<Vec<SwitchEvidence>, NscqError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.error {
                Some((from, e)) if call >= *from => Err(e.clone()),
                _ => Ok(self.switches.clone()),
            }
        }
    }

    /// An HGX board in protected PCIe: the CC-mode setting is off there.
    fn ppcie() -> Model {
        let off = CcState {
            cc_enabled: false,
            ..on()
        };
        Model {
            multi_gpu: MultiGpuMode::ProtectedPcie,
            ready: AtomicBool::new(true),
            ..model(Ok(off))
        }
    }

    #[test]
    fn a_ppcie_node_adds_its_switches_from_nscq() {
        let switch = SwitchEvidence {
            label: "SWX-1".into(),
            report: vec![0x11, 0xe0],
            cert_chain: testdata("nvtrust_hopper_cert_chain.pem"),
        };
        // Not ready yet: the agent sets a PPCIe board ready after its switches.
        let mut board = ppcie();
        board.ready = AtomicBool::new(false);
        let d = NvmlDevices::new(board, true).unwrap();
        assert!(
            !d.api.gpus_ready().unwrap(),
            "set ready before its switches"
        );
        let d = d.load_switches(|| Ok(switchboard(vec![switch.clone(); 4], None)));
        assert!(d.api.gpus_ready().unwrap());
        assert_eq!(d.readiness(), Readiness::Ready);
        assert!(d.describe().contains("NSCQ"), "{}", d.describe());
        let set = d.evidence(&[0; 32], Gather::Parallel).unwrap();
        assert_eq!((set.gpus.len(), set.switches.len()), (2, 4));
        assert_eq!(set.switches[0].report.0, vec![0x11, 0xe0]);
        assert_eq!(set.switches[0].cert_chain.len(), 5);
        // A library failing later fails the request, naming it.
        let mountless = NscqError::Call {
            call: "session_create".into(),
            rc: -3,
        };
        let d = NvmlDevices::new(ppcie(), false).unwrap().load_switches(|| {
            Ok(switchboard(
                vec![switch.clone(); 4],
                Some((1, mountless.clone())),
            ))
        });
        let e = d
            .evidence(&[0; 32], Gather::Parallel)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NSCQ failed: NSCQ session_create failed: resource not mountable"),
            "{e}"
        );
        // Busy with another request: a busy answer (503), tried again.
        let d = NvmlDevices::new(ppcie(), false).unwrap().load_switches(|| {
            Ok(switchboard(
                vec![switch.clone(); 4],
                Some((1, NscqError::Busy)),
            ))
        });
        assert!(matches!(
            d.evidence(&[0; 32], Gather::Parallel),
            Err(BackendError::Busy(_))
        ));
        // Failing at the start's check: no evidence, and the GPUs not set ready.
        let mut board = ppcie();
        board.ready = AtomicBool::new(false);
        let d = NvmlDevices::new(board, true)
            .unwrap()
            .load_switches(|| Ok(switchboard(Vec::new(), Some((0, mountless)))));
        assert!(!d.api.gpus_ready().unwrap());
        assert!(
            matches!(d.readiness(), Readiness::NotReady(w) if w.contains("resource not mountable"))
        );
        assert!(d.evidence(&[0; 32], Gather::Parallel).is_err());
        // Protected PCIe does not excuse devtools.
        let mut devtools = ppcie();
        devtools.state = Ok(CcState {
            devtools: true,
            ..on()
        });
        let d = NvmlDevices::new(devtools, false)
            .unwrap()
            .load_switches(|| Ok(switchboard(Vec::new(), None)));
        assert!(matches!(d.readiness(), Readiness::NotReady(w) if w.contains("devtools")));
    }

    #[test]
    fn a_ppcie_node_without_nscq_gives_no_evidence_and_says_why() {
        let d = NvmlDevices::new(ppcie(), false).unwrap().load_switches(|| {
            Err(NscqError::Missing {
                library: "libnvidia-nscq.so.2".into(),
                reason: "not found".into(),
            })
        });
        let Readiness::NotReady(why) = d.readiness() else {
            panic!("ready without its switches")
        };
        assert!(why.starts_with("switch attestation unavailable"), "{why}");
        let e = d
            .evidence(&[0; 32], Gather::Parallel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("install libnvidia-nscq"), "{e}");
    }

    #[test]
    fn nscq_is_not_loaded_without_protected_pcie() {
        let d = NvmlDevices::new(model(Ok(on())), true)
            .unwrap()
            .load_switches(|| panic!("NSCQ loaded for a node that needs no switch"));
        assert!(d
            .evidence(&[0; 32], Gather::Parallel)
            .unwrap()
            .switches
            .is_empty());
    }

    #[test]
    fn the_probe_names_each_refusal() {
        let off = CcState {
            cc_enabled: false,
            ..on()
        };
        let lines = probe(model(Ok(off)), &[0; 32]);
        let find = |k: &str| lines.iter().find(|(q, _)| q == k).unwrap().1.clone();
        assert_eq!(find("GPUs"), Ok("2".into()));
        assert_eq!(find("GPU 1 certificate chain"), Ok("5 certificates".into()));
        assert!(find("agent readiness").unwrap_err().contains("CC mode off"));
        assert!(find("agent evidence").unwrap_err().contains("CC mode off"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        /// Whatever the driver hands back, splitting it never panics.
        #[test]
        fn split_chain_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = super::split_chain(&raw);
            let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
            pem.extend_from_slice(&raw);
            let _ = super::split_chain(&pem);
        }
    }
}
