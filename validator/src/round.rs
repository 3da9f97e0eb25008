//! One validator round: every serving miner's node list, every node's
//! evidence (fresh nonce each, bounded concurrency), each bundle appraised,
//! then scored. A node that cannot be reached or answers junk is recorded
//! with the reason and scores like a failing one.
//!
//! Work per node is bounded: one deadline over the whole node (fetching,
//! collateral, appraisal); collateral is fetched only once the cheap binding
//! checks pass ([`precheck`]); each miner has a time budget that grows with
//! its node count, and its nodes are interleaved with everyone else's so a
//! miner of hanging nodes holds only its share of the slots; the round
//! itself has a deadline that leaves the epoch time to set weights.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::keys::AccountId;
use tvm_protocol::nonce::Nonce;

use crate::attest::{AttestError, Attester};
use crate::scoring::{score, GpuSeen, NodeResult, RoundScores, ScoringConfig};
use tvm_verifier::bundle::{appraise_bundle, precheck, BundleInput, BundleVerdict, TeeCollateral};
use tvm_verifier::facts::Facts;
use tvm_verifier::gpu::input::DeviceEvidence;
use tvm_verifier::gpu::node::{Revocation, RimInput};
use tvm_verifier::image::{Images, KeySet};
use tvm_verifier::policy::Policy;
use tvm_verifier::tee::snp::SnpEndorsement;
use tvm_verifier::tee::tdx::TdxCollateral;

/// A miner as the metagraph shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miner {
    pub uid: u16,
    pub hotkey: AccountId,
    pub axon: std::net::SocketAddr,
}

/// Where a node's collateral comes from: the collateral store (Intel PCS,
/// NVIDIA's RIM service and OCSP, cached), or the devnet's simulated PCS.
pub trait Collateral: Send + Sync {
    /// The TDX collateral for this quote's platform, or why there is none
    /// (the node then fails `tee.collateral` with that reason).
    fn tdx<'a>(
        &'a self,
        quote: &'a [u8],
        at: i64,
    ) -> BoxFuture<'a, Result<Arc<TdxCollateral>, String>>;
    /// The VCEK (with AMD's chain and CRL) for this SEV-SNP report, or why
    /// there is none.
    /// `certs`: the extended report's certificate table the node sent (a
    /// VLEK comes only from there).
    fn snp<'a>(
        &'a self,
        _report: &'a [u8],
        _certs: Option<&'a [u8]>,
        _at: i64,
    ) -> BoxFuture<'a, Result<Arc<SnpEndorsement>, String>> {
        Box::pin(async { Err("this validator has no source of SEV-SNP collateral".into()) })
    }
    /// The RIMs and OCSP answers for these devices (none: the RIM and
    /// revocation checks say what is missing).
    fn gpus<'a>(
        &'a self,
        _devices: &'a [DeviceEvidence],
        _at: i64,
    ) -> BoxFuture<'a, GpuCollateral> {
        Box::pin(async { GpuCollateral::default() })
    }
    /// The signed image manifests, verified under the policy's operator
    /// `keys` at `at` (once a round; none: every node fails `measurement`).
    fn images<'a>(&'a self, _keys: &'a KeySet, _at: i64) -> BoxFuture<'a, Images> {
        Box::pin(async { Images::none() })
    }
}

/// The CPU TEE collateral a node's evidence needs.
pub enum Tee {
    Tdx(Arc<TdxCollateral>),
    Snp(Arc<SnpEndorsement>),
}

impl Tee {
    pub fn as_input(&self) -> TeeCollateral<'_> {
        match self {
            Tee::Tdx(c) => TeeCollateral::Tdx(c),
            Tee::Snp(e) => TeeCollateral::Snp(e),
        }
    }
}

/// What the GPU appraisal needs beyond the evidence.
#[derive(Default)]
pub struct GpuCollateral {
    pub rims: Vec<RimInput>,
    /// Per device, GPUs then switches.
    pub revocation: Vec<Revocation>,
}

/// One node's outcome in the round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeReport {
    pub miner_uid: u16,
    /// The miner's hotkey (SS58) when the node was attested: a uid that
    /// changes hands mid-round does not inherit these verdicts.
    pub miner_hotkey: String,
    pub node: String,
    /// The miner's bid (cents per GPU-hour), from its node list.
    pub bid: Option<u64>,
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
    /// The v5 phase's answers (empty without v5).
    pub v5_answers: Vec<crate::v5::AnswerSeen>,
}

pub struct RoundConfig {
    pub concurrency: usize,
    /// Each try of a node (its node list, its evidence) gets this long.
    pub node_timeout: Duration,
    /// A node's whole work (every try, its collateral, its appraisal).
    pub node_deadline: Duration,
    /// What a miner's nodes may take together, in node-seconds: a base and
    /// an allowance per node listed. Nodes started after it is spent are
    /// recorded as not attested.
    pub miner_budget: MinerBudget,
    /// Nodes not done by then are recorded as not attested, and the round
    /// is scored with what was (time left in the epoch to set weights).
    pub round_deadline: Option<Duration>,
    /// Tries after the first for a node that could not be reached or timed
    /// out (never for one that answered with evidence or a refusal).
    pub retries: u32,
    pub scoring: ScoringConfig,
    /// Attest nodes and axons at loopback, private and link-local addresses
    /// and hostnames too (devnet, tests). Off: a miner cannot point the
    /// validator at its own network.
    pub dangerous_allow_private_addresses: bool,
}

/// A miner's time budget for one round: `base + per_node × nodes listed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinerBudget {
    pub base: Duration,
    pub per_node: Duration,
}

impl MinerBudget {
    fn for_nodes(&self, nodes: usize) -> Duration {
        self.base
            + self
                .per_node
                .saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX))
    }
}

impl Default for MinerBudget {
    fn default() -> Self {
        // An honest node takes about a second; 10 s each leaves room for
        // slow collateral, while a miner listing thousands of hanging
        // nodes spends its budget long before the round's.
        MinerBudget {
            base: Duration::from_secs(300),
            per_node: Duration::from_secs(10),
        }
    }
}

impl Default for RoundConfig {
    fn default() -> Self {
        RoundConfig {
            concurrency: 64,
            node_timeout: Duration::from_secs(60),
            node_deadline: Duration::from_secs(150),
            miner_budget: MinerBudget::default(),
            round_deadline: None,
            retries: 1,
            scoring: ScoringConfig::default(),
            dangerous_allow_private_addresses: false,
        }
    }
}

fn gpus_of(v: &BundleVerdict) -> Vec<GpuSeen> {
    let Some(g) = v.gpus() else {
        return Vec::new();
    };
    g.devices()
        .iter()
        .filter(|d| d.verdict().accepted() && d.arch().is_some_and(|a| !a.is_switch()))
        .filter_map(|d| match d.verdict().facts() {
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
    let reasons = match (&r.verdict, &r.error) {
        (Some(v), _) => v
            .failures()
            .iter()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect(),
        (None, Some(e)) => vec![e.clone()],
        (None, None) => Vec::new(),
    };
    NodeResult {
        miner_uid: r.miner_uid,
        miner_hotkey: r.miner_hotkey.clone(),
        node: r.node.clone(),
        accepted: r.verdict.as_ref().map(|v| v.accepted()),
        cvm_id: r
            .verdict
            .as_ref()
            .filter(|v| v.identity_proven())
            .map(|v| v.cvm_id().to_string()),
        gpus: r.verdict.as_ref().map(gpus_of).unwrap_or_default(),
        bid: r.bid,
        simulated: r.verdict.as_ref().is_some_and(|v| v.simulated()),
        reasons,
    }
}

/// A round that may be a restart: nodes in `prior` (finished before, by
/// miners that still hold their uid) are not attested again but scored as
/// they were; `on_node` sees each new node as soon as it is appraised (to
/// store it).
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
    type List = Result<Vec<tvm_protocol::nodes::NodeEntry>, String>;
    let mut lists: Vec<(usize, Miner, List)> = stream::iter(miners.iter().cloned().enumerate())
        .map(|(i, m)| async move {
            if !cfg.dangerous_allow_private_addresses {
                if let Some(why) = not_public(&m.axon.ip().to_string()) {
                    return (i, m, Err(format!("axon: {why}")));
                }
            }
            let r =
                match tokio::time::timeout(cfg.node_timeout, attester.node_list(m.axon, &m.hotkey))
                    .await
                {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "{} did not answer /cvm in {:?}",
                        m.axon, cfg.node_timeout
                    )),
                };
            (i, m, r)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    lists.sort_by_key(|(i, _, _)| *i);
    let done: std::collections::HashSet<(u16, &str)> = prior
        .iter()
        .map(|p| (p.miner_uid, p.node.as_str()))
        .collect();
    // Which images are accepted is decided once, at the round's start.
    let images = Arc::new(if policy.images.dangerous_allow_unmeasured {
        Images::none()
    } else {
        collateral.images(&policy.images.operator_keys, at).await
    });
    for (source, why) in images.refused() {
        tracing::warn!(source, reason = %why, "image manifest refused");
    }
    // Each miner's nodes (one per host called) with its share of the round.
    type Job = (Miner, tvm_protocol::nodes::NodeEntry);
    let mut per_miner: Vec<(MinerState, Vec<Job>)> = Vec::new();
    let mut miner_errors = Vec::new();
    for (_, m, list) in lists {
        match list {
            Ok(nodes) => {
                let mut seen = std::collections::HashSet::new();
                let jobs: Vec<Job> = nodes
                    .into_iter()
                    // A node listed twice by one miner, in any spelling, is
                    // attested once: the host called is what counts.
                    .filter(|n| seen.insert(n.address()))
                    .filter(|n| !done.contains(&(m.uid, n.ip.as_str())))
                    .map(|n| (m.clone(), n))
                    .collect();
                // The budget counts only the nodes that will be called.
                let called = jobs
                    .iter()
                    .filter(|(_, n)| {
                        cfg.dangerous_allow_private_addresses || not_public(n.host()).is_none()
                    })
                    .count();
                per_miner.push((MinerState::new(cfg.miner_budget.for_nodes(called)), jobs));
            }
            Err(e) => miner_errors.push((m.uid, e)),
        }
    }
    // Round robin over miners: the first node of each, then the second...
    let mut jobs = Vec::new();
    let longest = per_miner.iter().map(|(_, j)| j.len()).max().unwrap_or(0);
    let mut queues: Vec<_> = per_miner
        .iter()
        .map(|(state, j)| j.iter().map(move |job| (state, job)))
        .collect();
    for _ in 0..longest {
        jobs.extend(queues.iter_mut().filter_map(Iterator::next));
    }
    let started = Instant::now();
    let images = &images;
    let round_end = cfg.round_deadline.map(|d| tokio::time::Instant::now() + d);
    // Unordered: a node that hangs holds its own slot, never the ones after it.
    let mut reports: Vec<(usize, NodeReport)> = stream::iter(jobs.into_iter().enumerate())
        .map(|(i, (state, (m, node)))| async move {
            let node = node.clone();
            let refused = match cfg.dangerous_allow_private_addresses {
                true => None,
                false => not_public(node.host()),
            };
            let blocked = match refused {
                Some(why) => Some(why),
                None if round_end.is_some_and(|end| tokio::time::Instant::now() >= end) => {
                    Some(round_over(cfg))
                }
                None => None,
            };
            // What is left of the miner's budget when the node starts bounds
            // its deadline; its time is charged when it ends (nodes running
            // side by side can overspend by at most their own deadlines).
            let allowed = state
                .left_ms
                .load(Ordering::Acquire)
                .min(cfg.node_deadline.as_millis() as u64);
            let r = if let Some(why) = blocked {
                no_evidence(m, node, why)
            } else if allowed == 0 {
                no_evidence(m, node, budget_spent(state.budget))
            } else {
                let t0 = Instant::now();
                // The whole node, under one deadline: the tighter of the
                // node's own, the miner's budget left and the round's.
                let mut deadline = tokio::time::Instant::now() + Duration::from_millis(allowed);
                if let Some(end) = round_end {
                    deadline = deadline.min(end);
                }
                let work = attest_one(
                    m,
                    &node,
                    attester,
                    validator,
                    (policy, images),
                    collateral,
                    cfg,
                    at,
                    started,
                    &state.failed_lookups,
                );
                let r = match tokio::time::timeout_at(deadline, work).await {
                    Ok(r) => r,
                    Err(_) => {
                        let why = if round_end.is_some_and(|end| deadline >= end) {
                            round_over(cfg)
                        } else if Duration::from_millis(allowed) < cfg.node_deadline {
                            budget_spent(state.budget)
                        } else {
                            format!(
                                "the node's work (evidence, collateral, appraisal) took over {:?}",
                                cfg.node_deadline
                            )
                        };
                        no_evidence(m, node, why)
                    }
                };
                let spent = t0.elapsed().as_millis() as u64;
                let _ = state
                    .left_ms
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                        Some(v.saturating_sub(spent))
                    });
                r
            };
            on_node(&r, &result_of(&r));
            (i, r)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<NodeReport> = reports.into_iter().map(|(_, r)| r).collect();
    let mut results = prior;
    results.extend(reports.iter().map(result_of));
    let scores = score(&results, None, &cfg.scoring);
    RoundReport {
        miner_errors,
        nodes: reports,
        scores,
        v5_answers: Vec::new(),
    }
}

/// Collateral look-ups that may fail for one miner's nodes in a round
/// before its other nodes are no longer looked up for: a genuine chip,
/// platform or device is found (and cached); made-up ones are not, and each
/// would be a request to Intel, AMD or NVIDIA that could get the validator
/// rate-limited for everyone.
pub const MAX_FAILED_LOOKUPS: u32 = 3;

/// One miner's share of a round.
struct MinerState {
    /// Node time left, in milliseconds.
    left_ms: AtomicU64,
    budget: Duration,
    failed_lookups: AtomicU32,
}

impl MinerState {
    fn new(budget: Duration) -> Self {
        MinerState {
            left_ms: AtomicU64::new(budget.as_millis() as u64),
            budget,
            failed_lookups: AtomicU32::new(0),
        }
    }
}

fn round_over(cfg: &RoundConfig) -> String {
    format!(
        "not attested: the round's deadline ({:?}) passed; weights are set with the nodes attested before it",
        cfg.round_deadline.unwrap_or_default()
    )
}

fn budget_spent(budget: Duration) -> String {
    format!(
        "not attested: this miner's nodes used up its time budget for the round ({budget:?} of node time); list fewer or faster-answering nodes"
    )
}

/// Why `host` is not an address a validator calls, if it is not.
fn not_public(host: &str) -> Option<String> {
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return Some(format!(
            "{host} is not an IP address: list the node's public IP"
        ));
    };
    let private = match ip {
        std::net::IpAddr::V4(v4) => !public_v4(v4),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            // An IPv4 address inside IPv6: mapped, compatible, translated
            // (::ffff:0:0:0/96), NAT64, 6to4.
            let embedded = if let Some(v4) = v6.to_ipv4() {
                Some(v4)
            } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                Some(std::net::Ipv4Addr::from(
                    (u32::from(s[6]) << 16) | u32::from(s[7]),
                ))
            } else if s[0] == 0x2002 {
                Some(std::net::Ipv4Addr::from(
                    (u32::from(s[1]) << 16) | u32::from(s[2]),
                ))
            } else {
                None
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // Teredo (2001::/32) carries a server and an obscured client
                // IPv4 address, and 64:ff9b:1::/48 is local-use NAT64 (RFC
                // 8215) translating however the local network likes: where
                // either ends up is not known here, so neither is called.
                || s[..2] == [0x2001, 0]
                || s[..3] == [0x64, 0xff9b, 1]
                || embedded.is_some_and(|v4| !public_v4(v4))
        }
    };
    private.then(|| {
        format!("{ip} is not a public address (loopback, private, link-local or reserved): validators only attest public addresses")
    })
}

fn public_v4(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0 // 0.0.0.0/8
        || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || a >= 240 // 240.0.0.0/4, reserved
        // Azure's host endpoint (WireServer), reachable from every Azure VM.
        || v4 == std::net::Ipv4Addr::new(168, 63, 129, 16))
}

fn no_evidence(m: &Miner, node: tvm_protocol::nodes::NodeEntry, error: String) -> NodeReport {
    NodeReport {
        miner_uid: m.uid,
        miner_hotkey: m.hotkey.to_ss58(),
        bid: node.price,
        node: node.ip,
        verdict: None,
        error: Some(error),
    }
}

#[allow(clippy::too_many_arguments)]
async fn attest_one(
    m: &Miner,
    node: &tvm_protocol::nodes::NodeEntry,
    attester: &Attester,
    validator: &AccountId,
    (policy, images): (&Policy, &Arc<Images>),
    collateral: &dyn Collateral,
    cfg: &RoundConfig,
    at: i64,
    started: Instant,
    failed_lookups: &AtomicU32,
) -> NodeReport {
    let node = node.clone();
    let mut tries = 0;
    let (nonce, fetched) = loop {
        // A fresh nonce each try: an answer to an earlier one is never accepted.
        let nonce = Nonce::generate(validator);
        let error = match tokio::time::timeout(
            cfg.node_timeout,
            attester.evidence(&node, &m.hotkey, &nonce),
        )
        .await
        {
            Ok(Ok(f)) => break (nonce, f),
            Ok(Err(e @ AttestError::Unreachable(_))) => e.to_string(),
            // Busy (503) or rate-limited (429): worth another try.
            Ok(Err(
                e @ AttestError::Status {
                    status: 429 | 503, ..
                },
            )) => e.to_string(),
            Ok(Err(e)) => return no_evidence(m, node, e.to_string()),
            Err(_) => format!("no evidence within {:?}", cfg.node_timeout),
        };
        tries += 1;
        if tries > cfg.retries {
            let error = if tries > 1 {
                format!("{error} (tried {tries} times)")
            } else {
                error
            };
            return no_evidence(m, node, error);
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
    };
    // The time of this node's verdict: the round's start moved on by the
    // time since (a long round does not judge its last node by its first's clock).
    let now = || at.saturating_add(started.elapsed().as_secs() as i64);
    // Collateral only for evidence that can still pass: the cheap binding
    // checks first, so forged chip ids, FMSPCs and certificates cost no fetch.
    let (tee, gpu) = match precheck(&fetched.bundle, &nonce, fetched.tls_spki_sha256, policy) {
        Err(why) => (Err(format!("not fetched: {why}")), GpuCollateral::default()),
        Ok(()) if failed_lookups.load(Ordering::Acquire) >= MAX_FAILED_LOOKUPS => (
            Err(format!(
                "not fetched: {MAX_FAILED_LOOKUPS} collateral look-ups for this miner's nodes failed this round (made-up platforms cost vendor requests); the node is attested again next round"
            )),
            GpuCollateral::default(),
        ),
        Ok(()) => {
            let tee = match &fetched.bundle.tee {
                TeeEvidence::Tdx { quote, .. } => {
                    collateral.tdx(&quote.0, now()).await.map(Tee::Tdx)
                }
                TeeEvidence::SevSnp { report, certs } => collateral
                    .snp(&report.0, certs.as_ref().map(|c| c.0.as_slice()), now())
                    .await
                    .map(Tee::Snp),
            };
            if tee.is_err() {
                failed_lookups.fetch_add(1, Ordering::AcqRel);
            }
            let devices = tvm_verifier::gpu::input::from_bundle(&fetched.bundle);
            let gpu = if devices.is_empty() || fetched.bundle.claims.simulated {
                GpuCollateral::default()
            } else {
                collateral.gpus(&devices, now()).await
            };
            (tee, gpu)
        }
    };
    let at = now();
    // Signature checks are CPU work: off the async workers, so fetching
    // the other nodes (and the status pages) goes on meanwhile.
    let policy = policy.clone();
    let images = images.clone();
    let appraised = tokio::task::spawn_blocking(move || {
        appraise_bundle(&BundleInput {
            bundle: &fetched.bundle,
            nonce: &nonce,
            tls_spki_sha256: fetched.tls_spki_sha256,
            tee_collateral: tee
                .as_ref()
                .map_or_else(|why| TeeCollateral::Unavailable(why), |t| t.as_input()),
            rims: &gpu.rims,
            revocation: &gpu.revocation,
            policy: &policy,
            images: &images,
            at,
        })
    })
    .await;
    match appraised {
        Ok(verdict) => NodeReport {
            miner_uid: m.uid,
            miner_hotkey: m.hotkey.to_ss58(),
            bid: node.price,
            node: node.ip,
            verdict: Some(verdict),
            error: None,
        },
        Err(e) => no_evidence(m, node, format!("the appraisal failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::not_public;

    #[test]
    fn only_public_ip_addresses_are_attested() {
        for ok in [
            "8.8.8.8",
            "203.0.113.7",
            "2001:4860::8888",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(not_public(ok), None, "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "::ffff:0:a00:1",
            "::ffff:0:7f00:1",
            "fec0::1",
            "168.63.129.16",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::808:808",
            "0.1.2.3",
            "192.0.0.8",
            "198.19.0.1",
            "240.0.0.1",
            "localhost",
            "metadata.google.internal",
        ] {
            assert!(not_public(bad).is_some(), "{bad}");
        }
    }
}
