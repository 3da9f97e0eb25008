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
}

/// The full storage key of `item` for `netuid` in this runtime.
pub fn storage_key(md: &Metadata, item: Item, netuid: u16) -> Result<Vec<u8>, HyperparamError> {
    encode_storage_key(PALLET, item.name(), (netuid,), md, md.types())
        .map_err(|e| HyperparamError::Key(item.name(), e.to_string()))
}

/// The value the chain returns when nothing is stored.
pub fn default_bytes(md: &Metadata, item: Item) -> Result<Vec<u8>, HyperparamError> {
    let entry = md
        .pallet_by_name(PALLET)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(item.name()))
        .ok_or(HyperparamError::Missing(item.name()))?;
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
