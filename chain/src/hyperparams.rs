//! The subnet hyperparameters a validator needs before setting weights,
//! read from `SubtensorModule` storage: keys built from the runtime's
//! metadata (hashers included), absent values read as the metadata's
//! declared defaults, exactly as the chain itself would.

use parity_scale_codec::Decode;
use subxt::ext::frame_decode::storage::encode_storage_key;
use subxt::Metadata;

pub const PALLET: &str = "SubtensorModule";

/// Storage items, each a map keyed by netuid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    CommitRevealWeightsEnabled,
    WeightsSetRateLimit,
    WeightsVersionKey,
    Tempo,
    /// Block of each uid's last weight setting (a `Vec<u64>` by uid).
    LastUpdate,
}

impl Item {
    pub const ALL: [Item; 5] = [
        Item::CommitRevealWeightsEnabled,
        Item::WeightsSetRateLimit,
        Item::WeightsVersionKey,
        Item::Tempo,
        Item::LastUpdate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Item::CommitRevealWeightsEnabled => "CommitRevealWeightsEnabled",
            Item::WeightsSetRateLimit => "WeightsSetRateLimit",
            Item::WeightsVersionKey => "WeightsVersionKey",
            Item::Tempo => "Tempo",
            Item::LastUpdate => "LastUpdate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HyperparamError {
    #[error("the runtime has no storage item {PALLET}.{0}: the runtime changed; update tvm")]
    Missing(&'static str),
    #[error("cannot build the storage key of {0}: {1}")]
    Key(&'static str, String),
    #[error("{PALLET}.{0} holds a value tvm cannot read: {1}")]
    Decode(&'static str, String),
    #[error("{PALLET}.{0} is {1}, outside what subtensor allows ({2}): is this a subtensor node?")]
    OutOfRange(&'static str, u64, &'static str),
}

/// The full storage key of `item` for `netuid` in this runtime.
pub fn storage_key(md: &Metadata, item: Item, netuid: u16) -> Result<Vec<u8>, HyperparamError> {
    key_of(md, PALLET, item.name(), (netuid,))
}

/// The full storage key of any entry, by pallet, name and keys.
pub fn key_of<K: subxt::ext::frame_decode::storage::IntoEncodableValues>(
    md: &Metadata,
    pallet: &'static str,
    name: &'static str,
    keys: K,
) -> Result<Vec<u8>, HyperparamError> {
    encode_storage_key(pallet, name, keys, md, md.types())
        .map_err(|e| HyperparamError::Key(name, e.to_string()))
}

/// The value the chain returns when nothing is stored.
pub fn default_bytes(md: &Metadata, item: Item) -> Result<Vec<u8>, HyperparamError> {
    default_of(md, PALLET, item.name())
}

/// The declared default of any storage entry.
pub fn default_of(
    md: &Metadata,
    pallet: &'static str,
    name: &'static str,
) -> Result<Vec<u8>, HyperparamError> {
    let entry = md
        .pallet_by_name(pallet)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(name))
        .ok_or(HyperparamError::Missing(name))?;
    Ok(entry
        .default_value()
        .map(<[u8]>::to_vec)
        .unwrap_or_default())
}

/// What a validator must respect when setting weights on one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hyperparams {
    pub commit_reveal: bool,
    /// Blocks between two weight settings by the same hotkey.
    pub weights_rate_limit: u64,
    /// The lowest version key the chain accepts.
    pub weights_version_key: u64,
    /// Blocks per epoch.
    pub tempo: u16,
    /// Per uid: the block its weights were last set.
    pub last_update: Vec<u64>,
}

fn read<T: Decode>(item: Item, stored: Option<&[u8]>, md: &Metadata) -> Result<T, HyperparamError> {
    let bytes = match stored {
        Some(b) => b.to_vec(),
        None => default_bytes(md, item)?,
    };
    T::decode(&mut &bytes[..]).map_err(|e| HyperparamError::Decode(item.name(), e.to_string()))
}

impl Hyperparams {
    /// From the stored values (`None` = nothing stored), in [`Item::ALL`] order.
    pub fn from_storage(
        md: &Metadata,
        stored: [Option<&[u8]>; 5],
    ) -> Result<Self, HyperparamError> {
        let [cr, rl, vk, tempo, lu] = stored;
        Ok(Hyperparams {
            commit_reveal: read(Item::CommitRevealWeightsEnabled, cr, md)?,
            weights_rate_limit: read(Item::WeightsSetRateLimit, rl, md)?,
            weights_version_key: read(Item::WeightsVersionKey, vk, md)?,
            tempo: read(Item::Tempo, tempo, md)?,
            last_update: read(Item::LastUpdate, lu, md)?,
        })
    }
}

/// What a validator needs to commit weights on a commit-reveal subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReveal {
    /// `CommitRevealWeightsVersion`: a commit of another version is refused.
    pub version: u16,
    /// `RevealPeriodEpochs`: a commit is revealed this many epochs later.
    pub reveal_period_epochs: u64,
    /// `Drand.BeaconConfig`: the beacon whose rounds open commits (drand's
    /// quicknet on finney; the runtime's declared default when unset, and
    /// quicknet for a runtime without the drand pallet).
    pub beacon: crate::drand::Beacon,
}

/// Storage entries [`CommitReveal`] is read from, in its field order.
pub const COMMIT_REVEAL_VERSION: (&str, &str) = (PALLET, "CommitRevealWeightsVersion");
pub const REVEAL_PERIOD_EPOCHS: (&str, &str) = (PALLET, "RevealPeriodEpochs");
pub const BEACON_CONFIG: (&str, &str) = ("Drand", "BeaconConfig");
/// Weights each uid set, by `(netuid, uid)`.
pub const WEIGHTS: (&str, &str) = (PALLET, "Weights");
/// Unrevealed commits by `(netuid, epoch)`: who, block, ciphertext, round.
pub const COMMITS: (&str, &str) = (PALLET, "TimelockedWeightCommits");
/// subtensor's `MAX_COMMIT_REVEAL_PEROIDS`.
pub const MAX_REVEAL_PERIOD_EPOCHS: u64 = 100;

/// One unrevealed commit as the chain stores it.
pub type StoredCommit = ([u8; 32], u64, Vec<u8>, u64);

/// A `(netuid, epoch)` entry of `TimelockedWeightCommits`.
pub fn read_commits(
    md: &Metadata,
    stored: Option<&[u8]>,
) -> Result<Vec<StoredCommit>, HyperparamError> {
    read_entry(md, COMMITS, stored)
}
/// The stateful epoch counter by netuid, in [`crate::drand::Epochs::Stateful`]'s
/// field order (newer runtimes only).
pub const EPOCH_COUNTER: [&str; 4] = [
    "SubnetEpochIndex",
    "LastEpochBlock",
    "PendingEpochAt",
    "BlocksSinceLastStep",
];

/// A `u64` entry of this pallet (the runtime's default when absent).
pub fn read_u64(
    md: &Metadata,
    name: &'static str,
    stored: Option<&[u8]>,
) -> Result<u64, HyperparamError> {
    read_entry(md, (PALLET, name), stored)
}

/// A uid's `Weights` entry.
pub fn read_weights(
    md: &Metadata,
    stored: Option<&[u8]>,
) -> Result<Vec<(u16, u16)>, HyperparamError> {
    read_entry(md, WEIGHTS, stored)
}

fn read_entry<T: Decode>(
    md: &Metadata,
    (pallet, name): (&'static str, &'static str),
    stored: Option<&[u8]>,
) -> Result<T, HyperparamError> {
    let bytes = match stored {
        Some(b) => b.to_vec(),
        None => default_of(md, pallet, name)?,
    };
    T::decode(&mut &bytes[..]).map_err(|e| HyperparamError::Decode(name, e.to_string()))
}

impl CommitReveal {
    /// From the stored values (`None` = nothing stored).
    pub fn from_storage(
        md: &Metadata,
        version: Option<&[u8]>,
        reveal_period: Option<&[u8]>,
        beacon: Option<&[u8]>,
    ) -> Result<Self, HyperparamError> {
        // The head of `BeaconConfiguration`: public key, period, genesis time.
        #[derive(Decode)]
        struct BeaconHead {
            public_key: Vec<u8>,
            period: u32,
            genesis_time: u32,
        }
        let beacon = match md.pallet_by_name(BEACON_CONFIG.0) {
            None => crate::drand::Beacon::quicknet(),
            Some(_) => {
                let b: BeaconHead = read_entry(md, BEACON_CONFIG, beacon)?;
                crate::drand::Beacon {
                    public_key: b.public_key,
                    genesis_time: u64::from(b.genesis_time),
                    period: u64::from(b.period),
                }
            }
        };
        let reveal_period_epochs: u64 = read_entry(md, REVEAL_PERIOD_EPOCHS, reveal_period)?;
        if !(1..=MAX_REVEAL_PERIOD_EPOCHS).contains(&reveal_period_epochs) {
            return Err(HyperparamError::OutOfRange(
                REVEAL_PERIOD_EPOCHS.1,
                reveal_period_epochs,
                "1 to 100",
            ));
        }
        Ok(CommitReveal {
            version: read_entry(md, COMMIT_REVEAL_VERSION, version)?,
            reveal_period_epochs,
            beacon,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parity_scale_codec::{Decode, Encode};

    #[test]
    fn keys_are_prefix_then_hashed_netuid() {
        let md = crate::metadata::finney().unwrap();
        for item in Item::ALL {
            let key = storage_key(&md, item, 4).unwrap();
            let prefix =
                subxt::ext::frame_decode::storage::encode_storage_key_prefix(PALLET, item.name());
            assert_eq!(&key[..32], &prefix[..], "{item:?}");
            assert!(key.len() > 32, "{item:?} is keyed by netuid");
            assert_ne!(key, storage_key(&md, item, 5).unwrap());
        }
    }

    #[test]
    fn commit_reveal_defaults_are_finneys_version_4_one_epoch_and_quicknet() {
        let md = crate::metadata::finney().unwrap();
        let d = CommitReveal::from_storage(&md, None, None, None).unwrap();
        assert_eq!(d.version, 4);
        assert_eq!(d.reveal_period_epochs, 1);
        assert_eq!(d.beacon, crate::drand::Beacon::quicknet());
        for (p, n) in [COMMIT_REVEAL_VERSION, BEACON_CONFIG] {
            let key = key_of(&md, p, n, ()).unwrap();
            assert_eq!(key.len(), 32, "{n} is a plain value");
        }
        assert!(key_of(&md, REVEAL_PERIOD_EPOCHS.0, REVEAL_PERIOD_EPOCHS.1, (4u16,)).is_ok());
        assert!(key_of(&md, WEIGHTS.0, WEIGHTS.1, (4u16, 1u16)).is_ok());
        let v = 5u16.encode();
        let p = 3u64.encode();
        let c = CommitReveal::from_storage(&md, Some(&v), Some(&p), None).unwrap();
        assert_eq!((c.version, c.reveal_period_epochs), (5, 3));
        // A node claiming a reveal period subtensor never allows is refused
        // (it would also set the commit's round anywhere it liked).
        for bad in [0u64, 101, u64::MAX] {
            let b = bad.encode();
            assert!(matches!(
                CommitReveal::from_storage(&md, None, Some(&b), None),
                Err(HyperparamError::OutOfRange(..))
            ));
        }
        assert!(key_of(&md, COMMITS.0, COMMITS.1, (4u16, 7u64)).is_ok());
    }

    #[test]
    fn absent_values_read_as_the_runtimes_defaults_and_stored_ones_as_stored() {
        let md = crate::metadata::finney().unwrap();
        let d = Hyperparams::from_storage(&md, [None, None, None, None, None]).unwrap();
        // Each field is the default the runtime declares for it, read here
        // from the metadata's raw default bytes with the field's own type.
        let raw = |item| default_bytes(&md, item).unwrap();
        let expected = Hyperparams {
            commit_reveal: bool::decode(&mut &raw(Item::CommitRevealWeightsEnabled)[..]).unwrap(),
            weights_rate_limit: u64::decode(&mut &raw(Item::WeightsSetRateLimit)[..]).unwrap(),
            weights_version_key: u64::decode(&mut &raw(Item::WeightsVersionKey)[..]).unwrap(),
            tempo: u16::decode(&mut &raw(Item::Tempo)[..]).unwrap(),
            last_update: Vec::<u64>::decode(&mut &raw(Item::LastUpdate)[..]).unwrap(),
        };
        assert_eq!(d, expected);
        // finney declares these (spec 393): a default tempo of 360 blocks, a
        // rate limit of 100, commit-reveal on, version key 0.
        assert_eq!(
            (
                d.tempo,
                d.weights_rate_limit,
                d.commit_reveal,
                d.weights_version_key
            ),
            (360, 100, true, 0),
            "{d:?}"
        );
        assert!(d.last_update.is_empty());
        let (t, rl, vk, lu) = (
            360u16.encode(),
            100u64.encode(),
            7u64.encode(),
            vec![1u64, 2].encode(),
        );
        let cr = true.encode();
        let h =
            Hyperparams::from_storage(&md, [Some(&cr), Some(&rl), Some(&vk), Some(&t), Some(&lu)])
                .unwrap();
        assert_eq!(
            h,
            Hyperparams {
                commit_reveal: true,
                weights_rate_limit: 100,
                weights_version_key: 7,
                tempo: 360,
                last_update: vec![1, 2],
            }
        );
        let bad = [Some(&[9u8][..]), None, None, None, None];
        assert!(matches!(
            Hyperparams::from_storage(&md, bad),
            Err(HyperparamError::Decode(..))
        ));
    }
}
