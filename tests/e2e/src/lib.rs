//! Support shared by the end-to-end tests in `tests/`: SIMULATED agents on
//! loopback addresses, miners' axons (`tvm serve`'s handler) with a staked
//! validator in their metagraph, and what a devnet validator trusts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tvm::serve::Axon;
use tvm_agent::{Agent, Running};
use tvm_chain::neurons::Neuron;
use tvm_protocol::keys::Hotkey;
use tvm_protocol::nodes::NodeEntry;
use tvm_validator::run::SimulatedPcs;
use tvm_verifier::policy::Policy;

pub type Error = Box<dyn std::error::Error>;

/// A development hotkey (`//Name`).
pub fn key(uri: &str) -> Result<Hotkey, Error> {
    Ok(Hotkey::from_uri(uri)?)
}

/// A SIMULATED agent for `miner` with `gpus` GPUs, its main port at `at`,
/// open to any signer; the hierarchy lives in `sim`.
pub fn sim_agent(sim: &Path, miner: &str, at: SocketAddr, gpus: usize) -> Result<Running, Error> {
    let cfg = tvm::devnet::agent_config(sim, miner, gpus)?;
    Ok(Agent::build(&cfg)?.start_at(at)?)
}

/// A miner's axon listing `nodes`, where `//Validator` (permit, 5000 alpha)
/// may read them.
pub async fn axon(miner: &str, nodes: Vec<NodeEntry>) -> Result<SocketAddr, Error> {
    let a = Arc::new(Axon::new(key(miner)?.account_id(), nodes, 1000.0, false));
    let validator = key("//Validator")?.account_id();
    a.set_metagraph(&[Neuron {
        uid: 0,
        hotkey: validator,
        coldkey: validator,
        axon: None,
        validator_permit: true,
        stake: 5_000_000_000_000,
        last_update: 0,
    }]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let app = a.router();
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(addr)
}

/// What a devnet validator trusts: the policy `sim-init` wrote, and
/// collateral from the simulated hierarchy.
pub fn devnet_trust(sim: &Path) -> Result<(Policy, SimulatedPcs), Error> {
    let text = std::fs::read_to_string(sim.join(tvm_agent::backend::sim::POLICY_FILE))?;
    let policy = Policy::from_yaml(&text)?;
    Ok((policy, SimulatedPcs::load(sim)?))
}

/// The devnet's signed manifests in `sim`, verified under `policy`'s
/// operator keys now (what a devnet validator's round loads).
pub fn devnet_images(sim: &Path, policy: &Policy) -> tvm_verifier::Images {
    let dir = sim.join(tvm_agent::backend::sim::MANIFESTS_DIR);
    let found = tvm_certs::store::manifests_in_folders(&[dir.display().to_string()]);
    tvm_verifier::Images::load(
        found
            .manifests
            .iter()
            .map(|(s, b)| (s.as_str(), b.as_slice())),
        &policy.images.operator_keys,
        unix_now(),
    )
}

/// A port number free on `ip`, to give several loopback "machines" the same
/// port (as CVMs on different hosts have).
pub fn free_port(ip: [u8; 4]) -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind(SocketAddr::from((ip, 0)))?
        .local_addr()?
        .port())
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `//Validator`'s attester, asking for evidence on `port` only.
pub fn validator_attester(port: u16) -> Result<tvm_validator::attest::Attester, Error> {
    let mut a = tvm_validator::attest::Attester::new(
        key("//Validator")?,
        std::time::Duration::from_secs(10),
    )?;
    a.ports = vec![port];
    Ok(a)
}
