//! The agent's configuration: a YAML file (serde-saphyr, the maintained
//! successor of the archived serde_yaml), every field defaulted, unknown
//! fields refused so that a typo does not silently keep a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The miner's hotkey (SS58): requests must be signed for it.
    pub hotkey: String,
    /// HTTPS with the attested key (RA-TLS). Validators try 8080, then 8980.
    pub listen: SocketAddr,
    /// Plain HTTP as well, for validators that do not speak RA-TLS yet.
    pub plain_http: Option<SocketAddr>,
    /// Prometheus `/metrics`; loopback by default (it is unsigned).
    pub metrics: Option<SocketAddr>,
    /// Names in the self-signed certificate (the CVM's IPs or host names).
    pub tls_names: Vec<String>,
    pub access: AccessConfig,
    pub tee: TeeChoice,
    pub gpus: GpuChoice,
    /// Set the GPUs ready to accept confidential work at start (NVML).
    pub set_gpus_ready: bool,
    /// SEV-SNP: the VMPL reports are requested at.
    pub snp_vmpl: u32,
    pub sim: SimConfig,
    pub runtime: RuntimeConfig,
    /// Keep the CVM key here (a tmpfs such as /run) so that an agent restart
    /// keeps the CVM id; absent: a new id every start.
    pub cvm_key_file: Option<PathBuf>,
    pub log: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hotkey: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            plain_http: None,
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            tls_names: vec!["localhost".into()],
            access: AccessConfig::default(),
            tee: TeeChoice::Auto,
            gpus: GpuChoice::Auto,
            set_gpus_ready: true,
            snp_vmpl: 0,
            sim: SimConfig::default(),
            runtime: RuntimeConfig::default(),
            cvm_key_file: None,
            log: LogFormat::Json,
        }
    }
}

impl Config {
    /// SHA-256 of the parts of this configuration that change what the
    /// agent's claims mean: whose requests it answers and who may ask, its
    /// TEE and GPU backends, and what it serves. Listen addresses, limits
    /// and logging are left out: they change nothing a validator pays on.
    /// Each field is `name ‖ u32 length ‖ value` (values as this build
    /// prints them), so a field cannot run into the next.
    pub fn meaning_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |name: &str, value: String| {
            h.update(name.as_bytes());
            h.update((value.len() as u32).to_be_bytes());
            h.update(value.as_bytes());
        };
        field("hotkey", self.hotkey.clone());
        field("access.allow", format!("{:?}", self.access.allow));
        field("access.allowlist", format!("{:?}", self.access.allowlist));
        field("tee", format!("{:?}", self.tee));
        field("gpus", format!("{:?}", self.gpus));
        field("set_gpus_ready", self.set_gpus_ready.to_string());
        field("snp_vmpl", self.snp_vmpl.to_string());
        field("runtime.upstream", format!("{:?}", self.runtime.upstream));
        field("runtime.models", format!("{:?}", self.runtime.models));
        field(
            "runtime.image_digest",
            format!("{:?}", self.runtime.image_digest),
        );
        h.finalize().into()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TeeChoice {
    /// configfs-tsm, then /dev/tdx_guest, then /dev/sev-guest.
    Auto,
    Tsm,
    TdxGuest,
    SevGuest,
    /// The simulated TDX: development and devnet only; says SIMULATED everywhere.
    Sim,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GpuChoice {
    /// NVML when a driver is present, else none.
    Auto,
    Nvml,
    /// A CPU-only node.
    None,
    Sim,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Allow {
    /// Hotkeys listed in `allowlist` (one SS58 per line; re-read when it changes).
    Allowlist,
    /// Any hotkey with a valid signature for this miner.
    AnySigner,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    pub allow: Allow,
    pub allowlist: Option<PathBuf>,
    /// Requests a signer may make per minute (token bucket)...
    pub per_signer_per_minute: u32,
    /// ...and in one burst.
    pub per_signer_burst: u32,
    /// Inference requests a signer may make per minute, and in one burst
    /// (a bucket of its own: evidence polling does not eat into it).
    pub inference_per_signer_per_minute: u32,
    pub inference_per_signer_burst: u32,
    /// Evidence requests produced at once; hardware calls are serial-ish.
    pub max_concurrent_evidence: usize,
    /// Evidence requests waiting beyond those; more get 503.
    pub max_queued_evidence: usize,
    /// Epistula freshness window.
    pub window_ms: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allow: Allow::Allowlist,
            allowlist: None,
            per_signer_per_minute: 120,
            per_signer_burst: 20,
            inference_per_signer_per_minute: 6000,
            inference_per_signer_burst: 200,
            max_concurrent_evidence: 4,
            max_queued_evidence: 32,
            window_ms: tvm_protocol::epistula::DEFAULT_WINDOW_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The simulated hierarchy (made there on first use; `tvm-agent sim-init`).
    pub dir: PathBuf,
    pub gpus: usize,
    /// NVSwitches; with any, the GPUs run in protected-PCIe mode, each
    /// linked to every switch (an HGX node is 8 GPUs and 4 switches).
    pub switches: usize,
    /// The board the simulated GPUs report.
    pub gpu_model: SimGpuModel,
    /// Modelled time one simulated GPU takes to produce its report
    /// (real H100s take tens to hundreds of milliseconds).
    pub gpu_latency_ms: u64,
    /// Which simulated image the TD measures as.
    pub image: SimImage,
}

/// The board a simulated GPU reports (what validators name and pay).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SimGpuModel {
    /// 1010/0200/882, as NVIDIA's H100 sample.
    #[default]
    H100Pcie,
    /// G520/0280/895, as the real HGX H200 capture.
    H200Sxm,
}

impl SimGpuModel {
    pub fn name(self) -> &'static str {
        match self {
            SimGpuModel::H100Pcie => "H100 PCIe",
            SimGpuModel::H200Sxm => "H200 SXM",
        }
    }
}

/// The simulated image a SIMULATED TD runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SimImage {
    /// The one the devnet's operator key signed a manifest for.
    #[default]
    Published,
    /// One no manifest lists (a guest of the miner's own making): validators reject it.
    Unlisted,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            dir: PathBuf::from("tvm-sim"),
            gpus: 8,
            switches: 0,
            gpu_model: SimGpuModel::H100Pcie,
            gpu_latency_ms: 0,
            image: SimImage::Published,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The local inference server (vLLM's OpenAI-compatible API).
    pub upstream: Option<String>,
    /// Models served, each to the default upstream or its own.
    pub models: BTreeMap<String, ModelRoute>,
    /// The VM image digest, copied into the claims. Like `upstream` and the
    /// model names it is what this config says: attested only as far as the
    /// config file is part of the measured image.
    pub image_digest: Option<String>,
    /// Longest silence from the upstream, in seconds, before the request is abandoned (a stream may run longer in all).
    pub upstream_timeout_s: u64,
    /// Largest inference request body accepted.
    pub max_body_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            upstream: None,
            models: BTreeMap::new(),
            image_digest: None,
            upstream_timeout_s: 600,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelRoute {
    /// Another upstream for this model; absent: `runtime.upstream`.
    pub upstream: Option<String>,
    /// The name the upstream knows the model by; absent: the same name.
    pub served_as: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let c: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// What cannot work, said before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1_000..=60_000).contains(&self.access.window_ms) {
            return Err(ConfigError::Invalid(format!(
                "access.window_ms is {}: between 1000 and 60000 (Epistula's is 8000)",
                self.access.window_ms
            )));
        }
        if self.runtime.upstream_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "runtime.upstream_timeout_s must be at least 1".into(),
            ));
        }
        if self.hotkey.is_empty() {
            return Err(ConfigError::Invalid(
                "hotkey is not set: give the miner's hotkey (SS58) with --hotkey or `hotkey:`"
                    .into(),
            ));
        }
        tvm_protocol::keys::AccountId::from_ss58(&self.hotkey).map_err(|e| {
            ConfigError::Invalid(format!(
                "hotkey {:?} is not an SS58 address: {e}",
                self.hotkey
            ))
        })?;
        if self.access.allow == Allow::Allowlist && self.access.allowlist.is_none() {
            return Err(ConfigError::Invalid(
                "access.allow is allowlist but access.allowlist names no file: list the validator hotkeys there, or set access.allow: any-signer".into(),
            ));
        }
        let a = &self.access;
        let limits = [
            a.max_concurrent_evidence as u64,
            a.per_signer_burst.into(),
            a.per_signer_per_minute.into(),
            a.inference_per_signer_burst.into(),
            a.inference_per_signer_per_minute.into(),
        ];
        if limits.contains(&0) {
            return Err(ConfigError::Invalid(
                "access: max_concurrent_evidence and every per-signer rate and burst must be at least 1".into(),
            ));
        }
        if self.gpus != GpuChoice::None
            && (self.tee == TeeChoice::Sim) != (self.gpus == GpuChoice::Sim)
        {
            return Err(ConfigError::Invalid(
                "tee and gpus must both be sim or both be real: no policy accepts a simulated TEE vouching for real GPUs, or the reverse".into(),
            ));
        }
        // Each model is a runtime event; a bundle carries at most
        // MAX_RUNTIME_EVENTS, with the configuration and the image.
        let most = tvm_protocol::evidence::MAX_RUNTIME_EVENTS - 2;
        if self.runtime.models.len() > most {
            return Err(ConfigError::Invalid(format!(
                "runtime.models lists {} models; an agent serves at most {most}",
                self.runtime.models.len()
            )));
        }
        if !self.runtime.models.is_empty() && self.runtime.upstream.is_none() {
            if let Some((m, _)) = self
                .runtime
                .models
                .iter()
                .find(|(_, r)| r.upstream.is_none())
            {
                return Err(ConfigError::Invalid(format!(
                    "model {m} has no upstream and runtime.upstream is not set"
                )));
            }
        }
        // The sealed runtime runs in this VM: the attested key answers for
        // inference only if the inference is made here too.
        let upstreams = self.runtime.upstream.iter().chain(
            self.runtime
                .models
                .values()
                .filter_map(|r| r.upstream.as_ref()),
        );
        for u in upstreams {
            if !loopback_url(u) {
                return Err(ConfigError::Invalid(format!(
                    "upstream {u} is not on this machine: the inference server must run in the CVM, at http://127.0.0.1:PORT (or [::1], localhost)"
                )));
            }
        }
        Ok(())
    }
}

/// `http://` or `https://` to a loopback address or `localhost`.
pub fn loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {

    #[test]
    fn upstreams_must_be_in_this_vm() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://127.9.9.9:1/v1",
            "http://localhost:8000",
            "http://[::1]:8000/",
            "https://LOCALHOST",
        ] {
            assert!(loopback_url(ok), "{ok}");
        }
        for bad in [
            "http://10.0.2.2:8000",
            "http://api.example.com",
            "http://127.0.0.1.evil.com",
            "http://user@127.0.0.1@evil.com",
            "ftp://127.0.0.1",
            "127.0.0.1:8000",
            "http://[2001:db8::1]:80",
        ] {
            assert!(!loopback_url(bad), "{bad}");
        }
        let mut c = Config {
            hotkey: "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".into(),
            ..Config::default()
        };
        c.access.allow = Allow::AnySigner;
        c.runtime.upstream = Some("http://203.0.113.7:8000".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("is not on this machine"), "{e}");
    }
    use super::*;

    #[test]
    fn example_config_parses_and_typos_are_refused() {
        let c = Config::from_yaml(
            r#"
hotkey: 5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY
listen: 0.0.0.0:8080
plain_http: 0.0.0.0:8980
access:
  allow: allowlist
  allowlist: /etc/tvm/validators.txt
tee: auto
gpus: nvml
runtime:
  upstream: http://127.0.0.1:8000
  models:
    meta-llama/Llama-3.1-8B-Instruct: {}
"#,
            "agent.yaml",
        )
        .unwrap();
        assert_eq!(c.plain_http, Some("0.0.0.0:8980".parse().unwrap()));
        assert_eq!(c.gpus, GpuChoice::Nvml);
        c.validate().unwrap();
        let e = Config::from_yaml("hotkey: x\nlisten_port: 1\n", "a.yaml").unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
        let mut mixed = c.clone();
        mixed.tee = TeeChoice::Sim;
        let e = mixed.validate().unwrap_err();
        assert!(e.to_string().contains("both be sim"), "{e}");
        let mut zero = c.clone();
        zero.access.per_signer_per_minute = 0;
        assert!(zero.validate().is_err());
        let e = Config::from_yaml("hotkey: x\n", "a.yaml")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("SS58"), "{e}");
    }
}
