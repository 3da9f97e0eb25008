//! `tvm-verifier run`: the validator service. Each epoch (360 blocks by
//! default) one round over every serving miner's CVMs, stored as it goes,
//! and weights set on chain (or written to a JSON file when no chain is
//! configured). A restart resumes the epoch's round where it stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tvm_certs::store::{CollateralStore, StoreConfig};
use tvm_chain::client::Client;
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_sim::intel::SimIntel;

use crate::attest::Attester;
use crate::db::Db;
use crate::gpu_collateral;
use crate::round::{Collateral, GpuCollateral, Miner, RoundConfig};
use crate::scoring::ScoringConfig;
use crate::service::{self, EpochOutcome, Network, Service, ServiceError, WeightsSent};
use tvm_verifier::gpu::input::DeviceEvidence;
use tvm_verifier::image::{Images, KeySet};
use tvm_verifier::policy::Policy;
use tvm_verifier::tee::snp::{self, SnpEndorsement};
use tvm_verifier::tee::tdx::{self, TdxCollateral};

/// Collateral older than this is fetched (or simulated) again.
const COLLATERAL_REFRESH_SECONDS: i64 = 3600;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The validator's hotkey as a secret URI (mnemonic, `0x` seed, `//Dev`)...
    pub hotkey_phrase: Option<tvm_protocol::wallet::SecretPhrase>,
    /// ...or a bittensor wallet hotkey file.
    pub hotkey_file: Option<PathBuf>,
    /// Subtensor (`wss://…`, or `ws://` on loopback). Absent: no chain —
    /// `miners` are attested and the weights written to `weights_file`.
    pub chain_endpoint: Option<String>,
    pub netuid: u16,
    /// The least weights version key to send (the chain's wins when higher).
    pub version_key: u64,
    /// Blocks per epoch (one round each).
    pub epoch_blocks: u64,
    /// Seconds per block of the chain (12 on finney): how far ahead a
    /// commit-reveal commit's drand round is.
    pub block_seconds: f64,
    /// Encrypt commits to whatever drand beacon the chain names, instead of
    /// only drand's quicknet: for test chains with their own beacon.
    pub dangerous_chain_drand_beacon: bool,
    /// How often to look at the chain's best block.
    pub poll_seconds: u64,
    /// Without a chain: the miners to attest, and seconds per epoch.
    pub miners: Vec<MinerConfig>,
    pub epoch_seconds: u64,
    pub weights_file: PathBuf,
    /// Rounds, verdicts and weights (SQLite).
    pub database: PathBuf,
    /// The status API, dashboard and `/metrics` (absent: not served).
    pub status_listen: Option<SocketAddr>,
    /// Appraisal policy (YAML, docs/policy.md); absent: the strict default.
    pub policy: Option<PathBuf>,
    /// Where the operators' signed image manifests are: folders, or
    /// `https://` URLs (fetched through the collateral store, cached). The
    /// policy's `images.operator_keys` decide which are accepted.
    pub manifests: Vec<String>,
    /// Evidence ports, tried in order.
    pub evidence_ports: Vec<u16>,
    /// Nodes attested at once.
    pub concurrency: usize,
    pub node_timeout_seconds: u64,
    /// Extra tries for a node that could not be reached.
    pub retries: u32,
    pub scoring: ScoringConfig,
    /// Collateral cache (Intel PCS, AMD KDS, NVIDIA RIMs and OCSP).
    pub collateral_dir: Option<PathBuf>,
    pub pcs_url: Option<String>,
    pub nvidia_rim_url: Option<String>,
    pub nvidia_ocsp_url: Option<String>,
    /// DEVNET ONLY: attest nodes at loopback and private addresses.
    pub dangerous_allow_private_addresses: bool,
    /// DEVNET ONLY: TDX collateral from the simulated hierarchy in this
    /// directory instead of Intel's PCS. Only SIMULATED quotes pass with it,
    /// and only under a policy that trusts the simulated roots.
    pub dangerous_simulated_pcs: Option<PathBuf>,
    /// Verified inference (the v5 share); absent: the v5 share is burned.
    pub v5: Option<crate::v5::V5Config>,
}

/// A miner to attest when there is no chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MinerConfig {
    pub uid: u16,
    /// SS58.
    pub hotkey: String,
    /// Its axon (`tvm serve`), `IP:PORT`.
    pub axon: SocketAddr,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            hotkey_phrase: None,
            hotkey_file: None,
            chain_endpoint: None,
            netuid: 4,
            version_key: 0,
            epoch_blocks: 360,
            block_seconds: 12.0,
            dangerous_chain_drand_beacon: false,
            poll_seconds: 12,
            miners: Vec::new(),
            epoch_seconds: 360 * 12,
            weights_file: PathBuf::from("weights.json"),
            database: PathBuf::from("validator.db"),
            status_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
            policy: None,
            manifests: Vec::new(),
            evidence_ports: vec![8080, 8980],
            concurrency: 64,
            node_timeout_seconds: 60,
            retries: 1,
            scoring: ScoringConfig::default(),
            collateral_dir: None,
            pcs_url: None,
            nvidia_rim_url: None,
            nvidia_ocsp_url: None,
            dangerous_allow_private_addresses: false,
            dangerous_simulated_pcs: None,
            v5: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl RunConfig {
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let bad = |reason: String| RunError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let text = zeroize::Zeroizing::new(text);
        // No source snippet in errors: the lines around a typo may hold the phrase.
        let options = serde_saphyr::options! { with_snippet: false };
        let cfg: RunConfig =
            serde_saphyr::from_str_with_options(&text, options).map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.scoring.validate()?;
        if let Some(v5) = &self.v5 {
            v5.validate()?;
        }
        if self.epoch_blocks == 0 || self.epoch_seconds == 0 {
            return Err("epoch_blocks and epoch_seconds must be at least 1".into());
        }
        if self.evidence_ports.is_empty() {
            return Err("evidence_ports is empty: give at least one (8080)".into());
        }
        if !(self.block_seconds > 0.0 && self.block_seconds <= 60.0) {
            return Err(format!(
                "block_seconds is {}: give the chain's seconds per block (12 on finney), above 0 and at most 60",
                self.block_seconds
            ));
        }
        if self.chain_endpoint.is_none() && self.miners.is_empty() {
            return Err(
                "no chain_endpoint and no miners: give the chain, or the miners to attest".into(),
            );
        }
        if self.chain_endpoint.is_some() && !self.miners.is_empty() {
            return Err("miners are read from the chain: drop `miners` or `chain_endpoint`".into());
        }
        Ok(())
    }

    pub fn hotkey(&self) -> Result<Hotkey, RunError> {
        tvm_protocol::wallet::configured_hotkey(
            self.hotkey_phrase.as_ref().map(|p| p.expose()),
            self.hotkey_file.as_deref(),
        )
        .map_err(RunError::Setup)
    }

    fn store(&self) -> Result<CollateralStore, RunError> {
        let d = StoreConfig::default();
        let cfg = StoreConfig {
            dir: collateral_dir(self.collateral_dir.as_deref()),
            pcs_url: self.pcs_url.clone().unwrap_or(d.pcs_url),
            nvidia_rim_url: self.nvidia_rim_url.clone().unwrap_or(d.nvidia_rim_url),
            nvidia_ocsp_url: self.nvidia_ocsp_url.clone().unwrap_or(d.nvidia_ocsp_url),
            ..d
        };
        CollateralStore::open(cfg, &[]).map_err(|e| RunError::Setup(e.to_string()))
    }
}

/// The collateral cache: the folder given (a leading `~` read as a shell
/// would), else `$TVM_COLLATERAL_DIR`, else `~/.cache/tvm/collateral`.
pub fn collateral_dir(given: Option<&Path>) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (given, std::env::var_os("TVM_COLLATERAL_DIR"), home) {
        (Some(dir), _, Some(home)) if dir.starts_with("~") => {
            home.join(dir.strip_prefix("~").unwrap_or(dir))
        }
        (Some(dir), _, _) => dir.to_path_buf(),
        (None, Some(env), _) => PathBuf::from(env),
        (None, None, Some(home)) => home.join(".cache/tvm/collateral"),
        (None, None, None) => PathBuf::from("collateral"),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Collateral prepared once per platform and reused until it is an hour
/// old. One slot per platform, locked while it is fetched, so the nodes of
/// a platform wait for one fetch instead of each making their own.
#[derive(Default)]
struct Cache(Mutex<HashMap<String, Arc<Slot>>>);

type Slot = tokio::sync::Mutex<Option<(Arc<TdxCollateral>, i64)>>;

impl Cache {
    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// The cached collateral, or `make`'s (kept when it gives one; a slot
    /// that got none is dropped, so made-up platforms do not pile up).
    async fn get_or<F>(&self, key: &str, at: i64, make: F) -> Result<Arc<TdxCollateral>, String>
    where
        F: std::future::Future<Output = Result<TdxCollateral, String>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some((c, t)) = held.as_ref() {
            if at - t < COLLATERAL_REFRESH_SECONDS {
                return Ok(c.clone());
            }
        }
        match make.await {
            Ok(c) => {
                let c = Arc::new(c);
                *held = Some((c.clone(), at));
                Ok(c)
            }
            Err(e) => {
                if held.is_none() {
                    let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
                    map.remove(key);
                }
                Err(e)
            }
        }
    }
}

/// Real collateral: Intel PCS for TDX, NVIDIA's RIM service and OCSP for
/// GPUs, through the on-disk store.
pub struct StoreCollateral {
    store: CollateralStore,
    manifests: Vec<String>,
    grace_seconds: u64,
    cache: Cache,
    /// The AMD product each chip's VCEK was found under (v2 reports do not say).
    products: Mutex<HashMap<Vec<u8>, tvm_certs::AmdProduct>>,
}

impl StoreCollateral {
    pub fn new(store: CollateralStore, grace_seconds: u64, manifests: Vec<String>) -> Self {
        StoreCollateral {
            store,
            manifests,
            grace_seconds,
            cache: Cache::default(),
            products: Mutex::default(),
        }
    }
}

/// Verify what was found under `keys` at `at`, and log what could not be read.
fn verified_images(found: tvm_certs::store::FoundManifests, keys: &KeySet, at: i64) -> Images {
    for p in &found.problems {
        tracing::warn!(problem = %p, "image manifests");
    }
    Images::load(
        found
            .manifests
            .iter()
            .map(|(s, b)| (s.as_str(), b.as_slice())),
        keys,
        at,
    )
}

impl Collateral for StoreCollateral {
    fn images<'a>(&'a self, keys: &'a KeySet, at: i64) -> BoxFuture<'a, Images> {
        Box::pin(async move {
            let accepts = |m: &[u8]| !Images::load([("", m)], keys, at).accepted().is_empty();
            verified_images(
                self.store.image_manifests(&self.manifests, &accepts).await,
                keys,
                at,
            )
        })
    }

    fn snp<'a>(
        &'a self,
        report: &'a [u8],
        certs: Option<&'a [u8]>,
        at: i64,
    ) -> BoxFuture<'a, Result<Arc<SnpEndorsement>, String>> {
        Box::pin(async move {
            // A VLEK is the cloud provider's, not in AMD KDS: it comes from
            // the certificate table the host gave with the report, and is
            // checked against the pinned ASVK and AMD's VLEK CRL.
            if snp::signer_of_report(report) == Some(tvm_certs::AmdSigner::Vlek) {
                let table = certs.ok_or(
                    "the report is signed by a VLEK but came without its certificate table: the host must give the extended report's certificates (the VLEK is the cloud provider's)",
                )?;
                let vlek = snp::endorsement_key_of_table(table, tvm_certs::AmdSigner::Vlek)?;
                let e = SnpEndorsement::prepare(&vlek, None);
                let crl = match e.product_and_signer() {
                    Some((product, signer)) => self
                        .store
                        .amd_crl(product, signer, at)
                        .await
                        .map(|(der, _)| der)
                        .map_err(|e| format!("AMD CRL unavailable ({e})")),
                    None => Err("the certificate table's VLEK is not an AMD VLEK".to_string()),
                };
                return Ok(Arc::new(e.with_crl(crl.as_deref().map_err(Clone::clone))));
            }
            // The chip's VCEK from AMD KDS (cached), and AMD's CRL for it.
            let (chip_id, tcb) = snp::vcek_request(report).map_err(|e| e.to_string())?;
            // A v2 report does not name its product: the one this chip was
            // found under before, else each in turn.
            let known = self
                .products
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&chip_id[..])
                .copied();
            let products = match known.or_else(|| snp::product_of_report(report)) {
                Some(p) => vec![p],
                None => tvm_certs::AmdProduct::ALL.to_vec(),
            };
            let mut why = Vec::new();
            let mut found = None;
            for product in products {
                match self.store.vcek(product, &chip_id, tcb).await {
                    Ok((vek, _)) => {
                        found = Some((product, vek));
                        break;
                    }
                    Err(e) => why.push(format!("{}: {e}", product.name())),
                }
            }
            let Some((product, vek)) = found else {
                return Err(format!(
                    "no VCEK from AMD KDS for this chip and TCB ({})",
                    why.join("; ")
                ));
            };
            self.products
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(chip_id.to_vec(), product);
            let crl = self
                .store
                .amd_crl(product, tvm_certs::AmdSigner::Vcek, at)
                .await
                .map(|(der, _)| der)
                .map_err(|e| format!("AMD CRL unavailable ({e})"));
            Ok(Arc::new(
                SnpEndorsement::prepare(&vek, None).with_crl(crl.as_deref().map_err(Clone::clone)),
            ))
        })
    }

    fn tdx<'a>(
        &'a self,
        quote: &'a [u8],
        at: i64,
    ) -> BoxFuture<'a, Result<Arc<TdxCollateral>, String>> {
        Box::pin(async move {
            // Only for a platform Intel vouched for: the PCK chain in the
            // quote verifies first (a forged FMSPC costs no PCS request).
            let root = tvm_certs::anchors::intel_sgx_root().map_err(|e| e.to_string())?;
            let (fmspc, ca) =
                tdx::verified_platform_of(quote, root, at).map_err(|e| e.to_string())?;
            // The PCK CRL differs by issuing CA: one entry per FMSPC and CA.
            let key = format!("{fmspc}/{}", ca.as_str());
            self.cache
                .get_or(&key, at, async {
                    let (raw, _) = self.store.tdx(&fmspc, ca, at).await.map_err(|e| {
                        tracing::warn!(fmspc = %fmspc, error = %e, "no TDX collateral");
                        format!("no Intel collateral for FMSPC {fmspc}: {e}")
                    })?;
                    let root = tvm_certs::anchors::intel_sgx_root().map_err(|e| e.to_string())?;
                    Ok(TdxCollateral::prepare(raw, root))
                })
                .await
        })
    }

    fn gpus<'a>(&'a self, devices: &'a [DeviceEvidence], at: i64) -> BoxFuture<'a, GpuCollateral> {
        Box::pin(async move {
            let (mut rims, problems) = gpu_collateral::rims(&self.store, devices, at).await;
            for p in problems {
                tracing::warn!(problem = %p, "RIM unavailable");
            }
            gpu_collateral::rim_revocation(&self.store, &mut rims, at, self.grace_seconds).await;
            let revocation =
                gpu_collateral::revocation(&self.store, devices, at, self.grace_seconds).await;
            GpuCollateral { rims, revocation }
        })
    }
}

/// DEVNET ONLY: TDX collateral signed by the simulated Intel hierarchy.
pub struct SimulatedPcs {
    intel: SimIntel,
    cache: Cache,
    /// Folders of signed manifests (the devnet's own, signed by its key).
    pub manifests: Vec<String>,
}

impl SimulatedPcs {
    pub fn load(dir: &Path) -> Result<Self, RunError> {
        let intel = SimIntel::load(dir).map_err(|e| {
            RunError::Setup(format!(
                "dangerous_simulated_pcs {}: {e} (make it with `tvm-agent sim-init`)",
                dir.display()
            ))
        })?;
        Ok(SimulatedPcs {
            intel,
            cache: Cache::default(),
            // The devnet's own manifest, signed by its key (`tvm-agent sim-init`).
            manifests: vec![dir.join("manifests").display().to_string()],
        })
    }
}

impl SimulatedPcs {
    /// Fresh simulated collateral (made again once an hour old).
    pub async fn collateral(&self, at: i64) -> Result<Arc<TdxCollateral>, String> {
        self.cache
            .get_or("sim", at, async {
                let raw = self
                    .intel
                    .collateral(at)
                    .map_err(|e| format!("simulated collateral: {e}"))?;
                Ok(TdxCollateral::prepare(raw, self.intel.root_der()))
            })
            .await
    }
}

impl Collateral for SimulatedPcs {
    fn tdx<'a>(
        &'a self,
        _quote: &'a [u8],
        at: i64,
    ) -> BoxFuture<'a, Result<Arc<TdxCollateral>, String>> {
        Box::pin(self.collateral(at))
    }
    fn images<'a>(&'a self, keys: &'a KeySet, at: i64) -> BoxFuture<'a, Images> {
        let found = tvm_certs::store::manifests_in_folders(&self.manifests);
        Box::pin(async move { verified_images(found, keys, at) })
    }
}

fn is_chain_error(e: &RunError) -> bool {
    matches!(e, RunError::Service(ServiceError::Chain(_)))
}

/// A configured validator: keys, database, policy, collateral, chain.
pub struct Validator {
    pub cfg: RunConfig,
    pub db: Arc<Db>,
    hotkey: Hotkey,
    attester: Attester,
    policy: Policy,
    collateral: Box<dyn Collateral>,
    round: RoundConfig,
    client: Option<Client>,
    miners: Vec<Miner>,
    v5: Option<crate::v5::V5>,
}

impl Validator {
    /// Load everything the config names and connect to the chain (retrying
    /// for up to a minute).
    pub async fn start(cfg: RunConfig) -> Result<Self, RunError> {
        cfg.validate().map_err(RunError::Setup)?;
        let hotkey = cfg.hotkey()?;
        let db = Arc::new(
            Db::open(&cfg.database)
                .map_err(|e| RunError::Setup(format!("{e} (is the database path writable?)")))?,
        );
        let policy = match &cfg.policy {
            Some(p) => Policy::load(p).map_err(|e| RunError::Setup(e.to_string()))?,
            None => Policy::default(),
        };
        if !policy.images.dangerous_allow_unmeasured {
            if policy.images.operator_keys.keys.is_empty() {
                tracing::warn!("the policy pins no image operator key (images.operator_keys): every node will fail `measurement` (docs/operator.md)");
            } else if cfg.manifests.is_empty() && cfg.dangerous_simulated_pcs.is_none() {
                tracing::warn!("no manifests source is configured: only manifests already in the collateral store count (docs/validator.md)");
            }
        }
        let timeout = Duration::from_secs(cfg.node_timeout_seconds.max(1));
        let mut attester =
            Attester::new(hotkey.clone(), timeout).map_err(|e| RunError::Setup(e.to_string()))?;
        attester.ports = cfg.evidence_ports.clone();
        attester.plain_http = policy.dangerous_allow_plain_http;
        let collateral: Box<dyn Collateral> = match &cfg.dangerous_simulated_pcs {
            Some(dir) => {
                tracing::warn!(dir = %dir.display(), "DEVNET: TDX collateral from the SIMULATED PCS");
                let mut pcs = SimulatedPcs::load(dir)?;
                pcs.manifests.extend(cfg.manifests.iter().cloned());
                Box::new(pcs)
            }
            None => Box::new(StoreCollateral::new(
                cfg.store()?,
                policy.gpu.ocsp_grace_seconds,
                cfg.manifests.clone(),
            )),
        };
        let miners = cfg
            .miners
            .iter()
            .map(|m| {
                Ok(Miner {
                    uid: m.uid,
                    hotkey: AccountId::from_ss58(&m.hotkey).map_err(|e| {
                        RunError::Setup(format!("miner uid {}: hotkey: {e}", m.uid))
                    })?,
                    axon: m.axon,
                })
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        let client = match &cfg.chain_endpoint {
            None => None,
            Some(url) => Some(
                Client::connect_with_backoff(url, Duration::from_secs(60), |e, wait| {
                    tracing::warn!(error = %e, retry_in = ?wait, "chain not reachable");
                })
                .await
                .map_err(|e| RunError::Service(e.into()))?,
            ),
        };
        // Every try, the pauses between them, then collateral and appraisal.
        let node_deadline = timeout * (cfg.retries + 1) + Duration::from_secs(30);
        // Attest for at most half the epoch: the rest is for setting weights
        // (and a chain that is slow to take them).
        let epoch = match cfg.chain_endpoint {
            Some(_) => Duration::from_secs(cfg.epoch_blocks.saturating_mul(12)),
            None => Duration::from_secs(cfg.epoch_seconds),
        };
        let round = RoundConfig {
            concurrency: cfg.concurrency.max(1),
            node_timeout: timeout,
            node_deadline,
            miner_budget: Default::default(),
            round_deadline: Some((epoch / 2).max(node_deadline)),
            retries: cfg.retries,
            scoring: cfg.scoring.clone(),
            dangerous_allow_private_addresses: cfg.dangerous_allow_private_addresses,
        };
        let v5 = cfg
            .v5
            .clone()
            .map(crate::v5::V5::new)
            .transpose()
            .map_err(RunError::Setup)?;
        if let Some(v5) = &v5 {
            match db.state("v5") {
                Ok(Some(json)) => {
                    if let Err(e) = v5.restore(&json) {
                        tracing::warn!(error = %e, "the stored v5 windows could not be read; they start again");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the stored v5 windows could not be read; they start again")
                }
            }
        }
        Ok(Validator {
            cfg,
            hotkey,
            db,
            attester,
            policy,
            collateral,
            round,
            client,
            miners,
            v5,
        })
    }

    /// What the status pages say about this validator.
    pub fn status_info(&self) -> crate::status::StatusInfo {
        crate::status::StatusInfo {
            validator: self.hotkey.account_id().to_ss58(),
            simulated: self.policy.dangerous_trust_simulated.is_some(),
            network: match &self.cfg.chain_endpoint {
                Some(url) => format!("subtensor {url}, netuid {}", self.cfg.netuid),
                None => format!(
                    "no chain: weights written to {}",
                    self.cfg.weights_file.display()
                ),
            },
        }
    }

    fn service(&self) -> Service<'_> {
        let network = match &self.client {
            Some(client) => Network::Chain {
                client,
                netuid: self.cfg.netuid,
                version_key: self.cfg.version_key,
                block_time: self.cfg.block_seconds,
                beacon: match self.cfg.dangerous_chain_drand_beacon {
                    true => tvm_chain::client::BeaconTrust::DangerousChain,
                    false => tvm_chain::client::BeaconTrust::Quicknet,
                },
            },
            None => Network::Offline {
                miners: &self.miners,
                weights_file: &self.cfg.weights_file,
            },
        };
        Service {
            network,
            db: &self.db,
            attester: &self.attester,
            validator: &self.hotkey,
            policy: &self.policy,
            collateral: self.collateral.as_ref(),
            round: &self.round,
            v5: self.v5.as_ref(),
        }
    }

    /// The epoch now: the chain's best block over `epoch_blocks`, or the
    /// clock over `epoch_seconds` without a chain.
    pub async fn current_epoch(&self) -> Result<u64, RunError> {
        Ok(match &self.client {
            Some(c) => c.best_block().await.map_err(ServiceError::from)? / self.cfg.epoch_blocks,
            None => now().max(0) as u64 / self.cfg.epoch_seconds,
        })
    }

    /// Run (or resume, or skip if done) the round of `epoch`.
    pub async fn run_epoch(&self, epoch: u64) -> Result<EpochOutcome, RunError> {
        tracing::info!(epoch, "round starts");
        let out = service::run_epoch(&self.service(), epoch).await?;
        match &out {
            EpochOutcome::AlreadyDone { epoch } => {
                tracing::info!(epoch, "round already finished")
            }
            EpochOutcome::Done {
                epoch,
                report,
                weights,
            } => {
                let accepted = report
                    .scores
                    .nodes
                    .iter()
                    .filter(|(n, _)| n.accepted == Some(true))
                    .count();
                tracing::info!(
                    epoch,
                    nodes = report.scores.nodes.len(),
                    accepted,
                    weights = %weights,
                    "round finished"
                );
            }
        }
        Ok(out)
    }

    /// Send `epoch`'s weights again if they did not land (see
    /// [`service::resend_weights`]).
    pub async fn resend_weights(&self, epoch: u64) -> Result<Option<WeightsSent>, ServiceError> {
        service::resend_weights(&self.service(), epoch).await
    }

    /// Read back whether the chain revealed the commit of `epoch`'s round
    /// (recorded in the round; the dashboard shows it).
    pub async fn track_reveal(
        &self,
        epoch: u64,
    ) -> Result<Option<service::RevealSeen>, ServiceError> {
        service::track_reveal(&self.service(), epoch).await
    }

    /// Between rounds: the last round's commit read back once the chain
    /// should have revealed it (`track_reveal`, for this epoch and the one
    /// before, whose commit is revealed in this one), then its weights
    /// sent if they did not land.
    async fn after_round(&self, epoch: u64) -> Result<Option<WeightsSent>, ServiceError> {
        for e in [epoch.saturating_sub(1), epoch] {
            // A failed read-back never holds up sending weights.
            match service::track_reveal(&self.service(), e).await {
                Ok(Some(seen)) => {
                    tracing::info!(epoch = e, reveal = %seen, "weights commit read back")
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(epoch = e, error = %err, "cannot read the commit back yet")
                }
            }
        }
        service::resend_weights(&self.service(), epoch).await
    }

    /// Every epoch until the process ends: the current epoch's round at
    /// start (resumed if a crash left it) unless `done` says it ran
    /// already, then one each time the epoch turns; weights that did not
    /// land are sent again while their epoch lasts. Errors are logged and
    /// retried (the chain connection rebuilt after three in a row); they
    /// never end the loop.
    pub async fn run_forever(mut self, mut done: Option<u64>) -> ! {
        // Chain failures in a row; the connection is rebuilt after three.
        let mut chain_failures = 0u32;
        // Refusals by the chain are sent again at most this often per epoch.
        const MAX_REFUSED: u32 = 3;
        let mut refused: (u64, u32) = (0, 0);
        let poll = Duration::from_secs(self.cfg.poll_seconds.max(1));
        loop {
            let chain_ok = match self.current_epoch().await {
                Ok(epoch) if done.is_none_or(|d| epoch > d) => match self.run_epoch(epoch).await {
                    Ok(_) => {
                        done = Some(epoch);
                        true
                    }
                    Err(e) => {
                        tracing::error!(epoch, error = %e, "round failed; retrying");
                        !is_chain_error(&e)
                    }
                },
                // Only the epoch just done: a lagging node's older epoch
                // never sends its weights over newer ones.
                Ok(epoch) if done != Some(epoch) => true,
                Ok(epoch) if refused.0 == epoch && refused.1 >= MAX_REFUSED => true,
                Ok(epoch) => match self.after_round(epoch).await {
                    Ok(Some(w)) => {
                        if let WeightsSent::Refused { .. } = w {
                            refused = (epoch, if refused.0 == epoch { refused.1 + 1 } else { 1 });
                        }
                        tracing::info!(epoch, weights = %w, "weights sent after the round");
                        true
                    }
                    Ok(None) => true,
                    Err(e) => {
                        tracing::warn!(epoch, error = %e, "weights not sent; retrying");
                        !matches!(e, ServiceError::Chain(_))
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the epoch; retrying");
                    !is_chain_error(&e)
                }
            };
            chain_failures = if chain_ok { 0 } else { chain_failures + 1 };
            if chain_failures >= 3 {
                self.reconnect().await;
                chain_failures = 0;
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn reconnect(&mut self) {
        let Some(url) = &self.cfg.chain_endpoint else {
            return;
        };
        match Client::connect(url).await {
            Ok(c) => {
                tracing::info!(url = %url, "reconnected to the chain");
                self.client = Some(c);
            }
            Err(e) => tracing::warn!(error = %e, "reconnect failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<RunConfig, RunError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("validator.yaml");
        std::fs::write(&p, yaml).unwrap();
        RunConfig::load(&p)
    }

    #[test]
    fn configs_are_checked_before_anything_runs() {
        let ok = load("hotkey_phrase: \"//V\"\nchain_endpoint: \"ws://127.0.0.1:9944\"\n").unwrap();
        assert_eq!((ok.netuid, ok.epoch_blocks), (4, 360));
        let typo = load("hotkey_phrase: \"//V\"\nchain_endpiont: \"ws://x\"\n").unwrap_err();
        assert!(typo.to_string().contains("chain_endpiont"), "{typo}");
        let neither = load("hotkey_phrase: \"//V\"\n").unwrap_err();
        assert!(
            neither
                .to_string()
                .contains("no chain_endpoint and no miners"),
            "{neither}"
        );
        let both = load(
            "hotkey_phrase: \"//V\"\nchain_endpoint: \"ws://x\"\nminers: [{uid: 1, hotkey: \"5F\", axon: \"1.2.3.4:1\"}]\n",
        )
        .unwrap_err();
        assert!(both.to_string().contains("drop `miners`"), "{both}");
        let ports =
            load("hotkey_phrase: \"//V\"\nchain_endpoint: \"ws://x\"\nevidence_ports: []\n")
                .unwrap_err();
        assert!(ports.to_string().contains("evidence_ports"), "{ports}");
        let no_key = load("chain_endpoint: \"ws://x\"\n")
            .unwrap()
            .hotkey()
            .unwrap_err();
        assert!(no_key.to_string().contains("hotkey_phrase"), "{no_key}");
        // A typo next to the phrase: the error must not quote the file.
        let typo = load("hotkey_phrase: \"//SecretValidatorPhrase\"\nchain_endpiont: \"ws://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("chain_endpiont"), "{typo}");
        assert!(!typo.contains("SecretValidatorPhrase"), "{typo}");
        // A config is logged with Debug: the secret phrase must not be in it.
        let secret = load(
            "hotkey_phrase: \"//SecretValidatorPhrase\"\nchain_endpoint: \"ws://127.0.0.1:9944\"\n",
        )
        .unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("SecretValidatorPhrase"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
