//! The validator's challenge: 32 bytes, sent as 64 lowercase hex characters.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::keys::AccountId;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("nonce must be 64 hex characters (32 bytes), got {0} characters")]
    WrongLength(usize),
    #[error("nonce is not hex")]
    NotHex,
}

impl Nonce {
    /// A fresh nonce in Targon's layout: the first 16 bytes are
    /// `sha256(validator SS58)[..16]` (so a miner can tell which validator
    /// asked), the last 16 are random from the OS.
    pub fn generate(validator: &AccountId) -> Self {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&Sha256::digest(validator.to_ss58().as_bytes())[..16]);
        OsRng.fill_bytes(&mut out[16..]);
        Nonce(out)
    }

    /// True when the first half names this validator (see [`Nonce::generate`]).
    pub fn is_from(&self, validator: &AccountId) -> bool {
        self.0[..16] == Sha256::digest(validator.to_ss58().as_bytes())[..16]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Nonce {
    type Err = NonceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(NonceError::WrongLength(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| NonceError::NotHex)?;
        Ok(Nonce(out))
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.to_hex())
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_roundtrip_and_tag() {
        let alice: AccountId = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
            .parse()
            .unwrap();
        let bob: AccountId = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
            .parse()
            .unwrap();
        let a = Nonce::generate(&alice);
        let b = Nonce::generate(&alice);
        assert_ne!(a, b, "random half differs");
        assert!(a.is_from(&alice) && !a.is_from(&bob));
        let hex = a.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(hex.parse::<Nonce>().unwrap(), a);
    }

    #[test]
    fn bad_nonces() {
        assert_eq!("abcd".parse::<Nonce>(), Err(NonceError::WrongLength(4)));
        assert_eq!("g".repeat(64).parse::<Nonce>(), Err(NonceError::NotHex));
        // Targon's old uuid4() nonce (36 chars) is refused with a length error.
        assert_eq!(
            "2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44".parse::<Nonce>(),
            Err(NonceError::WrongLength(36))
        );
    }
}
