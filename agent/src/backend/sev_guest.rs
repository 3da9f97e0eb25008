//! `/dev/sev-guest` through the `sev` crate, for SEV-SNP guests whose kernel
//! predates configfs-tsm: an extended report (report + the host's
//! certificate table) at the configured VMPL.

use std::sync::Mutex;

use sev::firmware::guest::Firmware;
use sev::firmware::host::CertTableEntry;
use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::hexbytes::HexBytes;

use super::{BackendError, Tee, TeeKind};

const WHAT: &str = "/dev/sev-guest";

pub struct SevGuest {
    fw: Mutex<Firmware>,
    vmpl: u32,
}

impl SevGuest {
    pub fn open(vmpl: u32) -> Result<Self, BackendError> {
        let fw = Firmware::open().map_err(|e| BackendError::Unavailable {
            what: WHAT,
            reason: format!("{e} (not an SEV-SNP guest, sev-guest module not loaded, or not root)"),
        })?;
        Ok(SevGuest {
            fw: Mutex::new(fw),
            vmpl,
        })
    }
}

impl Tee for SevGuest {
    fn kind(&self) -> TeeKind {
        TeeKind::SevSnp
    }
    fn describe(&self) -> String {
        format!("/dev/sev-guest (VMPL {})", self.vmpl)
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError> {
        let failed = |reason: String| BackendError::Failed { what: WHAT, reason };
        let mut fw = self
            .fw
            .lock()
            .map_err(|_| failed("firmware handle poisoned".into()))?;
        let (report, certs) = fw
            .get_ext_report(None, Some(*report_data), Some(self.vmpl))
            .map_err(|e| failed(format!("extended report: {e}")))?;
        let certs = match certs {
            Some(table) if !table.is_empty() => Some(HexBytes(
                CertTableEntry::cert_table_to_vec_bytes(&table)
                    .map_err(|e| failed(format!("certificate table: {e}")))?,
            )),
            _ => None,
        };
        Ok(TeeEvidence::SevSnp {
            report: HexBytes(report),
            certs,
        })
    }
}
