//! Epistula v2: sr25519-signed HTTP requests, byte-compatible with Targon's
//! Python and Go peers and with `bittensor-wallet`.
//!
//! The signed message is `sha256hex(body).uuid.timestamp_ms.signed_for`, signed
//! raw (never pre-hashed) in the `substrate` context; the signature travels as
//! `0x` + 128 lowercase hex.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::{AccountId, Hotkey, Ss58Error};
use crate::replay::ReplayGuard;

/// Header names, as sent. HTTP header lookup is case-insensitive.
pub mod header {
    pub const VERSION: &str = "Epistula-Version";
    pub const TIMESTAMP: &str = "Epistula-Timestamp";
    pub const UUID: &str = "Epistula-Uuid";
    pub const SIGNED_BY: &str = "Epistula-Signed-By";
    pub const SIGNED_FOR: &str = "Epistula-Signed-For";
    pub const SIGNATURE: &str = "Epistula-Request-Signature";
}

pub const VERSION: &str = "2";

/// Python's receiver allows 8 s; we apply it both ways (Python has no future bound).
pub const DEFAULT_WINDOW_MS: u64 = 8_000;

/// The longest header value we accept: a 36-char UUID, a 48-char SS58, a
/// 130-char signature all fit; anything longer is not Epistula.
const MAX_HEADER_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpistulaError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is longer than {MAX_HEADER_LEN} bytes")]
    HeaderTooLong(&'static str),
    #[error("Epistula-Version is {0:?}; only version \"2\" is spoken")]
    UnsupportedVersion(String),
    #[error("Epistula-Timestamp {0:?} is not Unix milliseconds as a decimal integer")]
    MalformedTimestamp(String),
    #[error("Epistula-Uuid {0:?} is not a UUID")]
    MalformedUuid(String),
    #[error("Epistula-Signed-By is not an SS58 hotkey: {0}")]
    MalformedSignedBy(Ss58Error),
    #[error("Epistula-Signed-For is not an SS58 hotkey: {0}")]
    MalformedSignedFor(Ss58Error),
    #[error("Epistula-Request-Signature is malformed: {0}")]
    MalformedSignature(&'static str),
    #[error("request is signed for {got}, not for this node ({expected}): it was meant for someone else")]
    WrongRecipient { expected: String, got: String },
    #[error("request is {age_ms} ms old, over the {window_ms} ms window: check the sender's clock (NTP) or network delay{hint}")]
    Stale {
        age_ms: u64,
        window_ms: u64,
        hint: &'static str,
    },
    #[error("request is dated {ahead_ms} ms in the future, over the {window_ms} ms window: check the sender's clock (NTP)")]
    FromFuture { ahead_ms: u64, window_ms: u64 },
    #[error("signature does not verify for {0} over this body and these headers")]
    BadSignature(String),
    #[error("request {uuid} from {signer} was already accepted once: replay refused")]
    Replayed { signer: String, uuid: Uuid },
    #[error("replay guard is full ({0} requests in the window): server overloaded, retry shortly")]
    ReplayGuardFull(usize),
}

/// Parsed Epistula v2 headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp_ms: u64,
    /// The UUID exactly as sent: it is part of the signed message.
    pub uuid: String,
    pub signed_by: AccountId,
    /// `None` when the header is absent (Python) or empty (Go).
    pub signed_for: Option<AccountId>,
    pub signature: [u8; 64],
}

/// The message Epistula signs.
pub fn message(
    body: &[u8],
    uuid: &str,
    timestamp_ms: u64,
    signed_for: Option<&AccountId>,
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    let signed_for = signed_for.map(AccountId::to_ss58).unwrap_or_default();
    format!("{body_hash}.{uuid}.{timestamp_ms}.{signed_for}")
}

/// Sign `body` (the exact bytes that will be sent) with a fresh random UUID.
pub fn sign(
    hotkey: &Hotkey,
    body: &[u8],
    signed_for: Option<&AccountId>,
    now_ms: u64,
) -> SignedHeaders {
    let uuid = Uuid::new_v4().hyphenated().to_string();
    sign_with_uuid(hotkey, body, signed_for, now_ms, uuid)
}

/// Sign with a given UUID (tests and reproducible fixtures).
pub fn sign_with_uuid(
    hotkey: &Hotkey,
    body: &[u8],
    signed_for: Option<&AccountId>,
    timestamp_ms: u64,
    uuid: String,
) -> SignedHeaders {
    let msg = message(body, &uuid, timestamp_ms, signed_for);
    SignedHeaders {
        timestamp_ms,
        signature: hotkey.sign(msg.as_bytes()),
        uuid,
        signed_by: hotkey.account_id(),
        signed_for: signed_for.copied(),
    }
}

impl SignedHeaders {
    /// Header name/value pairs to send. No `Connection` header: Go peers that
    /// close connections choke on one.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (header::VERSION, VERSION.to_string()),
            (header::TIMESTAMP, self.timestamp_ms.to_string()),
            (header::UUID, self.uuid.clone()),
            (header::SIGNED_BY, self.signed_by.to_ss58()),
        ];
        if let Some(to) = &self.signed_for {
            v.push((header::SIGNED_FOR, to.to_ss58()));
        }
        v.push((
            header::SIGNATURE,
            format!("0x{}", hex::encode(self.signature)),
        ));
        v
    }

    /// Parse headers through a lookup function (the caller's header map,
    /// case-insensitive). Checks form only; [`Verifier`] checks meaning.
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, EpistulaError> {
        let req = |name: &'static str| -> Result<&'a str, EpistulaError> {
            let v = get(name).ok_or(EpistulaError::MissingHeader(name))?;
            if v.len() > MAX_HEADER_LEN {
                return Err(EpistulaError::HeaderTooLong(name));
            }
            Ok(v.trim())
        };
        let version = req(header::VERSION)?;
        if version != VERSION {
            return Err(EpistulaError::UnsupportedVersion(version.to_string()));
        }
        let ts = req(header::TIMESTAMP)?;
        // Decimal digits only: `+5` or ` 5` would sign a different string than we parse.
        if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EpistulaError::MalformedTimestamp(ts.to_string()));
        }
        let timestamp_ms = ts
            .parse::<u64>()
            .map_err(|_| EpistulaError::MalformedTimestamp(ts.to_string()))?;
        let uuid = req(header::UUID)?;
        if uuid.len() != 36 || Uuid::try_parse(uuid).is_err() {
            return Err(EpistulaError::MalformedUuid(uuid.to_string()));
        }
        let signed_by = AccountId::from_ss58(req(header::SIGNED_BY)?)
            .map_err(EpistulaError::MalformedSignedBy)?;
        let signed_for = match get(header::SIGNED_FOR).map(str::trim) {
            None | Some("") => None,
            Some(s) if s.len() > MAX_HEADER_LEN => {
                return Err(EpistulaError::HeaderTooLong(header::SIGNED_FOR))
            }
            Some(s) => Some(AccountId::from_ss58(s).map_err(EpistulaError::MalformedSignedFor)?),
        };
        let sig = req(header::SIGNATURE)?;
        let sig_hex = sig
            .strip_prefix("0x")
            .ok_or(EpistulaError::MalformedSignature("must start with 0x"))?;
        if sig_hex.len() != 128 {
            return Err(EpistulaError::MalformedSignature(
                "must be 128 hex characters (64 bytes)",
            ));
        }
        let mut signature = [0u8; 64];
        hex::decode_to_slice(sig_hex, &mut signature)
            .map_err(|_| EpistulaError::MalformedSignature("not hex"))?;
        Ok(SignedHeaders {
            timestamp_ms,
            uuid: uuid.to_string(),
            signed_by,
            signed_for,
            signature,
        })
    }
}

/// Who a receiver expects requests to be signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// This node's hotkey: `Epistula-Signed-For` must name it.
    Hotkey(AccountId),
    /// Requests addressed to no one (`signed_for` absent or empty), as Targon's
    /// tower takes them. A request addressed to someone else is refused, so it
    /// cannot be replayed here.
    Unaddressed,
}

/// A request that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub signer: AccountId,
    pub uuid: Uuid,
    pub timestamp_ms: u64,
}

/// Receiver-side checks: recipient, freshness (symmetric window), signature,
/// and (when given a guard) replay.
#[derive(Debug, Clone)]
pub struct Verifier {
    recipient: Recipient,
    window_ms: u64,
    replay: Option<Arc<ReplayGuard>>,
}

impl Verifier {
    pub fn new(recipient: Recipient) -> Self {
        Verifier {
            recipient,
            window_ms: DEFAULT_WINDOW_MS,
            replay: None,
        }
    }

    pub fn with_window_ms(mut self, window_ms: u64) -> Self {
        self.window_ms = window_ms;
        self
    }

    /// Share one guard among all handlers of a server.
    pub fn with_replay_guard(mut self, guard: Arc<ReplayGuard>) -> Self {
        self.replay = Some(guard);
        self
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Verify headers over the exact body bytes received, at time `now_ms`.
    /// Checks run in the order Targon's receiver uses; the replay guard is
    /// consulted only after the signature holds, so forged requests cannot fill it.
    pub fn verify(
        &self,
        h: &SignedHeaders,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Verified, EpistulaError> {
        let expected = match self.recipient {
            Recipient::Hotkey(own) => Some(own),
            Recipient::Unaddressed => None,
        };
        if h.signed_for != expected {
            return Err(EpistulaError::WrongRecipient {
                expected: expected
                    .map(|a| a.to_ss58())
                    .unwrap_or_else(|| "nobody".into()),
                got: h
                    .signed_for
                    .map(|a| a.to_ss58())
                    .unwrap_or_else(|| "nobody".into()),
            });
        }
        if now_ms > h.timestamp_ms.saturating_add(self.window_ms) {
            let age_ms = now_ms - h.timestamp_ms;
            // A seconds timestamp (gobt's mix-up, in reverse) is ~1000x too small.
            let hint = if h.timestamp_ms < now_ms / 100 {
                " (the timestamp looks like seconds; Epistula uses milliseconds)"
            } else {
                ""
            };
            return Err(EpistulaError::Stale {
                age_ms,
                window_ms: self.window_ms,
                hint,
            });
        }
        if h.timestamp_ms > now_ms.saturating_add(self.window_ms) {
            return Err(EpistulaError::FromFuture {
                ahead_ms: h.timestamp_ms - now_ms,
                window_ms: self.window_ms,
            });
        }
        let msg = message(body, &h.uuid, h.timestamp_ms, h.signed_for.as_ref());
        if !h.signed_by.verify(msg.as_bytes(), &h.signature) {
            return Err(EpistulaError::BadSignature(h.signed_by.to_ss58()));
        }
        let uuid =
            Uuid::try_parse(&h.uuid).map_err(|_| EpistulaError::MalformedUuid(h.uuid.clone()))?;
        if let Some(guard) = &self.replay {
            guard.admit(
                h.signed_by,
                uuid,
                h.timestamp_ms.saturating_add(self.window_ms),
                now_ms,
            )?;
        }
        Ok(Verified {
            signer: h.signed_by,
            uuid,
            timestamp_ms: h.timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    const BOB: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";
    const UUID_A: &str = "2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44";
    const TS: &str = "1700000000000";
    const BODY_A: &[u8] = br#"{"nonce":"00112233"}"#;
    const SIG_A: &str = "0x96f03bd272d32c4ba940c0da3727abc1c39562cf560ba2b72136ad2266600877f7912fb3e554f95d04c8dbfa0198bd51a70f61c382ae3ad52bb1c1788b22c787";
    const SIG_B: &str = "0x3e7fe353ebef97b1615abe3d45c9edf67e3eac1177f4401af30c72870c1a59280128d4618836e9e1815107768df2cd2066a726c91c85bccab75edc2b09749c8c";
    const NOW: u64 = 1_700_000_001_000;

    fn headers(sig: &str) -> Vec<(&'static str, String)> {
        vec![
            ("epistula-version", "2".into()),
            ("epistula-timestamp", TS.into()),
            ("epistula-uuid", UUID_A.into()),
            ("epistula-signed-by", ALICE.into()),
            ("epistula-signed-for", BOB.into()),
            ("epistula-request-signature", sig.into()),
        ]
    }

    fn parse(pairs: &[(&'static str, String)]) -> Result<SignedHeaders, EpistulaError> {
        SignedHeaders::parse(|name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }

    fn set(pairs: &mut [(&'static str, String)], name: &str, value: &str) {
        for (k, v) in pairs.iter_mut() {
            if k.eq_ignore_ascii_case(name) {
                *v = value.to_string();
            }
        }
    }

    fn bob() -> Verifier {
        Verifier::new(Recipient::Hotkey(BOB.parse().unwrap()))
    }

    #[test]
    fn vector_a_message_and_signature() {
        let h = parse(&headers(SIG_A)).unwrap();
        assert_eq!(
            message(BODY_A, UUID_A, 1_700_000_000_000, h.signed_for.as_ref()),
            "115968080b8c20f18f5e771d7e58ce610c9fdeeed5c9010960527c2d799cf63c.2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44.1700000000000.5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
        );
        assert_eq!(
            message(BODY_A, UUID_A, 1_700_000_000_000, h.signed_for.as_ref()).len(),
            164
        );
        let v = bob().verify(&h, BODY_A, NOW).unwrap();
        assert_eq!(v.signer.to_ss58(), ALICE);
    }

    #[test]
    fn vector_b_empty_body() {
        let h = parse(&headers(SIG_B)).unwrap();
        bob().verify(&h, b"", NOW).unwrap();
        assert!(matches!(
            bob().verify(&h, BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
    }

    #[test]
    fn every_field_change_fails_with_its_error() {
        let v = bob();
        // body byte
        let h = parse(&headers(SIG_A)).unwrap();
        let mut body = BODY_A.to_vec();
        body[3] ^= 1;
        assert!(matches!(
            v.verify(&h, &body, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
        // timestamp +1 ms: still fresh, signature breaks
        let mut p = headers(SIG_A);
        set(&mut p, header::TIMESTAMP, "1700000000001");
        assert!(matches!(
            v.verify(&parse(&p).unwrap(), BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
        // uuid
        let mut p = headers(SIG_A);
        set(&mut p, header::UUID, "2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c45");
        assert!(matches!(
            v.verify(&parse(&p).unwrap(), BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
        // signer
        let mut p = headers(SIG_A);
        set(&mut p, header::SIGNED_BY, BOB);
        assert!(matches!(
            v.verify(&parse(&p).unwrap(), BODY_A, NOW),
            Err(EpistulaError::BadSignature(s)) if s == BOB
        ));
        // recipient
        let mut p = headers(SIG_A);
        set(&mut p, header::SIGNED_FOR, ALICE);
        assert!(matches!(
            v.verify(&parse(&p).unwrap(), BODY_A, NOW),
            Err(EpistulaError::WrongRecipient { .. })
        ));
        // ... and a receiver that is Alice sees the recipient match but the signature break
        let alice = Verifier::new(Recipient::Hotkey(ALICE.parse().unwrap()));
        assert!(matches!(
            alice.verify(&parse(&p).unwrap(), BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
        // version
        let mut p = headers(SIG_A);
        set(&mut p, header::VERSION, "1");
        assert_eq!(
            parse(&p),
            Err(EpistulaError::UnsupportedVersion("1".into()))
        );
        // signature bit
        let mut sig = SIG_A.to_string();
        sig.replace_range(10..11, if &sig[10..11] == "0" { "1" } else { "0" });
        assert!(matches!(
            v.verify(&parse(&headers(&sig)).unwrap(), BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
    }

    #[test]
    fn freshness_window_is_symmetric() {
        let h = parse(&headers(SIG_A)).unwrap();
        let v = bob();
        let ts = 1_700_000_000_000u64;
        assert!(v.verify(&h, BODY_A, ts + 8_000).is_ok());
        assert!(v.verify(&h, BODY_A, ts - 8_000).is_ok());
        assert!(matches!(
            v.verify(&h, BODY_A, ts + 8_001),
            Err(EpistulaError::Stale { age_ms: 8_001, .. })
        ));
        assert!(matches!(
            v.verify(&h, BODY_A, ts - 8_001),
            Err(EpistulaError::FromFuture {
                ahead_ms: 8_001,
                ..
            })
        ));
        let wide = bob().with_window_ms(60_000);
        assert!(wide.verify(&h, BODY_A, ts + 59_000).is_ok());
    }

    #[test]
    fn seconds_timestamps_are_stale_with_a_hint() {
        // The inverse of gobt's bug: a sender that writes seconds.
        let alice = crate::keys::Hotkey::from_uri("//Alice").unwrap();
        let bob_id: AccountId = BOB.parse().unwrap();
        let h = sign(&alice, b"", Some(&bob_id), 1_700_000_001);
        let e = bob().verify(&h, b"", NOW).unwrap_err();
        assert!(matches!(e, EpistulaError::Stale { .. }));
        assert!(e.to_string().contains("looks like seconds"), "{e}");
    }

    #[test]
    fn malformed_headers_are_typed() {
        type Check = fn(&EpistulaError) -> bool;
        let cases: Vec<(&str, &str, Check)> = vec![
            (header::TIMESTAMP, "17e11", |e| {
                matches!(e, EpistulaError::MalformedTimestamp(_))
            }),
            (header::TIMESTAMP, "+1700000000000", |e| {
                matches!(e, EpistulaError::MalformedTimestamp(_))
            }),
            (header::TIMESTAMP, "99999999999999999999", |e| {
                matches!(e, EpistulaError::MalformedTimestamp(_))
            }),
            (header::UUID, "not-a-uuid", |e| {
                matches!(e, EpistulaError::MalformedUuid(_))
            }),
            (header::UUID, "2c1b7b1e8f3a4c7e9d523f0a6b9e1c44", |e| {
                matches!(e, EpistulaError::MalformedUuid(_))
            }),
            (header::SIGNED_BY, "5Grwva", |e| {
                matches!(e, EpistulaError::MalformedSignedBy(_))
            }),
            (header::SIGNED_FOR, "xyz", |e| {
                matches!(e, EpistulaError::MalformedSignedFor(_))
            }),
            (header::SIGNATURE, &SIG_A[2..], |e| {
                matches!(e, EpistulaError::MalformedSignature(_))
            }),
            (header::SIGNATURE, "0xzz", |e| {
                matches!(e, EpistulaError::MalformedSignature(_))
            }),
            (header::SIGNATURE, "0x1234", |e| {
                matches!(e, EpistulaError::MalformedSignature(_))
            }),
        ];
        for (name, value, check) in cases {
            let mut p = headers(SIG_A);
            set(&mut p, name, value);
            let e = parse(&p).unwrap_err();
            assert!(check(&e), "{name}={value}: {e:?}");
        }
        let long = "9".repeat(300);
        let mut p = headers(SIG_A);
        set(&mut p, header::UUID, &long);
        assert_eq!(parse(&p), Err(EpistulaError::HeaderTooLong(header::UUID)));
        let p: Vec<_> = headers(SIG_A)
            .into_iter()
            .filter(|(k, _)| *k != "epistula-uuid")
            .collect();
        assert_eq!(parse(&p), Err(EpistulaError::MissingHeader(header::UUID)));
    }

    #[test]
    fn no_recipient_signs_empty_field() {
        let alice = crate::keys::Hotkey::from_uri("//Alice").unwrap();
        let h = sign(&alice, b"x", None, NOW);
        assert!(h.to_pairs().iter().all(|(k, _)| *k != header::SIGNED_FOR));
        let any = Verifier::new(Recipient::Unaddressed);
        any.verify(&h, b"x", NOW).unwrap();
        // Go sends the header empty: same meaning.
        let mut pairs = h.to_pairs();
        pairs.push((header::SIGNED_FOR, String::new()));
        any.verify(&parse(&pairs).unwrap(), b"x", NOW).unwrap();
        assert!(matches!(
            bob().verify(&h, b"x", NOW),
            Err(EpistulaError::WrongRecipient { .. })
        ));
        // A request addressed to Bob cannot be replayed to an unaddressed receiver.
        let bob_id = crate::keys::AccountId::from_ss58(BOB).unwrap();
        let for_bob = sign(&alice, b"x", Some(&bob_id), NOW);
        assert!(matches!(
            any.verify(&for_bob, b"x", NOW),
            Err(EpistulaError::WrongRecipient { .. })
        ));
    }

    #[test]
    fn replays_are_refused_once_verified() {
        let guard = Arc::new(ReplayGuard::new(16));
        let v = bob().with_replay_guard(guard.clone());
        let h = parse(&headers(SIG_A)).unwrap();
        v.verify(&h, BODY_A, NOW).unwrap();
        assert!(matches!(
            v.verify(&h, BODY_A, NOW),
            Err(EpistulaError::Replayed { .. })
        ));
        // A forged copy (bad signature) is rejected before the guard is touched.
        let forged = parse(&headers(SIG_B)).unwrap();
        assert!(matches!(
            v.verify(&forged, BODY_A, NOW),
            Err(EpistulaError::BadSignature(_))
        ));
        assert_eq!(guard.len(), 1);
    }
}
