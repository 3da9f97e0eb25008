//! Commit-reveal v4: weights encrypted to a future drand round, so that no
//! one (the chain included) can read them before that round's beacon
//! signature is published, and the chain then reveals them itself.
//!
//! The cryptography is ideal-lab5's `timelock` (Boneh–Franklin IBE on
//! BLS12-381 for the identity `SHA-256(round as u64 big-endian)` under the
//! beacon's G2 public key, then AES-GCM over the SCALE of
//! [`WeightsPayload`]); the ciphertext is written in the layout of the
//! `timelock` revision the chain decrypts with (see [`decrypt`]). The chain
//! opens it with the round's signature, the identity's IBE secret key.
//! `reveal_round` is computed as the reference client (PyPI
//! `bittensor-drand` 2.0, `get_encrypted_commit_v2`) computes it.

use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use parity_scale_codec::{Decode, Encode};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use timelock::block_ciphers::AESGCMBlockCipherProvider;
use timelock::engines::{drand::TinyBLS381, EngineBLS};
use timelock::ibe::fullident::Identity;
use timelock::tlock::{tld, tle, TLECiphertext};

/// The chain refuses larger commits (`MAX_CRV3_COMMIT_SIZE_BYTES`).
pub const MAX_COMMIT_BYTES: usize = 5000;

/// The reference client aims at the third block of the reveal epoch, so the
/// pulse is on chain when the chain tries to reveal.
pub const SECURITY_BLOCK_OFFSET: u64 = 3;

/// A drand beacon: its BLS12-381 G2 public key (96 bytes compressed), when
/// round 1 was, and seconds between rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    pub public_key: Vec<u8>,
    pub genesis_time: u64,
    pub period: u64,
}

/// drand's quicknet (chain hash
/// `52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971`),
/// the beacon subtensor's drand pallet follows; values from
/// `https://api.drand.sh/52db…e971/info`, as PyPI `bittensor-drand` pins them.
pub const QUICKNET_PUBLIC_KEY: &str = "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a";
pub const QUICKNET_GENESIS_TIME: u64 = 1_692_803_367;
pub const QUICKNET_PERIOD: u64 = 3;

impl Beacon {
    pub fn quicknet() -> Self {
        Beacon {
            // A constant of 192 hex characters.
            public_key: hex::decode(QUICKNET_PUBLIC_KEY).unwrap_or_default(),
            genesis_time: QUICKNET_GENESIS_TIME,
            period: QUICKNET_PERIOD,
        }
    }

    /// The latest round published at `now` (Unix seconds); 0 before genesis.
    pub fn round_at(&self, now: f64) -> u64 {
        if self.period == 0 || now < self.genesis_time as f64 {
            return 0;
        }
        ((now - self.genesis_time as f64) / self.period as f64).floor() as u64 + 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlockError {
    #[error("the drand beacon's public key is not a compressed BLS12-381 G2 point")]
    PublicKey,
    #[error("the commit is not a timelock ciphertext")]
    Ciphertext,
    #[error("the beacon signature is not a compressed BLS12-381 G1 point")]
    Signature,
    #[error("the commit does not decrypt with this round's signature (another round, or damaged)")]
    Decrypt,
    #[error("timelock encryption failed")]
    Encrypt,
    #[error("the commit is {0} bytes; the chain takes at most {MAX_COMMIT_BYTES}")]
    TooLarge(usize),
}

/// What a commit encrypts (subtensor's `WeightsTlockPayload`): the chain
/// reveals it only for the hotkey that committed it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WeightsPayload {
    /// The committing hotkey's 32-byte public key.
    pub hotkey: Vec<u8>,
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub version_key: u64,
}

/// The IBE identity of `round`: drand signs `SHA-256(round as u64 BE)`.
fn identity(round: u64) -> Identity {
    Identity::new(b"", &Sha256::digest(round.to_be_bytes()))
}

/// Encrypt `plaintext` so that it opens with the beacon's signature of `round`.
pub fn encrypt(beacon: &Beacon, round: u64, plaintext: &[u8]) -> Result<Vec<u8>, TlockError> {
    let pk =
        <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(&beacon.public_key[..])
            .map_err(|_| TlockError::PublicKey)?;
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let ct =
        tle::<TinyBLS381, AESGCMBlockCipherProvider, _>(pk, key, plaintext, identity(round), OsRng)
            .map_err(|_| TlockError::Encrypt)?;
    let mut out = Vec::new();
    ct.header
        .u
        .serialize_compressed(&mut out)
        .map_err(|_| TlockError::Encrypt)?;
    for v in [&ct.header.v[..], &ct.header.w, &ct.body, &ct.cipher_suite] {
        put_vec(&mut out, v);
    }
    if out.len() > MAX_COMMIT_BYTES {
        return Err(TlockError::TooLarge(out.len()));
    }
    Ok(out)
}

/// An ark-serialize vector: `u64` little-endian length, then the bytes.
fn put_vec(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u64).to_le_bytes());
    out.extend_from_slice(v);
}

/// Split a `u64` little-endian length and that many bytes off `b`.
fn take_vec<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], TlockError> {
    let (len, rest) = b.split_first_chunk::<8>().ok_or(TlockError::Ciphertext)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| TlockError::Ciphertext)?;
    if len > rest.len() {
        return Err(TlockError::Ciphertext);
    }
    let (v, rest) = rest.split_at(len);
    *b = rest;
    Ok(v)
}

/// The chain's ciphertext, read by hand: the layout of the `timelock`
/// revision subtensor builds with (U as a compressed G2 point; V, W, the
/// body and the cipher suite as vectors, each a `u64` LE length and its
/// bytes; the body holds the AES-GCM ciphertext and nonce as two vectors).
/// `timelock` 0.3 writes V and W without lengths, so its own reader cannot
/// take the chain's commits; and ark-serialize reserves memory for a length
/// before reading the bytes, so one flipped length bit would abort the
/// process. Every length is checked here first.
fn parse(commit: &[u8]) -> Result<TLECiphertext<TinyBLS381>, TlockError> {
    if commit.len() > MAX_COMMIT_BYTES {
        return Err(TlockError::TooLarge(commit.len()));
    }
    let (u, mut b) = commit.split_at_checked(96).ok_or(TlockError::Ciphertext)?;
    let u = <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(u)
        .map_err(|_| TlockError::Ciphertext)?;
    let v: [u8; 32] = take_vec(&mut b)?
        .try_into()
        .map_err(|_| TlockError::Ciphertext)?;
    let w: [u8; 32] = take_vec(&mut b)?
        .try_into()
        .map_err(|_| TlockError::Ciphertext)?;
    let body = take_vec(&mut b)?;
    let cipher_suite = take_vec(&mut b)?;
    let mut inner = body;
    take_vec(&mut inner)?;
    take_vec(&mut inner)?;
    if !inner.is_empty() || !b.is_empty() {
        return Err(TlockError::Ciphertext);
    }
    Ok(TLECiphertext {
        header: timelock::ibe::fullident::Ciphertext { u, v, w },
        body: body.to_vec(),
        cipher_suite: cipher_suite.to_vec(),
    })
}

/// Open a commit with a round's signature (48 bytes), as the chain does.
pub fn decrypt(commit: &[u8], signature: &[u8]) -> Result<Vec<u8>, TlockError> {
    let ct = parse(commit)?;
    let sig = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|_| TlockError::Signature)?;
    tld::<TinyBLS381, AESGCMBlockCipherProvider>(ct, sig).map_err(|_| TlockError::Decrypt)
}

/// The longest tempo the chain allows; past it an epoch runs anyway.
pub const MAX_TEMPO: u64 = 50_400;

/// Where a subnet's epochs stand at the chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epochs {
    /// Runtimes with the stateful epoch counter (`SubnetEpochIndex`,
    /// `LastEpochBlock`, `PendingEpochAt`, `BlocksSinceLastStep`): an epoch
    /// runs `tempo` blocks after the last one, at an owner-set pending
    /// block, or after `MAX_TEMPO` blocks without one.
    Stateful {
        index: u64,
        last_epoch_block: u64,
        pending_epoch_at: u64,
        blocks_since_last_step: u64,
    },
    /// Older runtimes: an epoch runs where `(block + netuid + 1) % (tempo + 1) == 0`.
    Modulo { netuid: u16 },
}

/// A subnet's epoch schedule, read at the chain's head `block`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub block: u64,
    pub tempo: u64,
    pub epochs: Epochs,
    /// `RevealPeriodEpochs`: commits are revealed this many epochs later.
    pub reveal_period_epochs: u64,
    /// Seconds per block (12 on finney).
    pub block_time: f64,
}

/// The stateful counter, stepped one block at a time as the chain steps it.
#[derive(Debug, Clone, Copy)]
struct Counter {
    tempo: u64,
    index: u64,
    last_epoch_block: u64,
    pending_epoch_at: u64,
    blocks_since_last_step: u64,
}

impl Counter {
    fn runs_at(&self, block: u64) -> bool {
        self.tempo != 0
            && ((self.pending_epoch_at > 0 && block >= self.pending_epoch_at)
                || self.blocks_since_last_step > MAX_TEMPO
                || block.saturating_sub(self.last_epoch_block) >= self.tempo)
    }

    /// The epoch a commit in `block` is filed under (the counter plus one
    /// when an epoch runs in that block).
    fn epoch_at(&self, block: u64) -> u64 {
        self.index.saturating_add(u64::from(self.runs_at(block)))
    }

    /// The counter after `block`.
    fn step(mut self, block: u64) -> Self {
        self.blocks_since_last_step = self.blocks_since_last_step.saturating_add(1);
        if self.runs_at(block) {
            self.last_epoch_block = block;
            self.pending_epoch_at = 0;
            self.index = self.index.saturating_add(1);
            self.blocks_since_last_step = 0;
        }
        self
    }
}

impl Schedule {
    /// The block at which a commit sent now (included in the next block)
    /// is first tried for reveal: the first block of the epoch
    /// `reveal_period_epochs` after the commit's. `None` when the subnet
    /// runs no epochs (tempo 0).
    pub fn first_reveal_block(&self) -> Option<u64> {
        let t1 = self.tempo + 1;
        match self.epochs {
            Epochs::Modulo { netuid } => {
                let n1 = u64::from(netuid) + 1;
                let epoch = self
                    .commit_epoch()
                    .saturating_add(self.reveal_period_epochs);
                Some(epoch.saturating_mul(t1).saturating_sub(n1))
            }
            Epochs::Stateful {
                index,
                last_epoch_block,
                pending_epoch_at,
                blocks_since_last_step,
            } => {
                let mut c = Counter {
                    tempo: self.tempo,
                    index,
                    last_epoch_block,
                    pending_epoch_at,
                    blocks_since_last_step,
                };
                if c.tempo == 0 {
                    return None;
                }
                let first = self.block + 1;
                let target = c.epoch_at(first).saturating_add(self.reveal_period_epochs);
                let horizon = (self.reveal_period_epochs + 1).saturating_mul(MAX_TEMPO);
                for b in first..=first.saturating_add(horizon) {
                    if c.epoch_at(b) == target {
                        return Some(b);
                    }
                    c = c.step(b);
                }
                None
            }
        }
    }

    /// The epoch a commit sent now (included in the next block) is filed
    /// under: the key of the chain's `TimelockedWeightCommits`.
    pub fn commit_epoch(&self) -> u64 {
        let next = self.block.saturating_add(1);
        match self.epochs {
            Epochs::Modulo { netuid } => {
                next.saturating_add(u64::from(netuid) + 1) / self.tempo.saturating_add(1)
            }
            Epochs::Stateful {
                index,
                last_epoch_block,
                pending_epoch_at,
                blocks_since_last_step,
            } => Counter {
                tempo: self.tempo,
                index,
                last_epoch_block,
                pending_epoch_at,
                blocks_since_last_step,
            }
            .epoch_at(next),
        }
    }

    /// The drand round to encrypt to when the clock says `now` (Unix
    /// seconds): the round published by the third block of the reveal
    /// epoch, rounded down so that the chain has the pulse when it reveals;
    /// the reference client's computation. `None` when the subnet runs no epochs.
    pub fn reveal_round(&self, beacon: &Beacon, now: f64) -> Option<u64> {
        let target = self
            .first_reveal_block()?
            .saturating_add(SECURITY_BLOCK_OFFSET);
        let wait = target.saturating_sub(self.block) as f64 * self.block_time;
        let round =
            ((now + wait - beacon.genesis_time as f64) / beacon.period.max(1) as f64).floor();
        Some((round as u64).max(1))
    }
}

/// A local drand-like beacon for the test chain and the devnet: its own
/// BLS key, signing rounds as drand's quicknet scheme does (signatures on
/// G1, key on G2). Trusted by nothing but the test chain that runs it.
pub struct TestBeacon {
    secret: <TinyBLS381 as EngineBLS>::Scalar,
    pub beacon: Beacon,
}

impl TestBeacon {
    /// A beacon whose key comes from `seed`.
    pub fn new(seed: [u8; 32], genesis_time: u64, period: u64) -> Self {
        use ark_ec::PrimeGroup;
        use ark_ff::PrimeField;
        let secret = <TinyBLS381 as EngineBLS>::Scalar::from_be_bytes_mod_order(&seed);
        let pk = <TinyBLS381 as EngineBLS>::PublicKeyGroup::generator() * secret;
        let mut public_key = Vec::new();
        // Serializing a curve point into a Vec cannot fail.
        let _ = pk.serialize_compressed(&mut public_key);
        TestBeacon {
            secret,
            beacon: Beacon {
                public_key,
                genesis_time,
                period,
            },
        }
    }

    /// The round's signature (48 bytes compressed), the key that opens
    /// commits made to it.
    pub fn sign(&self, round: u64) -> Vec<u8> {
        let sig = identity(round).extract::<TinyBLS381>(self.secret).0;
        let mut out = Vec::new();
        let _ = sig.serialize_compressed(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quicknet round 1000 as `https://api.drand.sh/52db…e971/public/1000`
    /// serves it (public data; the same pulse `timelock`'s own tests use).
    const ROUND_1000_SIGNATURE: &str = "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125e342b73a8dd2bacbe47e4b6b63ed5e39";

    fn payload() -> WeightsPayload {
        WeightsPayload {
            hotkey: vec![7; 32],
            uids: vec![0, 2, 3],
            values: vec![65535, 1200, 7],
            version_key: 4,
        }
    }

    #[test]
    fn a_commit_to_quicknet_round_1000_opens_with_its_real_signature_only() {
        let beacon = Beacon::quicknet();
        assert_eq!(beacon.public_key.len(), 96);
        let plain = payload().encode();
        let commit = encrypt(&beacon, 1000, &plain).unwrap();
        let sig = hex::decode(ROUND_1000_SIGNATURE).unwrap();
        assert_eq!(decrypt(&commit, &sig).unwrap(), plain);
        assert_eq!(
            WeightsPayload::decode(&mut &decrypt(&commit, &sig).unwrap()[..]).unwrap(),
            payload()
        );
        // Another round's commit does not open with round 1000's signature.
        let other = encrypt(&beacon, 1001, &plain).unwrap();
        assert_eq!(decrypt(&other, &sig), Err(TlockError::Decrypt));
        // A flipped bit in the IBE header or the AES-GCM body fails. (The
        // last 9 bytes name the cipher suite, "AES_GCM_", which neither
        // `timelock` nor the chain reads.)
        for i in [0, 50, 96, commit.len() / 2, commit.len() - 10] {
            let mut bad = commit.clone();
            bad[i] ^= 1;
            assert!(decrypt(&bad, &sig).is_err(), "byte {i}");
        }
        let mut bad_sig = sig.clone();
        bad_sig[20] ^= 1;
        assert!(decrypt(&commit, &bad_sig).is_err());
        assert_eq!(decrypt(&commit[..10], &sig), Err(TlockError::Ciphertext));
        // Every single-bit flip of every byte is refused, without aborting
        // on a length that promises more bytes than there are.
        parse(&commit).unwrap();
        for i in 0..commit.len() - 9 {
            let mut bad = commit.clone();
            bad[i] ^= 0x80;
            assert!(decrypt(&bad, &sig).is_err(), "byte {i}");
        }
        let mut long = commit.clone();
        long.push(0);
        assert_eq!(decrypt(&long, &sig), Err(TlockError::Ciphertext));
    }

    #[test]
    fn a_test_beacon_signs_rounds_that_open_its_commits() {
        let b = TestBeacon::new([9; 32], 1_700_000_000, 3);
        let commit = encrypt(&b.beacon, 42, b"weights").unwrap();
        assert_eq!(decrypt(&commit, &b.sign(42)).unwrap(), b"weights");
        assert_eq!(decrypt(&commit, &b.sign(43)), Err(TlockError::Decrypt));
        // Quicknet's real signature does not open a test beacon's commit.
        let real = hex::decode(ROUND_1000_SIGNATURE).unwrap();
        let c1000 = encrypt(&b.beacon, 1000, b"x").unwrap();
        assert_eq!(decrypt(&c1000, &real), Err(TlockError::Decrypt));
    }

    #[test]
    fn payload_is_the_chains_scale_layout() {
        // compact(32) ‖ 32 bytes ‖ compact(3) ‖ u16 LE × 3 ‖ compact(3) ‖ u16 LE × 3 ‖ u64 LE
        let mut want = vec![32 << 2];
        want.extend([7; 32]);
        want.push(3 << 2);
        want.extend([0, 0, 2, 0, 3, 0]);
        want.push(3 << 2);
        want.extend([0xff, 0xff, 0xb0, 0x04, 7, 0]);
        want.extend(4u64.to_le_bytes());
        assert_eq!(payload().encode(), want);
    }

    #[test]
    fn reveal_blocks_follow_both_epoch_models() {
        let modulo = Schedule {
            block: 1000,
            tempo: 360,
            epochs: Epochs::Modulo { netuid: 4 },
            reveal_period_epochs: 1,
            block_time: 12.0,
        };
        // Block 1000 is in epoch (1000 + 5) / 361 = 2, which began at block
        // 2 * 361 - 5 = 717; the reveal epoch 3 starts at block 1078.
        assert_eq!(modulo.commit_epoch(), 2);
        assert_eq!(modulo.first_reveal_block(), Some(1078));
        let q = Beacon::quicknet();
        let now = 1_764_000_000.0;
        // The target is block 1081, 81 blocks (972 s) away.
        let want = ((now + 972.0 - QUICKNET_GENESIS_TIME as f64) / 3.0).floor() as u64;
        assert_eq!(modulo.reveal_round(&q, now), Some(want));
        assert_eq!(modulo.reveal_round(&q, 0.0), Some(1), "never round 0");
        // The stateful counter: the last epoch ran at block 900, so the next
        // runs at 1260 (tempo 360) and the one after at 1620.
        let stateful = Schedule {
            epochs: Epochs::Stateful {
                index: 7,
                last_epoch_block: 900,
                pending_epoch_at: 0,
                blocks_since_last_step: 100,
            },
            ..modulo
        };
        assert_eq!(stateful.commit_epoch(), 7);
        // In the block before an epoch runs, a commit is filed under the next.
        let edge = Schedule {
            block: 1259,
            ..stateful
        };
        assert_eq!(edge.commit_epoch(), 8);
        assert_eq!(
            Schedule {
                block: 1076,
                ..modulo
            }
            .commit_epoch(),
            2
        );
        assert_eq!(
            Schedule {
                block: 1077,
                ..modulo
            }
            .commit_epoch(),
            3
        );
        assert_eq!(stateful.first_reveal_block(), Some(1260));
        assert_eq!(
            Schedule {
                reveal_period_epochs: 2,
                ..stateful
            }
            .first_reveal_block(),
            Some(1620)
        );
        // An owner-set pending epoch at block 1100 runs first.
        let pending = Schedule {
            epochs: Epochs::Stateful {
                index: 7,
                last_epoch_block: 900,
                pending_epoch_at: 1100,
                blocks_since_last_step: 100,
            },
            ..modulo
        };
        assert_eq!(pending.first_reveal_block(), Some(1100));
        let none = Schedule {
            tempo: 0,
            ..stateful
        };
        assert_eq!(none.first_reveal_block(), None);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64), 1);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64 + 2.9), 1);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64 + 3.0), 2);
    }
}
