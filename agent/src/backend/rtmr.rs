//! RTMR3 of a TDX guest through the kernel's measurement registers (Linux
//! 6.16+, `tdx_guest` driver): `/sys/class/misc/tdx_guest/measurements/
//! rtmr3:sha384` reads as the register's 48 bytes, and a 48-byte write
//! extends it (`TDG.MR.RTMR.EXTEND`). A TDX agent needs Linux 6.16 or later:
//! older kernels have no such file, and the agent does not start without
//! recording its runtime.

use std::path::{Path, PathBuf};

use super::BackendError;

pub const RTMR3_PATH: &str = "/sys/class/misc/tdx_guest/measurements/rtmr3:sha384";
const WHAT: &str = "RTMR3";

/// RTMR3 through one sysfs file.
#[derive(Debug, Clone)]
pub struct Rtmr3 {
    path: PathBuf,
}

impl Default for Rtmr3 {
    fn default() -> Self {
        Rtmr3 {
            path: PathBuf::from(RTMR3_PATH),
        }
    }
}

impl Rtmr3 {
    pub fn at(path: &Path) -> Self {
        Rtmr3 {
            path: path.to_path_buf(),
        }
    }

    fn missing(&self, e: std::io::Error) -> BackendError {
        BackendError::Unavailable {
            what: WHAT,
            reason: format!(
                "{}: {e}; recording the runtime in RTMR3 needs Linux 6.16 or later with the tdx_guest driver (validators reject runtime events RTMR3 does not show)",
                self.path.display()
            ),
        }
    }

    pub fn read(&self) -> Result<[u8; 48], BackendError> {
        let v = std::fs::read(&self.path).map_err(|e| self.missing(e))?;
        v.as_slice().try_into().map_err(|_| BackendError::Failed {
            what: WHAT,
            reason: format!("{} gave {} bytes, not 48", self.path.display(), v.len()),
        })
    }

    pub fn extend(&self, digest: &[u8; 48]) -> Result<(), BackendError> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.missing(e))?;
        // One write of exactly 48 bytes is one extension.
        f.write_all(digest).map_err(|e| BackendError::Failed {
            what: WHAT,
            reason: format!("extending through {}: {e}", self.path.display()),
        })
    }
}
