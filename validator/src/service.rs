//! The validator's epoch: the metagraph from the chain, one round over every
//! serving miner (resumed from the database after a restart), the weights
//! set on chain when the rate limit allows, everything stored.

use std::path::Path;
use std::time::SystemTime;

use tvm_chain::calls::SetWeights;
use tvm_chain::client::{BeaconTrust, Client};
use tvm_protocol::keys::Hotkey;

use crate::attest::Attester;
use crate::db::Db;
use crate::round::{self, Collateral, Miner, RoundConfig, RoundReport};
use tvm_verifier::policy::Policy;

/// Where the metagraph comes from and where the weights go.
pub enum Network<'a> {
    /// Subtensor: the metagraph from the chain, weights set on it.
    Chain {
        client: &'a Client,
        netuid: u16,
        /// The least version key to send (the chain's `WeightsVersionKey` wins when higher).
        version_key: u64,
        /// Seconds per block, for the drand round of a commit (12 on finney).
        block_time: f64,
        /// The drand beacon commits may be encrypted to.
        beacon: BeaconTrust,
    },
    /// No chain: a fixed list of miners, weights written to a JSON file.
    Offline {
        miners: &'a [Miner],
        weights_file: &'a Path,
    },
}

pub struct Service<'a> {
    pub network: Network<'a>,
    pub db: &'a Db,
    pub attester: &'a Attester,
    pub validator: &'a Hotkey,
    pub policy: &'a Policy,
    pub collateral: &'a dyn Collateral,
    pub round: &'a RoundConfig,
    /// Verified inference, when configured.
    pub v5: Option<&'a crate::v5::V5>,
}

/// What became of the round's weights.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "weights", rename_all = "snake_case")]
pub enum WeightsSent {
    Landed {
        block_hash: String,
    },
    /// Not sent yet: the rate limit has not passed. Sent later in the epoch
    /// once it has (`resend_weights`).
    RateLimited {
        last: u64,
        next: u64,
    },
    /// Not sent, and why.
    NotSent {
        reason: String,
    },
    /// Committed (commit-reveal): the chain reveals them itself from
    /// `first_reveal_block`, once drand round `reveal_round` is on chain.
    Committed {
        block_hash: String,
        /// The chain epoch it is filed under (`TimelockedWeightCommits`).
        commit_epoch: u64,
        reveal_round: u64,
        first_reveal_block: u64,
    },
    /// The chain holds an unrevealed commit of this validator for the
    /// current chain epoch already (`TimelockedWeightCommits`), e.g. after
    /// a restart between a commit and its record: nothing was sent. Tried
    /// again while the epoch lasts, so that a round whose chain epoch turns
    /// still gets its weights committed.
    AlreadyCommitted {
        epoch: u64,
    },
    /// Sent, and refused by the chain with its reason (tried again later in
    /// the epoch).
    Refused {
        reason: String,
    },
    /// No chain configured: written to this file.
    Written {
        path: String,
    },
}

impl WeightsSent {
    /// Worth sending again while the epoch lasts.
    pub fn retry(&self) -> bool {
        matches!(
            self,
            WeightsSent::RateLimited { .. }
                | WeightsSent::Refused { .. }
                | WeightsSent::AlreadyCommitted { .. }
        )
    }
}

impl std::fmt::Display for WeightsSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsSent::Landed { block_hash } => {
                write!(f, "set on chain (block 0x{block_hash})")
            }
            WeightsSent::RateLimited { last, next } => write!(
                f,
                "not sent yet: rate limit: weights were set at block {last}; sent at block {next} or later"
            ),
            WeightsSent::NotSent { reason } => write!(f, "not sent: {reason}"),
            WeightsSent::Committed {
                block_hash,
                reveal_round,
                first_reveal_block,
                ..
            } => write!(
                f,
                "committed (block 0x{block_hash}); the chain reveals them from block {first_reveal_block}, once drand round {reveal_round} is out"
            ),
            WeightsSent::AlreadyCommitted { epoch } => write!(
                f,
                "not sent: the chain holds this validator's commit for its epoch {epoch} already; sent again once that epoch turns"
            ),
            WeightsSent::Refused { reason } => write!(f, "refused by the chain: {reason}"),
            WeightsSent::Written { path } => write!(f, "written to {path} (no chain)"),
        }
    }
}

/// Whether the chain revealed a round's commit, read back from its
/// `Weights` once the reveal block has passed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reveal", rename_all = "snake_case")]
pub enum RevealSeen {
    /// The chain holds the committed weights (read at `block`).
    Revealed { block: u64 },
    /// The chain no longer holds the commit and does not hold its weights:
    /// it dropped the commit, or the drand pulse did not reach it in time.
    Missed { block: u64 },
}

impl std::fmt::Display for RevealSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevealSeen::Revealed { block } => {
                write!(f, "revealed: the chain holds them (seen at block {block})")
            }
            RevealSeen::Missed { block } => write!(
                f,
                "NOT revealed: by block {block} the chain no longer holds the commit and does not hold its weights; it dropped the commit, or its drand pulse came too late"
            ),
        }
    }
}

/// The chain stores weights scaled so that the largest is 65535: equal
/// when every uid's share matches within rounding.
pub fn same_weights(committed: &[(u16, u16)], on_chain: &[(u16, u16)]) -> bool {
    let scaled = |w: &[(u16, u16)]| -> Vec<(u16, f64)> {
        let max = f64::from(w.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1));
        let mut out: Vec<(u16, f64)> = w
            .iter()
            .map(|(u, v)| (*u, f64::from(*v) * 65535.0 / max))
            .collect();
        out.sort_by_key(|(u, _)| *u);
        out
    };
    let (a, b) = (scaled(committed), scaled(on_chain));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|((ua, va), (ub, vb))| ua == ub && (va - vb).abs() <= 1.0)
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum EpochOutcome {
    /// The epoch's round had already finished (after a restart): nothing redone.
    AlreadyDone { epoch: u64 },
    Done {
        epoch: u64,
        report: Box<RoundReport>,
        weights: WeightsSent,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Chain(#[from] tvm_chain::client::ClientError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("the validator hotkey {0} is not registered on subnet {1}: register it (btcli subnets register) or check netuid")]
    NotRegistered(String, u16),
    #[error("cannot write the weights file {path}: {reason}")]
    WeightsFile { path: String, reason: String },
    #[error("scoring.burn_uid {uid} is not a uid of subnet {netuid} (it has {count}): set it to the subnet owner's uid")]
    NoBurnUid { uid: u16, netuid: u16, count: usize },
}

/// The miners a round attests: every neuron with an axon but this validator
/// and the burn uid (whose weight is the burned share, never pay for nodes).
/// The burn uid must exist, or the burned share would go nowhere.
fn miners_of(
    neurons: &[tvm_chain::neurons::Neuron],
    me: &tvm_protocol::keys::AccountId,
    burn_uid: u16,
    netuid: u16,
) -> Result<Vec<Miner>, ServiceError> {
    if !neurons.iter().any(|n| n.uid == burn_uid) {
        return Err(ServiceError::NoBurnUid {
            uid: burn_uid,
            netuid,
            count: neurons.len(),
        });
    }
    Ok(neurons
        .iter()
        .filter(|n| n.hotkey != *me && n.uid != burn_uid)
        .filter_map(|n| {
            n.axon.map(|(ip, port)| Miner {
                uid: n.uid,
                hotkey: n.hotkey,
                axon: std::net::SocketAddr::new(ip, port),
            })
        })
        .collect())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Run (or resume) the round of `epoch` and set its weights.
pub async fn run_epoch(s: &Service<'_>, epoch: u64) -> Result<EpochOutcome, ServiceError> {
    let row = s.db.begin_round(epoch, now())?;
    if row.finished_at.is_some() {
        return Ok(EpochOutcome::AlreadyDone { epoch });
    }
    let me = s.validator.account_id();
    let (miners, my_uid) = match &s.network {
        Network::Chain { client, netuid, .. } => {
            let neurons = client.neurons(*netuid).await?;
            let my_uid = neurons
                .iter()
                .find(|n| n.hotkey == me)
                .map(|n| n.uid)
                .ok_or_else(|| ServiceError::NotRegistered(me.to_ss58(), *netuid))?;
            let miners = miners_of(&neurons, &me, s.round.scoring.burn_uid, *netuid)?;
            (miners, Some(my_uid))
        }
        Network::Offline { miners, .. } => {
            let burn = s.round.scoring.burn_uid;
            let miners = miners.iter().filter(|m| m.uid != burn).cloned();
            (miners.collect(), None)
        }
    };
    let mut prior = s.db.finished_results(row.id)?;
    // A uid that changed hands since the crash: its old verdicts go.
    let holders: std::collections::HashMap<u16, String> =
        miners.iter().map(|m| (m.uid, m.hotkey.to_ss58())).collect();
    for p in &prior {
        if holders.get(&p.miner_uid) != Some(&p.miner_hotkey) {
            s.db.forget_node(row.id, p.miner_uid, &p.node)?;
        }
    }
    prior.retain(|p| holders.get(&p.miner_uid) == Some(&p.miner_hotkey));
    let db = s.db;
    let store = |r: &round::NodeReport, n: &crate::scoring::NodeResult| {
        // A failed write only means this node is attested again after a restart.
        if let Err(e) = db.node_done(row.id, r, n) {
            tracing::warn!(error = %e, node = %r.node, "verdict not stored");
        }
    };
    let report = round::run_resumable(
        &miners,
        s.attester,
        &me,
        s.policy,
        s.collateral,
        s.round,
        now(),
        prior,
        &store,
    )
    .await;
    let mut report = report;
    if let Some(v5) = s.v5 {
        // The v5 phase: the accepted, counted nodes asked for inference;
        // the round re-scored with what they earned.
        let counted: Vec<crate::scoring::NodeResult> = report
            .scores
            .nodes
            .iter()
            .filter(|(_, sc)| matches!(sc, crate::scoring::NodeScore::Counted { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let found = v5.probe(s.attester, &counted, epoch).await;
        // Kept at once: a restart continues the windows.
        if let Err(e) = s.db.put_state("v5", &v5.state()) {
            tracing::error!(error = %e, "the v5 windows could not be stored; a restart would start them again");
        }
        let results: Vec<crate::scoring::NodeResult> =
            report.scores.nodes.iter().map(|(n, _)| n.clone()).collect();
        let mut scores = crate::scoring::score(&results, Some(&found.scores), &s.round.scoring);
        for (uid, why) in &found.reasons {
            scores.notes.push(format!(
                "v5 uid {uid}: {:.1} ({why})",
                found.scores.get(uid).copied().unwrap_or(0.0)
            ));
        }
        for a in &found.answers {
            tracing::info!(uid = a.uid, node = %a.node, model = %a.model, verified = a.verified, detail = %a.detail, "v5 answer");
        }
        report.scores = scores;
        report.v5_answers = found.answers;
    }

    let weights = match &s.network {
        Network::Chain {
            client,
            netuid,
            version_key,
            block_time,
            beacon,
        } => {
            let uid = my_uid.ok_or_else(|| ServiceError::NotRegistered(me.to_ss58(), *netuid))?;
            let w = &report.scores.weights;
            let to = Target {
                netuid: *netuid,
                version_key: *version_key,
                block_time: *block_time,
                beacon: *beacon,
                my_uid: uid,
            };
            set_on_chain(client, s.validator, &to, w).await?
        }
        Network::Offline { weights_file, .. } => {
            write_weights(weights_file, epoch, &report)?;
            WeightsSent::Written {
                path: weights_file.display().to_string(),
            }
        }
    };
    let result = serde_json::json!({
        "validator_uid": my_uid,
        "weights": report.scores.weights,
        "v6": report.scores.v6,
        "notes": report.scores.notes,
        "set": weights,
        "miner_errors": report.miner_errors,
        "nodes": report.scores.nodes.iter().map(|(n, score)| serde_json::json!({
            "miner_uid": n.miner_uid,
            "node": n.node,
            "score": score,
        })).collect::<Vec<_>>(),
    });
    s.db.finish_round(row.id, now(), &result.to_string())?;
    Ok(EpochOutcome::Done {
        epoch,
        report: Box::new(report),
        weights,
    })
}

/// Where and how a round's weights go on chain.
struct Target {
    netuid: u16,
    version_key: u64,
    block_time: f64,
    beacon: BeaconTrust,
    my_uid: u16,
}

/// Set the round's weights, or commit them where the subnet runs
/// commit-reveal, unless the rate limit says no. At most one commit per
/// chain epoch: when the chain's own record (`TimelockedWeightCommits` of
/// the epoch a commit now is filed under) holds one of this validator's,
/// nothing is sent (a restart between a commit and the round's record
/// never commits twice).
async fn set_on_chain(
    client: &Client,
    validator: &Hotkey,
    to: &Target,
    weights: &[(u16, u16)],
) -> Result<WeightsSent, ServiceError> {
    let netuid = to.netuid;
    let hyper = client.hyperparams(netuid).await?;
    let block = client.best_block().await?;
    let last = hyper
        .last_update
        .get(usize::from(to.my_uid))
        .copied()
        .unwrap_or(0);
    // Under commit-reveal: the chain's settings and schedule, read once.
    let plan = match hyper.commit_reveal {
        true => Some(client.commit_schedule(netuid, to.block_time).await?),
        false => None,
    };
    if let Some((_, schedule)) = &plan {
        let epoch = schedule.commit_epoch();
        if client
            .has_commit(netuid, epoch, &validator.account_id())
            .await?
        {
            return Ok(WeightsSent::AlreadyCommitted { epoch });
        }
    }
    if last != 0 && block.saturating_sub(last) < hyper.weights_rate_limit {
        return Ok(WeightsSent::RateLimited {
            last,
            next: last + hyper.weights_rate_limit,
        });
    }
    let (dests, weights): (Vec<u16>, Vec<u16>) = weights.iter().copied().unzip();
    let w = SetWeights {
        netuid,
        dests,
        weights,
        version_key: to.version_key.max(hyper.weights_version_key),
    };
    Ok(if let Some(plan) = &plan {
        match client.commit_weights(validator, w, plan, to.beacon).await {
            Ok(c) => WeightsSent::Committed {
                block_hash: hex::encode(c.included.block_hash),
                commit_epoch: c.commit_epoch,
                reveal_round: c.reveal_round,
                first_reveal_block: c.first_reveal_block,
            },
            Err(e) => WeightsSent::Refused {
                reason: e.to_string(),
            },
        }
    } else {
        match client.set_weights(validator, w).await {
            Ok(i) => WeightsSent::Landed {
                block_hash: hex::encode(i.block_hash),
            },
            Err(e) => WeightsSent::Refused {
                reason: e.to_string(),
            },
        }
    })
}

/// Send a finished round's weights if they did not land (the rate limit had
/// not passed, or the chain refused them) and the chain allows it now; the
/// stored result then says where they went. `None`: nothing was sent.
pub async fn resend_weights(
    s: &Service<'_>,
    epoch: u64,
) -> Result<Option<WeightsSent>, ServiceError> {
    let Network::Chain {
        client,
        netuid,
        version_key,
        block_time,
        beacon,
    } = &s.network
    else {
        return Ok(None);
    };
    let Some((row_id, mut result)) = stored_result(s, epoch)? else {
        return Ok(None);
    };
    let sent: Option<WeightsSent> = serde_json::from_value(result["set"].clone()).ok();
    if !sent.is_some_and(|w| w.retry()) {
        return Ok(None);
    }
    let weights: Vec<(u16, u16)> =
        serde_json::from_value(result["weights"].clone()).map_err(crate::db::DbError::from)?;
    let uid = match result["validator_uid"]
        .as_u64()
        .and_then(|u| u16::try_from(u).ok())
    {
        Some(uid) => uid,
        None => {
            let me = s.validator.account_id();
            client
                .neurons(*netuid)
                .await?
                .iter()
                .find(|n| n.hotkey == me)
                .map(|n| n.uid)
                .ok_or_else(|| ServiceError::NotRegistered(me.to_ss58(), *netuid))?
        }
    };
    let to = Target {
        netuid: *netuid,
        version_key: *version_key,
        block_time: *block_time,
        beacon: *beacon,
        my_uid: uid,
    };
    let now_sent = set_on_chain(client, s.validator, &to, &weights).await?;
    if let WeightsSent::RateLimited { .. } | WeightsSent::AlreadyCommitted { .. } = now_sent {
        // Still waiting: nothing sent, nothing to record.
        return Ok(None);
    }
    result["set"] = serde_json::to_value(&now_sent).map_err(crate::db::DbError::from)?;
    s.db.set_result(row_id, &result.to_string())?;
    Ok(Some(now_sent))
}

/// The stored result of `epoch`'s finished round, with its row id.
fn stored_result(
    s: &Service<'_>,
    epoch: u64,
) -> Result<Option<(i64, serde_json::Value)>, ServiceError> {
    let Some(row) = s.db.round_of(epoch)? else {
        return Ok(None);
    };
    Ok(row
        .result
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .map(|v| (row.id, v)))
}

/// For a round whose weights were committed: once the chain has passed
/// the first reveal block, read the validator's `Weights` back and record
/// whether they are the committed ones (or, once the reveal epoch is over,
/// that they never came). `None`: nothing to record yet.
pub async fn track_reveal(s: &Service<'_>, epoch: u64) -> Result<Option<RevealSeen>, ServiceError> {
    let Network::Chain { client, netuid, .. } = &s.network else {
        return Ok(None);
    };
    let Some((row_id, mut result)) = stored_result(s, epoch)? else {
        return Ok(None);
    };
    let Ok(WeightsSent::Committed {
        first_reveal_block,
        commit_epoch,
        ..
    }) = serde_json::from_value::<WeightsSent>(result["set"].clone())
    else {
        return Ok(None);
    };
    if !result["reveal"].is_null() {
        return Ok(None);
    }
    let Some(uid) = result["validator_uid"]
        .as_u64()
        .and_then(|u| u16::try_from(u).ok())
    else {
        return Ok(None);
    };
    let block = client.best_block().await?;
    // Still on chain, unrevealed: the chain removes a commit when it
    // reveals it, drops it, or lets it expire.
    if block < first_reveal_block
        || client
            .has_commit(*netuid, commit_epoch, &s.validator.account_id())
            .await?
    {
        return Ok(None);
    }
    let committed: Vec<(u16, u16)> =
        serde_json::from_value(result["weights"].clone()).map_err(crate::db::DbError::from)?;
    let on_chain = client.weights_of(*netuid, uid).await?;
    let seen = match same_weights(&committed, &on_chain) {
        true => RevealSeen::Revealed { block },
        false => RevealSeen::Missed { block },
    };
    result["reveal"] = serde_json::to_value(&seen).map_err(crate::db::DbError::from)?;
    s.db.set_result(row_id, &result.to_string())?;
    Ok(Some(seen))
}

/// The weights as JSON, written whole (temporary file, then rename) so a
/// reader never sees half a file.
fn write_weights(path: &Path, epoch: u64, report: &RoundReport) -> Result<(), ServiceError> {
    let bad = |e: std::io::Error| ServiceError::WeightsFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let json = serde_json::json!({
        "epoch": epoch,
        "weights": report.scores.weights.iter().map(|(uid, w)| serde_json::json!({"uid": uid, "weight": w})).collect::<Vec<_>>(),
        "notes": report.scores.notes,
    });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{json:#}\n")).map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvm_chain::neurons::Neuron;
    use tvm_protocol::keys::AccountId;

    fn neuron(uid: u16, axon: bool) -> Neuron {
        Neuron {
            uid,
            hotkey: AccountId([uid as u8 + 1; 32]),
            coldkey: AccountId([0; 32]),
            axon: axon.then(|| ("203.0.113.1".parse().unwrap(), 8091 + uid)),
            validator_permit: false,
            stake: 0,
            last_update: 0,
        }
    }

    #[test]
    fn same_weights_allows_the_chains_max_upscale_only() {
        let committed = [(0, 19662), (2, 34405), (3, 11468)];
        // The chain scales the largest to 65535 and rounds.
        let up = |v: u16| ((f64::from(v) * 65535.0 / 34405.0).round()) as u16;
        let on_chain = [(0, up(19662)), (2, 65535), (3, up(11468))];
        assert!(same_weights(&committed, &on_chain));
        assert!(same_weights(&committed, &committed));
        // Another round's weights, another uid, a missing uid: not the commit.
        assert!(!same_weights(
            &committed,
            &[(0, 11468), (2, 34405), (3, 19662)]
        ));
        assert!(!same_weights(
            &committed,
            &[(0, 19662), (2, 34405), (4, 11468)]
        ));
        assert!(!same_weights(&committed, &[(0, 19662), (2, 34405)]));
        assert!(!same_weights(&committed, &[]));
        assert!(!same_weights(
            &committed,
            &[(0, 19662), (2, 34405), (3, 11470)]
        ));
    }

    #[test]
    fn the_burn_uid_is_never_attested_and_must_exist() {
        // uid 0 (the owner, burn uid) serves an axon too; uid 1 is this validator.
        let neurons = [
            neuron(0, true),
            neuron(1, true),
            neuron(2, true),
            neuron(3, false),
        ];
        let me = neurons[1].hotkey;
        let uids: Vec<u16> = miners_of(&neurons, &me, 0, 4)
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(uids, vec![2]);
        let e = miners_of(&neurons, &me, 9, 4).unwrap_err();
        assert!(matches!(e, ServiceError::NoBurnUid { uid: 9, .. }), "{e}");
        assert!(e.to_string().contains("subnet owner's uid"), "{e}");
    }
}
