//! One evidence bundle per nonce: every device report answering the nonce
//! bound to this CVM ([`device_nonce`]), the claims naming their hashes, the
//! CVM id (the RA-TLS key's hash) and the runtime, and the TEE quote whose
//! report_data binds it all (DESIGN.md, "Evidence and its
//! binding").

use std::time::Instant;

use tvm_protocol::binding::{device_nonce, report_data};
use tvm_protocol::evidence::{
    Claims, EvidenceBundle, NodeType, Runtime, RuntimeEvent, BUNDLE_VERSION,
};
use tvm_protocol::hexbytes::Digest32;
use tvm_protocol::nonce::Nonce;

use crate::backend::{BackendError, Devices, Gather, Tee};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct EvidenceSource {
    pub tee: Box<dyn Tee>,
    pub devices: Box<dyn Devices>,
    /// SHA-256 of the RA-TLS key's SubjectPublicKeyInfo.
    pub cvm_id: Digest32,
    pub runtime: Runtime,
    /// What the agent recorded in RTMR3 at start (TDX), sent with each bundle.
    pub runtime_events: Vec<RuntimeEvent>,
    pub gather: Gather,
}

/// A bundle and how long its parts took.
pub struct Produced {
    pub bundle: EvidenceBundle,
    pub devices_ms: f64,
    pub tee_ms: f64,
}

impl EvidenceSource {
    pub fn simulated(&self) -> bool {
        self.tee.simulated() || self.devices.simulated()
    }

    pub fn node_type(&self) -> NodeType {
        if self.devices.gpu_count() > 0 {
            NodeType::Gpu
        } else {
            NodeType::Cpu
        }
    }

    /// The claims for a given set of device reports.
    pub fn claims(&self, gpus: &[Vec<u8>], switches: &[Vec<u8>]) -> Claims {
        Claims {
            cvm_id: self.cvm_id,
            node_type: self.node_type(),
            agent_version: AGENT_VERSION.to_string(),
            simulated: self.simulated(),
            gpu_reports_sha256: gpus.iter().map(|r| Digest32::sha256(r)).collect(),
            switch_reports_sha256: switches.iter().map(|r| Digest32::sha256(r)).collect(),
            runtime: self.runtime.clone(),
        }
    }

    /// Blocking: device calls and the quote. Run it off the async runtime.
    pub fn produce(&self, nonce: Nonce) -> Result<Produced, BackendError> {
        let t0 = Instant::now();
        let set = self
            .devices
            .evidence(&device_nonce(&nonce, &self.cvm_id), self.gather)?;
        let devices_ms = t0.elapsed().as_secs_f64() * 1e3;
        if self.node_type() == NodeType::Gpu && set.gpus.len() != self.devices.gpu_count() {
            return Err(BackendError::Failed {
                what: "device evidence",
                reason: format!(
                    "{} GPUs present but {} reports gathered",
                    self.devices.gpu_count(),
                    set.gpus.len()
                ),
            });
        }
        let reports = |v: &[tvm_protocol::evidence::DeviceEvidence]| -> Vec<Vec<u8>> {
            v.iter().map(|d| d.report.0.clone()).collect()
        };
        let claims = self.claims(&reports(&set.gpus), &reports(&set.switches));
        let rd = report_data(&nonce, &claims);
        let t1 = Instant::now();
        let tee = self.tee.evidence(&rd)?;
        let tee_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(Produced {
            bundle: EvidenceBundle {
                version: BUNDLE_VERSION,
                nonce,
                tee,
                gpus: set.gpus,
                switches: set.switches,
                claims,
                runtime_events: self.runtime_events.clone(),
            },
            devices_ms,
            tee_ms,
        })
    }
}
