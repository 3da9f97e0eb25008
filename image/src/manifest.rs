//! Signed image manifests: what an operator publishes about one image
//! release (its files, the launch parameters that change its measurements,
//! the measurements it produces per platform and VM shape, when it is
//! accepted) and the Ed25519 signatures that vouch for it.
//!
//! A validator pins the operator's *keys*, not image digests: a key set
//! with a validity window per key (so a rotation overlaps), revoked keys,
//! and retired images. [`verify`] accepts a manifest only when a key that
//! is valid and unrevoked at that time signed its exact bytes, and the
//! image is inside its own window and not retired.
//!
//! The signature covers the manifest's bytes as published (the envelope
//! carries them as a string), so no canonical JSON is needed to check it:
//! `Ed25519(key, "tvm-image-manifest-v1\0" ‖ manifest bytes)`.

use std::collections::BTreeMap;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Domain tag of manifest signatures.
pub const SIGNING_TAG: &[u8] = b"tvm-image-manifest-v1\0";
/// The manifest format this build reads.
pub const FORMAT: u32 = 1;
/// A signed manifest is small; larger files are refused unread.
pub const MAX_SIGNED_BYTES: usize = 1 << 20;
/// Signatures on one manifest (a rotation needs two): each costs a check.
pub const MAX_SIGNATURES: usize = 8;

/// Whether a mismatch of a measurement fails the node or is only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

/// One file of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    /// Hex.
    pub sha256: String,
    pub size: u64,
}

/// The CPU TEE a measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Tdx,
    SevSnp,
}

impl Platform {
    /// The registers a manifest may give for this platform, in the order
    /// they are compared (the first differing one is named).
    pub fn registers(self) -> &'static [&'static str] {
        match self {
            Platform::Tdx => &["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"],
            Platform::SevSnp => &["measurement"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tdx => "tdx",
            Platform::SevSnp => "sev-snp",
        }
    }
}

/// The measurements the image produces on one platform and VM shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub platform: Platform,
    /// The VM shape the values are for (e.g. `8xH100-96vcpu`); registers
    /// that depend on it (RTMR0, the SNP digest) differ between shapes.
    pub shape: String,
    /// Register name (`mrtd`, `rtmr0`…`rtmr3`, `measurement`) → hex.
    pub registers: BTreeMap<String, String>,
    /// Per register: `enforce` (the default) or `warn`.
    #[serde(default)]
    pub modes: BTreeMap<String, Mode>,
    /// How the values were had: `computed`, or `reference boot` (RTMR0 when
    /// it cannot be computed for a shape).
    #[serde(default)]
    pub source: Option<String>,
    /// TDX: per RTMR (`rtmr0`…`rtmr2`), the event digests (SHA-384, hex)
    /// a boot of this image extends it with, in order; they must replay
    /// to the register's value. With them a mismatch is named down to the
    /// event (`tvm image diagnose`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Vec<String>>,
}

impl Expected {
    /// The expected value of `register`, if the manifest gives it.
    pub fn register(&self, register: &str) -> Option<[u8; 48]> {
        self.registers.get(register).and_then(|h| hex48(h).ok())
    }

    pub fn mode(&self, register: &str) -> Mode {
        self.modes.get(register).copied().unwrap_or_default()
    }

    /// The reference event digests of RTMR `index`, if given.
    pub fn events_of(&self, index: usize) -> Option<Vec<[u8; 48]>> {
        self.events
            .get(&format!("rtmr{index}"))
            .map(|v| v.iter().filter_map(|h| hex48(h).ok()).collect())
    }

    fn validate(&self) -> Result<(), String> {
        let known = self.platform.registers();
        let at = |r: &str| format!("{} shape {:?}, {r}", self.platform.as_str(), self.shape);
        if self.registers.is_empty() {
            return Err(format!("{}: no registers", at("registers")));
        }
        for (r, v) in &self.registers {
            if !known.contains(&r.as_str()) {
                return Err(format!(
                    "{}: not a register of this platform (known: {known:?})",
                    at(r)
                ));
            }
            hex48(v).map_err(|e| format!("{}: {e}", at(r)))?;
        }
        // What names the software is always given and always enforced:
        // TDX's firmware (MRTD), kernel (RTMR1) and command line and initrd
        // (RTMR2); SEV-SNP's whole launch. Without them a guest of the
        // miner's own making on the published firmware would match.
        // RTMR0 (the host's ACPI tables and the VM shape) and RTMR3 (the
        // runtime) may be warn-only.
        let required: &[&str] = match self.platform {
            Platform::Tdx => &["mrtd", "rtmr1", "rtmr2"],
            Platform::SevSnp => &["measurement"],
        };
        for r in required {
            if !self.registers.contains_key(*r) || self.mode(r) != Mode::Enforce {
                return Err(format!(
                    "{}: must be given and enforced (only rtmr0 and rtmr3 can be left out or warn-only)",
                    at(r)
                ));
            }
        }
        for r in self.modes.keys() {
            if !self.registers.contains_key(r) {
                return Err(format!(
                    "{}: a mode for a register the manifest does not give",
                    at(r)
                ));
            }
        }
        for (r, events) in &self.events {
            if self.platform != Platform::Tdx || !["rtmr0", "rtmr1", "rtmr2"].contains(&r.as_str())
            {
                return Err(format!(
                    "{}: events are given for rtmr0…rtmr2 of tdx only",
                    at(r)
                ));
            }
            let mut replayed = [0u8; 48];
            for e in events {
                replayed = crate::eventlog::extend(
                    &replayed,
                    &hex48(e).map_err(|e| format!("{}: event {e}", at(r)))?,
                );
            }
            if self.register(r) != Some(replayed) {
                return Err(format!(
                    "{}: its events replay to {}, not the register's value",
                    at(r),
                    hex::encode(replayed)
                ));
            }
        }
        Ok(())
    }
}

/// A 48-byte value in hex.
pub fn hex48(text: &str) -> Result<[u8; 48], String> {
    let b = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
    b.as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, expected 48", b.len()))
}

/// One image release, as its operator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// `gpu`, `cpu`.
    pub node_types: Vec<String>,
    pub files: Vec<File>,
    /// Launch parameters that change measurements (QEMU version, firmware…).
    #[serde(default)]
    pub launch: BTreeMap<String, String>,
    pub measurements: Vec<Expected>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
}

impl Manifest {
    /// `name version`, as key sets retire it.
    pub fn release(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// What signatures cannot catch: unknown registers, values that are
    /// not 48-byte hex, reference events that do not replay to their
    /// register. Checked before signing and after every verification.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        if self.measurements.is_empty() {
            return Err(ManifestError::Malformed(format!(
                "{}: no measurements",
                self.release()
            )));
        }
        for e in &self.measurements {
            e.validate()
                .map_err(|why| ManifestError::Malformed(format!("{}: {why}", self.release())))?;
        }
        Ok(())
    }
}

/// What is published: the manifest's bytes and their signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The manifest, as the JSON text that was signed.
    pub manifest: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`key_id`] of the signing key.
    pub key: String,
    /// Hex, 64 bytes.
    pub sig: String,
}

/// An operator key a validator trusts, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    #[serde(default)]
    pub revoked: bool,
}

/// The operator keys a validator pins, and the releases withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    pub keys: Vec<TrustedKey>,
    /// Releases (`name version`) no longer accepted, whatever their window.
    #[serde(default)]
    pub retired: Vec<String>,
}

/// Why a manifest is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the signed manifest is {0} bytes; at most {MAX_SIGNED_BYTES} are read")]
    TooLarge(usize),
    #[error("the signed manifest is not valid: {0}")]
    Malformed(String),
    #[error("the manifest is format {0}; this build reads format {FORMAT}: upgrade tvm")]
    Format(u32),
    #[error("the manifest carries no signature")]
    Unsigned,
    #[error("no key of the operator's key set signed this manifest (signed by {0}): is the key set current?")]
    UnknownKey(String),
    #[error(
        "the signature by key {0} does not verify: the manifest was changed after it was signed"
    )]
    BadSignature(String),
    #[error("key {key} is not valid at {at}: its window is {from} to {until}")]
    KeyOutsideWindow {
        key: String,
        at: String,
        from: String,
        until: String,
    },
    #[error("key {0} is revoked")]
    KeyRevoked(String),
    #[error("image {release} is not accepted at {at}: its window is {from} to {until}")]
    ImageOutsideWindow {
        release: String,
        at: String,
        from: String,
        until: String,
    },
    #[error("image {0} is retired by the operator")]
    Retired(String),
}

/// A key's short id: the first 16 bytes of SHA-256 of the public key, hex.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..16])
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn message(manifest: &str) -> Vec<u8> {
    let mut m = SIGNING_TAG.to_vec();
    m.extend_from_slice(manifest.as_bytes());
    m
}

/// Sign `manifest` (its exact text) with a PKCS#8 Ed25519 key.
pub fn sign(manifest: &str, pkcs8: &[u8]) -> Result<Signed, ManifestError> {
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| {
        ManifestError::Malformed("the signing key is not a PKCS#8 Ed25519 key".into())
    })?;
    Ok(Signed {
        manifest: manifest.to_string(),
        signatures: vec![Signature {
            key: key_id(key.public_key().as_ref()),
            sig: hex::encode(key.sign(&message(manifest)).as_ref()),
        }],
    })
}

/// Accept a signed manifest (JSON) under `keys` at Unix time `at`: signed by
/// a key of the set valid and unrevoked then, the image inside its window
/// and not retired. The first usable signature decides; a manifest signed
/// by an old and a new key (a rollover) is accepted while either is valid.
pub fn verify(signed: &[u8], keys: &KeySet, at: i64) -> Result<Manifest, ManifestError> {
    if signed.len() > MAX_SIGNED_BYTES {
        return Err(ManifestError::TooLarge(signed.len()));
    }
    let s: Signed =
        serde_json::from_slice(signed).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if s.signatures.is_empty() {
        return Err(ManifestError::Unsigned);
    }
    if s.signatures.len() > MAX_SIGNATURES {
        return Err(ManifestError::Malformed(format!(
            "{} signatures; at most {MAX_SIGNATURES} are checked",
            s.signatures.len()
        )));
    }
    let when = OffsetDateTime::from_unix_timestamp(at)
        .map_err(|e| ManifestError::Malformed(format!("time {at}: {e}")))?;
    let msg = message(&s.manifest);
    // The most telling reason among the signatures, if none is good.
    let mut why: Option<ManifestError> = None;
    let mut good = false;
    for sig in &s.signatures {
        // Every entry of the set for this key: a key listed twice is
        // revoked if either entry says so, and valid in either window.
        let entries: Vec<&TrustedKey> = keys
            .keys
            .iter()
            .filter(|k| hex::decode(&k.public_key).is_ok_and(|pk| key_id(&pk) == sig.key))
            .collect();
        let Some(first) = entries.first() else {
            why.get_or_insert(ManifestError::UnknownKey(sig.key.clone()));
            continue;
        };
        let pk = hex::decode(&first.public_key).unwrap_or_default();
        let sig_bytes = hex::decode(&sig.sig).unwrap_or_default();
        if UnparsedPublicKey::new(&ED25519, &pk)
            .verify(&msg, &sig_bytes)
            .is_err()
        {
            why = Some(ManifestError::BadSignature(sig.key.clone()));
            continue;
        }
        if entries.iter().any(|k| k.revoked) {
            why = Some(ManifestError::KeyRevoked(sig.key.clone()));
            continue;
        }
        if !entries
            .iter()
            .any(|k| k.valid_from <= when && when <= k.valid_until)
        {
            why = Some(ManifestError::KeyOutsideWindow {
                key: sig.key.clone(),
                at: rfc3339(when),
                from: rfc3339(first.valid_from),
                until: rfc3339(first.valid_until),
            });
            continue;
        }
        good = true;
        break;
    }
    if !good {
        return Err(why.unwrap_or(ManifestError::Unsigned));
    }
    let m: Manifest = serde_json::from_str(&s.manifest)
        .map_err(|e| ManifestError::Malformed(format!("manifest: {e}")))?;
    m.validate()?;
    if keys.retired.contains(&m.release()) {
        return Err(ManifestError::Retired(m.release()));
    }
    if when < m.valid_from || when > m.valid_until {
        return Err(ManifestError::ImageOutsideWindow {
            release: m.release(),
            at: rfc3339(when),
            from: rfc3339(m.valid_from),
            until: rfc3339(m.valid_until),
        });
    }
    Ok(m)
}

/// A new operator key: PKCS#8 bytes (keep secret) and its public key.
pub fn keygen() -> Result<(Vec<u8>, Vec<u8>), ManifestError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| ManifestError::Malformed("the system random source failed".into()))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| ManifestError::Malformed("a key just made does not load".into()))?;
    Ok((pkcs8.as_ref().to_vec(), key.public_key().as_ref().to_vec()))
}

impl KeySet {
    /// Rotate: `new` becomes valid from `at` for `lifetime` seconds, and
    /// every current key stays valid `overlap` seconds more (manifests
    /// signed by either are accepted in between), then expires.
    /// A key already in the set is refused: rotating to it again would cut
    /// its own window.
    pub fn rotate(
        &mut self,
        new_public_key: &[u8],
        at: i64,
        overlap: i64,
        lifetime: i64,
    ) -> Result<(), ManifestError> {
        let new = hex::encode(new_public_key);
        if self
            .keys
            .iter()
            .any(|k| k.public_key.eq_ignore_ascii_case(&new))
        {
            return Err(ManifestError::Malformed(format!(
                "key {} is already in the key set",
                key_id(new_public_key)
            )));
        }
        let start = OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let overlap_end = start + time::Duration::seconds(overlap);
        for k in &mut self.keys {
            if k.valid_until > overlap_end {
                k.valid_until = overlap_end;
            }
        }
        self.keys.push(TrustedKey {
            public_key: new,
            valid_from: start,
            valid_until: start + time::Duration::seconds(lifetime),
            revoked: false,
        });
        Ok(())
    }

    /// Retire a release (`name version`): no longer accepted.
    pub fn retire(&mut self, release: &str) {
        if !self.retired.iter().any(|r| r == release) {
            self.retired.push(release.to_string());
        }
    }
}
