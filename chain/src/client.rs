//! The online client: subxt's RPC layer (legacy Substrate methods) with the
//! live node's metadata and runtime version, read at connect time — never a
//! compiled-in extension list. Every call has a timeout.

use std::time::Duration;

use subxt::config::RpcConfigFor;
use subxt::rpcs::{LegacyRpcMethods, RpcClient};
use subxt::{Metadata, SubstrateConfig};
use tvm_protocol::keys::{AccountId, Hotkey};

use parity_scale_codec::Encode;

use crate::calls::{Call, CommitTimelockedWeights, ServeAxon, SetWeights};
use crate::drand::{Epochs, Schedule, WeightsPayload};
use crate::extrinsic::{self, ChainState, Mortality, TxParams};
use crate::hyperparams::{self, CommitReveal, Hyperparams, Item};
use crate::neurons::{self, Neuron};

type Rpc = LegacyRpcMethods<RpcConfigFor<SubstrateConfig>>;

/// How long one RPC may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Transactions are valid for this many blocks (~12.8 minutes on finney).
pub const MORTALITY_PERIOD: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the chain at {url}: {reason} (check the endpoint, e.g. wss://entrypoint-finney.opentensor.ai:443)")]
    Connect { url: String, reason: String },
    #[error("the chain did not answer {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("the chain refused or failed {what}: {reason}")]
    Rpc { what: &'static str, reason: String },
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Neurons(#[from] neurons::NeuronsError),
    #[error(transparent)]
    Hyperparams(#[from] hyperparams::HyperparamError),
    #[error(transparent)]
    Call(#[from] crate::calls::CallError),
    #[error(transparent)]
    Extrinsic(#[from] extrinsic::ExtrinsicError),
    #[error("the chain refused {call}: {error}")]
    Dispatch { call: &'static str, error: String },
    #[error("the transaction was dropped from the pool ({0}): resubmit")]
    Dropped(String),
    #[error("commit-reveal is enabled on subnet {netuid}: weights are committed (commit_weights), not set; no weights were sent")]
    CommitRevealRequired { netuid: u16 },
    #[error(
        "commit-reveal is off on subnet {netuid}: set weights directly; nothing was committed"
    )]
    CommitRevealDisabled { netuid: u16 },
    #[error("subnet {netuid} runs no epochs (tempo 0): a commit would never be revealed; nothing was committed")]
    NoEpochs { netuid: u16 },
    #[error("cannot encrypt the weights: {0}")]
    Timelock(#[from] crate::drand::TlockError),
    #[error("the chain's drand beacon is not drand's quicknet (Drand.BeaconConfig differs): nothing was committed; a commit to another beacon could be opened by whoever holds its key (a test chain needs dangerous_chain_drand_beacon)")]
    UnexpectedBeacon,
    #[error("block_seconds is {0}: it must be above 0 and at most 60 (finney's is 12); nothing was committed")]
    BadBlockTime(f64),
    #[error("the commit's drand round {reveal_round} is not ahead of the beacon's round {now} (check block_seconds and this machine's clock): nothing was committed, as anyone could open it now")]
    RoundNotAhead { reveal_round: u64, now: u64 },
}

async fn timed<T, E: std::fmt::Display>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClientError::Rpc {
            what,
            reason: e.to_string(),
        }),
        Err(_) => Err(ClientError::Timeout {
            what,
            after: RPC_TIMEOUT,
        }),
    }
}

/// An extrinsic the chain applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Included {
    pub block_hash: [u8; 32],
}

/// Which drand beacon a commit may be encrypted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconTrust {
    /// drand's quicknet only, as finney runs it: the chain's
    /// `Drand.BeaconConfig` must be quicknet's (an RPC node cannot hand the
    /// validator a beacon whose key it holds).
    Quicknet,
    /// Whatever beacon the chain names: for test chains with their own
    /// beacon only.
    DangerousChain,
}

/// A commit the chain applied, and when it will be revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub included: Included,
    /// The epoch the chain files it under (`TimelockedWeightCommits`).
    pub commit_epoch: u64,
    /// The drand round whose signature opens it.
    pub reveal_round: u64,
    /// The first block at which the chain tries to reveal it.
    pub first_reveal_block: u64,
    /// BLAKE2-256 of the commit, as the chain's `TimelockedWeightsCommitted` event names it.
    pub commit_hash: [u8; 32],
}

/// A connection to a subtensor node (or the test chain).
pub struct Client {
    rpc: Rpc,
    md: Metadata,
    chain: ChainState,
}

impl Client {
    /// Connect and read the node's metadata, runtime version and genesis.
    /// `ws://` is accepted for loopback and private endpoints.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let connect = async {
            match url.starts_with("wss://") {
                true => RpcClient::from_url(url).await,
                false => RpcClient::from_insecure_url(url).await,
            }
        };
        let client = match tokio::time::timeout(RPC_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    url: url.into(),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    url: url.into(),
                    reason: "timed out".into(),
                })
            }
        };
        let rpc = Rpc::new(client);
        let md_bytes = timed("state_getMetadata", rpc.state_get_metadata(None)).await?;
        let md = crate::metadata::decode(&md_bytes.into_raw())?;
        neurons::check_layout(&md)?;
        let version = timed(
            "state_getRuntimeVersion",
            rpc.state_get_runtime_version(None),
        )
        .await?;
        let genesis = timed("chain_getBlockHash(0)", rpc.genesis_hash()).await?;
        let chain = ChainState {
            genesis_hash: genesis.0,
            spec_version: version.spec_version,
            transaction_version: version.transaction_version,
        };
        Ok(Client { rpc, md, chain })
    }

    /// Connect, retrying with exponential backoff (1 s doubling to 30 s)
    /// until `give_up_after` has passed; each failure is logged to stderr by
    /// the caller's choice of `on_retry`.
    pub async fn connect_with_backoff(
        url: &str,
        give_up_after: Duration,
        mut on_retry: impl FnMut(&ClientError, Duration),
    ) -> Result<Self, ClientError> {
        let start = tokio::time::Instant::now();
        let mut wait = Duration::from_secs(1);
        loop {
            match Self::connect(url).await {
                Ok(c) => return Ok(c),
                Err(e) if start.elapsed() + wait < give_up_after => {
                    on_retry(&e, wait);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// New best blocks, by number, as the node announces them.
    pub async fn new_blocks(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Result<u64, ClientError>>, ClientError> {
        use futures_util::StreamExt;
        let sub = timed(
            "chain_subscribeNewHeads",
            self.rpc.chain_subscribe_new_heads(),
        )
        .await?;
        Ok(sub.map(|h| {
            h.map(|h| h.number).map_err(|e| ClientError::Rpc {
                what: "chain_newHead",
                reason: e.to_string(),
            })
        }))
    }

    pub fn metadata(&self) -> &Metadata {
        &self.md
    }

    pub fn chain_state(&self) -> ChainState {
        self.chain
    }

    pub async fn neurons(&self, netuid: u16) -> Result<Vec<Neuron>, ClientError> {
        let raw = timed(
            "NeuronInfoRuntimeApi_get_neurons_lite",
            self.rpc
                .state_call(neurons::METHOD_CALL, Some(&neurons::request(netuid)), None),
        )
        .await?;
        Ok(neurons::decode(&raw)?)
    }

    pub async fn hyperparams(&self, netuid: u16) -> Result<Hyperparams, ClientError> {
        let mut stored: Vec<Option<Vec<u8>>> = Vec::new();
        for item in Item::ALL {
            let key = hyperparams::storage_key(&self.md, item, netuid)?;
            stored.push(timed("state_getStorage", self.rpc.state_get_storage(&key, None)).await?);
        }
        let s: Vec<Option<&[u8]>> = stored.iter().map(|o| o.as_deref()).collect();
        Ok(Hyperparams::from_storage(
            &self.md,
            [s[0], s[1], s[2], s[3], s[4]],
        )?)
    }

    /// Sign `call` for the current chain state (nonce, mortal against the head).
    async fn signed(&self, signer: &Hotkey, call: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let who = subxt::utils::AccountId32(signer.account_id().0);
        let nonce = timed(
            "system_accountNextIndex",
            self.rpc.system_account_next_index(&who),
        )
        .await?;
        let head = timed(
            "chain_getFinalizedHead",
            self.rpc.chain_get_finalized_head(),
        )
        .await?;
        let header = timed("chain_getHeader", self.rpc.chain_get_header(Some(head))).await?;
        let mortality = match header {
            Some(h) => Mortality::Mortal {
                period: MORTALITY_PERIOD,
                block: h.number,
                block_hash: head.0,
            },
            None => Mortality::Immortal,
        };
        Ok(extrinsic::sign(
            &self.md,
            &self.chain,
            &TxParams {
                nonce,
                tip: 0,
                mortality,
            },
            &call,
            signer,
        )?)
    }

    /// Sign, submit and watch until the extrinsic is in a block; then read
    /// how it ended from that block's events.
    async fn submit_and_watch(
        &self,
        what: &'static str,
        signer: &Hotkey,
        call: Vec<u8>,
    ) -> Result<Included, ClientError> {
        use subxt::rpcs::methods::legacy::TransactionStatus;
        let x = self.signed(signer, call).await?;
        let mut sub = timed(
            "author_submitAndWatchExtrinsic",
            self.rpc.author_submit_and_watch_extrinsic(&x),
        )
        .await?;
        let block = loop {
            let status = match tokio::time::timeout(RPC_TIMEOUT * 4, sub.next()).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        what: "inclusion in a block",
                        after: RPC_TIMEOUT * 4,
                    })
                }
                Ok(None) => return Err(ClientError::Dropped("the watch ended".into())),
                Ok(Some(Err(e))) => {
                    return Err(ClientError::Rpc {
                        what: "author_extrinsicUpdate",
                        reason: e.to_string(),
                    })
                }
                Ok(Some(Ok(s))) => s,
            };
            match status {
                TransactionStatus::InBlock(h) | TransactionStatus::Finalized(h) => break h,
                TransactionStatus::Dropped
                | TransactionStatus::Invalid
                | TransactionStatus::Usurped(_) => {
                    return Err(ClientError::Dropped(format!("{status:?}")))
                }
                _ => continue,
            }
        };
        let details = timed("chain_getBlock", self.rpc.chain_get_block(Some(block))).await?;
        let index = details
            .and_then(|d| d.block.extrinsics.iter().position(|e| e.0 == x))
            .ok_or_else(|| ClientError::Rpc {
                what: "chain_getBlock",
                reason: "the block does not hold the extrinsic".into(),
            })?;
        let events = timed(
            "state_getStorage(System.Events)",
            self.rpc
                .state_get_storage(&crate::events::key(), Some(block)),
        )
        .await?
        .unwrap_or_default();
        match crate::events::dispatch_of(&self.md, &events, index as u32) {
            Ok(Some(crate::events::Dispatch::Success)) => Ok(Included {
                block_hash: block.0,
            }),
            Ok(Some(crate::events::Dispatch::Failed(error))) => {
                Err(ClientError::Dispatch { call: what, error })
            }
            Ok(None) => Err(ClientError::Rpc {
                what: "System.Events",
                reason: "no result for the extrinsic".into(),
            }),
            Err(e) => Err(ClientError::Rpc {
                what: "System.Events",
                reason: e.to_string(),
            }),
        }
    }

    /// `set_weights`, waiting for its block — refused up front, with nothing
    /// sent, when the subnet runs commit-reveal. A refusal by the chain names
    /// its error, e.g. `SubtensorModule.SettingWeightsTooFast`.
    pub async fn set_weights(
        &self,
        signer: &Hotkey,
        w: SetWeights,
    ) -> Result<Included, ClientError> {
        if self.hyperparams(w.netuid).await?.commit_reveal {
            return Err(ClientError::CommitRevealRequired { netuid: w.netuid });
        }
        let call = w.call_data(&self.md)?;
        self.submit_and_watch("set_weights", signer, call).await
    }

    /// One storage value at the best block (`None`: nothing stored).
    async fn storage(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        timed("state_getStorage", self.rpc.state_get_storage(key, None)).await
    }

    /// What committing on `netuid` needs now: the chain's commit-reveal
    /// settings and its epoch schedule at the best block. `block_time` is
    /// the chain's seconds per block (12 on finney). Refused when the
    /// subnet does not run commit-reveal.
    pub async fn commit_schedule(
        &self,
        netuid: u16,
        block_time: f64,
    ) -> Result<(CommitReveal, Schedule), ClientError> {
        if !(block_time > 0.0 && block_time <= 60.0) {
            return Err(ClientError::BadBlockTime(block_time));
        }
        use hyperparams::{key_of, BEACON_CONFIG, COMMIT_REVEAL_VERSION, REVEAL_PERIOD_EPOCHS};
        let version = self
            .storage(&key_of(
                &self.md,
                COMMIT_REVEAL_VERSION.0,
                COMMIT_REVEAL_VERSION.1,
                (),
            )?)
            .await?;
        let period = self
            .storage(&key_of(
                &self.md,
                REVEAL_PERIOD_EPOCHS.0,
                REVEAL_PERIOD_EPOCHS.1,
                (netuid,),
            )?)
            .await?;
        let beacon = match self.md.pallet_by_name(BEACON_CONFIG.0) {
            Some(_) => {
                self.storage(&key_of(&self.md, BEACON_CONFIG.0, BEACON_CONFIG.1, ())?)
                    .await?
            }
            None => None,
        };
        let cr = CommitReveal::from_storage(
            &self.md,
            version.as_deref(),
            period.as_deref(),
            beacon.as_deref(),
        )?;
        let hyper = self.hyperparams(netuid).await?;
        if !hyper.commit_reveal {
            return Err(ClientError::CommitRevealDisabled { netuid });
        }
        let block = self.best_block().await?;
        // The stateful epoch counter where the runtime has it.
        let mut counter = Vec::new();
        for name in hyperparams::EPOCH_COUNTER {
            let stored = match key_of(&self.md, hyperparams::PALLET, name, (netuid,)) {
                Ok(key) => self.storage(&key).await?,
                Err(_) => break,
            };
            let value: u64 = hyperparams::read_u64(&self.md, name, stored.as_deref())?;
            counter.push(value);
        }
        let epochs = match counter[..] {
            [index, last_epoch_block, pending_epoch_at, blocks_since_last_step] => {
                Epochs::Stateful {
                    index,
                    last_epoch_block,
                    pending_epoch_at,
                    blocks_since_last_step,
                }
            }
            _ => Epochs::Modulo { netuid },
        };
        let schedule = Schedule {
            block,
            tempo: u64::from(hyper.tempo),
            epochs,
            reveal_period_epochs: cr.reveal_period_epochs,
            block_time,
        };
        Ok((cr, schedule))
    }

    /// `commit_timelocked_weights`: the weights encrypted to the drand round
    /// the chain will have when it reveals them (`reveal_period_epochs`
    /// epochs on), waiting for the block; `plan` is what
    /// [`Client::commit_schedule`] read just before.
    pub async fn commit_weights(
        &self,
        signer: &Hotkey,
        w: SetWeights,
        plan: &(CommitReveal, Schedule),
        trust: BeaconTrust,
    ) -> Result<Committed, ClientError> {
        let (cr, schedule) = plan;
        if trust == BeaconTrust::Quicknet && cr.beacon != crate::drand::Beacon::quicknet() {
            return Err(ClientError::UnexpectedBeacon);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let (Some(first_reveal_block), Some(reveal_round)) = (
            schedule.first_reveal_block(),
            schedule.reveal_round(&cr.beacon, now),
        ) else {
            return Err(ClientError::NoEpochs { netuid: w.netuid });
        };
        // The round must still be to come (a slow clock, a wrong block time
        // or a beacon genesis in the future would make it readable now).
        let current = cr.beacon.round_at(now);
        if reveal_round <= current {
            return Err(ClientError::RoundNotAhead {
                reveal_round,
                now: current,
            });
        }
        let payload = WeightsPayload {
            hotkey: signer.account_id().0.to_vec(),
            uids: w.dests,
            values: w.weights,
            version_key: w.version_key,
        };
        let commit = crate::drand::encrypt(&cr.beacon, reveal_round, &payload.encode())?;
        let commit_hash = crate::extrinsic::blake2_256(&commit);
        let call = CommitTimelockedWeights {
            netuid: w.netuid,
            commit,
            reveal_round,
            commit_reveal_version: cr.version,
        }
        .call_data(&self.md)?;
        let included = self
            .submit_and_watch("commit_timelocked_weights", signer, call)
            .await?;
        Ok(Committed {
            included,
            commit_epoch: schedule.commit_epoch(),
            reveal_round,
            first_reveal_block,
            commit_hash,
        })
    }

    /// Whether `who` has an unrevealed commit filed under `epoch`
    /// (`TimelockedWeightCommits`): the chain's own record of a commit.
    pub async fn has_commit(
        &self,
        netuid: u16,
        epoch: u64,
        who: &AccountId,
    ) -> Result<bool, ClientError> {
        use hyperparams::{key_of, COMMITS};
        let stored = self
            .storage(&key_of(&self.md, COMMITS.0, COMMITS.1, (netuid, epoch))?)
            .await?;
        let commits = hyperparams::read_commits(&self.md, stored.as_deref())?;
        Ok(commits.iter().any(|(w, ..)| *w == who.0))
    }

    /// The weights `uid` has on chain (`SubtensorModule.Weights`), as the
    /// chain stores them (max-upscaled to 65535).
    pub async fn weights_of(&self, netuid: u16, uid: u16) -> Result<Vec<(u16, u16)>, ClientError> {
        use hyperparams::{key_of, WEIGHTS};
        let stored = self
            .storage(&key_of(&self.md, WEIGHTS.0, WEIGHTS.1, (netuid, uid))?)
            .await?;
        Ok(hyperparams::read_weights(&self.md, stored.as_deref())?)
    }

    pub async fn serve_axon(&self, signer: &Hotkey, a: ServeAxon) -> Result<Included, ClientError> {
        let call = a.call_data(&self.md)?;
        self.submit_and_watch("serve_axon", signer, call).await
    }

    /// The best block's number.
    pub async fn best_block(&self) -> Result<u64, ClientError> {
        let h = timed("chain_getHeader", self.rpc.chain_get_header(None)).await?;
        h.map(|h| h.number).ok_or(ClientError::Rpc {
            what: "chain_getHeader",
            reason: "no best block".into(),
        })
    }

    /// The next index the chain expects from `who`.
    pub async fn nonce(&self, who: &AccountId) -> Result<u64, ClientError> {
        timed(
            "system_accountNextIndex",
            self.rpc
                .system_account_next_index(&subxt::utils::AccountId32(who.0)),
        )
        .await
    }
}
