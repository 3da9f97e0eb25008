//! Commit-reveal v4: weights encrypted to a future drand round, so that no
//! one (the chain included) can read them before that round's beacon
//! signature is published, and the chain then reveals them itself.
//!
//! The format is the chain's: `commit = serialize_compressed(TLECiphertext)`
//! from ideal-lab5's `timelock` (Boneh–Franklin IBE on BLS12-381 for the
//! identity `SHA-256(round as u64 big-endian)` under the beacon's G2 public
//! key, then AES-GCM over the SCALE of [`WeightsPayload`]). The chain
//! decrypts with the round's signature, the identity's IBE secret key.
//! `reveal_round` is computed as the reference client (PyPI
//! `bittensor-drand`, `generate_commit`) computes it.

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
    let ct = tle::<TinyBLS381, AESGCMBlockCipherProvider, _>(
        pk,
        key,
        plaintext,
        identity(round),
        OsRng,
    )
    .map_err(|_| TlockError::Encrypt)?;
    let mut out = Vec::new();
    ct.serialize_compressed(&mut out)
        .map_err(|_| TlockError::Encrypt)?;
    if out.len() > MAX_COMMIT_BYTES {
        return Err(TlockError::TooLarge(out.len()));
    }
    Ok(out)
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

/// The compressed ciphertext's layout, walked before `ark-serialize` reads
/// it: that reserves memory for every length it reads before reading the
/// bytes, so one flipped bit in a length would abort the process. The
/// layout: U (G2, 96 bytes), V and W (32 each), the body (a vector holding
/// the AES-GCM output: ciphertext and nonce vectors), the cipher suite (a
/// vector); every vector is a `u64` LE length and its bytes.
fn check_layout(commit: &[u8]) -> Result<(), TlockError> {
    if commit.len() > MAX_COMMIT_BYTES {
        return Err(TlockError::TooLarge(commit.len()));
    }
    let mut b = commit.get(96 + 32 + 32..).ok_or(TlockError::Ciphertext)?;
    let mut body = take_vec(&mut b)?;
    take_vec(&mut body)?;
    take_vec(&mut body)?;
    take_vec(&mut b)?;
    match (body.is_empty(), b.is_empty()) {
        (true, true) => Ok(()),
        _ => Err(TlockError::Ciphertext),
    }
}

/// Open a commit with a round's signature (48 bytes), as the chain does.
pub fn decrypt(commit: &[u8], signature: &[u8]) -> Result<Vec<u8>, TlockError> {
    check_layout(commit)?;
    let ct = TLECiphertext::<TinyBLS381>::deserialize_compressed(commit)
        .map_err(|_| TlockError::Ciphertext)?;
    let sig = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|_| TlockError::Signature)?;
    tld::<TinyBLS381, AESGCMBlockCipherProvider>(ct, sig).map_err(|_| TlockError::Decrypt)
}

/// A subnet's epoch schedule as the reference client reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub netuid: u16,
    pub tempo: u64,
    /// `RevealPeriodEpochs`: commits are revealed this many epochs later.
    pub reveal_period_epochs: u64,
    /// Seconds per block (12 on finney).
    pub block_time: f64,
}

impl Schedule {
    /// The epoch `block` belongs to: `(block + netuid + 1) / (tempo + 1)`.
    pub fn epoch_of(&self, block: u64) -> u64 {
        (block + u64::from(self.netuid) + 1) / (self.tempo + 1)
    }

    /// The first block of `epoch`.
    pub fn first_block(&self, epoch: u64) -> u64 {
        epoch
            .saturating_mul(self.tempo + 1)
            .saturating_sub(u64::from(self.netuid) + 1)
    }

    /// The epoch in which a commit made at `block` is revealed.
    pub fn reveal_epoch(&self, block: u64) -> u64 {
        self.epoch_of(block) + self.reveal_period_epochs
    }

    /// The drand round to encrypt to for a commit made at `block` when the
    /// clock says `now` (Unix seconds): the round published by the third
    /// block of the reveal epoch, rounded down so that the chain has the
    /// pulse when it reveals. Exactly `bittensor-drand`'s computation.
    pub fn reveal_round(&self, beacon: &Beacon, block: u64, now: f64) -> u64 {
        let target_block = self
            .first_block(self.reveal_epoch(block))
            .saturating_add(SECURITY_BLOCK_OFFSET);
        let wait = target_block.saturating_sub(block) as f64 * self.block_time;
        let round =
            ((now + wait - beacon.genesis_time as f64) / beacon.period.max(1) as f64).floor();
        (round as u64).max(1)
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
        check_layout(&commit).unwrap();
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
    fn reveal_round_follows_the_reference_schedule() {
        let s = Schedule {
            netuid: 4,
            tempo: 360,
            reveal_period_epochs: 1,
            block_time: 12.0,
        };
        // Block 1000 is in epoch (1000 + 5) / 361 = 2; the reveal epoch 3
        // starts at block 3 * 361 - 5 = 1078; the target is block 1081,
        // 81 blocks (972 s) away.
        assert_eq!(s.epoch_of(1000), 2);
        assert_eq!(s.first_block(3), 1078);
        let q = Beacon::quicknet();
        let now = 1_764_000_000.0;
        let want = ((now + 972.0 - QUICKNET_GENESIS_TIME as f64) / 3.0).floor() as u64;
        assert_eq!(s.reveal_round(&q, 1000, now), want);
        // A commit in the last block of an epoch still waits a whole epoch.
        assert_eq!(s.epoch_of(1077), 2);
        assert_eq!(s.epoch_of(1078), 3);
        assert_eq!(s.reveal_epoch(1077), 3);
        // Before genesis: round 1, never 0.
        assert_eq!(s.reveal_round(&q, 1000, 0.0), 1);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64), 1);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64 + 2.9), 1);
        assert_eq!(q.round_at(QUICKNET_GENESIS_TIME as f64 + 3.0), 2);
    }
}
