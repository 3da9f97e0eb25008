//! SIMULATED TEEs for development and the devnet.
//!
//! A local test hierarchy: Intel-like (SGX root, PCK platform CA, TCB
//! signing) and NVIDIA-like (device identity root, provisioner CA)
//! certificate authorities, generated here and saved to a directory so that
//! agents can sign with them and validators can trust their roots — but only
//! when a devnet policy names those roots. And the evidence they sign: TDX v4
//! quotes (`tdx`) and SPDM GPU reports (`gpu`) in the real binary layouts,
//! which verify with the real code. Every name in it says SIMULATED.
//!
//! The appraisal library and the trust anchors (`tvm-verifier`, `tvm-certs`)
//! do not compile this. The agent uses it for its `--sim` backend only (its
//! `sim` feature); the validator for the devnet's `dangerous_simulated_pcs`.
#![forbid(unsafe_code)]

pub mod gpu;
pub mod intel;
pub mod nvidia;
pub mod tdx;

use std::io::Write;
use std::path::Path;

use base64::Engine;

/// DER TLV with a definite length.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// PEM text of DER bytes (`label`: CERTIFICATE, PRIVATE KEY, …).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write a file durably; `secret` files are readable by their owner only
/// (an existing file is narrowed too: open keeps an old file's mode).
pub(crate) fn write_file(path: &Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn der_lengths() {
        assert_eq!(super::der(4, &[1, 2]), vec![4, 2, 1, 2]);
        let long = super::der(4, &[0; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 1, 44]);
        assert_eq!(super::der(4, &[0; 200])[..3], [4, 0x81, 200]);
    }
}
