//! What a piece of evidence showed, for people and for the validator
//! (identity for dedupe, measurements for image policy, report_data for binding).

use serde::Serialize;

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
    pub tcb_status: Option<crate::policy::TcbStatus>,
    pub advisory_ids: Vec<String>,
    pub fmspc: Option<String>,
    pub mrtd: String,
    pub rtmr: [String; 4],
    pub report_data: String,
    pub td_attributes: String,
    /// The TD debug or off-TD debug/profiling attribute is set.
    pub debug: bool,
    /// Earliest `nextUpdate` of the collateral used (RFC 3339).
    pub collateral_expires: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpFacts {
    pub report_version: u32,
    /// `VCEK` or `VLEK`.
    pub signer: String,
    /// Milan, Genoa or Turin, from the endorsement key's issuer.
    pub product: Option<String>,
    pub measurement: String,
    pub report_data: String,
    /// The chip's unique ID (all zeros when masked, as with a VLEK).
    pub chip_id: String,
    pub guest_policy: String,
    pub vmpl: u32,
    pub reported_tcb: TcbFacts,
    pub debug_allowed: bool,
    pub migration_agent_allowed: bool,
    pub smt_allowed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuFacts {
    /// Hopper, Blackwell or NVSwitch LS10, from the device certificates.
    pub arch: Option<String>,
    pub model: Option<String>,
    /// Unique per device, from the certificate NVIDIA issued to it (not NVML):
    /// the key for counting a GPU once in the network.
    pub device_id: Option<String>,
    pub nonce: String,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub project: Option<String>,
    pub project_sku: Option<String>,
    pub chip_sku: Option<String>,
    pub fwid: Option<String>,
    /// SPDM block index (1-based) and its SHA-384 value.
    pub measurements: Vec<(u8, String)>,
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
                ("fmspc", f.fmspc.clone().unwrap_or_else(|| "unknown".into())),
                ("mrtd", f.mrtd.clone()),
                ("rtmr0", f.rtmr[0].clone()),
                ("rtmr1", f.rtmr[1].clone()),
                ("rtmr2", f.rtmr[2].clone()),
                ("rtmr3", f.rtmr[3].clone()),
                ("report_data", f.report_data.clone()),
                (
                    "td attributes",
                    format!(
                        "{}{}",
                        f.td_attributes,
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
                    f.product.clone().unwrap_or_else(|| "unknown".into()),
                ),
                ("signed by", f.signer.clone()),
                ("measurement", f.measurement.clone()),
                ("report_data", f.report_data.clone()),
                ("chip_id", f.chip_id.clone()),
                (
                    "guest policy",
                    format!(
                        "{} (debug {}, migration agent {}, SMT {})",
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
                    ("nonce", f.nonce.clone()),
                    ("measurements", format!("{} blocks", f.measurements.len())),
                ]
            }
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
