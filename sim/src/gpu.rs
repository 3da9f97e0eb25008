//! A SIMULATED NVIDIA H100 GPU or NVSwitch: SPDM 1.1 GET_MEASUREMENTS
//! evidence in the real binary layout (the 37-byte request, then the response
//! with the measurement record, the responder nonce, NVIDIA's opaque TLVs and
//! the ECDSA P-384 signature), signed by a device of `crate::nvidia`.
//! It verifies only against the simulated root.

use crate::nvidia::{SimDevice, SimDeviceKind, SimNvidiaError, FWID_LEN, PDI_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha384};
use tvm_protocol::evidence::DeviceEvidence;
use tvm_protocol::HexBytes;

pub const NONCE_LEN: usize = 32;
/// A SHA-384 measurement.
pub const DIGEST_LEN: usize = 48;
/// NVLinks of one H100.
pub const NVLINKS: usize = 18;
/// GPU entries in an NVSwitch's GPU_LINK_CONN field.
pub const SWITCH_GPU_SLOTS: usize = 16;

const SPDM_1_1: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
/// param1 bit 0: a signature is requested.
const SIGNATURE_REQUESTED: u8 = 0x01;
/// param2: every block.
const ALL_BLOCKS: u8 = 0xFF;
const SPEC_DMTF: u8 = 0x01;
/// DMTF value type: mutable firmware, as a digest.
const VALUE_MUTABLE_FIRMWARE: u8 = 0x01;
const PPCIE_ON: u8 = 0xAA;
const PPCIE_OFF: u8 = 0x55;

use tvm_protocol::spdm::field;

#[derive(Debug, thiserror::Error)]
pub enum SimGpuError {
    #[error("a {profile:?} profile on a {device:?} device")]
    KindMismatch {
        profile: SimDeviceKind,
        device: SimDeviceKind,
    },
    #[error("bad simulated device profile: {0}")]
    Profile(String),
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Device(#[from] SimNvidiaError),
}

/// The deterministic measurements of a simulated device: block `i` (1-based)
/// is SHA-384(`label` ‖ i).
pub fn measurements(label: &str, count: u8) -> Vec<[u8; DIGEST_LEN]> {
    (1..=count)
        .map(|i| {
            let mut h = Sha384::new();
            h.update(label.as_bytes());
            h.update([i]);
            h.finalize().into()
        })
        .collect()
}

/// What a simulated Hopper GPU reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopperProfile {
    /// With the project and project SKU, the board: 1010/0200/882 is an
    /// H100 PCIe, G520/0280/895 an H200 SXM (the verifier's `gpu::model`).
    pub chip_sku: String,
    pub chip_sku_mod: String,
    pub project: String,
    pub project_sku: String,
    pub board_id: u32,
    pub driver_version: String,
    /// The five dotted components, as displayed: `[0x96, 0x00, 0x9F, 0x00, 0x01]`
    /// is VBIOS 96.00.9F.00.01.
    pub vbios_version: [u8; 5],
    /// Block 1 first.
    pub measurements: Vec<[u8; DIGEST_LEN]>,
    /// Protected PCIe: `Some` puts the GPU in PPCIe mode with its 18 NVLinks
    /// spread over these NVSwitches (their PDIs); `None` is a plain CC GPU.
    pub ppcie_switches: Option<Vec<[u8; PDI_LEN]>>,
}

impl HopperProfile {
    /// The measurement label of [`HopperProfile::h100`].
    pub const MEASUREMENT_LABEL: &'static str = "tvm sim gpu measurement";

    /// An H100 PCIe as nvtrust's sample (NV-1): chip SKU 882, project 1010
    /// SKU 0200, driver 550.90.07, VBIOS 96.00.9F.00.01, 64 blocks; PPCIe off.
    pub fn h100() -> Self {
        HopperProfile {
            chip_sku: "882".into(),
            chip_sku_mod: "0".into(),
            project: "1010".into(),
            project_sku: "0200".into(),
            board_id: 0x3b1,
            driver_version: "550.90.07".into(),
            vbios_version: [0x96, 0x00, 0x9F, 0x00, 0x01],
            measurements: measurements(Self::MEASUREMENT_LABEL, 64),
            ppcie_switches: None,
        }
    }

    /// An H200 SXM as in the real HGX H200 capture (NV-6): project G520 SKU
    /// 0280, chip SKU 895, driver 570.124.06, VBIOS 96.00.CF.00.02; PPCIe off
    /// until it is given its switches.
    pub fn h200() -> Self {
        HopperProfile {
            chip_sku: "895".into(),
            project: "G520".into(),
            project_sku: "0280".into(),
            board_id: 0x100,
            driver_version: "570.124.06".into(),
            vbios_version: [0x96, 0x00, 0xCF, 0x00, 0x02],
            ..Self::h100()
        }
    }

    /// The VBIOS version as the verifier shows it ("96.00.9f.00.01").
    pub fn vbios_string(&self) -> String {
        let v = self.vbios_version;
        format!(
            "{:02x}.{:02x}.{:02x}.{:02x}.{:02x}",
            v[0], v[1], v[2], v[3], v[4]
        )
    }
}

/// What a simulated NVSwitch (LS_10) reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvSwitchProfile {
    /// ASCII, as switches carry it ("96.10.73.00.01").
    pub vbios_version: String,
    pub measurements: Vec<[u8; DIGEST_LEN]>,
    /// The PDIs of the GPUs on its ports (at most 16; a PPCIe node lists its 8).
    pub gpus: Vec<[u8; PDI_LEN]>,
}

impl NvSwitchProfile {
    pub const MEASUREMENT_LABEL: &'static str = "tvm sim nvswitch measurement";

    /// An HGX H100 NVSwitch: VBIOS 96.10.73.00.01, 31 blocks, no GPUs listed.
    pub fn ls10() -> Self {
        NvSwitchProfile {
            vbios_version: "96.10.73.00.01".into(),
            measurements: measurements(Self::MEASUREMENT_LABEL, 31),
            gpus: Vec::new(),
        }
    }
}

/// The model-specific values of a simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuProfile {
    Hopper(HopperProfile),
    NvSwitch(NvSwitchProfile),
}

impl GpuProfile {
    pub fn h100() -> Self {
        GpuProfile::Hopper(HopperProfile::h100())
    }

    pub fn nvswitch() -> Self {
        GpuProfile::NvSwitch(NvSwitchProfile::ls10())
    }

    /// The default profile for a device of this kind.
    pub fn for_kind(kind: SimDeviceKind) -> Self {
        match kind {
            SimDeviceKind::Gpu => Self::h100(),
            SimDeviceKind::Switch => Self::nvswitch(),
        }
    }

    pub fn kind(&self) -> SimDeviceKind {
        match self {
            GpuProfile::Hopper(_) => SimDeviceKind::Gpu,
            GpuProfile::NvSwitch(_) => SimDeviceKind::Switch,
        }
    }

    fn measurements(&self) -> &[[u8; DIGEST_LEN]] {
        match self {
            GpuProfile::Hopper(p) => &p.measurements,
            GpuProfile::NvSwitch(p) => &p.measurements,
        }
    }
}

/// A simulated GPU or NVSwitch: a device of the simulated hierarchy and what it reports.
#[derive(Debug)]
pub struct SimGpu {
    device: SimDevice,
    profile: GpuProfile,
}

/// A NUL-padded ASCII field of at least `width` bytes (always NUL-terminated).
fn text(s: &str, width: usize) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(width.max(s.len() + 1), 0);
    v
}

fn u16_len(n: usize, what: &str) -> Result<u16, SimGpuError> {
    u16::try_from(n).map_err(|_| SimGpuError::Profile(format!("{what}: {n} bytes, too long")))
}

struct Opaque(Vec<u8>);

impl Opaque {
    fn put(&mut self, kind: u16, value: &[u8]) -> Result<(), SimGpuError> {
        self.0.extend(kind.to_le_bytes());
        self.0
            .extend(u16_len(value.len(), &format!("opaque field {kind}"))?.to_le_bytes());
        self.0.extend_from_slice(value);
        Ok(())
    }
}

/// MSRSCNT: each block extended once.
fn msrscnt(blocks: usize) -> Vec<u8> {
    std::iter::repeat_n(1u32.to_le_bytes(), blocks)
        .flatten()
        .collect()
}

impl SimGpu {
    /// A device and its profile; they must be of the same kind.
    pub fn new(device: SimDevice, profile: GpuProfile) -> Result<Self, SimGpuError> {
        if device.kind() != profile.kind() {
            return Err(SimGpuError::KindMismatch {
                profile: profile.kind(),
                device: device.kind(),
            });
        }
        let blocks = profile.measurements().len();
        if blocks == 0 || blocks > 255 {
            return Err(SimGpuError::Profile(format!(
                "{blocks} measurement blocks (1 to 255)"
            )));
        }
        match &profile {
            GpuProfile::Hopper(p) => {
                if p.ppcie_switches.as_ref().is_some_and(|s| s.is_empty()) {
                    return Err(SimGpuError::Profile(
                        "protected PCIe needs at least one NVSwitch".into(),
                    ));
                }
            }
            GpuProfile::NvSwitch(p) => {
                if p.gpus.len() > SWITCH_GPU_SLOTS {
                    return Err(SimGpuError::Profile(format!(
                        "{} GPUs on one NVSwitch (at most {SWITCH_GPU_SLOTS})",
                        p.gpus.len()
                    )));
                }
            }
        }
        Ok(SimGpu { device, profile })
    }

    /// A device with the default profile of its kind (H100 or LS_10 switch).
    pub fn with_default_profile(device: SimDevice) -> Result<Self, SimGpuError> {
        let profile = GpuProfile::for_kind(device.kind());
        Self::new(device, profile)
    }

    pub fn device(&self) -> &SimDevice {
        &self.device
    }

    pub fn profile(&self) -> &GpuProfile {
        &self.profile
    }

    /// The device identity the verifier will report (`device_id`).
    pub fn identity(&self) -> String {
        self.device.identity()
    }

    fn opaque(&self) -> Result<Vec<u8>, SimGpuError> {
        let mut o = Opaque(Vec::with_capacity(512));
        match &self.profile {
            GpuProfile::Hopper(p) => {
                // In the order real H100s send them.
                let v = p.vbios_version;
                o.put(
                    field::VBIOS_VERSION,
                    &[v[3], v[2], v[1], v[0], v[4], 0, 0, 0],
                )?;
                o.put(field::BOARD_ID, &p.board_id.to_le_bytes())?;
                o.put(field::CHIP_SKU, &text(&p.chip_sku, 9))?;
                o.put(field::CHIP_SKU_MOD, &text(&p.chip_sku_mod, 5))?;
                o.put(field::PROJECT, &text(&p.project, 5))?;
                o.put(field::PROJECT_SKU, &text(&p.project_sku, 5))?;
                o.put(field::PROJECT_SKU_MOD, &[0, 0])?;
                o.put(field::DRIVER_VERSION, &text(&p.driver_version, 0))?;
                o.put(field::GPU_INFO, &[0x80, 0x01, 0, 0, 0, 0, 0, 0])?;
                o.put(field::MSRSCNT, &msrscnt(p.measurements.len()))?;
                o.put(field::CPR_INFO, &[0x00, 0xC0, 0x01, 0x00])?;
                o.put(field::NVDEC0_STATUS, &[PPCIE_OFF])?;
                o.put(field::FWID, self.device.fwid())?;
                match &p.ppcie_switches {
                    None => o.put(field::PROTECTED_PCIE_STATUS, &[PPCIE_OFF])?,
                    Some(switches) => {
                        o.put(field::PROTECTED_PCIE_STATUS, &[PPCIE_ON])?;
                        // Each NVLink names the PDI of the switch at its far
                        // end, byte-reversed.
                        let links: Vec<u8> = (0..NVLINKS)
                            .filter_map(|i| switches.get(i % switches.len()))
                            .flat_map(|pdi| pdi.iter().rev().copied())
                            .collect();
                        o.put(field::SWITCH_PDI, &links)?;
                        o.put(field::OPAQUE_DATA_VERSION, &[0x01, 0x00])?;
                        o.put(field::FEATURE_FLAG, &[0x02, 0x00])?;
                    }
                }
            }
            GpuProfile::NvSwitch(p) => {
                o.put(field::VBIOS_VERSION, p.vbios_version.as_bytes())?;
                o.put(field::SWITCH_PDI, &self.device.pdi())?;
                o.put(field::MSRSCNT, &msrscnt(p.measurements.len()))?;
                let mut gpus = vec![0xFF; SWITCH_GPU_SLOTS * PDI_LEN];
                for (slot, pdi) in gpus.chunks_exact_mut(PDI_LEN).zip(&p.gpus) {
                    slot.copy_from_slice(pdi);
                }
                o.put(field::GPU_LINK_CONN, &gpus)?;
                o.put(field::FLOORSWEPT_PORTS, &[0xEC, 0x00])?;
                o.put(field::POSITION_ID, &[0x00, 0x00])?;
                o.put(field::LOCK_SWITCH_STATUS, &[0x01, 0x00])?;
            }
        }
        Ok(o.0)
    }

    /// SPDM 1.1 GET_MEASUREMENTS request (signature wanted, all blocks, slot
    /// 0) for `nonce`, followed by the signed MEASUREMENTS response: what
    /// nvtrust hands a verifier.
    pub fn report(&self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, SimGpuError> {
        let blocks = self.profile.measurements();
        let count = u8::try_from(blocks.len())
            .map_err(|_| SimGpuError::Profile(format!("{} blocks", blocks.len())))?;
        let mut record = Vec::with_capacity(blocks.len() * (7 + DIGEST_LEN));
        for (index, digest) in (1u8..=count).zip(blocks) {
            record.extend([index, SPEC_DMTF]);
            record.extend(((3 + DIGEST_LEN) as u16).to_le_bytes());
            record.push(VALUE_MUTABLE_FIRMWARE);
            record.extend((DIGEST_LEN as u16).to_le_bytes());
            record.extend_from_slice(digest);
        }
        let opaque = self.opaque()?;
        let mut responder_nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut responder_nonce)
            .map_err(|_| SimGpuError::Random)?;

        let mut out = Vec::with_capacity(64 + record.len() + opaque.len() + 96);
        // Request.
        out.extend([SPDM_1_1, GET_MEASUREMENTS, SIGNATURE_REQUESTED, ALL_BLOCKS]);
        out.extend_from_slice(nonce);
        out.push(0); // slot id
                     // Response.
        out.extend([SPDM_1_1, MEASUREMENTS, 0x00, 0x00, count]);
        out.extend(&(record.len() as u32).to_le_bytes()[..3]);
        out.extend(record);
        out.extend(responder_nonce);
        out.extend(u16_len(opaque.len(), "opaque data")?.to_le_bytes());
        out.extend(opaque);
        // The device signs request ‖ response so far (ECDSA P-384, SHA-384).
        let signature = self.device.sign(&out)?;
        out.extend(signature);
        Ok(out)
    }

    /// The report and the device's certificate chain (leaf first, root last).
    pub fn evidence(&self, nonce: &[u8; NONCE_LEN]) -> Result<DeviceEvidence, SimGpuError> {
        Ok(DeviceEvidence {
            report: HexBytes(self.report(nonce)?),
            cert_chain: self.device.chain_der().into_iter().map(HexBytes).collect(),
        })
    }
}

/// The FWID a simulated device of this profile runs: SHA-384 of its label.
pub fn default_fwid(kind: SimDeviceKind) -> [u8; FWID_LEN] {
    let label = match kind {
        SimDeviceKind::Gpu => "tvm sim gpu firmware",
        SimDeviceKind::Switch => "tvm sim nvswitch firmware",
    };
    Sha384::digest(label.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvidia::SimNvidia;
    use tvm_verifier::gpu::spdm::MeasurementReport;
    use tvm_verifier::gpu::topology;
    use tvm_verifier::gpu::{self, check, Arch, DeviceInput, DeviceRoot, DeviceVerification};
    use tvm_verifier::Status;

    const NONCE: [u8; 32] = [0x5a; 32];

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn gpu(sim: &SimNvidia) -> SimGpu {
        let dev = sim
            .issue_device(SimDeviceKind::Gpu, &default_fwid(SimDeviceKind::Gpu))
            .unwrap();
        SimGpu::with_default_profile(dev).unwrap()
    }

    fn verify_with(
        report: &[u8],
        chain: &[Vec<u8>],
        nonce: &[u8; 32],
        root: DeviceRoot<'_>,
    ) -> DeviceVerification {
        gpu::verify(&DeviceInput {
            evidence: report,
            chain,
            nonce: Some(nonce),
            arch: None,
            at: now(),
            root,
        })
    }

    fn verify_evidence(e: &DeviceEvidence, root: &[u8], nonce: &[u8; 32]) -> DeviceVerification {
        let chain: Vec<Vec<u8>> = e.cert_chain.iter().map(|c| c.0.clone()).collect();
        verify_with(&e.report.0, &chain, nonce, DeviceRoot::Simulated(root))
    }

    fn first_failure(v: &DeviceVerification) -> &'static str {
        v.verification()
            .checks()
            .iter()
            .find(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .unwrap_or("none")
    }

    fn assert_all_pass(v: &DeviceVerification) {
        assert_eq!(v.verification().checks().len(), check::ORDER.len());
        for c in v.verification().checks() {
            assert_eq!(c.status, Status::Pass, "{}: {}", c.name, c.detail);
        }
    }

    #[test]
    fn h100_passes_every_check() {
        let sim = SimNvidia::generate().unwrap();
        let g = gpu(&sim);
        let e = g.evidence(&NONCE).unwrap();
        let v = verify_evidence(&e, sim.root_der(), &NONCE);
        assert_all_pass(&v);
        assert_eq!(v.arch(), Some(Arch::Hopper));
        let f = v.facts().unwrap();
        assert_eq!(f.model.as_deref(), Some("H100 PCIe (1010_0200_882)"));
        assert_eq!(f.arch, Some(Arch::Hopper));
        assert_eq!(f.driver_version.as_deref(), Some("550.90.07"));
        assert_eq!(f.vbios_version.as_deref(), Some("96.00.9f.00.01"));
        assert_eq!(f.project.as_deref(), Some("1010"));
        assert_eq!(f.project_sku.as_deref(), Some("0200"));
        assert_eq!(f.chip_sku.as_deref(), Some("882"));
        assert_eq!(f.device_id.as_deref(), Some(g.identity().as_str()));
        assert_eq!(
            f.fwid.as_deref(),
            Some(&default_fwid(SimDeviceKind::Gpu)[..])
        );
        assert_eq!(f.measurements.len(), 64);
        assert_eq!(
            f.measurements[0].1,
            measurements(HopperProfile::MEASUREMENT_LABEL, 1)[0]
        );
        match g.profile() {
            GpuProfile::Hopper(p) => assert_eq!(p.vbios_string(), "96.00.9f.00.01"),
            GpuProfile::NvSwitch(_) => unreachable!(),
        }
        // The arch nvtrust would claim matches; a wrong claim does not.
        let chain: Vec<Vec<u8>> = e.cert_chain.iter().map(|c| c.0.clone()).collect();
        let mut input = DeviceInput {
            evidence: &e.report.0,
            chain: &chain,
            nonce: Some(&NONCE),
            arch: Some(Arch::Hopper),
            at: now(),
            root: DeviceRoot::Simulated(sim.root_der()),
        };
        assert!(gpu::verify(&input).verification().genuine());
        input.arch = Some(Arch::Ls10);
        assert_eq!(first_failure(&gpu::verify(&input)), check::DEVICE_ARCH);
    }

    #[test]
    fn same_shape_as_a_real_h100_report() {
        let real =
            hex::decode(include_str!("../../testdata/nvidia/nvtrust_hopper_report.hex").trim())
                .unwrap();
        let real = MeasurementReport::parse(&real).unwrap();
        let sim = SimNvidia::generate().unwrap();
        let ours = MeasurementReport::parse(&gpu(&sim).report(&NONCE).unwrap()).unwrap();
        let kinds = |r: &MeasurementReport| {
            r.opaque
                .iter()
                .map(|f| (f.kind, f.value.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&ours), kinds(&real));
        assert_eq!(ours.signed.len(), real.signed.len());
        assert_eq!(ours.blocks.len(), real.blocks.len());
        assert_eq!(ours.nonce, NONCE);
        assert_eq!(ours.slot, 0);
        assert!(!topology::in_ppcie_mode(&ours));
    }

    #[test]
    fn the_real_nvidia_root_refuses_it() {
        let sim = SimNvidia::generate().unwrap();
        let g = gpu(&sim);
        let report = g.report(&NONCE).unwrap();
        let chain = g.device().chain_der();
        let v = verify_with(&report, &chain, &NONCE, DeviceRoot::Nvidia);
        assert_eq!(first_failure(&v), check::DEVICE_CHAIN);
        // Nor does another simulated hierarchy's root.
        let other = SimNvidia::generate().unwrap();
        let v = verify_with(
            &report,
            &chain,
            &NONCE,
            DeviceRoot::Simulated(other.root_der()),
        );
        assert_eq!(first_failure(&v), check::DEVICE_CHAIN);
    }

    #[test]
    fn a_wrong_nonce_fails_spdm_nonce() {
        let sim = SimNvidia::generate().unwrap();
        let e = gpu(&sim).evidence(&NONCE).unwrap();
        let v = verify_evidence(&e, sim.root_der(), &[0xa5; 32]);
        assert_eq!(first_failure(&v), check::SPDM_NONCE);
        // Fresh responder nonces: two reports for one nonce differ.
        let g = gpu(&sim);
        assert_ne!(g.report(&NONCE).unwrap(), g.report(&NONCE).unwrap());
    }

    #[test]
    fn a_flipped_signature_bit_fails_spdm_signature() {
        let sim = SimNvidia::generate().unwrap();
        let mut e = gpu(&sim).evidence(&NONCE).unwrap();
        let last = e.report.0.len() - 1;
        e.report.0[last] ^= 0x01;
        let v = verify_evidence(&e, sim.root_der(), &NONCE);
        assert_eq!(first_failure(&v), check::SPDM_SIGNATURE);
        // A flipped measurement bit too.
        let mut e = gpu(&sim).evidence(&NONCE).unwrap();
        e.report.0[37 + 8 + 7] ^= 0x80;
        let v = verify_evidence(&e, sim.root_der(), &NONCE);
        assert_eq!(first_failure(&v), check::SPDM_SIGNATURE);
    }

    #[test]
    fn another_devices_chain_fails() {
        let sim = SimNvidia::generate().unwrap();
        let a = gpu(&sim);
        // Same firmware: the FWIDs agree, the key does not.
        let b = gpu(&sim);
        assert_ne!(a.identity(), b.identity());
        let report = a.report(&NONCE).unwrap();
        let v = verify_with(
            &report,
            &b.device().chain_der(),
            &NONCE,
            DeviceRoot::Simulated(sim.root_der()),
        );
        assert_eq!(first_failure(&v), check::SPDM_SIGNATURE);
        // Other firmware: the FWIDs disagree.
        let c =
            SimGpu::with_default_profile(sim.issue_device(SimDeviceKind::Gpu, &[9; 48]).unwrap())
                .unwrap();
        let v = verify_with(
            &report,
            &c.device().chain_der(),
            &NONCE,
            DeviceRoot::Simulated(sim.root_der()),
        );
        assert_eq!(first_failure(&v), check::DEVICE_FWID);
    }

    #[test]
    fn profile_and_device_kinds_must_agree() {
        let sim = SimNvidia::generate().unwrap();
        let dev = sim.issue_device(SimDeviceKind::Gpu, &[1; 48]).unwrap();
        assert!(matches!(
            SimGpu::new(dev, GpuProfile::nvswitch()),
            Err(SimGpuError::KindMismatch { .. })
        ));
    }

    #[test]
    fn nvswitch_passes_every_check() {
        let sim = SimNvidia::generate().unwrap();
        let dev = sim
            .issue_device(SimDeviceKind::Switch, &default_fwid(SimDeviceKind::Switch))
            .unwrap();
        let s = SimGpu::with_default_profile(dev).unwrap();
        let e = s.evidence(&NONCE).unwrap();
        let v = verify_evidence(&e, sim.root_der(), &NONCE);
        assert_all_pass(&v);
        assert_eq!(v.arch(), Some(Arch::Ls10));
        let f = v.facts().unwrap();
        assert_eq!(f.model.as_deref(), Some("NVSwitch (LS10)"));
        assert_eq!(f.vbios_version.as_deref(), Some("96.10.73.00.01"));
        assert_eq!(f.device_id.as_deref(), Some(s.identity().as_str()));
        assert_eq!(f.fwid, None);
        assert_eq!(f.measurements.len(), 31);
    }

    #[test]
    fn a_ppcie_node_passes_the_topology_check() {
        let sim = SimNvidia::generate().unwrap();
        let issue = |kind| sim.issue_device(kind, &default_fwid(kind)).unwrap();
        let gpu_devs: Vec<SimDevice> = (0..topology::GPUS)
            .map(|_| issue(SimDeviceKind::Gpu))
            .collect();
        let switch_devs: Vec<SimDevice> = (0..topology::SWITCHES)
            .map(|_| issue(SimDeviceKind::Switch))
            .collect();
        let gpu_pdis: Vec<[u8; 8]> = gpu_devs.iter().map(|d| d.pdi()).collect();
        let switch_pdis: Vec<[u8; 8]> = switch_devs.iter().map(|d| d.pdi()).collect();
        let mut devices: Vec<SimGpu> = Vec::new();
        for d in gpu_devs {
            let mut p = HopperProfile::h100();
            p.ppcie_switches = Some(switch_pdis.clone());
            devices.push(SimGpu::new(d, GpuProfile::Hopper(p)).unwrap());
        }
        for d in switch_devs {
            let mut p = NvSwitchProfile::ls10();
            p.gpus = gpu_pdis.clone();
            devices.push(SimGpu::new(d, GpuProfile::NvSwitch(p)).unwrap());
        }
        let verified: Vec<(DeviceVerification, String)> = devices
            .iter()
            .map(|d| {
                let v = verify_evidence(&d.evidence(&NONCE).unwrap(), sim.root_der(), &NONCE);
                assert_all_pass(&v);
                (v, d.identity())
            })
            .collect();
        let labels: Vec<String> = (0..verified.len()).map(|i| format!("dev{i}")).collect();
        let topo: Vec<topology::Device<'_>> = verified
            .iter()
            .zip(&labels)
            .map(|((v, id), label)| topology::Device {
                label,
                arch: v.arch().unwrap(),
                report: v.report().unwrap(),
                device_id: Some(id),
            })
            .collect();
        assert!(topology::in_ppcie_mode(topo[0].report));
        topology::check(&topo).unwrap();
        // Without one switch, the node is incomplete.
        assert!(topology::check(&topo[..topo.len() - 1]).is_err());
    }
}
