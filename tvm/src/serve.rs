//! `tvm serve`: the miner's axon. Validators `GET /cvm` (Epistula-signed for
//! this miner's hotkey) and get the CVMs to attest. Only callers in the
//! metagraph with a validator permit and at least `min_stake` get the list,
//! with Targon's statuses for everyone else. The metagraph is refreshed
//! periodically, the node list re-read when its file changes, and the axon
//! announced on chain at start when it differs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tvm_chain::calls::ServeAxon;
use tvm_chain::client::Client;
use tvm_chain::neurons::{ip_number, Neuron};
use tvm_protocol::epistula::{Recipient, SignedHeaders, Verifier};
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_protocol::nodes::{parse_node_list, NodeEntry};
use tvm_protocol::replay::ReplayGuard;

/// Rao per alpha.
const RAO: f64 = 1e9;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The miner's hotkey as a secret URI (mnemonic, `0x` seed, `//Dev`)...
    pub hotkey_phrase: Option<tvm_protocol::wallet::SecretPhrase>,
    /// ...or a bittensor wallet hotkey file.
    pub hotkey_file: Option<PathBuf>,
    /// The CVMs to list, in Targon's form.
    pub nodes: Vec<NodeEntry>,
    /// Or a file holding them (JSON, either list form), re-read when it changes.
    pub nodes_file: Option<PathBuf>,
    pub port: u16,
    pub listen_ip: IpAddr,
    pub chain_endpoint: String,
    pub netuid: u16,
    /// The public address validators reach this axon at; announced with
    /// `serve_axon` when the chain says otherwise. Absent: not announced.
    pub external_ip: Option<IpAddr>,
    /// Least stake (alpha) a validator needs to get the list.
    pub min_stake: f64,
    /// Serve `["ip", ...]` instead of `[{"ip", "price"}]` (older validators).
    pub legacy_format: bool,
    pub refresh_seconds: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            hotkey_phrase: None,
            hotkey_file: None,
            nodes: Vec::new(),
            nodes_file: None,
            port: 7777,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            chain_endpoint: "wss://entrypoint-finney.opentensor.ai:443".into(),
            netuid: 4,
            external_ip: None,
            min_stake: 1000.0,
            legacy_format: false,
            refresh_seconds: 1800,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("the miner hotkey: {0}")]
    Hotkey(String),
    #[error("node list {path}: {reason}")]
    Nodes { path: String, reason: String },
    #[error("cannot listen on {addr}: {reason} (is another `tvm serve` running?)")]
    Listen { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Chain(#[from] tvm_chain::client::ClientError),
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let bad = |reason: String| ServeError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let text = zeroize::Zeroizing::new(text);
        // No source snippet in errors: the lines around a typo may hold the phrase.
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(&text, options).map_err(|e| bad(e.to_string()))
    }

    pub fn hotkey(&self) -> Result<Hotkey, ServeError> {
        tvm_protocol::wallet::configured_hotkey(
            self.hotkey_phrase.as_ref().map(|p| p.expose()),
            self.hotkey_file.as_deref(),
        )
        .map_err(ServeError::Hotkey)
    }
}

/// Read a node list file (either `/cvm` form).
pub fn read_nodes(path: &Path) -> Result<Vec<NodeEntry>, ServeError> {
    let bad = |reason: String| ServeError::Nodes {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse_node_list(&bytes).map_err(|e| bad(e.to_string()))
}

/// What a validator must have, by hotkey: (permit, stake in rao).
type Validators = HashMap<AccountId, (bool, u64)>;

pub struct Axon {
    miner: AccountId,
    verifier: Verifier,
    nodes: RwLock<Vec<NodeEntry>>,
    /// `None` until the metagraph has been read once.
    validators: RwLock<Option<Validators>>,
    min_stake_rao: u64,
    legacy: bool,
}

impl Axon {
    pub fn new(miner: AccountId, nodes: Vec<NodeEntry>, min_stake: f64, legacy: bool) -> Self {
        Axon {
            miner,
            verifier: Verifier::new(Recipient::Hotkey(miner))
                .with_replay_guard(Arc::new(ReplayGuard::default())),
            nodes: RwLock::new(nodes),
            validators: RwLock::new(None),
            min_stake_rao: (min_stake.max(0.0) * RAO) as u64,
            legacy,
        }
    }

    pub fn set_metagraph(&self, neurons: &[Neuron]) {
        let map = neurons
            .iter()
            .map(|n| (n.hotkey, (n.validator_permit, n.stake)))
            .collect();
        if let Ok(mut v) = self.validators.write() {
            *v = Some(map);
        }
    }

    pub fn set_nodes(&self, nodes: Vec<NodeEntry>) {
        if let Ok(mut n) = self.nodes.write() {
            *n = nodes;
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(|| async { "PONG" }))
            .route("/cvm", get(cvm))
            .with_state(self)
    }

    /// Targon's order: starting up, signature, signer known, permit, stake.
    fn answer(&self, headers: &HeaderMap) -> Result<Vec<NodeEntry>, (StatusCode, &'static str)> {
        let validators = self
            .validators
            .read()
            .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "Still starting up..."))?;
        let Some(validators) = validators.as_ref() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "Still starting up..."));
        };
        let forbidden = |m| (StatusCode::FORBIDDEN, m);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let signer = SignedHeaders::parse(|n| headers.get(n).and_then(|v| v.to_str().ok()))
            .and_then(|h| self.verifier.verify(&h, b"", now))
            .map_err(|_| forbidden("Invalid Signature"))?
            .signer;
        let Some(&(permit, stake)) = validators.get(&signer) else {
            return Err(forbidden("Not valid signer"));
        };
        if !permit {
            return Err(forbidden("No VPermit"));
        }
        if stake < self.min_stake_rao {
            return Err(forbidden("Stake too low"));
        }
        Ok(self.nodes.read().map(|n| n.clone()).unwrap_or_default())
    }

    pub fn has_metagraph(&self) -> bool {
        self.validators.read().map(|v| v.is_some()).unwrap_or(false)
    }

    pub fn miner(&self) -> AccountId {
        self.miner
    }
}

async fn cvm(State(axon): State<Arc<Axon>>, headers: HeaderMap) -> Response {
    match axon.answer(&headers) {
        Ok(nodes) if axon.legacy => {
            Json(nodes.into_iter().map(|n| n.ip).collect::<Vec<_>>()).into_response()
        }
        Ok(nodes) => Json(nodes).into_response(),
        Err((status, msg)) => (status, msg).into_response(),
    }
}

/// Announce the axon when the chain holds another address for this hotkey.
/// `Ok(true)` when nothing is left to do (announced, already right, or no
/// `external_ip` configured); `Ok(false)` to try again at the next refresh.
async fn announce(
    client: &Client,
    cfg: &ServeConfig,
    hotkey: &Hotkey,
    neurons: &[Neuron],
) -> Result<bool, ServeError> {
    let Some(ip) = cfg.external_ip else {
        tracing::warn!("external_ip is not set: the axon is not announced on chain");
        return Ok(true);
    };
    let me = hotkey.account_id();
    let Some(n) = neurons.iter().find(|n| n.hotkey == me) else {
        tracing::warn!(hotkey = %me.to_ss58(), netuid = cfg.netuid, "this hotkey is not registered on the subnet: register it (btcli subnet register); the axon is announced at the next refresh after that");
        return Ok(false);
    };
    if n.axon == Some((ip, cfg.port)) {
        return Ok(true);
    }
    let (num, ip_type) = ip_number(ip);
    client
        .serve_axon(
            hotkey,
            ServeAxon {
                netuid: cfg.netuid,
                version: 1,
                ip: num,
                port: cfg.port,
                ip_type,
                protocol: 4,
                placeholder1: 0,
                placeholder2: 0,
            },
        )
        .await?;
    tracing::info!(%ip, port = cfg.port, "axon announced on chain");
    Ok(true)
}

/// Run the axon until the process ends.
pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    let hotkey = cfg.hotkey()?;
    let nodes = match &cfg.nodes_file {
        Some(p) => read_nodes(p)?,
        // The same checks as a file (count, no empty address).
        None => {
            let json = serde_json::to_vec(&cfg.nodes).unwrap_or_default();
            parse_node_list(&json).map_err(|e| ServeError::Nodes {
                path: "nodes (config)".into(),
                reason: e.to_string(),
            })?
        }
    };
    let axon = Arc::new(Axon::new(
        hotkey.account_id(),
        nodes,
        cfg.min_stake,
        cfg.legacy_format,
    ));
    let addr = SocketAddr::new(cfg.listen_ip, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Listen {
            addr,
            reason: e.to_string(),
        })?;
    tracing::info!(%addr, miner = %hotkey.account_id().to_ss58(), "tvm serve listening (500 until the metagraph is read)");
    let app = axon.clone().router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    if let Some(path) = cfg.nodes_file.clone() {
        let axon = axon.clone();
        tokio::spawn(async move {
            let mut last = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if now == last {
                    continue;
                }
                last = now;
                match read_nodes(&path) {
                    Ok(n) => {
                        tracing::info!(nodes = n.len(), "node list re-read");
                        axon.set_nodes(n);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "node list not re-read; keeping the previous one")
                    }
                }
            }
        });
    }

    let connect = |url: String| async move {
        Client::connect_with_backoff(&url, Duration::from_secs(3600), |e, wait| {
            tracing::warn!(error = %e, retry_in = ?wait, "chain not reachable yet");
        })
        .await
    };
    let mut client = connect(cfg.chain_endpoint.clone()).await?;
    let mut announced = false;
    loop {
        match client.neurons(cfg.netuid).await {
            Ok(neurons) => {
                axon.set_metagraph(&neurons);
                if !announced {
                    match announce(&client, &cfg, &hotkey, &neurons).await {
                        Ok(done) => announced = done,
                        Err(e) => {
                            tracing::error!(error = %e, "serve_axon failed; retrying at the next refresh")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metagraph not refreshed; keeping the previous one and reconnecting");
                // A dropped connection is not rebuilt by the RPC client itself.
                match connect(cfg.chain_endpoint.clone()).await {
                    Ok(c) => client = c,
                    Err(e) => tracing::error!(error = %e, "chain still unreachable"),
                }
            }
        }
        if server.is_finished() {
            return Err(ServeError::Listen {
                addr,
                reason: "the server stopped".into(),
            });
        }
        // Until the first metagraph is in, validators get 500: retry soon.
        let wait = match axon.has_metagraph() {
            false => cfg.refresh_seconds.clamp(1, 10),
            true => cfg.refresh_seconds.max(1),
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}
