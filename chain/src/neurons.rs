//! The metagraph as `NeuronInfoRuntimeApi_get_neurons_lite` returns it: a
//! SCALE `Vec<NeuronInfoLite>`. The typed form below is checked against the
//! runtime's own type information (field names and order) before use, so a
//! runtime that changed the layout is refused with a clear message instead
//! of decoded into nonsense.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use parity_scale_codec::{Compact, Decode, Encode};
use subxt::Metadata;
use tvm_protocol::keys::AccountId;

pub const RUNTIME_API: &str = "NeuronInfoRuntimeApi";
pub const METHOD: &str = "get_neurons_lite";
/// The `state_call` name of the runtime API method.
pub const METHOD_CALL: &str = "NeuronInfoRuntimeApi_get_neurons_lite";

/// `pallet_subtensor::AxonInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct AxonInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
    pub protocol: u8,
    pub placeholder1: u8,
    pub placeholder2: u8,
}

/// `pallet_subtensor::PrometheusInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct PrometheusInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
}

/// `pallet_subtensor::rpc_info::neuron_info::NeuronInfoLite`, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct NeuronInfoLite {
    pub hotkey: [u8; 32],
    pub coldkey: [u8; 32],
    pub uid: Compact<u16>,
    pub netuid: Compact<u16>,
    pub active: bool,
    pub axon_info: AxonInfo,
    pub prometheus_info: PrometheusInfo,
    /// (coldkey, stake in rao) pairs.
    pub stake: Vec<([u8; 32], Compact<u64>)>,
    pub rank: Compact<u16>,
    pub emission: Compact<u64>,
    pub incentive: Compact<u16>,
    pub consensus: Compact<u16>,
    pub trust: Compact<u16>,
    pub validator_trust: Compact<u16>,
    pub dividends: Compact<u16>,
    pub last_update: Compact<u64>,
    pub validator_permit: bool,
    pub pruning_score: Compact<u16>,
}

const FIELDS: [&str; 18] = [
    "hotkey",
    "coldkey",
    "uid",
    "netuid",
    "active",
    "axon_info",
    "prometheus_info",
    "stake",
    "rank",
    "emission",
    "incentive",
    "consensus",
    "trust",
    "validator_trust",
    "dividends",
    "last_update",
    "validator_permit",
    "pruning_score",
];

/// What a validator or miner needs of a neuron.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    /// Where the neuron serves, when it announced an axon.
    pub axon: Option<(IpAddr, u16)>,
    pub validator_permit: bool,
    /// Total stake in rao (10⁻⁹ of a unit).
    pub stake: u64,
    pub last_update: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeuronsError {
    #[error("the runtime has no {RUNTIME_API}.{METHOD}: is this a subtensor node?")]
    NoApi,
    #[error("the runtime's NeuronInfoLite is {found:?}, not the layout tvm reads ({FIELDS:?}): the runtime changed; update tvm")]
    Layout { found: Vec<String> },
    #[error("the metagraph answer cannot be decoded: {0}")]
    Decode(String),
}

/// Check the runtime returns `Vec<NeuronInfoLite>` with the fields we read.
pub fn check_layout(md: &Metadata) -> Result<(), NeuronsError> {
    use scale_info::TypeDef;
    let api = md
        .runtime_api_trait_by_name(RUNTIME_API)
        .ok_or(NeuronsError::NoApi)?;
    let method = api.method_by_name(METHOD).ok_or(NeuronsError::NoApi)?;
    let types = md.types();
    let layout = |found| NeuronsError::Layout { found };
    let outer = types
        .resolve(method.output_ty())
        .ok_or_else(|| layout(vec![]))?;
    let TypeDef::Sequence(seq) = &outer.type_def else {
        return Err(layout(vec!["(not a sequence)".into()]));
    };
    let inner = types
        .resolve(seq.type_param.id)
        .ok_or_else(|| layout(vec![]))?;
    let TypeDef::Composite(c) = &inner.type_def else {
        return Err(layout(vec!["(not a struct)".into()]));
    };
    let names: Vec<String> = c
        .fields
        .iter()
        .map(|f| f.name.clone().unwrap_or_default())
        .collect();
    if names != FIELDS {
        return Err(layout(names));
    }
    Ok(())
}

/// The argument of the runtime call: the netuid, SCALE-encoded.
pub fn request(netuid: u16) -> Vec<u8> {
    netuid.encode()
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Neuron>, NeuronsError> {
    let raw = Vec::<NeuronInfoLite>::decode(&mut &bytes[..])
        .map_err(|e| NeuronsError::Decode(e.to_string()))?;
    Ok(raw.into_iter().map(Neuron::from).collect())
}

/// An axon's address as subtensor stores it (ip as a number, 4 or 6).
pub fn axon_addr(ip: u128, ip_type: u8, port: u16) -> Option<(IpAddr, u16)> {
    if ip == 0 || port == 0 {
        return None;
    }
    let addr = match ip_type {
        4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(ip).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(ip)),
        _ => return None,
    };
    Some((addr, port))
}

/// The number subtensor stores for an address, and its type (4 or 6).
pub fn ip_number(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 4),
        IpAddr::V6(v6) => (u128::from(v6), 6),
    }
}

impl From<NeuronInfoLite> for Neuron {
    fn from(n: NeuronInfoLite) -> Self {
        let a = &n.axon_info;
        Neuron {
            uid: n.uid.0,
            hotkey: AccountId(n.hotkey),
            coldkey: AccountId(n.coldkey),
            axon: axon_addr(a.ip, a.ip_type, a.port),
            validator_permit: n.validator_permit,
            stake: n
                .stake
                .iter()
                .map(|(_, s)| s.0)
                .fold(0u64, u64::saturating_add),
            last_update: n.last_update.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uid: u16) -> NeuronInfoLite {
        let (ip, ip_type) = ip_number("203.0.113.7".parse().unwrap());
        NeuronInfoLite {
            hotkey: [uid as u8; 32],
            coldkey: [0xc0; 32],
            uid: Compact(uid),
            netuid: Compact(4),
            active: true,
            axon_info: AxonInfo {
                block: 100,
                version: 1,
                ip,
                port: 7777,
                ip_type,
                protocol: 4,
                placeholder1: 0,
                placeholder2: 0,
            },
            prometheus_info: PrometheusInfo::default(),
            stake: vec![
                ([0xc0; 32], Compact(1_500_000_000_000)),
                ([0xc1; 32], Compact(5)),
            ],
            rank: Compact(0),
            emission: Compact(0),
            incentive: Compact(0),
            consensus: Compact(0),
            trust: Compact(0),
            validator_trust: Compact(0),
            dividends: Compact(0),
            last_update: Compact(12_345),
            validator_permit: uid == 0,
            pruning_score: Compact(0),
        }
    }

    #[test]
    fn finney_layout_is_the_one_we_read() {
        check_layout(&crate::metadata::finney().unwrap()).unwrap();
    }

    /// Our encoding decodes with the runtime's own type information (an
    /// independent decoder), and back with ours.
    #[test]
    fn encoding_agrees_with_the_runtime_types() {
        use subxt::ext::scale_value::{self, ValueDef};
        let md = crate::metadata::finney().unwrap();
        let bytes = vec![sample(0), sample(3)].encode();
        let api = md.runtime_api_trait_by_name(RUNTIME_API).unwrap();
        let ty = api.method_by_name(METHOD).unwrap().output_ty();
        let v = scale_value::scale::decode_as_type(&mut &bytes[..], ty, md.types()).unwrap();
        let ValueDef::Composite(list) = &v.value else {
            panic!("{v:?}")
        };
        assert_eq!(list.values().count(), 2);
        let ns = decode(&bytes).unwrap();
        assert_eq!(ns[1].uid, 3);
        assert_eq!(ns[1].axon, Some(("203.0.113.7".parse().unwrap(), 7777)));
        assert_eq!(ns[0].stake, 1_500_000_000_005);
        assert!(ns[0].validator_permit && !ns[1].validator_permit);
        assert_eq!(ns[0].last_update, 12_345);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn axon_addresses() {
        assert_eq!(axon_addr(0, 4, 80), None);
        let (n, t) = ip_number("2001:db8::1".parse().unwrap());
        assert_eq!(
            axon_addr(n, t, 8080),
            Some(("2001:db8::1".parse().unwrap(), 8080))
        );
        assert_eq!(axon_addr(u128::MAX, 4, 1), None);
    }
}
