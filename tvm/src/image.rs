//! `tvm image …`: an operator's image keys and signed manifests.
//!
//! - `keygen --out KEY`: a new Ed25519 signing key (PKCS#8, mode 0600);
//!   prints its public key and id, and a key-set entry for validators.
//! - `sign --key KEY --manifest M.json --out M.signed.json`: sign the
//!   manifest's exact text; `--add` adds a signature to a signed file (to
//!   sign with the old and the new key during a rotation).
//! - `verify --keys KEYS.json --manifest M.signed.json [--at TIME]`: what a
//!   validator will conclude, and why not.
//! - `retire --keys KEYS.json --release "NAME VERSION"`, `rotate-key --keys
//!   KEYS.json --public-key HEX --overlap-days N --lifetime-days N`: edit the
//!   key set validators pin.

use std::path::Path;

use tvm_image::manifest::{self, KeySet, Signed};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, data).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

pub fn load_keys(path: &Path) -> Result<KeySet, ImageError> {
    serde_json::from_slice(&read(path)?).map_err(|e| invalid(path, e))
}

fn save_keys(path: &Path, keys: &KeySet) -> Result<(), ImageError> {
    let mut text = serde_json::to_vec_pretty(keys).map_err(|e| invalid(path, e))?;
    text.push(b'\n');
    write(path, &text)
}

/// A new key at `out` (never overwritten); returns what to tell the operator.
pub fn keygen(out: &Path) -> Result<String, ImageError> {
    let (pkcs8, public) = manifest::keygen()?;
    // Owner-only, never over an existing file (as the agent keeps its key).
    tvm_agent::tls::write_private(out, &pkcs8).map_err(|source| ImageError::Io {
        path: out.display().to_string(),
        source,
    })?;
    Ok(format!(
        "key written to {} (keep it secret)\npublic key {}\nkey id     {}\n",
        out.display(),
        hex::encode(&public),
        manifest::key_id(&public)
    ))
}

/// Sign `manifest` (JSON text) with `key`; with `add`, `manifest` is a
/// signed file and the signature is added to it.
pub fn sign(key: &Path, manifest_path: &Path, out: &Path, add: bool) -> Result<(), ImageError> {
    let key_bytes = read(key)?;
    let text = read(manifest_path)?;
    let signed = if add {
        let mut s: Signed = serde_json::from_slice(&text).map_err(|e| invalid(manifest_path, e))?;
        let more = manifest::sign(&s.manifest, &key_bytes)?;
        s.signatures.extend(more.signatures);
        s
    } else {
        let text = String::from_utf8(text).map_err(|e| invalid(manifest_path, e))?;
        // Refuse what no validator would accept.
        serde_json::from_str::<manifest::Manifest>(&text)
            .map_err(|e| invalid(manifest_path, e))?
            .validate()?;
        manifest::sign(&text, &key_bytes)?
    };
    let mut bytes = serde_json::to_vec_pretty(&signed).map_err(|e| invalid(out, e))?;
    bytes.push(b'\n');
    write(out, &bytes)
}

/// What a validator holding `keys` concludes about a signed manifest at `at`.
pub fn verify(keys: &Path, signed: &Path, at: i64) -> Result<String, ImageError> {
    let keys = load_keys(keys)?;
    let m = manifest::verify(&read(signed)?, &keys, at)?;
    Ok(format!(
        "ACCEPTED {} ({} measurement sets, valid until {})\n",
        m.release(),
        m.measurements.len(),
        m.valid_until
    ))
}

pub fn retire(keys_path: &Path, release: &str) -> Result<(), ImageError> {
    let mut keys = load_keys(keys_path)?;
    keys.retire(release);
    save_keys(keys_path, &keys)
}

pub fn rotate_key(
    keys_path: &Path,
    public_key: &str,
    at: i64,
    overlap_days: u32,
    lifetime_days: u32,
) -> Result<(), ImageError> {
    let public = hex::decode(public_key)
        .ok()
        .filter(|p| p.len() == 32)
        .ok_or_else(|| {
            invalid(
                Path::new("--public-key"),
                "not 32 bytes of hex (an Ed25519 public key)",
            )
        })?;
    let mut keys = load_keys(keys_path)?;
    keys.rotate(
        &public,
        at,
        i64::from(overlap_days) * 86_400,
        i64::from(lifetime_days) * 86_400,
    );
    save_keys(keys_path, &keys)
}
