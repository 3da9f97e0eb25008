//! `bittensor-wallet` hotkey files (`~/.bittensor/wallets/NAME/hotkeys/HOTKEY`).
//!
//! Reading the file is the one piece of disk I/O in this crate: every service
//! that signs needs it, and the parsing is where the mistakes happen.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::keys::{AccountId, Hotkey, KeyError};

/// Wallet files are small JSON documents; refuse anything absurd.
const MAX_KEYFILE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyfileError {
    #[error("cannot read hotkey file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hotkey file is {0} bytes; a wallet hotkey file is under 64 KiB")]
    TooLarge(usize),
    #[error(
        "hotkey file is encrypted ({0}); tvm reads unencrypted hotkeys only: \
         regenerate the hotkey with `btcli wallet regen-hotkey` without a password, \
         or give its mnemonic as the hotkey phrase"
    )]
    Encrypted(&'static str),
    #[error("hotkey file is not the JSON bittensor-wallet writes: {0}")]
    NotJson(String),
    #[error("hotkey file holds only a public key ({0}); it cannot sign")]
    PublicOnly(String),
    #[error("hotkey file field {field}: {source}")]
    BadSecret {
        field: &'static str,
        source: KeyError,
    },
    #[error(
        "hotkey file says {stated} but its secret derives {derived}: the file is corrupt or edited"
    )]
    AddressMismatch { stated: String, derived: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyfileJson {
    secret_phrase: Option<Zeroizing<String>>,
    secret_seed: Option<Zeroizing<String>>,
    private_key: Option<Zeroizing<String>>,
    ss58_address: Option<String>,
}

/// Where bittensor-wallet keeps a hotkey: `ROOT/WALLET/hotkeys/HOTKEY`.
/// `root` is usually `~/.bittensor/wallets` (or `$BT_WALLET_PATH`).
pub fn hotkey_path(root: &Path, wallet: &str, hotkey: &str) -> PathBuf {
    root.join(wallet).join("hotkeys").join(hotkey)
}

/// A hotkey's secret phrase as a config file holds it: read like a string,
/// never shown by `Debug` (configs are logged), wiped when dropped.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretPhrase(zeroize::Zeroizing<String>);

impl SecretPhrase {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPhrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPhrase(<redacted>)")
    }
}

impl From<&str> for SecretPhrase {
    fn from(s: &str) -> Self {
        SecretPhrase(zeroize::Zeroizing::new(s.to_string()))
    }
}

impl From<String> for SecretPhrase {
    fn from(s: String) -> Self {
        SecretPhrase(zeroize::Zeroizing::new(s))
    }
}

/// The hotkey a config names: a secret phrase (mnemonic, `0x` seed, `//Dev`
/// URI) or a wallet hotkey file, exactly one of the two.
pub fn configured_hotkey(phrase: Option<&str>, file: Option<&Path>) -> Result<Hotkey, String> {
    match (phrase, file) {
        (Some(p), None) => Hotkey::from_uri(p).map_err(|e| format!("hotkey_phrase: {e}")),
        (None, Some(f)) => {
            load_hotkey_file(f).map_err(|e| format!("hotkey_file {}: {e}", f.display()))
        }
        _ => Err("give exactly one of hotkey_phrase and hotkey_file".into()),
    }
}

/// Load a hotkey file from disk.
pub fn load_hotkey_file(path: &Path) -> Result<Hotkey, KeyfileError> {
    let io = |source| KeyfileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_KEYFILE_BYTES as u64 {
        return Err(KeyfileError::TooLarge(len as usize));
    }
    let data = Zeroizing::new(std::fs::read(path).map_err(io)?);
    parse_hotkey_file(&data)
}

/// Parse the bytes of a hotkey file. Precedence as bittensor-wallet's:
/// `secretPhrase`, then `secretSeed`, then `privateKey`.
pub fn parse_hotkey_file(data: &[u8]) -> Result<Hotkey, KeyfileError> {
    if data.len() > MAX_KEYFILE_BYTES {
        return Err(KeyfileError::TooLarge(data.len()));
    }
    for (prefix, kind) in [
        (&b"$NACL"[..], "NaCl"),
        (b"$ANSIBLE_VAULT", "ansible-vault"),
        (b"gAAAAA", "Fernet"),
    ] {
        if data.starts_with(prefix) {
            return Err(KeyfileError::Encrypted(kind));
        }
    }
    let json: KeyfileJson =
        serde_json::from_slice(data).map_err(|e| KeyfileError::NotJson(e.to_string()))?;
    let key = if let Some(phrase) = &json.secret_phrase {
        Hotkey::from_uri(phrase).map_err(|source| KeyfileError::BadSecret {
            field: "secretPhrase",
            source,
        })?
    } else if let Some(seed) = &json.secret_seed {
        let bad = |source| KeyfileError::BadSecret {
            field: "secretSeed",
            source,
        };
        let bytes = Zeroizing::new(
            hex::decode(seed.trim_start_matches("0x"))
                .map_err(|e| bad(KeyError::NotHex(e.to_string())))?,
        );
        let seed: &[u8; 32] = bytes[..]
            .try_into()
            .map_err(|_| bad(KeyError::BadSeedLength(bytes.len())))?;
        Hotkey::from_mini_secret(seed).map_err(bad)?
    } else if let Some(sk) = &json.private_key {
        let bad = |source| KeyfileError::BadSecret {
            field: "privateKey",
            source,
        };
        let bytes = Zeroizing::new(
            hex::decode(sk.trim_start_matches("0x"))
                .map_err(|e| bad(KeyError::NotHex(e.to_string())))?,
        );
        Hotkey::from_private_key(&bytes).map_err(bad)?
    } else {
        return Err(KeyfileError::PublicOnly(
            json.ss58_address.unwrap_or_else(|| "no address".into()),
        ));
    };
    if let Some(stated) = json.ss58_address {
        let derived = key.account_id();
        if AccountId::from_ss58(&stated).ok() != Some(derived) {
            return Err(KeyfileError::AddressMismatch {
                stated,
                derived: derived.to_ss58(),
            });
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

    /// What bittensor-wallet 4.1.1 writes when regenerating the dev phrase.
    fn dev_file(drop: &[&str]) -> Vec<u8> {
        let mut v = serde_json::json!({
            "accountId": "0x46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a",
            "publicKey": "0x46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a",
            "privateKey": "0x05d65584630d16cd4af6d0bec10f34bb504a5dcb62dba2122d49f5a663763d0afd190cce74df356432b410bd64682309d6dedb27c76845daf388557cbac3ca34",
            "secretPhrase": crate::keys::DEV_PHRASE,
            "secretSeed": "0xfac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e",
            "ss58Address": DEV_SS58,
            "cryptoType": 1
        });
        for f in drop {
            v.as_object_mut().unwrap().remove(*f);
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn each_secret_field_loads_the_same_key() {
        for drop in [
            &[][..],
            &["secretPhrase"][..],
            &["secretPhrase", "secretSeed"][..],
        ] {
            let k = parse_hotkey_file(&dev_file(drop)).unwrap();
            assert_eq!(k.account_id().to_ss58(), DEV_SS58, "without {drop:?}");
        }
    }

    #[test]
    fn public_only_and_encrypted_are_refused_clearly() {
        let e = parse_hotkey_file(&dev_file(&["secretPhrase", "secretSeed", "privateKey"]));
        assert!(matches!(e, Err(KeyfileError::PublicOnly(a)) if a == DEV_SS58));
        let e = parse_hotkey_file(b"$NACL\x00\x01garbage").unwrap_err();
        assert!(matches!(e, KeyfileError::Encrypted("NaCl")));
        assert!(e.to_string().contains("regen-hotkey"));
        assert!(matches!(
            parse_hotkey_file(b"gAAAAABk..."),
            Err(KeyfileError::Encrypted("Fernet"))
        ));
        assert!(matches!(
            parse_hotkey_file(b"{not json"),
            Err(KeyfileError::NotJson(_))
        ));
    }

    #[test]
    fn mismatched_address_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&dev_file(&[])).unwrap();
        v["ss58Address"] = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".into();
        let e = parse_hotkey_file(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, KeyfileError::AddressMismatch { .. }));
    }

    #[test]
    fn bad_seed_names_the_field() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&dev_file(&["secretPhrase"])).unwrap();
        v["secretSeed"] = "0x1234".into();
        let e = parse_hotkey_file(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                KeyfileError::BadSecret {
                    field: "secretSeed",
                    source: KeyError::BadSeedLength(2)
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn loads_from_disk_and_reports_missing_files() {
        let dir = std::env::temp_dir().join(format!("tvm-keyfile-{}", std::process::id()));
        let path = hotkey_path(&dir, "w", "h");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, dev_file(&[])).unwrap();
        assert_eq!(
            load_hotkey_file(&path).unwrap().account_id().to_ss58(),
            DEV_SS58
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            load_hotkey_file(&path),
            Err(KeyfileError::Io { .. })
        ));
    }
}
