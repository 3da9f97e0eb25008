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
//! - `measure tdx|sev-snp --shape S …`: a manifest's measurement set for one
//!   platform and VM shape, from a reference boot (quote and event log) or
//!   from the release's digests.
//! - `diagnose --quote Q [--event-log L] --manifest M [--keys K]`: why a
//!   quote does not match a manifest, down to the event.

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
    )?;
    save_keys(keys_path, &keys)
}

fn hex48(what: &str, text: &str) -> Result<[u8; 48], ImageError> {
    manifest::hex48(text).map_err(|e| invalid(Path::new(what), e))
}

/// The Authenticode SHA-384 of a kernel file (what TDVF extends into RTMR1), hex.
pub fn kernel_authenticode(kernel: &Path) -> Result<String, ImageError> {
    let pe = read(kernel)?;
    tvm_image::authenticode::sha384(&pe)
        .map(hex::encode)
        .map_err(|e| invalid(kernel, e))
}

/// MRTD of a TD booting this TDVF image, hex (`two_pass`: QEMU 8's order).
pub fn firmware_mrtd(firmware: &Path, two_pass: bool) -> Result<String, ImageError> {
    use tvm_image::tdvf::{mrtd, PageOrder};
    let fw = read(firmware)?;
    let order = if two_pass {
        PageOrder::TwoPass
    } else {
        PageOrder::SinglePass
    };
    mrtd(&fw, order)
        .map(hex::encode)
        .map_err(|e| invalid(firmware, e))
}

/// What `tvm image measure tdx` computes a measurement set from.
pub enum TdxSource<'a> {
    /// A reference boot of the image on this shape: its quote and, when
    /// at hand, its event log (which must replay to the quote).
    ReferenceBoot {
        quote: &'a Path,
        event_log: Option<&'a Path>,
    },
    /// The release's digests: MRTD (from the firmware, e.g. dstack-mr's
    /// two-pass value), RTMR0 for this shape (from a reference boot), the
    /// kernel's Authenticode SHA-384, and the command line and initrd
    /// digests TDVF extends.
    Digests {
        mrtd: &'a str,
        rtmr0: &'a str,
        kernel_authenticode: &'a str,
        cmdline_sha384: &'a str,
        initrd_sha384: &'a str,
    },
}

fn registers_json(regs: &[(&str, [u8; 48])]) -> serde_json::Map<String, serde_json::Value> {
    regs.iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v).into()))
        .collect()
}

fn events_json(events: &[(&str, Vec<[u8; 48]>)]) -> serde_json::Map<String, serde_json::Value> {
    events
        .iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|(k, e)| {
            (
                k.to_string(),
                e.iter().map(hex::encode).collect::<Vec<_>>().into(),
            )
        })
        .collect()
}

/// A TDX measurement set for a manifest (`measurements[]` entry), as JSON.
pub fn measure_tdx(shape: &str, source: TdxSource<'_>) -> Result<String, ImageError> {
    use tvm_image::eventlog;
    let (regs, events, how) = match source {
        TdxSource::ReferenceBoot { quote, event_log } => {
            let q = read(quote)?;
            let (mrtd, rtmr) = tvm_verifier::tee::tdx::registers_of(&q)
                .ok_or_else(|| invalid(quote, "not a TDX quote"))?;
            let mut events: Vec<(&str, Vec<[u8; 48]>)> = Vec::new();
            if let Some(log_path) = event_log {
                let log = eventlog::parse(&read(log_path)?).map_err(|e| invalid(log_path, e))?;
                let replayed = eventlog::replay(&log);
                if let Some((i, got, want)) =
                    eventlog::first_mismatch(&replayed, &rtmr).filter(|(i, _, _)| *i < 3)
                {
                    return Err(invalid(
                        log_path,
                        format!(
                            "replays RTMR{i} to {}, the quote has {}: this log is not that boot's",
                            hex::encode(got),
                            hex::encode(want)
                        ),
                    ));
                }
                for (i, name) in ["rtmr0", "rtmr1", "rtmr2"].into_iter().enumerate() {
                    events.push((
                        name,
                        log.iter()
                            .filter(|e| e.rtmr() == Some(i))
                            .map(|e| e.digest)
                            .collect(),
                    ));
                }
            }
            let regs = vec![
                ("mrtd", mrtd),
                ("rtmr0", rtmr[0]),
                ("rtmr1", rtmr[1]),
                ("rtmr2", rtmr[2]),
            ];
            (regs, events, "reference boot")
        }
        TdxSource::Digests {
            mrtd,
            rtmr0,
            kernel_authenticode,
            cmdline_sha384,
            initrd_sha384,
        } => {
            let kernel = hex48("--kernel-authenticode", kernel_authenticode)?;
            let (cmdline, initrd) = (
                hex48("--cmdline-sha384", cmdline_sha384)?,
                hex48("--initrd-sha384", initrd_sha384)?,
            );
            let (r1, r2) = (
                tvm_image::tdx::rtmr1_events(&kernel),
                tvm_image::tdx::rtmr2_events(&cmdline, &initrd),
            );
            let regs = vec![
                ("mrtd", hex48("--mrtd", mrtd)?),
                ("rtmr0", hex48("--rtmr0", rtmr0)?),
                ("rtmr1", tvm_image::tdx::replay(&r1)),
                ("rtmr2", tvm_image::tdx::replay(&r2)),
            ];
            (
                regs,
                vec![("rtmr1", r1), ("rtmr2", r2)],
                "computed (RTMR1, RTMR2); MRTD computed from the firmware or given; RTMR0 given (a reference boot of this shape)",
            )
        }
    };
    let set = serde_json::json!({
        "platform": "tdx",
        "shape": shape,
        "registers": registers_json(&regs),
        "events": events_json(&events),
        "source": how,
    });
    let mut out = serde_json::to_string_pretty(&set).map_err(|e| invalid(Path::new(shape), e))?;
    out.push('\n');
    Ok(out)
}

/// A SEV-SNP measurement set from a launch document: the OVMF pages digest,
/// its SNP sections, the kernel and initrd SHA-256, the command line, the
/// hashes-table GPA, the reset EIP, vCPUs, CPU model and guest features
/// (the shape of dstack's measurement documents).
pub fn measure_snp(shape: &str, launch: &Path) -> Result<String, ImageError> {
    use tvm_image::snp::{launch_digest_from_parts, BootHashes, LaunchParts, Section};
    #[derive(serde::Deserialize)]
    struct Doc {
        ovmf_hash: String,
        ovmf_sections: Vec<Section>,
        kernel_hash: Option<String>,
        initrd_hash: Option<String>,
        #[serde(alias = "base_cmdline")]
        cmdline: Option<String>,
        sev_hashes_table_gpa: u64,
        sev_es_reset_eip: u32,
        vcpus: u32,
        vcpu_type: String,
        guest_features: u64,
    }
    let d: Doc = serde_json::from_slice(&read(launch)?).map_err(|e| invalid(launch, e))?;
    let h32 = |what: &str, v: &str| -> Result<[u8; 32], ImageError> {
        hex::decode(v)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid(launch, format!("{what} is not 32 bytes of hex")))
    };
    // Without measured direct boot the digest binds the firmware alone, and
    // any kernel booted from the miner's disk would match it.
    if d.kernel_hash.is_none() {
        return Err(invalid(
            launch,
            "no kernel_hash: a launch without measured direct boot (QEMU -kernel with kernel-hashes=on) binds no kernel, initrd or command line",
        ));
    }
    let hashes = match (&d.kernel_hash, &d.initrd_hash) {
        (Some(k), i) => Some(BootHashes {
            kernel: h32("kernel_hash", k)?,
            // No initrd: QEMU hashes an empty one.
            initrd: match i {
                Some(i) => h32("initrd_hash", i)?,
                None => h32(
                    "sha256('')",
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )?,
            },
            cmdline: BootHashes::cmdline_sha256(d.cmdline.as_deref().unwrap_or("")),
        }),
        (None, _) => None,
    };
    let digest = launch_digest_from_parts(&LaunchParts {
        ovmf_hash: hex48("ovmf_hash", &d.ovmf_hash)?,
        sections: &d.ovmf_sections,
        hashes,
        hashes_table_gpa: d.sev_hashes_table_gpa,
        reset_eip: d.sev_es_reset_eip,
        vcpus: d.vcpus,
        cpu: &d.vcpu_type,
        guest_features: d.guest_features,
    })
    .map_err(|e| invalid(launch, e))?;
    let set = serde_json::json!({
        "platform": "sev-snp",
        "shape": shape,
        "registers": registers_json(&[("measurement", digest)]),
        "source": format!("computed: {} vCPUs {}, guest features {:#x}", d.vcpus, d.vcpu_type, d.guest_features),
    });
    let mut out = serde_json::to_string_pretty(&set).map_err(|e| invalid(launch, e))?;
    out.push('\n');
    Ok(out)
}

/// `tvm image diagnose`: a TDX quote and its event log against a manifest,
/// register by register, naming the first event that differs. With `keys`
/// the manifest's signatures are checked first.
pub fn diagnose(
    quote: &Path,
    event_log: Option<&Path>,
    manifest_path: &Path,
    keys: Option<&Path>,
    at: i64,
) -> Result<(String, bool), ImageError> {
    use std::fmt::Write as _;
    use tvm_image::eventlog;
    let signed = read(manifest_path)?;
    let mut out = String::new();
    let m = match keys {
        Some(k) => manifest::verify(&signed, &load_keys(k)?, at)?,
        None => {
            let s: Signed =
                serde_json::from_slice(&signed).map_err(|e| invalid(manifest_path, e))?;
            let _ = writeln!(
                out,
                "(signatures not checked: give --keys to check them as a validator does)"
            );
            let m: manifest::Manifest =
                serde_json::from_str(&s.manifest).map_err(|e| invalid(manifest_path, e))?;
            m.validate()?;
            m
        }
    };
    let q = read(quote)?;
    let (mrtd, rtmr) = tvm_verifier::tee::tdx::registers_of(&q)
        .ok_or_else(|| invalid(quote, "not a TDX quote"))?;
    let log = match event_log {
        None => None,
        Some(p) => {
            let events = eventlog::parse(&read(p)?).map_err(|e| invalid(p, e))?;
            let replayed = eventlog::replay(&events);
            match eventlog::first_mismatch(&replayed, &rtmr).filter(|(i, _, _)| *i < 3) {
                Some((i, got, want)) => {
                    let _ = writeln!(
                        out,
                        "the event log replays RTMR{i} to {}, the quote has {}: it is not this boot's log, so events cannot be named",
                        hex::encode(got),
                        hex::encode(want)
                    );
                    None
                }
                None => Some(events),
            }
        }
    };
    let shown = [
        ("mrtd", mrtd),
        ("rtmr0", rtmr[0]),
        ("rtmr1", rtmr[1]),
        ("rtmr2", rtmr[2]),
        ("rtmr3", rtmr[3]),
    ];
    let mut any_match = false;
    for e in m
        .measurements
        .iter()
        .filter(|e| e.platform == manifest::Platform::Tdx)
    {
        let _ = writeln!(out, "{} shape {}:", m.release(), e.shape);
        let mut enforced_differ = false;
        for (name, value) in shown {
            let Some(want) = e.register(name) else {
                continue;
            };
            if want == value {
                let _ = writeln!(out, "  {name:<5} matches");
                continue;
            }
            let mode = e.mode(name);
            enforced_differ |= mode == manifest::Mode::Enforce;
            let _ = writeln!(
                out,
                "  {name:<5} DIFFERS ({}): the quote has {}, the manifest {}",
                if mode == manifest::Mode::Warn {
                    "warn only"
                } else {
                    "enforced"
                },
                hex::encode(value),
                hex::encode(want)
            );
            let index = ["rtmr0", "rtmr1", "rtmr2"].iter().position(|r| *r == name);
            match (index, &log, index.and_then(|i| e.events_of(i))) {
                (Some(i), Some(log), Some(reference)) => {
                    match eventlog::diagnose_register(log, i, &reference) {
                        Some(d) => {
                            let _ = writeln!(out, "        first differing event: {d}");
                        }
                        None => {
                            let _ = writeln!(out, "        every event matches the manifest's, yet the register differs: the manifest's value and its events disagree");
                        }
                    }
                }
                (Some(_), None, _) if event_log.is_none() => {
                    let _ = writeln!(out, "        (give --event-log to name the event)");
                }
                (Some(_), None, _) => {}
                (Some(_), Some(_), None) => {
                    let _ = writeln!(
                        out,
                        "        (the manifest lists no reference events for {name})"
                    );
                }
                _ => {}
            }
        }
        if !enforced_differ {
            any_match = true;
            let _ = writeln!(
                out,
                "  => this quote matches {} shape {}",
                m.release(),
                e.shape
            );
        }
    }
    if !any_match {
        let _ = writeln!(
            out,
            "=> no TDX measurement set of {} matches this quote",
            m.release()
        );
    }
    Ok((out, any_match))
}
