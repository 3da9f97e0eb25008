//! What subtensor does with `set_weights` and `serve_axon` (the checks its
//! sources list, with its error names), on one subnet's state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use parity_scale_codec::{Compact, Decode};
use serde::Deserialize;
use tvm_protocol::keys::{AccountId, Hotkey};

use crate::extrinsic::Verified;
use crate::neurons::{ip_number, AxonInfo, NeuronInfoLite, PrometheusInfo};

/// Rao per alpha (9 decimals).
pub const RAO: u64 = 1_000_000_000;

/// A subnet as the fixture describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Fixture {
    pub netuid: u16,
    pub tempo: u16,
    pub weights_rate_limit: u64,
    pub weights_version_key: u64,
    pub commit_reveal: bool,
    pub min_allowed_weights: u16,
    /// Blocks between two `serve_axon` by one hotkey.
    pub serving_rate_limit: u64,
    /// `CommitRevealWeightsVersion` (finney's is 4).
    pub commit_reveal_version: u16,
    /// `RevealPeriodEpochs`: commits are revealed this many epochs later.
    pub reveal_period_epochs: u64,
    /// Seconds between the test beacon's rounds (quicknet's is 3).
    pub beacon_period: u64,
    pub neurons: Vec<FixtureNeuron>,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture {
            netuid: 4,
            tempo: 360,
            weights_rate_limit: 100,
            weights_version_key: 0,
            commit_reveal: false,
            min_allowed_weights: 1,
            serving_rate_limit: 50,
            commit_reveal_version: 4,
            reveal_period_epochs: 1,
            beacon_period: 3,
            neurons: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixtureNeuron {
    /// SS58, or a development URI such as `//Alice`.
    pub hotkey: String,
    #[serde(default)]
    pub coldkey: Option<String>,
    /// In alpha (converted to rao).
    #[serde(default)]
    pub stake: f64,
    #[serde(default)]
    pub validator_permit: bool,
    /// `ip:port` of an axon already served.
    #[serde(default)]
    pub axon: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("test chain fixture: {0}")]
    Yaml(String),
    #[error("test chain fixture: neuron {index}: {reason}")]
    Neuron { index: usize, reason: String },
}

fn account(s: &str) -> Result<AccountId, String> {
    if s.starts_with("//") {
        return Hotkey::from_uri(s)
            .map(|k| k.account_id())
            .map_err(|e| e.to_string());
    }
    AccountId::from_ss58(s).map_err(|e| e.to_string())
}

impl Fixture {
    pub fn from_yaml(text: &str) -> Result<Self, FixtureError> {
        serde_saphyr::from_str(text).map_err(|e| FixtureError::Yaml(e.to_string()))
    }
}

/// Why the chain refused a call: the `SubtensorModule` error's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SubtensorModule.{0}")]
pub struct DispatchError(pub &'static str);

/// One timelocked commit, as the chain files it under its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub who: AccountId,
    pub block: u64,
    pub commit: Vec<u8>,
    pub reveal_round: u64,
}

/// What became of a commit at reveal (subtensor only logs these; the test
/// chain keeps them for tests and the devnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    pub who: AccountId,
    pub commit_block: u64,
    pub block: u64,
    /// `Ok`: the weights were applied; `Err`: why the commit was dropped.
    pub result: Result<(), String>,
}

/// One subnet's state.
pub struct Subnet {
    pub fixture: Fixture,
    pub neurons: Vec<NeuronInfoLite>,
    pub last_update: Vec<u64>,
    pub weights: BTreeMap<u16, Vec<(u16, u16)>>,
    last_served: HashMap<AccountId, u64>,
    /// Unrevealed commits by the epoch they were made in.
    pub commits: BTreeMap<u64, Vec<Commit>>,
    pub reveals: Vec<Reveal>,
    /// The test beacon (SIMULATED drand) and the pulses the chain holds.
    pub beacon: crate::drand::TestBeacon,
    pub pulses: BTreeMap<u64, Vec<u8>>,
}

/// Pulses kept (the real pallet keeps a window too).
const MAX_PULSES: usize = 4096;

impl Subnet {
    pub fn new(fixture: Fixture) -> Result<Self, FixtureError> {
        let mut neurons = Vec::new();
        for (i, n) in fixture.neurons.iter().enumerate() {
            let bad = |reason: String| FixtureError::Neuron { index: i, reason };
            let hotkey = account(&n.hotkey).map_err(bad)?;
            let coldkey = match &n.coldkey {
                Some(c) => account(c).map_err(bad)?,
                None => hotkey,
            };
            if !(n.stake >= 0.0 && n.stake < 1e9) {
                return Err(bad(format!(
                    "stake {} is not between 0 and 1e9 alpha",
                    n.stake
                )));
            }
            let axon_info = match n.axon {
                Some(a) => {
                    let (ip, ip_type) = ip_number(a.ip());
                    AxonInfo {
                        block: 1,
                        version: 1,
                        ip,
                        port: a.port(),
                        ip_type,
                        protocol: 4,
                        ..AxonInfo::default()
                    }
                }
                None => AxonInfo::default(),
            };
            neurons.push(NeuronInfoLite {
                hotkey: hotkey.0,
                coldkey: coldkey.0,
                uid: Compact(i as u16),
                netuid: Compact(fixture.netuid),
                active: true,
                axon_info,
                prometheus_info: PrometheusInfo::default(),
                stake: vec![(coldkey.0, Compact((n.stake * RAO as f64) as u64))],
                rank: Compact(0),
                emission: Compact(0),
                incentive: Compact(0),
                consensus: Compact(0),
                trust: Compact(0),
                validator_trust: Compact(0),
                dividends: Compact(0),
                last_update: Compact(0),
                validator_permit: n.validator_permit,
                pruning_score: Compact(0),
            });
        }
        let n = neurons.len();
        let genesis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let beacon = crate::drand::TestBeacon::new(seed, genesis, fixture.beacon_period.max(1));
        Ok(Subnet {
            fixture,
            neurons,
            last_update: vec![0; n],
            weights: BTreeMap::new(),
            last_served: HashMap::new(),
            commits: BTreeMap::new(),
            reveals: Vec::new(),
            beacon,
            pulses: BTreeMap::new(),
        })
    }

    /// The epoch `block` is in (the modulo schedule of the runtime whose
    /// metadata the test chain serves).
    pub fn epoch_of(&self, block: u64) -> u64 {
        let f = &self.fixture;
        (block + u64::from(f.netuid) + 1) / (u64::from(f.tempo) + 1)
    }

    /// What the chain does at the start of `block` (its `on_initialize`):
    /// take the beacon's pulses published by `now` (Unix seconds), then
    /// reveal the commits due, as subtensor's `reveal_crv3_commits` does:
    /// commits of epoch `current - RevealPeriodEpochs` are opened with their
    /// round's pulse (kept and tried again each block of that epoch while
    /// the pulse is missing), their payload's hotkey must be the committer,
    /// and their weights are applied by the `set_weights` rules; older
    /// commits are dropped.
    pub fn on_block(&mut self, block: u64, now: f64) {
        let latest = self.beacon.beacon.round_at(now);
        let from = self
            .pulses
            .last_key_value()
            .map(|(r, _)| r + 1)
            .unwrap_or(1)
            .max(latest.saturating_sub(MAX_PULSES as u64 - 1))
            .max(1);
        for r in from..=latest {
            self.pulses.insert(r, self.beacon.sign(r));
        }
        while self.pulses.len() > MAX_PULSES {
            self.pulses.pop_first();
        }
        let current = self.epoch_of(block);
        let period = self.fixture.reveal_period_epochs;
        if current < period {
            return;
        }
        let due = current - period;
        let expired: Vec<u64> = self.commits.range(..due).map(|(e, _)| *e).collect();
        for e in expired {
            for c in self.commits.remove(&e).unwrap_or_default() {
                self.reveals.push(Reveal {
                    who: c.who,
                    commit_block: c.block,
                    block,
                    result: Err(format!(
                        "expired: drand round {} never reached the chain in its reveal epoch",
                        c.reveal_round
                    )),
                });
            }
        }
        let mut kept = Vec::new();
        for c in self.commits.remove(&due).unwrap_or_default() {
            let Some(sig) = self.pulses.get(&c.reveal_round) else {
                kept.push(c);
                continue;
            };
            let result = self.reveal(&c, sig.clone(), block);
            self.reveals.push(Reveal {
                who: c.who,
                commit_block: c.block,
                block,
                result,
            });
        }
        if !kept.is_empty() {
            self.commits.insert(due, kept);
        }
    }

    fn reveal(&mut self, c: &Commit, signature: Vec<u8>, block: u64) -> Result<(), String> {
        use crate::drand::WeightsPayload;
        let plain = crate::drand::decrypt(&c.commit, &signature).map_err(|e| e.to_string())?;
        let p = WeightsPayload::decode(&mut &plain[..])
            .map_err(|e| format!("the payload does not decode: {e}"))?;
        if p.hotkey[..] != c.who.0[..] {
            return Err("the payload names another hotkey".into());
        }
        let netuid = self.fixture.netuid;
        self.apply_weights(
            &c.who,
            netuid,
            &p.uids,
            &p.values,
            p.version_key,
            block,
            true,
        )
        .map_err(|e| e.to_string())
    }

    fn uid_of(&self, who: &AccountId) -> Option<usize> {
        self.neurons.iter().position(|n| n.hotkey == who.0)
    }

    /// Apply a verified call at `block`.
    pub fn apply(&mut self, v: &Verified, block: u64) -> Result<(), DispatchError> {
        let mut args = &v.args[..];
        let malformed = |_| DispatchError("(call arguments do not decode)");
        match (v.pallet.as_str(), v.call.as_str()) {
            ("SubtensorModule", "set_weights") => {
                let netuid = u16::decode(&mut args).map_err(malformed)?;
                let dests = Vec::<u16>::decode(&mut args).map_err(malformed)?;
                let weights = Vec::<u16>::decode(&mut args).map_err(malformed)?;
                let version_key = u64::decode(&mut args).map_err(malformed)?;
                self.set_weights(&v.signer, netuid, &dests, &weights, version_key, block)
            }
            ("SubtensorModule", "commit_timelocked_weights") => {
                let netuid = u16::decode(&mut args).map_err(malformed)?;
                let commit = Vec::<u8>::decode(&mut args).map_err(malformed)?;
                let reveal_round = u64::decode(&mut args).map_err(malformed)?;
                let version = u16::decode(&mut args).map_err(malformed)?;
                if commit.len() > crate::drand::MAX_COMMIT_BYTES {
                    // A BoundedVec over its bound does not decode.
                    return Err(DispatchError("(call arguments do not decode)"));
                }
                self.commit(&v.signer, netuid, commit, reveal_round, version, block)
            }
            ("SubtensorModule", "serve_axon") => {
                let netuid = u16::decode(&mut args).map_err(malformed)?;
                let _version = u32::decode(&mut args).map_err(malformed)?;
                let ip = u128::decode(&mut args).map_err(malformed)?;
                let port = u16::decode(&mut args).map_err(malformed)?;
                let ip_type = u8::decode(&mut args).map_err(malformed)?;
                let protocol = u8::decode(&mut args).map_err(malformed)?;
                self.serve_axon(&v.signer, netuid, ip, port, ip_type, protocol, block)
            }
            _ => Err(DispatchError(
                "(the test chain only runs set_weights, commit_timelocked_weights and serve_axon)",
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn set_weights(
        &mut self,
        who: &AccountId,
        netuid: u16,
        dests: &[u16],
        weights: &[u16],
        version_key: u64,
        block: u64,
    ) -> Result<(), DispatchError> {
        if self.fixture.commit_reveal {
            return Err(DispatchError("CommitRevealEnabled"));
        }
        self.apply_weights(who, netuid, dests, weights, version_key, block, false)
    }

    /// `commit_timelocked_weights`, with subtensor's checks in its order.
    pub fn commit(
        &mut self,
        who: &AccountId,
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        version: u16,
        block: u64,
    ) -> Result<(), DispatchError> {
        let f = &self.fixture;
        if !f.commit_reveal {
            return Err(DispatchError("CommitRevealDisabled"));
        }
        if version != f.commit_reveal_version {
            return Err(DispatchError("IncorrectCommitRevealVersion"));
        }
        let uid = match self.uid_of(who) {
            Some(u) if netuid == f.netuid => u,
            _ => return Err(DispatchError("HotKeyNotRegisteredInSubNet")),
        };
        let last = self.last_update[uid];
        if last != 0 && block.saturating_sub(last) < f.weights_rate_limit {
            return Err(DispatchError("CommittingWeightsTooFast"));
        }
        let epoch = self.epoch_of(block);
        let queue = self.commits.entry(epoch).or_default();
        if queue.iter().filter(|c| c.who == *who).count() >= 10 {
            return Err(DispatchError("TooManyUnrevealedCommits"));
        }
        queue.push(Commit {
            who: *who,
            block,
            commit,
            reveal_round,
        });
        self.last_update[uid] = block;
        self.neurons[uid].last_update = Compact(block);
        Ok(())
    }

    /// The weight rules, shared by `set_weights` and reveals. A reveal
    /// (`revealed`) skips the rate limit and leaves `LastUpdate` alone, as
    /// subtensor does under commit-reveal (the commit set it).
    #[allow(clippy::too_many_arguments)]
    fn apply_weights(
        &mut self,
        who: &AccountId,
        netuid: u16,
        dests: &[u16],
        weights: &[u16],
        version_key: u64,
        block: u64,
        revealed: bool,
    ) -> Result<(), DispatchError> {
        let f = &self.fixture;
        if dests.len() != weights.len() {
            return Err(DispatchError("WeightVecNotEqualSize"));
        }
        let uid = match self.uid_of(who) {
            Some(u) if netuid == f.netuid => u,
            _ => return Err(DispatchError("HotKeyNotRegisteredInSubNet")),
        };
        if version_key < f.weights_version_key {
            return Err(DispatchError("IncorrectWeightVersionKey"));
        }
        let last = self.last_update[uid];
        if !revealed && last != 0 && block.saturating_sub(last) < f.weights_rate_limit {
            return Err(DispatchError("SettingWeightsTooFast"));
        }
        let n = self.neurons.len();
        let self_only = dests.len() == 1 && usize::from(dests[0]) == uid;
        if !self.neurons[uid].validator_permit && !self_only {
            return Err(DispatchError("NeuronNoValidatorPermit"));
        }
        if dests.iter().any(|&d| usize::from(d) >= n) {
            return Err(DispatchError("UidVecContainInvalidOne"));
        }
        let mut seen = dests.to_vec();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(DispatchError("DuplicateUids"));
        }
        if !self_only && dests.len() < usize::from(f.min_allowed_weights).min(n) {
            return Err(DispatchError("WeightVecLengthIsLow"));
        }
        self.weights.insert(
            uid as u16,
            dests.iter().copied().zip(weights.iter().copied()).collect(),
        );
        if !revealed {
            self.last_update[uid] = block;
            self.neurons[uid].last_update = Compact(block);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn serve_axon(
        &mut self,
        who: &AccountId,
        netuid: u16,
        ip: u128,
        port: u16,
        ip_type: u8,
        protocol: u8,
        block: u64,
    ) -> Result<(), DispatchError> {
        let uid = match self.uid_of(who) {
            Some(u) if netuid == self.fixture.netuid => u,
            _ => return Err(DispatchError("HotKeyNotRegisteredInNetwork")),
        };
        if ip_type != 4 && ip_type != 6 {
            return Err(DispatchError("InvalidIpType"));
        }
        if ip == 0 || (ip_type == 4 && ip > u128::from(u32::MAX)) {
            return Err(DispatchError("InvalidIpAddress"));
        }
        if port == 0 {
            return Err(DispatchError("InvalidPort"));
        }
        if let Some(&at) = self.last_served.get(who) {
            if block.saturating_sub(at) < self.fixture.serving_rate_limit {
                return Err(DispatchError("ServingRateLimitExceeded"));
            }
        }
        self.last_served.insert(*who, block);
        self.neurons[uid].axon_info = AxonInfo {
            block,
            version: 1,
            ip,
            port,
            ip_type,
            protocol,
            ..AxonInfo::default()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"
netuid: 4
weights_rate_limit: 100
weights_version_key: 7
neurons:
  - hotkey: "//Validator"
    stake: 5000
    validator_permit: true
  - hotkey: "//Miner1"
    axon: 127.0.0.1:7777
  - hotkey: "//Miner2"
"#;

    fn key(u: &str) -> AccountId {
        Hotkey::from_uri(u).unwrap().account_id()
    }

    #[test]
    fn set_weights_rules_with_subtensors_error_names() {
        let mut s = Subnet::new(Fixture::from_yaml(FIXTURE).unwrap()).unwrap();
        let v = key("//Validator");
        assert_eq!(
            s.set_weights(&v, 4, &[1, 2], &[1], 7, 10),
            Err(DispatchError("WeightVecNotEqualSize"))
        );
        assert_eq!(
            s.set_weights(&key("//Stranger"), 4, &[1], &[1], 7, 10),
            Err(DispatchError("HotKeyNotRegisteredInSubNet"))
        );
        assert_eq!(
            s.set_weights(&v, 5, &[1], &[1], 7, 10),
            Err(DispatchError("HotKeyNotRegisteredInSubNet"))
        );
        assert_eq!(
            s.set_weights(&v, 4, &[1], &[1], 6, 10),
            Err(DispatchError("IncorrectWeightVersionKey"))
        );
        assert_eq!(
            s.set_weights(&key("//Miner1"), 4, &[2], &[1], 7, 10),
            Err(DispatchError("NeuronNoValidatorPermit"))
        );
        assert_eq!(
            s.set_weights(&v, 4, &[1, 9], &[1, 1], 7, 10),
            Err(DispatchError("UidVecContainInvalidOne"))
        );
        assert_eq!(
            s.set_weights(&v, 4, &[1, 1], &[1, 1], 7, 10),
            Err(DispatchError("DuplicateUids"))
        );
        assert_eq!(s.set_weights(&v, 4, &[1, 2], &[60000, 5535], 7, 10), Ok(()));
        assert_eq!(s.weights[&0], vec![(1, 60000), (2, 5535)]);
        assert_eq!(
            s.set_weights(&v, 4, &[1], &[1], 7, 50),
            Err(DispatchError("SettingWeightsTooFast"))
        );
        assert_eq!(s.set_weights(&v, 4, &[1], &[1], 7, 110), Ok(()));
        // A miner may weight itself alone without a permit.
        assert_eq!(
            s.set_weights(&key("//Miner1"), 4, &[1], &[1], 7, 10),
            Ok(())
        );
        let mut cr = Fixture::from_yaml(FIXTURE).unwrap();
        cr.commit_reveal = true;
        let mut s = Subnet::new(cr).unwrap();
        assert_eq!(
            s.set_weights(&v, 4, &[1], &[1], 7, 10),
            Err(DispatchError("CommitRevealEnabled"))
        );
    }

    /// A commit-reveal subnet (tempo 10, netuid 4: epochs start at blocks
    /// where `(block + 5) % 11 == 0`, i.e. 6, 17, 28, …) whose beacon began
    /// at `T0` with 3-second rounds.
    const T0: f64 = 1_800_000_000.0;

    fn cr_subnet() -> Subnet {
        let mut f = Fixture::from_yaml(FIXTURE).unwrap();
        f.commit_reveal = true;
        f.tempo = 10;
        f.weights_rate_limit = 5;
        let mut s = Subnet::new(f).unwrap();
        s.beacon = crate::drand::TestBeacon::new([3; 32], T0 as u64, 3);
        s
    }

    fn commit_for(s: &Subnet, who: &str, round: u64, uids: &[u16], values: &[u16]) -> Vec<u8> {
        use parity_scale_codec::Encode;
        let p = crate::drand::WeightsPayload {
            hotkey: key(who).0.to_vec(),
            uids: uids.to_vec(),
            values: values.to_vec(),
            version_key: 7,
        };
        crate::drand::encrypt(&s.beacon.beacon, round, &p.encode()).unwrap()
    }

    #[test]
    fn commit_rules_with_subtensors_error_names() {
        let v = key("//Validator");
        let mut off = Subnet::new(Fixture::from_yaml(FIXTURE).unwrap()).unwrap();
        assert_eq!(
            off.commit(&v, 4, vec![1], 5, 4, 10),
            Err(DispatchError("CommitRevealDisabled"))
        );
        let mut s = cr_subnet();
        assert_eq!(
            s.commit(&v, 4, vec![1], 5, 3, 10),
            Err(DispatchError("IncorrectCommitRevealVersion"))
        );
        assert_eq!(
            s.commit(&key("//Stranger"), 4, vec![1], 5, 4, 10),
            Err(DispatchError("HotKeyNotRegisteredInSubNet"))
        );
        assert_eq!(s.commit(&v, 4, vec![1], 5, 4, 10), Ok(()));
        assert_eq!(s.last_update[0], 10, "a commit counts for the rate limit");
        assert_eq!(
            s.commit(&v, 4, vec![1], 5, 4, 12),
            Err(DispatchError("CommittingWeightsTooFast"))
        );
        // Ten unrevealed commits per hotkey and epoch (a rate limit of 0 to reach them).
        s.fixture.weights_rate_limit = 0;
        for b in 11..20 {
            assert_eq!(s.commit(&v, 4, vec![1], 5, 4, 11), Ok(()), "{b}");
        }
        assert_eq!(
            s.commit(&v, 4, vec![1], 5, 4, 11),
            Err(DispatchError("TooManyUnrevealedCommits"))
        );
        assert_eq!(
            s.set_weights(&v, 4, &[1], &[1], 7, 30),
            Err(DispatchError("CommitRevealEnabled"))
        );
    }

    #[test]
    fn a_commit_is_revealed_in_the_next_epoch_with_its_rounds_pulse() {
        let mut s = cr_subnet();
        let v = key("//Validator");
        // Committed at block 8 (epoch 1, blocks 6..16) to round 10, which the
        // beacon publishes at T0 + 27 s.
        let c = commit_for(&s, "//Validator", 10, &[1, 2], &[65535, 100]);
        s.commit(&v, 4, c, 10, 4, 8).unwrap();
        // Not in epoch 1.
        s.on_block(16, T0 + 19.0);
        assert!(s.weights.is_empty() && s.reveals.is_empty());
        // Epoch 2 starts at block 17, but round 10 is not out yet: kept.
        s.on_block(17, T0 + 20.0);
        assert!(s.weights.is_empty() && s.reveals.is_empty());
        assert_eq!(s.commits.values().map(Vec::len).sum::<usize>(), 1);
        // Once it is, the weights are the committed ones.
        s.on_block(18, T0 + 27.0);
        assert_eq!(s.weights[&0], vec![(1, 65535), (2, 100)]);
        assert_eq!(s.reveals.len(), 1);
        assert_eq!(s.reveals[0].result, Ok(()));
        assert_eq!(s.reveals[0].block, 18);
        assert_eq!(
            s.last_update[0], 8,
            "a reveal leaves LastUpdate to the commit"
        );
        assert!(s.commits.is_empty());
    }

    #[test]
    fn damaged_foreign_and_late_commits_are_dropped_at_reveal() {
        let mut s = cr_subnet();
        s.fixture.weights_rate_limit = 0;
        let v = key("//Validator");
        // A damaged ciphertext.
        let mut bad = commit_for(&s, "//Validator", 10, &[1], &[1]);
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        s.commit(&v, 4, bad, 10, 4, 8).unwrap();
        // A payload naming another hotkey (a commit replayed by someone else).
        let foreign = commit_for(&s, "//Miner1", 10, &[1], &[1]);
        s.commit(&v, 4, foreign, 10, 4, 8).unwrap();
        // Encrypted to another round than the one it claims.
        let wrong = commit_for(&s, "//Validator", 11, &[1], &[1]);
        s.commit(&v, 4, wrong, 10, 4, 8).unwrap();
        // A round whose pulse never comes within the reveal epoch.
        let late = commit_for(&s, "//Validator", 1_000_000, &[1], &[1]);
        s.commit(&v, 4, late, 1_000_000, 4, 9).unwrap();
        s.on_block(17, T0 + 60.0);
        let errors: Vec<String> = s
            .reveals
            .iter()
            .map(|r| r.result.clone().unwrap_err())
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("does not decrypt"), "{}", errors[0]);
        assert!(errors[1].contains("another hotkey"), "{}", errors[1]);
        assert!(errors[2].contains("does not decrypt"), "{}", errors[2]);
        assert!(s.weights.is_empty());
        // The late one is kept through epoch 2 (blocks 17..27), then dropped.
        s.on_block(27, T0 + 90.0);
        assert_eq!(s.reveals.len(), 3);
        s.on_block(28, T0 + 93.0);
        assert_eq!(s.reveals.len(), 4);
        assert!(s.reveals[3]
            .result
            .as_ref()
            .unwrap_err()
            .contains("expired"));
        assert!(s.commits.is_empty());
    }

    #[test]
    fn serve_axon_rules() {
        let mut s = Subnet::new(Fixture::from_yaml(FIXTURE).unwrap()).unwrap();
        let m = key("//Miner2");
        let (ip, t) = ip_number("203.0.113.5".parse().unwrap());
        assert_eq!(
            s.serve_axon(&key("//Nobody"), 4, ip, 7777, t, 4, 1),
            Err(DispatchError("HotKeyNotRegisteredInNetwork"))
        );
        assert_eq!(
            s.serve_axon(&m, 4, ip, 7777, 5, 4, 1),
            Err(DispatchError("InvalidIpType"))
        );
        assert_eq!(
            s.serve_axon(&m, 4, 0, 7777, 4, 4, 1),
            Err(DispatchError("InvalidIpAddress"))
        );
        assert_eq!(
            s.serve_axon(&m, 4, ip, 0, 4, 4, 1),
            Err(DispatchError("InvalidPort"))
        );
        assert_eq!(s.serve_axon(&m, 4, ip, 7777, t, 4, 1), Ok(()));
        assert_eq!(
            s.serve_axon(&m, 4, ip, 7778, t, 4, 10),
            Err(DispatchError("ServingRateLimitExceeded"))
        );
        assert_eq!(s.neurons[2].axon_info.port, 7777);
    }

    /// Every error name the test chain gives is one subtensor has.
    #[test]
    fn error_names_exist_in_the_runtime() {
        let md = crate::metadata::finney().unwrap();
        let ty = md
            .pallet_by_name("SubtensorModule")
            .unwrap()
            .error_ty_id()
            .unwrap();
        let scale_info::TypeDef::Variant(v) = &md.types().resolve(ty).unwrap().type_def else {
            panic!()
        };
        let src = include_str!("rules.rs");
        let used: Vec<&str> = src
            .split("DispatchError(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|n| !n.starts_with('('))
            .collect();
        assert!(used.len() >= 14, "{used:?}");
        for name in used {
            assert!(
                v.variants.iter().any(|x| x.name == name),
                "{name} is not a SubtensorModule error"
            );
        }
    }
}
