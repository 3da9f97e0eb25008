//! Signed extrinsics (format v4), built from the runtime's own list of
//! transaction extensions: the standard ones are encoded from the chain's
//! state and the transaction's parameters; any other must be zero-sized
//! (subtensor's own are), or signing refuses and names it. `verify` is the
//! chain's side: decode with the metadata, rebuild the signed payload, check
//! the sr25519 signature — what the loopback test chain does.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use parity_scale_codec::{Compact, Decode, Encode};
use scale_info::TypeDef;
use subxt::ext::frame_decode::extrinsics::decode_extrinsic;
use subxt::Metadata;
use tvm_protocol::keys::{AccountId, Hotkey};

/// What every signature commits to about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    pub genesis_hash: [u8; 32],
    pub spec_version: u32,
    pub transaction_version: u32,
}

/// How long a transaction stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mortality {
    Immortal,
    /// Valid for `period` blocks (a power of two, 4..=65536) from `block`,
    /// whose hash is `block_hash`.
    Mortal {
        period: u64,
        block: u64,
        block_hash: [u8; 32],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParams {
    pub nonce: u64,
    pub tip: u128,
    pub mortality: Mortality,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtrinsicError {
    #[error("the runtime wants transaction extension {0}, which tvm cannot fill in: update tvm")]
    UnknownExtension(String),
    #[error("the runtime does not accept version-4 signed extrinsics (it supports {0:?})")]
    Version(Vec<u8>),
    #[error("cannot decode the extrinsic: {0}")]
    Decode(String),
    #[error("the extrinsic is not signed")]
    Unsigned,
    #[error("the extrinsic's signer is not an sr25519 account (MultiAddress::Id with an Sr25519 signature)")]
    NotSr25519,
    #[error(
        "the signature does not verify for {0} over this call, these extensions and this chain"
    )]
    BadSignature(String),
    #[error("mortal era period {0} is not a power of two between 4 and 65536")]
    BadEra(u64),
}

pub(crate) fn blake2_256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

/// Era as the runtime encodes it (one byte 0 for immortal, two for mortal).
pub fn encode_era(m: Mortality) -> Result<Vec<u8>, ExtrinsicError> {
    match m {
        Mortality::Immortal => Ok(vec![0]),
        Mortality::Mortal { period, block, .. } => {
            if !(4..=65536).contains(&period) || !period.is_power_of_two() {
                return Err(ExtrinsicError::BadEra(period));
            }
            let phase = block % period;
            let quantize = (period >> 12).max(1);
            let low = (period.trailing_zeros() - 1).clamp(1, 15) as u16;
            let high = ((phase / quantize) << 4) as u16;
            Ok((low | high).to_le_bytes().to_vec())
        }
    }
}

/// (period, phase) of an encoded era; `None` for immortal.
pub fn decode_era(bytes: &[u8]) -> Result<Option<(u64, u64)>, ExtrinsicError> {
    match bytes {
        [0] => Ok(None),
        [a, b] => {
            let encoded = u16::from_le_bytes([*a, *b]);
            let period = 2u64 << (encoded % (1 << 4));
            let quantize = (period >> 12).max(1);
            let phase = u64::from(encoded >> 4) * quantize;
            if period < 4 || phase >= period {
                return Err(ExtrinsicError::Decode("invalid mortal era".into()));
            }
            Ok(Some((period, phase)))
        }
        _ => Err(ExtrinsicError::Decode(
            "era is neither 1 nor 2 bytes".into(),
        )),
    }
}

/// The first block of the era a transaction signed at `current` belongs to.
pub fn era_birth(period: u64, phase: u64, current: u64) -> u64 {
    (current.max(phase) - phase) / period * period + phase
}

fn zero_sized(md: &Metadata, ty: u32) -> bool {
    match md.types().resolve(ty).map(|t| &t.type_def) {
        Some(TypeDef::Composite(c)) => c.fields.iter().all(|f| zero_sized(md, f.ty.id)),
        Some(TypeDef::Tuple(t)) => t.fields.iter().all(|f| zero_sized(md, f.id)),
        Some(TypeDef::Array(a)) => a.len == 0,
        _ => false,
    }
}

/// One extension's (extra, additional) bytes.
fn extension(
    md: &Metadata,
    id: &str,
    extra_ty: u32,
    additional_ty: u32,
    chain: &ChainState,
    p: &TxParams,
    era_hash: [u8; 32],
) -> Result<(Vec<u8>, Vec<u8>), ExtrinsicError> {
    Ok(match id {
        "CheckSpecVersion" => (vec![], chain.spec_version.encode()),
        "CheckTxVersion" => (vec![], chain.transaction_version.encode()),
        "CheckGenesis" => (vec![], chain.genesis_hash.to_vec()),
        "CheckMortality" | "CheckEra" => (encode_era(p.mortality)?, era_hash.to_vec()),
        "CheckNonce" => (Compact(p.nonce).encode(), vec![]),
        "ChargeTransactionPayment" => (Compact(p.tip).encode(), vec![]),
        // Mode::Disabled, and no metadata hash in the signed payload.
        "CheckMetadataHash" => (vec![0], vec![0]),
        _ if zero_sized(md, extra_ty) && zero_sized(md, additional_ty) => (vec![], vec![]),
        other => return Err(ExtrinsicError::UnknownExtension(other.to_string())),
    })
}

/// The extensions' extra and additional bytes, in the runtime's order.
fn extensions(
    md: &Metadata,
    chain: &ChainState,
    p: &TxParams,
) -> Result<(Vec<u8>, Vec<u8>), ExtrinsicError> {
    let era_hash = match p.mortality {
        Mortality::Immortal => chain.genesis_hash,
        Mortality::Mortal { block_hash, .. } => block_hash,
    };
    let (mut extra, mut additional) = (Vec::new(), Vec::new());
    for e in md.extrinsic().transaction_extensions_to_use_for_encoding() {
        let (x, a) = extension(
            md,
            e.identifier(),
            e.extra_ty(),
            e.additional_ty(),
            chain,
            p,
            era_hash,
        )?;
        extra.extend(x);
        additional.extend(a);
    }
    Ok((extra, additional))
}

fn payload(call: &[u8], extra: &[u8], additional: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(call.len() + extra.len() + additional.len());
    p.extend_from_slice(call);
    p.extend_from_slice(extra);
    p.extend_from_slice(additional);
    // Long payloads are signed by their hash (Substrate's rule).
    if p.len() > 256 {
        blake2_256(&p).to_vec()
    } else {
        p
    }
}

const SIGNED_V4: u8 = 0x84;
const MULTIADDRESS_ID: u8 = 0;
const MULTISIG_SR25519: u8 = 1;

/// A signed v4 extrinsic carrying `call` (call data from [`crate::calls`]).
pub fn sign(
    md: &Metadata,
    chain: &ChainState,
    p: &TxParams,
    call: &[u8],
    signer: &Hotkey,
) -> Result<Vec<u8>, ExtrinsicError> {
    let versions = md.extrinsic().supported_versions();
    if !versions.contains(&4) {
        return Err(ExtrinsicError::Version(versions.to_vec()));
    }
    let (extra, additional) = extensions(md, chain, p)?;
    let signature = signer.sign(&payload(call, &extra, &additional));
    let mut body = vec![SIGNED_V4, MULTIADDRESS_ID];
    body.extend_from_slice(&signer.account_id().0);
    body.push(MULTISIG_SR25519);
    body.extend_from_slice(&signature);
    body.extend_from_slice(&extra);
    body.extend_from_slice(call);
    let mut out = Compact(body.len() as u32).encode();
    out.extend(body);
    Ok(out)
}

/// A signed extrinsic the chain accepted the signature of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub signer: AccountId,
    pub nonce: u64,
    pub pallet: String,
    pub call: String,
    /// Call data without its two index bytes.
    pub args: Vec<u8>,
    /// (period, phase) when mortal.
    pub era: Option<(u64, u64)>,
}

/// Decode `bytes` with the metadata and check the signature. `block_hash`
/// gives the hash of a block number (the era's birth block).
pub fn verify(
    md: &Metadata,
    chain: &ChainState,
    bytes: &[u8],
    current_block: u64,
    block_hash: impl Fn(u64) -> Option<[u8; 32]>,
) -> Result<Verified, ExtrinsicError> {
    let d = |e: String| ExtrinsicError::Decode(e);
    let mut cursor = bytes;
    let x = decode_extrinsic(&mut cursor, md, md.types()).map_err(|e| d(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(d(format!("{} bytes after the extrinsic", cursor.len())));
    }
    if !x.is_signed() {
        return Err(ExtrinsicError::Unsigned);
    }
    let signed = x.signature_payload().ok_or(ExtrinsicError::Unsigned)?;
    let addr = &bytes[signed.address_range()];
    let sig = &bytes[signed.signature_range()];
    let (Some((&MULTIADDRESS_ID, key)), Some((&MULTISIG_SR25519, sig))) =
        (addr.split_first(), sig.split_first())
    else {
        return Err(ExtrinsicError::NotSr25519);
    };
    let signer = AccountId(key.try_into().map_err(|_| ExtrinsicError::NotSr25519)?);
    let sig: [u8; 64] = sig.try_into().map_err(|_| ExtrinsicError::NotSr25519)?;
    let exts = x
        .transaction_extension_payload()
        .ok_or(ExtrinsicError::Unsigned)?;
    let mut nonce = 0;
    let mut era = None;
    for a in exts.iter() {
        let raw = &bytes[a.range()];
        match a.name() {
            "CheckNonce" => {
                nonce = Compact::<u64>::decode(&mut &raw[..])
                    .map_err(|e| d(e.to_string()))?
                    .0
            }
            "CheckMortality" | "CheckEra" => era = decode_era(raw)?,
            _ => {}
        }
    }
    let era_hash = match era {
        None => Some(chain.genesis_hash),
        Some((period, phase)) => block_hash(era_birth(period, phase, current_block)),
    }
    .ok_or_else(|| d("the era's first block is unknown to this chain".into()))?;
    let mut additional = Vec::new();
    for e in md.extrinsic().transaction_extensions_to_use_for_encoding() {
        let p = TxParams {
            nonce,
            tip: 0,
            mortality: Mortality::Immortal,
        };
        let (_, a) = extension(
            md,
            e.identifier(),
            e.extra_ty(),
            e.additional_ty(),
            chain,
            &p,
            era_hash,
        )?;
        additional.extend(a);
    }
    let call = &bytes[x.call_data_range()];
    let extra = &bytes[exts.range()];
    if !signer.verify(&payload(call, extra, &additional), &sig) {
        return Err(ExtrinsicError::BadSignature(signer.to_ss58()));
    }
    Ok(Verified {
        signer,
        nonce,
        pallet: x.pallet_name().to_string(),
        call: x.call_name().to_string(),
        args: call.get(2..).unwrap_or_default().to_vec(),
        era,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{Call, SetWeights};

    const CHAIN: ChainState = ChainState {
        genesis_hash: [0x2f; 32],
        spec_version: 393,
        transaction_version: 1,
    };

    fn hash_of(n: u64) -> Option<[u8; 32]> {
        Some(blake2_256(&n.to_le_bytes()))
    }

    #[test]
    fn eras_round_trip() {
        for (period, block) in [(4, 0), (64, 1000), (1024, 123_456), (65536, 7)] {
            let e = encode_era(Mortality::Mortal {
                period,
                block,
                block_hash: [0; 32],
            })
            .unwrap();
            let (p, phase) = decode_era(&e).unwrap().unwrap();
            assert_eq!(p, period);
            assert_eq!(
                era_birth(p, phase, block + 3),
                block - block % (period >> 12).max(1)
            );
        }
        assert!(encode_era(Mortality::Mortal {
            period: 5,
            block: 0,
            block_hash: [0; 32]
        })
        .is_err());
        assert_eq!(decode_era(&[0]).unwrap(), None);
    }

    #[test]
    fn signed_set_weights_decodes_and_verifies_and_any_change_fails() {
        let md = crate::metadata::finney().unwrap();
        let alice = Hotkey::from_uri("//Alice").unwrap();
        let call = SetWeights {
            netuid: 4,
            dests: vec![0, 1],
            weights: vec![65535, 100],
            version_key: 9,
        }
        .call_data(&md)
        .unwrap();
        let p = TxParams {
            nonce: 5,
            tip: 0,
            mortality: Mortality::Mortal {
                period: 64,
                block: 1000,
                block_hash: hash_of(1000).unwrap(),
            },
        };
        let x = sign(&md, &CHAIN, &p, &call, &alice).unwrap();
        let v = verify(&md, &CHAIN, &x, 1010, hash_of).unwrap();
        assert_eq!(v.signer, alice.account_id());
        assert_eq!(
            (v.nonce, v.pallet.as_str(), v.call.as_str()),
            (5, "SubtensorModule", "set_weights")
        );
        assert_eq!(v.args, call[2..]);
        assert_eq!(v.era, Some((64, 1000 % 64)));

        // Another chain, another runtime version, another block: refused.
        let other = ChainState {
            genesis_hash: [1; 32],
            ..CHAIN
        };
        assert!(matches!(
            verify(&md, &other, &x, 1010, hash_of),
            Err(ExtrinsicError::BadSignature(_))
        ));
        let newer = ChainState {
            spec_version: 394,
            ..CHAIN
        };
        assert!(matches!(
            verify(&md, &newer, &x, 1010, hash_of),
            Err(ExtrinsicError::BadSignature(_))
        ));
        assert!(verify(&md, &CHAIN, &x, 1010, |n| hash_of(n + 1)).is_err());
        // A flipped bit anywhere after the length prefix.
        for i in [3usize, 40, 70, x.len() - 1] {
            let mut bad = x.clone();
            bad[i] ^= 1;
            assert!(
                verify(&md, &CHAIN, &bad, 1010, hash_of).is_err(),
                "bit flip at {i} accepted"
            );
        }
        // Immortal works too.
        let imm = TxParams {
            mortality: Mortality::Immortal,
            ..p
        };
        let x = sign(&md, &CHAIN, &imm, &call, &alice).unwrap();
        assert_eq!(
            verify(&md, &CHAIN, &x, 1_000_000, |_| None).unwrap().era,
            None
        );
    }

    #[test]
    fn every_finney_extension_is_known_or_empty() {
        let md = crate::metadata::finney().unwrap();
        let p = TxParams {
            nonce: 0,
            tip: 0,
            mortality: Mortality::Immortal,
        };
        extensions(&md, &CHAIN, &p).unwrap();
    }

    /// The signer payload and the whole extrinsic against subxt's own
    /// offline construction (its transaction extensions, its encoders) for
    /// the same call, nonce, tip and era on finney's metadata: a second
    /// implementation, not the test chain that shares our code.
    #[test]
    fn payload_and_extrinsic_equal_subxts_offline_construction() {
        use std::sync::Arc;
        use subxt::config::substrate::SpecVersionForRange;
        use subxt::config::DefaultExtrinsicParamsBuilder;
        use subxt::utils::{AccountId32, MultiSignature, H256};
        use subxt::{OfflineClient, SubstrateConfig};

        let md = crate::metadata::finney().unwrap();
        let config = SubstrateConfig::builder()
            .set_metadata_for_spec_versions([(
                CHAIN.spec_version,
                Arc::new(crate::metadata::finney().unwrap()),
            )])
            .set_spec_version_for_block_ranges([SpecVersionForRange {
                block_range: 0..u64::MAX,
                spec_version: CHAIN.spec_version,
                transaction_version: CHAIN.transaction_version,
            }])
            .set_genesis_hash(H256(CHAIN.genesis_hash))
            .build();
        let client = OfflineClient::new_with_config(config)
            .at_block(1010u64)
            .unwrap();
        let tx = client.tx();
        let alice = Hotkey::from_uri("//Alice").unwrap();
        let call = SetWeights {
            netuid: 4,
            dests: vec![0, 1, 7],
            weights: vec![65535, 100, 3],
            version_key: 9,
        }
        .call_data(&md)
        .unwrap();
        // subxt reads our call bytes with the metadata and encodes them again.
        let theirs_call = tx.from_call_data_bytes(&call).unwrap();
        assert_eq!(tx.call_data(&theirs_call).unwrap(), call);

        for (nonce, tip, mortality) in [
            (
                5u64,
                0u128,
                Mortality::Mortal {
                    period: 64,
                    block: 1000,
                    block_hash: hash_of(1000).unwrap(),
                },
            ),
            (77, 1_000_000, Mortality::Immortal),
        ] {
            let p = TxParams {
                nonce,
                tip,
                mortality,
            };
            let mut params = DefaultExtrinsicParamsBuilder::<SubstrateConfig>::new()
                .nonce(nonce)
                .tip(tip);
            if let Mortality::Mortal {
                period,
                block,
                block_hash,
            } = mortality
            {
                params = params.mortal_from_unchecked(period, block, H256(block_hash));
            }
            let mut signable = tx
                .create_v4_signable_offline(&theirs_call, params.build())
                .unwrap();
            let (extra, additional) = extensions(&md, &CHAIN, &p).unwrap();
            let ours = payload(&call, &extra, &additional);
            let theirs = signable.signer_payload().unwrap();
            // Substrate signs a payload over 256 bytes by its hash.
            let theirs = if theirs.len() > 256 {
                blake2_256(&theirs).to_vec()
            } else {
                theirs
            };
            assert_eq!(ours, theirs, "signer payload, nonce {nonce}");

            // The whole extrinsic, with our signature put into subxt's.
            let x = sign(&md, &CHAIN, &p, &call, &alice).unwrap();
            let at = x.iter().position(|b| *b == SIGNED_V4).unwrap() + 2 + 32 + 1;
            let signature: [u8; 64] = x[at..at + 64].try_into().unwrap();
            let built = signable
                .sign_with_account_and_signature(
                    &AccountId32(alice.account_id().0),
                    &MultiSignature::Sr25519(signature),
                )
                .unwrap();
            assert_eq!(built.encoded(), &x[..], "extrinsic, nonce {nonce}");
        }
    }
}
