//! The CVM's identity: an Ed25519 key generated inside the VM, never chosen
//! by the miner. Its SHA-256 is the CVM id validators deduplicate on. Kept
//! only in memory, or in a file on the VM's tmpfs (`/run`) so that an agent
//! restart keeps the id until the VM reboots.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tvm_protocol::hexbytes::Digest32;

pub struct CvmIdentity {
    key: Ed25519KeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot generate the CVM key: the system random source failed")]
    Random,
    #[error("{path} is not a CVM key (PKCS#8 Ed25519): remove it and restart to make a new one")]
    Malformed { path: String },
    #[error("cannot {op} the CVM key file {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl CvmIdentity {
    pub fn generate() -> Result<Self, IdentityError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::Random)?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| IdentityError::Random)?;
        Ok(CvmIdentity { key })
    }

    /// Load the key from `path`, or make one and store it there (mode 0600).
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        let io = |op, source| IdentityError::Io {
            op,
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key =
                    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| IdentityError::Malformed {
                        path: path.display().to_string(),
                    })?;
                Ok(CvmIdentity { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| IdentityError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
                }
                write_private(path, pkcs8.as_ref()).map_err(|e| io("write", e))?;
                let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|_| IdentityError::Random)?;
                Ok(CvmIdentity { key })
            }
            Err(e) => Err(io("read", e)),
        }
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The CVM id: SHA-256 of the public key.
    pub fn id(&self) -> Digest32 {
        Digest32::sha256(self.public_key())
    }
}

/// Write a secret readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_per_vm_and_kept_across_restarts_via_the_file() {
        let a = CvmIdentity::generate().unwrap();
        let b = CvmIdentity::generate().unwrap();
        assert_ne!(a.id(), b.id());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run/tvm/cvm.key");
        let first = CvmIdentity::load_or_generate(&p).unwrap();
        let again = CvmIdentity::load_or_generate(&p).unwrap();
        assert_eq!(first.id(), again.id());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, b"junk").unwrap();
        let e = CvmIdentity::load_or_generate(&p).err().unwrap().to_string();
        assert!(e.contains("remove it"), "{e}");
    }
}
