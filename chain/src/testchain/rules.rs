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

/// One subnet's state.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub fixture: Fixture,
    pub neurons: Vec<NeuronInfoLite>,
    pub last_update: Vec<u64>,
    pub weights: BTreeMap<u16, Vec<(u16, u16)>>,
    last_served: HashMap<AccountId, u64>,
}

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
        Ok(Subnet {
            fixture,
            neurons,
            last_update: vec![0; n],
            weights: BTreeMap::new(),
            last_served: HashMap::new(),
        })
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
                "(the test chain only runs set_weights and serve_axon)",
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
        let f = &self.fixture;
        if f.commit_reveal {
            return Err(DispatchError("CommitRevealEnabled"));
        }
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
        if last != 0 && block.saturating_sub(last) < f.weights_rate_limit {
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
        self.last_update[uid] = block;
        self.neurons[uid].last_update = Compact(block);
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
