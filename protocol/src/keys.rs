//! Hotkeys: SS58 addresses and sr25519 key pairs derived the way Substrate and
//! `bittensor-wallet` derive them (substrate-bip39, `//hard` and `/soft` junctions).

use std::fmt;
use std::str::FromStr;

use blake2::{Blake2b512, Digest};
use parity_scale_codec::Encode;
use schnorrkel::derive::{ChainCode, Derivation};
use schnorrkel::{signing_context, ExpansionMode, MiniSecretKey, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Bittensor uses the generic Substrate SS58 prefix.
pub const SS58_PREFIX: u8 = 42;

/// Every sr25519 signature in Substrate is made in this signing context.
const SIGNING_CONTEXT: &[u8] = b"substrate";

/// The public development phrase; `//Alice` alone means `DEV_PHRASE//Alice`.
pub const DEV_PHRASE: &str =
    "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

/// A 32-byte sr25519 public key, shown and parsed as an SS58 address (prefix 42).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ss58Error {
    #[error("not base58: {0}")]
    NotBase58(String),
    #[error(
        "SS58 address decodes to {0} bytes, expected 35 (prefix 42, 32-byte key, 2-byte checksum)"
    )]
    WrongLength(usize),
    #[error("SS58 prefix is {0}, expected 42 (Bittensor uses the generic Substrate prefix)")]
    WrongPrefix(u8),
    #[error("SS58 checksum does not match: the address is mistyped or truncated")]
    BadChecksum,
}

fn ss58_checksum(prefix_and_key: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(prefix_and_key);
    let out = h.finalize();
    [out[0], out[1]]
}

impl AccountId {
    pub fn to_ss58(&self) -> String {
        let mut buf = Vec::with_capacity(35);
        buf.push(SS58_PREFIX);
        buf.extend_from_slice(&self.0);
        let sum = ss58_checksum(&buf);
        buf.extend_from_slice(&sum);
        bs58::encode(buf).into_string()
    }

    pub fn from_ss58(s: &str) -> Result<Self, Ss58Error> {
        let raw = bs58::decode(s)
            .into_vec()
            .map_err(|e| Ss58Error::NotBase58(e.to_string()))?;
        if raw.len() != 35 {
            return Err(Ss58Error::WrongLength(raw.len()));
        }
        if raw[0] != SS58_PREFIX {
            return Err(Ss58Error::WrongPrefix(raw[0]));
        }
        if ss58_checksum(&raw[..33]) != raw[33..35] {
            return Err(Ss58Error::BadChecksum);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[1..33]);
        Ok(AccountId(key))
    }

    /// True when `signature` is this key's sr25519 signature over `message`
    /// (context `substrate`, message signed raw, never pre-hashed).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(pk) = PublicKey::from_bytes(&self.0) else {
            return false;
        };
        let Ok(sig) = Signature::from_bytes(signature) else {
            return false;
        };
        pk.verify(signing_context(SIGNING_CONTEXT).bytes(message), &sig)
            .is_ok()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ss58())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.to_ss58())
    }
}

impl FromStr for AccountId {
    type Err = Ss58Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ss58(s)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_ss58())
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccountId::from_ss58(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid BIP39 English mnemonic: {0}")]
    BadMnemonic(String),
    #[error("secret seed must be 0x followed by 64 hex characters (32 bytes), got {0} bytes")]
    BadSeedLength(usize),
    #[error("secret is not hex: {0}")]
    NotHex(String),
    #[error("private key must be 64 bytes (key and nonce), got {0}")]
    BadPrivateKeyLength(usize),
    #[error("private key bytes are not a valid sr25519 secret key")]
    BadPrivateKey,
    #[error("bad derivation path {0:?}: junctions are //hard or /soft and must not be empty")]
    BadJunction(String),
    #[error(
        "a `0x` mini-secret cannot take a `///password`; a password only applies to a mnemonic"
    )]
    PasswordWithSeed,
}

/// An sr25519 hotkey that can sign. Its secret never appears in `Debug` output.
#[derive(Clone)]
pub struct Hotkey {
    pair: schnorrkel::Keypair,
    account: AccountId,
}

impl fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hotkey({}, secret: <redacted>)", self.account)
    }
}

enum Junction {
    Hard([u8; 32]),
    Soft([u8; 32]),
}

impl Junction {
    /// Chain code as sp-core makes it: the SCALE encoding of the junction (a
    /// decimal string as u64, anything else as a string), zero-padded to 32
    /// bytes, or its blake2-256 when longer.
    fn chain_code(text: &str) -> [u8; 32] {
        let encoded = match text.parse::<u64>() {
            Ok(n) => n.encode(),
            Err(_) => text.encode(),
        };
        let mut cc = [0u8; 32];
        if encoded.len() > 32 {
            use blake2::digest::consts::U32;
            let h = blake2::Blake2b::<U32>::digest(&encoded);
            cc.copy_from_slice(&h);
        } else {
            cc[..encoded.len()].copy_from_slice(&encoded);
        }
        cc
    }
}

/// Split `phrase//hard/soft///password` the way Substrate secret URIs read.
fn split_uri(uri: &str) -> Result<(&str, Vec<Junction>, Option<&str>), KeyError> {
    let (rest, password) = match uri.find("///") {
        Some(i) => (&uri[..i], Some(&uri[i + 3..])),
        None => (uri, None),
    };
    let (phrase, mut path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut junctions = Vec::new();
    while !path.is_empty() {
        let hard = path.starts_with("//");
        let body = &path[if hard { 2 } else { 1 }..];
        let end = body.find('/').unwrap_or(body.len());
        let name = &body[..end];
        if name.is_empty() {
            return Err(KeyError::BadJunction(rest[phrase.len()..].to_string()));
        }
        let cc = Junction::chain_code(name);
        junctions.push(if hard {
            Junction::Hard(cc)
        } else {
            Junction::Soft(cc)
        });
        path = &body[end..];
    }
    Ok((phrase, junctions, password))
}

fn decode_seed(hex_str: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(
        hex::decode(hex_str.trim_start_matches("0x"))
            .map_err(|e| KeyError::NotHex(e.to_string()))?,
    );
    if bytes.len() != 32 {
        return Err(KeyError::BadSeedLength(bytes.len()));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&bytes);
    Ok(out)
}

impl Hotkey {
    /// From a secret URI as Substrate tools and Targon's `hotkey_phrase` accept it:
    /// a mnemonic, a `0x` mini-secret, or `//Alice` (the dev phrase), each with
    /// optional `//hard` / `/soft` junctions and, for a mnemonic, `///password`.
    pub fn from_uri(uri: &str) -> Result<Self, KeyError> {
        let uri = uri.trim();
        let (phrase, junctions, password) = split_uri(uri)?;
        let phrase = if phrase.is_empty() {
            DEV_PHRASE
        } else {
            phrase
        };
        let mini = if phrase.starts_with("0x") {
            if password.is_some() {
                return Err(KeyError::PasswordWithSeed);
            }
            let seed = decode_seed(phrase)?;
            MiniSecretKey::from_bytes(&seed[..]).map_err(|_| KeyError::BadSeedLength(32))?
        } else {
            Self::mini_from_phrase(phrase, password.unwrap_or(""))?
        };
        let mut pair = mini.expand_to_keypair(ExpansionMode::Ed25519);
        for j in junctions {
            pair = match j {
                Junction::Hard(cc) => pair
                    .secret
                    .hard_derive_mini_secret_key(Some(ChainCode(cc)), b"")
                    .0
                    .expand_to_keypair(ExpansionMode::Ed25519),
                Junction::Soft(cc) => pair.derived_key_simple(ChainCode(cc), []).0,
            };
        }
        Ok(Self::from_pair(pair))
    }

    fn mini_from_phrase(phrase: &str, password: &str) -> Result<MiniSecretKey, KeyError> {
        // Substrate runs PBKDF2 over the BIP39 *entropy*, not the phrase text.
        let words = Zeroizing::new(phrase.split_whitespace().collect::<Vec<_>>().join(" "));
        let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &words)
            .map_err(|e| KeyError::BadMnemonic(e.to_string()))?;
        let entropy = Zeroizing::new(mnemonic.to_entropy());
        substrate_bip39::mini_secret_from_entropy(&entropy, password)
            .map_err(|e| KeyError::BadMnemonic(format!("{e:?}")))
    }

    /// From a 32-byte mini-secret (what wallet files call `secretSeed`).
    pub fn from_mini_secret(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let mini = MiniSecretKey::from_bytes(seed).map_err(|_| KeyError::BadSeedLength(32))?;
        Ok(Self::from_pair(
            mini.expand_to_keypair(ExpansionMode::Ed25519),
        ))
    }

    /// From a 64-byte schnorrkel secret key (key ‖ nonce, wallet files' `privateKey`).
    pub fn from_private_key(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 64 {
            return Err(KeyError::BadPrivateKeyLength(bytes.len()));
        }
        let secret = SecretKey::from_bytes(bytes).map_err(|_| KeyError::BadPrivateKey)?;
        Ok(Self::from_pair(secret.to_keypair()))
    }

    fn from_pair(pair: schnorrkel::Keypair) -> Self {
        let account = AccountId(pair.public.to_bytes());
        Hotkey { pair, account }
    }

    pub fn account_id(&self) -> AccountId {
        self.account
    }

    /// sr25519 signature (context `substrate`) over `message`, raw. Signatures
    /// are randomised: two signatures of one message differ and both verify.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair
            .sign(signing_context(SIGNING_CONTEXT).bytes(message))
            .to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    const BOB: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    #[test]
    fn dev_phrase_and_junctions_match_substrate() {
        let dev = Hotkey::from_uri(DEV_PHRASE).unwrap();
        assert_eq!(
            dev.account_id().0,
            hex32("46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a")
        );
        assert_eq!(
            dev.account_id().to_ss58(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
        let alice = Hotkey::from_uri(&format!("{DEV_PHRASE}//Alice")).unwrap();
        assert_eq!(
            alice.account_id().0,
            hex32("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
        );
        assert_eq!(alice.account_id().to_ss58(), ALICE);
        assert_eq!(
            Hotkey::from_uri("//Alice").unwrap().account_id(),
            alice.account_id()
        );
        let bob = Hotkey::from_uri("//Bob").unwrap();
        assert_eq!(
            bob.account_id().0,
            hex32("8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48")
        );
        assert_eq!(bob.account_id().to_ss58(), BOB);
    }

    #[test]
    fn mini_secrets_match_substrate() {
        let alice_seed = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
        assert_eq!(
            Hotkey::from_uri(alice_seed).unwrap().account_id().to_ss58(),
            ALICE
        );
        let ascii = Hotkey::from_mini_secret(b"12345678901234567890123456789012").unwrap();
        assert_eq!(
            ascii.account_id().0,
            hex32("741c08a06f41c596608f6774259bd9043304adfa5d3eea62760bd9be97634d63")
        );
        let dev_seed = "0xfac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e";
        assert_eq!(
            Hotkey::from_uri(dev_seed).unwrap().account_id().to_ss58(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
    }

    #[test]
    fn private_key_form_gives_the_same_key() {
        let sk = hex::decode("05d65584630d16cd4af6d0bec10f34bb504a5dcb62dba2122d49f5a663763d0afd190cce74df356432b410bd64682309d6dedb27c76845daf388557cbac3ca34").unwrap();
        let k = Hotkey::from_private_key(&sk).unwrap();
        assert_eq!(
            k.account_id().to_ss58(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
        assert_eq!(
            Hotkey::from_private_key(&sk[..63]).unwrap_err(),
            KeyError::BadPrivateKeyLength(63)
        );
    }

    #[test]
    fn bad_secrets_are_typed_errors() {
        assert!(matches!(
            Hotkey::from_uri(
                "bottom drive obey lake curtain smoke basket hold race lonely fit fit"
            ),
            Err(KeyError::BadMnemonic(_))
        ));
        assert_eq!(
            Hotkey::from_uri("0x1234").unwrap_err(),
            KeyError::BadSeedLength(2)
        );
        assert!(matches!(Hotkey::from_uri("0xzz"), Err(KeyError::NotHex(_))));
        // An empty password is no password.
        assert_eq!(
            Hotkey::from_uri("//Alice///").unwrap().account_id(),
            Hotkey::from_uri("//Alice").unwrap().account_id()
        );
        assert!(matches!(
            Hotkey::from_uri("//Alice//"),
            Err(KeyError::BadJunction(_))
        ));
        assert_eq!(
            Hotkey::from_uri(
                "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a///pw"
            )
            .unwrap_err(),
            KeyError::PasswordWithSeed
        );
    }

    #[test]
    fn password_and_soft_junctions_change_the_key() {
        let plain = Hotkey::from_uri("//Alice").unwrap().account_id();
        let pw = Hotkey::from_uri("//Alice///secret").unwrap().account_id();
        let soft = Hotkey::from_uri("//Alice/1").unwrap().account_id();
        assert_ne!(plain, pw);
        assert_ne!(plain, soft);
        assert_ne!(pw, soft);
    }

    #[test]
    fn ss58_rejects_damage() {
        let alice = AccountId::from_ss58(ALICE).unwrap();
        assert_eq!(alice.to_ss58(), ALICE);
        // Change one character: the checksum catches it.
        let mut bad = ALICE.to_string();
        bad.replace_range(10..11, "b");
        assert!(AccountId::from_ss58(&bad).is_err());
        assert!(matches!(
            AccountId::from_ss58("0OIl"),
            Err(Ss58Error::NotBase58(_))
        ));
        assert!(matches!(
            AccountId::from_ss58("5Grwva"),
            Err(Ss58Error::WrongLength(_))
        ));
        // Polkadot prefix 0 for the same key is refused.
        let mut raw = vec![0u8];
        raw.extend_from_slice(&alice.0);
        let mut h = Blake2b512::new();
        h.update(b"SS58PRE");
        h.update(&raw);
        let sum = h.finalize();
        raw.extend_from_slice(&sum[..2]);
        let polkadot = bs58::encode(raw).into_string();
        assert_eq!(
            AccountId::from_ss58(&polkadot),
            Err(Ss58Error::WrongPrefix(0))
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = Hotkey::from_uri("//Alice").unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains(ALICE));
        assert!(!shown.to_lowercase().contains("e5be9a50"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn sign_verify() {
        let k = Hotkey::from_uri("//Alice").unwrap();
        let sig = k.sign(b"hello");
        assert!(k.account_id().verify(b"hello", &sig));
        assert!(!k.account_id().verify(b"hellO", &sig));
        let bob = Hotkey::from_uri("//Bob").unwrap().account_id();
        assert!(!bob.verify(b"hello", &sig));
    }
}
