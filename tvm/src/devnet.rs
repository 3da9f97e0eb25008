//! `tvm devnet`: the whole network on one machine, every part the real code.
//! A loopback test chain (banner TEST CHAIN), three miners running `tvm
//! serve` (each announces its axon with `serve_axon`), seven SIMULATED agents
//! and four misbehaving nodes, and a validator running the same service
//! as `tvm-verifier run`. One epoch is run at once and its verdicts and the
//! weights the chain took are printed (with commit-reveal, the default, once
//! the chain revealed the validator's commit); the dashboard stays up until
//! Ctrl-C (or the command exits after one epoch with `--once`).
//!
//! The nodes (one port number, one loopback address per "machine"):
//!
//! uid 0 is the subnet owner (the burn uid), 1 the validator, 2–4 the miners.
//!
//! | address     | uid   | what it is                                                 |
//! |-------------|-------|------------------------------------------------------------|
//! | 127.0.0.11  | 2     | honest agent, 2 GPUs; serves the toy model honestly        |
//! | 127.0.0.12  | 2     | honest agent, 1 GPU (relayed by .14); serves the toy model honestly |
//! | 127.0.0.13  | 3     | honest agent, 1 GPU (cloned by .16)                        |
//! | 127.0.0.18  | 3     | honest agent, 1 GPU; serves another model under the toy's name (v5 cheater) |
//! | 127.0.0.20  | 3     | honest HGX H200 board: 8 GPUs + 4 NVSwitches in protected PCIe |
//! | 127.0.0.14  | 4     | relay: asks .12's agent for evidence on our nonce under its own key; the agent refuses a nonce its signer did not make |
//! | 127.0.0.15  | 4     | answers with evidence for a nonce of its own (agent at .21)  |
//! | 127.0.0.16  | 4     | agent presenting .13's GPU as its own                      |
//! | 127.0.0.17  | 4     | listed, nothing listening                                  |
//! | 127.0.0.19  | 4     | honest hardware, but an image no operator manifest lists   |
//!
//! After attestation the validator asks the accepted nodes that serve the
//! toy model (`toy/tvm-toy-1`, a deterministic model with known
//! probabilities, checked against the built-in toy reference) three
//! requests each: uid 2 earns the v5 share, uid 3's answers fail
//! `v5.tokens` and earn it nothing. With `--model-file` a real small model
//! (GGUF) takes the toy's place: served by the honest runtimes, checked by
//! the validator's built-in reference; the cheater still serves the toy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tvm_agent::backend::sim::{Shape, SimDevices, SimTee};
use tvm_agent::config::{Allow, Config, GpuChoice, TeeChoice};
use tvm_agent::{Agent, Running};
use tvm_chain::client::Client;
use tvm_chain::testchain::rules::{Fixture, FixtureNeuron};
use tvm_chain::testchain::server::TestChain;
use tvm_protocol::evidence::EvidenceRequest;
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_protocol::nodes::NodeEntry;
use tvm_protocol::nonce::Nonce;
use tvm_validator::attest::Attester;
use tvm_validator::round::RoundReport;
use tvm_validator::run::{RunConfig, Validator};
use tvm_validator::service::{EpochOutcome, WeightsSent};

use crate::serve::ServeConfig;

const NETUID: u16 = 4;
/// The test chain's tempo: a commit is revealed within two of its epochs.
const CHAIN_TEMPO: u16 = 10;
const VALIDATOR: &str = "//Validator";
const MINERS: [&str; 3] = ["//Miner1", "//Miner2", "//Miner3"];

pub struct DevnetOptions {
    /// Exit after the first epoch.
    pub once: bool,
    /// The test chain runs commit-reveal (finney's default): the validator
    /// commits, the chain reveals in its next epoch.
    pub commit_reveal: bool,
    /// Where the simulated hierarchy and the validator's database live
    /// (default: a fresh folder under the system's temporary directory).
    pub dir: Option<PathBuf>,
    /// The validator's dashboard, status API and metrics.
    pub dashboard: SocketAddr,
    /// Test chain block time.
    pub block_time: Duration,
    /// Blocks per epoch (the first runs at once, whatever the block).
    pub epoch_blocks: u64,
    /// A real small model (GGUF) for the sealed runtimes to serve and the
    /// validator to check with its built-in reference, instead of the toy.
    pub model_file: Option<PathBuf>,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        DevnetOptions {
            once: false,
            commit_reveal: true,
            dir: None,
            dashboard: SocketAddr::from(([127, 0, 0, 1], 9100)),
            block_time: Duration::from_secs(1),
            epoch_blocks: 60,
            model_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("devnet: {0}")]
    Setup(String),
    #[error("devnet: the weights did not land: {0}")]
    Weights(String),
}

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> DevnetError {
    move |e| DevnetError::Setup(format!("{what}: {e}"))
}

fn host(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn dev_key(uri: &str) -> Result<Hotkey, DevnetError> {
    Hotkey::from_uri(uri).map_err(|e| DevnetError::Setup(format!("key {uri}: {e}")))
}

/// A SIMULATED agent's configuration for `miner` (a dev URI such as
/// `//Miner1`) with `gpus` GPUs, open to any signer (the devnet's
/// misbehaving nodes call agents themselves); the hierarchy lives in `sim`.
pub fn agent_config(sim: &Path, miner: &str, gpus: usize) -> Result<Config, DevnetError> {
    let mut cfg = Config {
        hotkey: dev_key(miner)?.account_id().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    cfg.sim.dir = sim.to_path_buf();
    cfg.sim.gpus = gpus;
    cfg.access.allow = Allow::AnySigner;
    Ok(cfg)
}

fn start_agent(
    sim: &Path,
    miner: &str,
    gpus: usize,
    at: SocketAddr,
) -> Result<Running, DevnetError> {
    start_agent_with(agent_config(sim, miner, gpus)?, at)
}

fn start_agent_with(cfg: Config, at: SocketAddr) -> Result<Running, DevnetError> {
    Agent::build(&cfg)
        .and_then(|a| a.start_at(at))
        .map_err(setup("agent"))
}

/// Two agents sharing one simulated GPU: `victim` for `miner_a`, `clone` for `miner_b`.
fn start_cloned_pair(
    sim: &Path,
    (miner_a, at_a): (&str, SocketAddr),
    (miner_b, at_b): (&str, SocketAddr),
) -> Result<(Running, Running), DevnetError> {
    let (_, nvidia) = tvm_agent::backend::sim::hierarchy(sim).map_err(setup("sim hierarchy"))?;
    let gpu = Arc::new(
        SimDevices::issue(&nvidia, Shape::gpus(1), Duration::ZERO).map_err(setup("sim GPU"))?,
    );
    let run = |miner: &str, at: SocketAddr| -> Result<Running, DevnetError> {
        let cfg = agent_config(sim, miner, 1)?;
        let tee = SimTee::open(&cfg.sim).map_err(setup("sim TDX"))?;
        Agent::with_backends(&cfg, (Box::new(tee), Box::new(gpu.clone())))
            .and_then(|a| a.start_at(at))
            .map_err(setup("agent"))
    };
    Ok((run(miner_a, at_a)?, run(miner_b, at_b)?))
}

/// How a misbehaving node answers a validator.
#[derive(Clone, Copy)]
enum Trick {
    /// Ask the victim agent for evidence on the validator's nonce, pass it on.
    Relay,
    /// Ask its agent with a nonce of its own (as a replay of old evidence would).
    WrongNonce,
}

struct Rogue {
    trick: Trick,
    /// The agent it gets evidence from, and that agent's miner.
    source: NodeEntry,
    source_miner: AccountId,
    attester: Attester,
    me: AccountId,
}

async fn rogue_evidence(State(r): State<Arc<Rogue>>, body: axum::body::Bytes) -> Response {
    // A cheat checks nothing: it takes the validator's nonce and goes.
    let Ok(req) = serde_json::from_slice::<EvidenceRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"nonce\"}").into_response();
    };
    let nonce = match r.trick {
        Trick::Relay => req.nonce,
        Trick::WrongNonce => Nonce::generate(&r.me),
    };
    match r
        .attester
        .evidence(&r.source, &r.source_miner, &nonce)
        .await
    {
        Ok(f) => match serde_json::to_vec(&f.bundle) {
            Ok(json) => ([("content-type", "application/json")], json).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_rogue(
    trick: Trick,
    at: SocketAddr,
    source: IpAddr,
    source_miner: &str,
    port: u16,
) -> Result<(), DevnetError> {
    let key = dev_key(&format!("//Rogue{}", at.ip()))?;
    let mut attester =
        Attester::new(key.clone(), Duration::from_secs(10)).map_err(setup("rogue client"))?;
    attester.ports = vec![port];
    let rogue = Arc::new(Rogue {
        trick,
        source: NodeEntry {
            ip: source.to_string(),
            price: None,
        },
        source_miner: dev_key(source_miner)?.account_id(),
        attester,
        me: key.account_id(),
    });
    let app = Router::new()
        .route("/api/v1/evidence", post(rogue_evidence))
        .with_state(rogue);
    let l = tokio::net::TcpListener::bind(at)
        .await
        .map_err(setup("rogue listener"))?;
    // Over TLS with a key of its own, as a cheat would serve: validators do
    // not fall back to plain HTTP unless their policy allows it.
    let tls = tvm_agent::tls::TlsIdentity::generate(&[at.ip().to_string()])
        .and_then(|t| t.server_config())
        .map_err(setup("rogue TLS key"))?;
    tokio::spawn(tvm_agent::listener::serve(l, app, Some(tls)));
    Ok(())
}

/// [`agent_config`] with a sealed runtime at `upstream` serving `model`.
pub fn serving_config(
    sim: &Path,
    miner: &str,
    gpus: usize,
    upstream: &str,
    model: &str,
) -> Result<Config, DevnetError> {
    let mut cfg = agent_config(sim, miner, gpus)?;
    cfg.runtime.upstream = Some(upstream.to_string());
    cfg.runtime
        .models
        .insert(model.into(), tvm_agent::config::ModelRoute::default());
    Ok(cfg)
}

/// The model the devnet's sealed runtimes serve by default: the deterministic toy.
pub const TOY_MODEL: &str = "toy/tvm-toy-1";

/// The name a model file is served under: `gguf/` and its file name
/// without the extension.
pub fn gguf_model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    format!("gguf/{stem}")
}

/// A model's OpenAI server on loopback (the toy, paced like a fast real
/// one, or a real model as fast as the CPU runs it).
async fn start_toy(
    behaviour: tvm_inference::server::Behaviour,
    model: &str,
    gguf: Option<Arc<tvm_inference::gguf::GgufLm>>,
) -> Result<String, DevnetError> {
    let l = tokio::net::TcpListener::bind((host(1), 0))
        .await
        .map_err(setup("toy model server"))?;
    let url = format!(
        "http://{}",
        l.local_addr().map_err(setup("toy model server"))?
    );
    let paced = gguf.is_none();
    let cfg = tvm_inference::server::ToyConfig {
        behaviour,
        first_token: Duration::from_millis(if paced { 20 } else { 0 }),
        per_token: Duration::from_millis(if paced { 2 } else { 0 }),
        gguf,
        ..tvm_inference::server::ToyConfig::honest(&[model])
    };
    tokio::spawn(async move {
        if let Err(e) = tvm_inference::server::serve(l, cfg).await {
            tracing::error!(error = %e, "toy model server stopped");
        }
    });
    Ok(url)
}

fn free_port(ip: IpAddr) -> Result<u16, DevnetError> {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(setup("no free loopback port"))
}

/// The network, up: what `run` keeps alive.
struct Network {
    chain: TestChain,
    _agents: Vec<Running>,
    validator_uid: u16,
}

async fn start_network(
    opts: &DevnetOptions,
    dir: &Path,
) -> Result<(Network, RunConfig), DevnetError> {
    let sim = dir.join("sim");
    tvm_agent::backend::sim::init(&sim).map_err(setup("sim hierarchy"))?;
    let port = free_port(host(11))?;
    let at = |last: u8| SocketAddr::new(host(last), port);

    // The sealed runtimes: the model served honestly (miner 2's nodes)
    // and, under the same name, another toy model (miner 3's .18).
    let (model, gguf) = match &opts.model_file {
        None => (TOY_MODEL.to_string(), None),
        Some(path) => {
            let name = gguf_model_name(path);
            let lm = tvm_inference::gguf::GgufLm::load(path, &name).map_err(DevnetError::Setup)?;
            (name, Some(Arc::new(lm)))
        }
    };
    let honest_lm = start_toy(
        tvm_inference::server::Behaviour::Honest,
        &model,
        gguf.clone(),
    )
    .await?;
    let cheating_lm = start_toy(
        tvm_inference::server::Behaviour::OtherModel("toy/tvm-toy-impostor".into()),
        &model,
        gguf,
    )
    .await?;
    let serving = |miner: &str, gpus: usize, upstream: &str| {
        serving_config(&sim, miner, gpus, upstream, &model)
    };
    let mut agents = vec![
        start_agent_with(serving(MINERS[0], 2, &honest_lm)?, at(11))?,
        start_agent_with(serving(MINERS[0], 1, &honest_lm)?, at(12))?,
        start_agent_with(serving(MINERS[1], 1, &cheating_lm)?, at(18))?,
        // Not listed: the source of .15's stale evidence.
        start_agent(&sim, MINERS[2], 1, at(21))?,
    ];
    let (victim, clone) = start_cloned_pair(&sim, (MINERS[1], at(13)), (MINERS[2], at(16)))?;
    agents.extend([victim, clone]);
    // Genuine (simulated) hardware running a guest no manifest lists.
    let mut unlisted = agent_config(&sim, MINERS[2], 1)?;
    unlisted.sim.image = tvm_agent::config::SimImage::Unlisted;
    agents.push(start_agent_with(unlisted, at(19))?);
    // An HGX H200 board in protected-PCIe mode: 8 GPUs and 4 NVSwitches, linked.
    let mut hgx = agent_config(&sim, MINERS[1], 8)?;
    hgx.sim.switches = 4;
    hgx.sim.gpu_model = tvm_agent::config::SimGpuModel::H200Sxm;
    agents.push(start_agent_with(hgx, at(20))?);
    start_rogue(Trick::Relay, at(14), host(12), MINERS[0], port).await?;
    start_rogue(Trick::WrongNonce, at(15), host(21), MINERS[2], port).await?;

    let neuron = |uri: &str, stake: f64, permit: bool| FixtureNeuron {
        hotkey: uri.to_string(),
        coldkey: None,
        stake,
        validator_permit: permit,
        axon: None,
    };
    // uid 0: the subnet owner (where unearned weight is burned), uid 1: the validator, 2–4: miners.
    let mut neurons = vec![
        neuron("//Owner", 0.0, false),
        neuron(VALIDATOR, 5000.0, true),
    ];
    neurons.extend(MINERS.iter().map(|m| neuron(m, 0.0, false)));
    let fixture = Fixture {
        netuid: NETUID,
        weights_rate_limit: opts.epoch_blocks / 2,
        commit_reveal: opts.commit_reveal,
        // The chain's epochs are short so that a commit is revealed soon
        // (the validator's rounds keep `epoch_blocks`).
        tempo: CHAIN_TEMPO,
        beacon_period: 1,
        neurons,
        ..Fixture::default()
    };
    let chain = TestChain::start(fixture, tvm_chain::metadata::FINNEY, 0, opts.block_time)
        .await
        .map_err(setup("test chain"))?;

    let lists: [Vec<u8>; 3] = [vec![11, 12], vec![13, 18, 20], vec![14, 15, 16, 17, 19]];
    let mut axon_ports = Vec::new();
    for (miner, hosts) in MINERS.iter().zip(lists) {
        let port = free_port(host(1))?;
        axon_ports.push(port);
        let cfg = ServeConfig {
            hotkey_phrase: Some((*miner).into()),
            nodes: hosts
                .iter()
                .map(|h| NodeEntry {
                    ip: host(*h).to_string(),
                    price: Some(250),
                })
                .collect(),
            port,
            listen_ip: host(1),
            chain_endpoint: chain.url(),
            netuid: NETUID,
            external_ip: Some(host(1)),
            min_stake: 1000.0,
            refresh_seconds: 5,
            ..ServeConfig::default()
        };
        tokio::spawn(async move {
            if let Err(e) = crate::serve::run(cfg).await {
                tracing::error!(error = %e, "tvm serve stopped");
            }
        });
    }

    // Wait for the three axons to be on chain.
    let client = Client::connect(&chain.url())
        .await
        .map_err(setup("chain"))?;
    let mut validator_uid = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let neurons = client.neurons(NETUID).await.map_err(setup("metagraph"))?;
        let served = neurons.iter().filter(|n| n.axon.is_some()).count();
        if let Some(v) = neurons.iter().find(|n| n.validator_permit) {
            validator_uid = v.uid;
        }
        if served == MINERS.len() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DevnetError::Setup(format!(
                "only {served} of 3 miners announced their axon within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let validator = RunConfig {
        hotkey_phrase: Some(VALIDATOR.into()),
        chain_endpoint: Some(chain.url()),
        netuid: NETUID,
        epoch_blocks: opts.epoch_blocks,
        block_seconds: opts.block_time.as_secs_f64(),
        // The test chain runs its own (SIMULATED) drand beacon.
        dangerous_chain_drand_beacon: true,
        poll_seconds: 1,
        database: dir.join("validator.db"),
        status_listen: Some(opts.dashboard),
        policy: Some(sim.join(tvm_agent::backend::sim::POLICY_FILE)),
        evidence_ports: vec![port],
        concurrency: 16,
        node_timeout_seconds: 15,
        retries: 0,
        // Every node of the devnet is on loopback.
        dangerous_allow_private_addresses: true,
        dangerous_simulated_pcs: Some(sim),
        scoring: tvm_validator::scoring::ScoringConfig {
            burn_uid: 0,
            ..Default::default()
        },
        // One round (three answers a node) is enough to be paid on the devnet.
        v5: Some(match &opts.model_file {
            None => tvm_validator::v5::V5Config::toy(TOY_MODEL, 3),
            Some(path) => tvm_validator::v5::V5Config::gguf(&model, path, 3),
        }),
        ..RunConfig::default()
    };
    Ok((
        Network {
            chain,
            _agents: agents,
            validator_uid,
        },
        validator,
    ))
}

/// The per-node verdicts, in words, one line each.
pub fn verdict_table(report: &RoundReport) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "miner".into(),
        "node".into(),
        "verdict".into(),
        "counted".into(),
        "why".into(),
    ]];
    let mut nodes: Vec<_> = report.scores.nodes.iter().collect();
    nodes.sort_by(|a, b| (a.0.miner_uid, &a.0.node).cmp(&(b.0.miner_uid, &b.0.node)));
    for (n, s) in nodes {
        let verdict = match (n.accepted, n.simulated) {
            (Some(true), true) => "ACCEPTED (SIMULATED)",
            (Some(true), false) => "ACCEPTED",
            (Some(false), _) => "REJECTED",
            (None, _) => "NO EVIDENCE",
        };
        let counted = s.to_string();
        // Failed checks by name (the dashboard has every reason in full).
        let why = match n.accepted {
            Some(false) => {
                let mut names: Vec<&str> = n
                    .reasons
                    .iter()
                    .filter_map(|r| r.split(':').next())
                    .collect();
                names.dedup();
                format!("failed {}", names.join(", "))
            }
            Some(true) => gpu_summary(&n.gpus),
            None => n
                .reasons
                .first()
                .map(|r| r.chars().take(90).collect::<String>())
                .unwrap_or_default(),
        };
        rows.push([
            n.miner_uid.to_string(),
            n.node.clone(),
            verdict.into(),
            counted,
            why,
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// "8 × H200 SXM (G520_0280_895)": the GPUs the evidence named, by model.
fn gpu_summary(gpus: &[tvm_validator::scoring::GpuSeen]) -> String {
    let mut by_model: Vec<(&str, usize)> = Vec::new();
    for g in gpus {
        match by_model.iter_mut().find(|(m, _)| *m == g.model) {
            Some((_, n)) => *n += 1,
            None => by_model.push((&g.model, 1)),
        }
    }
    by_model
        .iter()
        .map(|(m, n)| format!("{n} × {m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn weights_line(weights: &[(u16, u16)]) -> String {
    weights
        .iter()
        .map(|(uid, w)| format!("uid {uid}: {w} ({:.1} %)", f64::from(*w) * 100.0 / 65535.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wait until the test chain has revealed the validator's commit; the
/// block it did so in, or why it dropped it.
async fn wait_for_reveal(net: &Network, block_time: Duration) -> Result<u32, DevnetError> {
    let me = Hotkey::from_uri(VALIDATOR)
        .map_err(setup("validator key"))?
        .account_id();
    // Two chain epochs and the beacon's period, with room for a slow machine.
    let deadline = tokio::time::Instant::now()
        + block_time * (2 * (u32::from(CHAIN_TEMPO) + 1))
        + Duration::from_secs(30);
    loop {
        if let Some(r) = net.chain.reveals().into_iter().find(|r| r.who == me) {
            return match r.result {
                Ok(()) => Ok(r.block as u32),
                Err(e) => Err(DevnetError::Weights(format!(
                    "the chain dropped the validator's commit: {e}"
                ))),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DevnetError::Weights(
                "the chain did not reveal the validator's commit in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run the devnet. Returns after one epoch with `once`, else at Ctrl-C.
pub async fn run(opts: DevnetOptions) -> Result<(), DevnetError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A fresh folder unless one is given (removed when this returns).
    let temporary = match &opts.dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("tvm-devnet-")
                .tempdir()
                .map_err(setup("devnet folder"))?,
        ),
    };
    let dir = match (&opts.dir, &temporary) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => return Err(DevnetError::Setup("no devnet folder".into())),
    };
    std::fs::create_dir_all(&dir).map_err(setup("devnet folder"))?;
    // The test chain starts at block 0 every time: so does the validator's record.
    let db = dir.join("validator.db");
    for f in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ] {
        if let Err(e) = std::fs::remove_file(&f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(DevnetError::Setup(format!(
                    "cannot remove the old {}: {e}",
                    f.display()
                )));
            }
        }
    }
    run_in(&opts, &dir).await
}

async fn run_in(opts: &DevnetOptions, dir: &Path) -> Result<(), DevnetError> {
    println!("tvm devnet: a TEST CHAIN, 3 miners, 7 SIMULATED agents, 4 misbehaving nodes and a validator, all on loopback.");
    println!("Nothing here is real hardware: every quote and GPU report is SIMULATED, signed by a local test hierarchy in {}.", dir.join("sim").display());
    let (net, cfg) = start_network(opts, dir).await?;
    println!(
        "test chain at {}; miners' axons announced.",
        net.chain.url()
    );
    let validator = Validator::start(cfg).await.map_err(setup("validator"))?;
    let dashboard = opts.dashboard;
    let listener = tokio::net::TcpListener::bind(dashboard)
        .await
        .map_err(|e| DevnetError::Setup(format!("cannot serve the dashboard on {dashboard}: {e} (is another devnet running? use --dashboard 127.0.0.1:0)")))?;
    let dashboard = listener.local_addr().map_err(setup("dashboard"))?;
    let app = tvm_validator::status::router(validator.db.clone(), validator.status_info());
    tokio::spawn(tvm_validator::status::serve(listener, app));

    let epoch = validator.current_epoch().await.map_err(setup("epoch"))?;
    let out = validator.run_epoch(epoch).await.map_err(setup("round"))?;
    let EpochOutcome::Done {
        epoch,
        report,
        mut weights,
    } = out
    else {
        return Err(DevnetError::Setup(
            "the first epoch was already done".into(),
        ));
    };
    // As the validator does between rounds: weights that could not go yet
    // (rate limit; a commit too close to a chain epoch's end, whose drand
    // round would already be out) are sent again a few blocks later.
    let deadline = tokio::time::Instant::now() + opts.block_time * 4 * u32::from(CHAIN_TEMPO + 1);
    while weights.retry() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(opts.block_time * 2).await;
        if let Some(w) = validator
            .resend_weights(epoch)
            .await
            .map_err(setup("weights"))?
        {
            weights = w;
        }
    }
    println!(
        "\nEpoch {epoch}: per-node verdicts (validator {})\n",
        VALIDATOR
    );
    print!("{}", verdict_table(&report));
    for n in &report.scores.notes {
        println!("note: {n}");
    }
    if !report.v5_answers.is_empty() {
        match &opts.model_file {
            None => println!("\nv5 answers ({TOY_MODEL}, checked against the toy reference):"),
            Some(p) => println!(
                "\nv5 answers ({}, checked against the built-in reference running {}):",
                gguf_model_name(p),
                p.display()
            ),
        }
        for a in &report.v5_answers {
            println!(
                "  uid {}  {:<11} {}  {}",
                a.uid,
                a.node,
                if a.verified { "verified" } else { "FAILED  " },
                a.detail
            );
        }
    }
    println!(
        "\nweights computed: {}",
        weights_line(&report.scores.weights)
    );
    let on_chain = || {
        net.chain
            .weights()
            .get(&net.validator_uid)
            .cloned()
            .unwrap_or_default()
    };
    match &weights {
        WeightsSent::Landed { .. } => {
            println!(
                "weights the chain accepted ({weights}): {}",
                weights_line(&on_chain())
            );
        }
        WeightsSent::Committed { .. } => {
            println!("weights {weights}");
            let block = wait_for_reveal(&net, opts.block_time).await?;
            println!(
                "weights the chain revealed and applied (block {block}): {}",
                weights_line(&on_chain())
            );
            if let Ok(Some(seen)) = validator.track_reveal(epoch).await {
                println!("the validator read them back: {seen}");
            }
        }
        other => return Err(DevnetError::Weights(other.to_string())),
    }
    println!("\ndashboard: http://{dashboard}/  (status API: /api/v1/nodes, /api/v1/rounds, /api/v1/miners/UID; metrics: /metrics)");
    if opts.once {
        return Ok(());
    }
    println!(
        "a new epoch every {} blocks; Ctrl-C to stop.",
        opts.epoch_blocks
    );
    tokio::select! {
        _ = validator.run_forever(Some(epoch)) => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
