//! The validator's epoch: the metagraph from the chain, one round over every
//! serving miner (resumed from the database after a restart), the weights
//! set on chain when the rate limit allows, everything stored.

use std::time::SystemTime;

use tvm_chain::calls::SetWeights;
use tvm_chain::client::Client;
use tvm_protocol::keys::Hotkey;

use crate::attest::Attester;
use crate::db::Db;
use crate::policy::Policy;
use crate::round::{self, Collateral, Miner, RoundConfig, RoundReport};

pub struct Service<'a> {
    pub client: &'a Client,
    pub db: &'a Db,
    pub attester: &'a Attester,
    pub validator: &'a Hotkey,
    pub policy: &'a Policy,
    pub collateral: &'a dyn Collateral,
    pub round: &'a RoundConfig,
    pub netuid: u16,
    /// The least version key to send (the chain's `WeightsVersionKey` wins when higher).
    pub version_key: u64,
}

/// What became of the round's weights.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "weights", rename_all = "snake_case")]
pub enum WeightsSent {
    Landed {
        block_hash: String,
    },
    /// Not sent, and why (the rate limit, commit-reveal, no permit).
    NotSent {
        reason: String,
    },
    /// Sent, and refused by the chain with its reason.
    Refused {
        reason: String,
    },
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
    #[error("the validator hotkey {0} is not registered on the subnet")]
    NotRegistered(String),
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
    let neurons = s.client.neurons(s.netuid).await?;
    let my_uid = neurons
        .iter()
        .find(|n| n.hotkey == me)
        .map(|n| n.uid)
        .ok_or_else(|| ServiceError::NotRegistered(me.to_ss58()))?;
    let miners: Vec<Miner> = neurons
        .iter()
        .filter(|n| n.hotkey != me)
        .filter_map(|n| {
            n.axon.map(|(ip, port)| Miner {
                uid: n.uid,
                hotkey: n.hotkey,
                axon: std::net::SocketAddr::new(ip, port),
            })
        })
        .collect();
    let prior = s.db.finished_results(row.id)?;
    let db = s.db;
    let store = |r: &round::NodeReport, n: &crate::scoring::NodeResult| {
        // A failed write only means this node is attested again after a restart.
        let _ = db.node_done(row.id, r, n);
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

    let hyper = s.client.hyperparams(s.netuid).await?;
    let block = s.client.best_block().await?;
    let last = hyper
        .last_update
        .get(usize::from(my_uid))
        .copied()
        .unwrap_or(0);
    let weights = if hyper.commit_reveal {
        WeightsSent::NotSent {
            reason: format!("commit-reveal is enabled on subnet {}: not sent", s.netuid),
        }
    } else if last != 0 && block.saturating_sub(last) < hyper.weights_rate_limit {
        WeightsSent::NotSent {
            reason: format!(
                "rate limit: weights were set at block {last}; the next are allowed at block {}",
                last + hyper.weights_rate_limit
            ),
        }
    } else {
        let (dests, weights): (Vec<u16>, Vec<u16>) = report.scores.weights.iter().copied().unzip();
        let w = SetWeights {
            netuid: s.netuid,
            dests,
            weights,
            version_key: s.version_key.max(hyper.weights_version_key),
        };
        match s.client.set_weights(s.validator, w).await {
            Ok(i) => WeightsSent::Landed {
                block_hash: hex::encode(i.block_hash),
            },
            Err(e) => WeightsSent::Refused {
                reason: e.to_string(),
            },
        }
    };
    let result = serde_json::json!({
        "weights": report.scores.weights,
        "notes": report.scores.notes,
        "set": weights,
    });
    s.db.finish_round(row.id, now(), &result.to_string())?;
    Ok(EpochOutcome::Done {
        epoch,
        report: Box::new(report),
        weights,
    })
}
