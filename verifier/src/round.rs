//! One validator round: every serving miner's node list, every node's
//! evidence (fresh nonce each, bounded concurrency, per-node timeout), each
//! bundle appraised, then scored. A node that cannot be reached or answers
//! junk is recorded with the reason and scores like a failing one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::keys::AccountId;
use tvm_protocol::nonce::Nonce;

use crate::attest::Attester;
use crate::bundle::{appraise_bundle, BundleInput, BundleVerdict, TeeCollateral};
use crate::facts::Facts;
use crate::policy::Policy;
use crate::scoring::{score, GpuSeen, NodeResult, RoundScores, ScoringConfig};
use crate::tdx::TdxCollateral;

/// A miner as the metagraph shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miner {
    pub uid: u16,
    pub hotkey: AccountId,
    pub axon: std::net::SocketAddr,
}

/// Where TDX collateral comes from (the store, or the devnet's simulated PCS).
pub trait Collateral: Send + Sync {
    fn tdx(&self, quote: &[u8]) -> Option<Arc<TdxCollateral>>;
}

/// One node's outcome in the round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeReport {
    pub miner_uid: u16,
    pub node: String,
    /// The appraisal, when evidence came.
    pub verdict: Option<BundleVerdict>,
    /// Why there is no verdict (unreachable, refused, malformed).
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundReport {
    /// Miners whose node list could not be had, and why.
    pub miner_errors: Vec<(u16, String)>,
    pub nodes: Vec<NodeReport>,
    pub scores: RoundScores,
}

pub struct RoundConfig {
    pub concurrency: usize,
    pub node_timeout: Duration,
    pub scoring: ScoringConfig,
}

impl Default for RoundConfig {
    fn default() -> Self {
        RoundConfig {
            concurrency: 64,
            node_timeout: Duration::from_secs(60),
            scoring: ScoringConfig::default(),
        }
    }
}

fn gpus_of(v: &BundleVerdict) -> Vec<GpuSeen> {
    let Some(g) = &v.gpus else { return Vec::new() };
    g.devices
        .iter()
        .filter(|d| d.verdict.accepted && d.arch.is_some_and(|a| !a.is_switch()))
        .filter_map(|d| match &d.verdict.facts {
            Some(Facts::Gpu(f)) => Some(GpuSeen {
                id: f.device_id.clone()?,
                model: f.model.clone().unwrap_or_default(),
            }),
            _ => None,
        })
        .collect()
}

/// Run one round over `miners` and score it.
pub async fn run(
    miners: &[Miner],
    attester: &Attester,
    validator: &AccountId,
    policy: &Policy,
    collateral: &dyn Collateral,
    cfg: &RoundConfig,
    at: i64,
) -> RoundReport {
    run_resumable(
        miners,
        attester,
        validator,
        policy,
        collateral,
        cfg,
        at,
        Vec::new(),
        &|_, _| {},
    )
    .await
}

fn result_of(r: &NodeReport) -> NodeResult {
    NodeResult {
        miner_uid: r.miner_uid,
        node: r.node.clone(),
        accepted: r.verdict.as_ref().map(|v| v.accepted),
        cvm_id: r.verdict.as_ref().map(|v| v.cvm_id.clone()),
        gpus: r.verdict.as_ref().map(gpus_of).unwrap_or_default(),
    }
}

/// A round that may be a restart: nodes in `prior` (finished before) are not
/// attested again but scored as they were; `on_node` sees each new node as
/// soon as it is appraised (to store it).
#[allow(clippy::too_many_arguments)]
pub async fn run_resumable(
    miners: &[Miner],
    attester: &Attester,
    validator: &AccountId,
    policy: &Policy,
    collateral: &dyn Collateral,
    cfg: &RoundConfig,
    at: i64,
    prior: Vec<NodeResult>,
    on_node: &(dyn Fn(&NodeReport, &NodeResult) + Sync),
) -> RoundReport {
    // Node lists, miners in parallel.
    let lists: Vec<(Miner, Result<Vec<tvm_protocol::nodes::NodeEntry>, String>)> =
        stream::iter(miners.iter().cloned())
            .map(|m| async move {
                let r = match tokio::time::timeout(
                    cfg.node_timeout,
                    attester.node_list(m.axon, &m.hotkey),
                )
                .await
                {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "{} did not answer /cvm in {:?}",
                        m.axon, cfg.node_timeout
                    )),
                };
                (m, r)
            })
            .buffered(cfg.concurrency.max(1))
            .collect()
            .await;
    let mut jobs = Vec::new();
    let mut miner_errors = Vec::new();
    for (m, list) in lists {
        match list {
            Ok(nodes) => jobs.extend(
                nodes
                    .into_iter()
                    .filter(|n| !prior.iter().any(|p| p.miner_uid == m.uid && p.node == n.ip))
                    .map(|n| (m.clone(), n)),
            ),
            Err(e) => miner_errors.push((m.uid, e)),
        }
    }
    let reports: Vec<NodeReport> = stream::iter(jobs)
        .map(|(m, node)| async move {
            let r = attest_one(&m, node, attester, validator, policy, collateral, cfg, at).await;
            on_node(&r, &result_of(&r));
            r
        })
        .buffered(cfg.concurrency.max(1))
        .collect()
        .await;
    let mut results = prior;
    results.extend(reports.iter().map(result_of));
    let scores = score(&results, None, &cfg.scoring);
    RoundReport {
        miner_errors,
        nodes: reports,
        scores,
    }
}

#[allow(clippy::too_many_arguments)]
async fn attest_one(
    m: &Miner,
    node: tvm_protocol::nodes::NodeEntry,
    attester: &Attester,
    validator: &AccountId,
    policy: &Policy,
    collateral: &dyn Collateral,
    cfg: &RoundConfig,
    at: i64,
) -> NodeReport {
    let nonce = Nonce::generate(validator);
    let fetched = match tokio::time::timeout(
        cfg.node_timeout,
        attester.evidence(&node, &m.hotkey, &nonce),
    )
    .await
    {
        Ok(Ok(f)) => f,
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no evidence within {:?}", cfg.node_timeout),
            };
            return NodeReport {
                miner_uid: m.uid,
                node: node.ip,
                verdict: None,
                error: Some(error),
            };
        }
    };
    let tdx = match &fetched.bundle.tee {
        TeeEvidence::Tdx { quote, .. } => collateral.tdx(&quote.0),
        TeeEvidence::SevSnp { .. } => None,
    };
    let tee_collateral = match &tdx {
        Some(c) => TeeCollateral::Tdx(c),
        None => TeeCollateral::None,
    };
    let verdict = appraise_bundle(&BundleInput {
        bundle: &fetched.bundle,
        nonce: &nonce,
        tls_spki_sha256: fetched.tls_spki_sha256,
        tee_collateral,
        rims: &[],
        revocation: &[],
        policy,
        at,
    });
    NodeReport {
        miner_uid: m.uid,
        node: node.ip,
        verdict: Some(verdict),
        error: None,
    }
}
