//! What a piece of evidence showed, for people and for the validator
//! (identity for dedupe, measurements for image policy, report_data for binding).
//! Kept as bytes and enums; hex and names only where shown or serialized (the
//! serialized form is what the round store and status API have always had).

use serde::Serialize;
use tvm_certs::{AmdProduct, AmdSigner};

use crate::gpu::Arch;
use crate::policy::TcbStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "platform", rename_all = "kebab-case")]
pub enum Facts {
    Tdx(TdxFacts),
    SevSnp(SnpFacts),
    /// An NVIDIA GPU or NVSwitch (SPDM measurements).
    Gpu(GpuFacts),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxFacts {
    pub quote_version: u16,
    /// Intel's TCB status once the quote verified (e.g. `UpToDate`).
    pub tcb_status: Option<TcbStatus>,
    pub advisory_ids: Vec<String>,
    /// The platform's FMSPC, from the TCB Info that matched.
    #[serde(serialize_with = "show::upper_opt")]
    pub fmspc: Option<[u8; 6]>,
    #[serde(serialize_with = "show::hex")]
    pub mrtd: [u8; 48],
    #[serde(serialize_with = "show::hex_each")]
    pub rtmr: [[u8; 48]; 4],
    #[serde(serialize_with = "show::hex")]
    pub report_data: [u8; 64],
    #[serde(serialize_with = "show::hex")]
    pub td_attributes: [u8; 8],
    /// The TD debug or off-TD debug/profiling attribute is set.
    pub debug: bool,
    /// Earliest `nextUpdate` of the collateral used (RFC 3339).
    pub collateral_expires: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpFacts {
    pub report_version: u32,
    /// VCEK or VLEK; `None` before the report's signer was known.
    #[serde(serialize_with = "show::signer")]
    pub signer: Option<AmdSigner>,
    /// Milan, Genoa or Turin, from the endorsement key's issuer.
    #[serde(serialize_with = "show::name_opt")]
    pub product: Option<AmdProduct>,
    #[serde(serialize_with = "show::hex")]
    pub measurement: [u8; 48],
    #[serde(serialize_with = "show::hex")]
    pub report_data: [u8; 64],
    /// The chip's unique ID (all zeros when masked, as with a VLEK).
    #[serde(serialize_with = "show::hex")]
    pub chip_id: [u8; 64],
    #[serde(serialize_with = "show::policy")]
    pub guest_policy: u64,
    pub vmpl: u32,
    pub reported_tcb: TcbFacts,
    pub debug_allowed: bool,
    pub migration_agent_allowed: bool,
    pub smt_allowed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuFacts {
    /// Hopper, Blackwell or NVSwitch LS10, from the device certificates.
    #[serde(serialize_with = "show::name_opt")]
    pub arch: Option<Arch>,
    pub model: Option<String>,
    /// Unique per device, from the certificate NVIDIA issued to it (not NVML):
    /// the key for counting a GPU once in the network.
    pub device_id: Option<String>,
    #[serde(serialize_with = "show::hex")]
    pub nonce: [u8; 32],
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub project: Option<String>,
    pub project_sku: Option<String>,
    pub chip_sku: Option<String>,
    #[serde(serialize_with = "show::hex_opt")]
    pub fwid: Option<Vec<u8>>,
    /// SPDM block index (1-based) and its SHA-384 value.
    #[serde(serialize_with = "show::blocks")]
    pub measurements: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcbFacts {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    pub fmc: Option<u8>,
}

impl Facts {
    /// Label/value rows for the readable table.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        match self {
            Facts::Tdx(f) => vec![
                (
                    "platform",
                    format!("Intel TDX (quote v{})", f.quote_version),
                ),
                (
                    "tcb status",
                    f.tcb_status
                        .map_or_else(|| "unknown".into(), |s| s.to_string()),
                ),
                (
                    "advisories",
                    if f.advisory_ids.is_empty() {
                        "none".into()
                    } else {
                        f.advisory_ids.join(", ")
                    },
                ),
                (
                    "fmspc",
                    f.fmspc.map_or_else(|| "unknown".into(), hex::encode_upper),
                ),
                ("mrtd", hex::encode(f.mrtd)),
                ("rtmr0", hex::encode(f.rtmr[0])),
                ("rtmr1", hex::encode(f.rtmr[1])),
                ("rtmr2", hex::encode(f.rtmr[2])),
                ("rtmr3", hex::encode(f.rtmr[3])),
                ("report_data", hex::encode(f.report_data)),
                (
                    "td attributes",
                    format!(
                        "{}{}",
                        hex::encode(f.td_attributes),
                        if f.debug { " (DEBUG)" } else { "" }
                    ),
                ),
                (
                    "collateral until",
                    f.collateral_expires
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                ),
            ],
            Facts::SevSnp(f) => vec![
                (
                    "platform",
                    format!("AMD SEV-SNP (report v{})", f.report_version),
                ),
                (
                    "product",
                    f.product
                        .map_or_else(|| "unknown".into(), |p| p.to_string()),
                ),
                ("signed by", show::signer_name(f.signer)),
                ("measurement", hex::encode(f.measurement)),
                ("report_data", hex::encode(f.report_data)),
                ("chip_id", hex::encode(f.chip_id)),
                (
                    "guest policy",
                    format!(
                        "{:#x} (debug {}, migration agent {}, SMT {})",
                        f.guest_policy,
                        yes(f.debug_allowed),
                        yes(f.migration_agent_allowed),
                        yes(f.smt_allowed)
                    ),
                ),
                ("vmpl", f.vmpl.to_string()),
                (
                    "reported tcb",
                    format!(
                        "bootloader {} tee {} snp {} microcode {}{}",
                        f.reported_tcb.bootloader,
                        f.reported_tcb.tee,
                        f.reported_tcb.snp,
                        f.reported_tcb.microcode,
                        f.reported_tcb
                            .fmc
                            .map(|v| format!(" fmc {v}"))
                            .unwrap_or_default()
                    ),
                ),
            ],
            Facts::Gpu(f) => {
                let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
                vec![
                    ("device", or(&f.model)),
                    ("device id", or(&f.device_id)),
                    ("driver", or(&f.driver_version)),
                    ("vbios", or(&f.vbios_version)),
                    (
                        "board",
                        format!(
                            "project {} sku {} chip {}",
                            or(&f.project),
                            or(&f.project_sku),
                            or(&f.chip_sku)
                        ),
                    ),
                    ("nonce", hex::encode(f.nonce)),
                    ("measurements", format!("{} blocks", f.measurements.len())),
                ]
            }
        }
    }
}

/// How facts are serialized: bytes as hex, enums by their names.
mod show {
    use serde::Serializer;

    pub fn hex<S: Serializer>(b: impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&::hex::encode(b))
    }

    pub fn hex_opt<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&::hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Intel writes FMSPCs in upper case.
    pub fn upper_opt<S: Serializer>(b: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&::hex::encode_upper(b)),
            None => s.serialize_none(),
        }
    }

    pub fn hex_each<S: Serializer>(r: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(r.iter().map(::hex::encode))
    }

    pub fn blocks<S: Serializer>(m: &[(u8, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|(i, v)| (i, ::hex::encode(v))))
    }

    pub fn policy<S: Serializer>(p: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{p:#x}"))
    }

    /// "VCEK" or "VLEK" (the signer's Display), "none" before it was known.
    pub fn signer_name(signer: Option<tvm_certs::AmdSigner>) -> String {
        signer.map_or_else(|| "none".into(), |s| s.to_string())
    }

    pub fn signer<S: Serializer>(
        v: &Option<tvm_certs::AmdSigner>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&signer_name(*v))
    }

    pub fn name_opt<S: Serializer, T: std::fmt::Display>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "allowed"
    } else {
        "off"
    }
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub fn rfc3339(t: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}
