//! Property tests: Epistula sign → verify round trips for arbitrary bodies and
//! times, any single-byte corruption of body, signature or header is refused,
//! SS58 round trips and rejects single-character damage.

use std::sync::OnceLock;

use proptest::prelude::*;
use tvm_protocol::epistula::{self, header};
use tvm_protocol::{
    AccountId, EpistulaError, EvidenceBundle, Hotkey, Recipient, SignedHeaders, Verifier,
};

fn alice() -> &'static Hotkey {
    static K: OnceLock<Hotkey> = OnceLock::new();
    K.get_or_init(|| Hotkey::from_uri("//Alice").unwrap())
}

fn bob() -> AccountId {
    "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
        .parse()
        .unwrap()
}

fn reparse(pairs: &[(&'static str, String)]) -> Result<SignedHeaders, EpistulaError> {
    SignedHeaders::parse(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()))
}

const T0: u64 = 1_700_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sign_then_verify(body in proptest::collection::vec(any::<u8>(), 0..2048),
                        ts in T0..T0 + 10_000_000_000,
                        skew in -8_000i64..=8_000) {
        let to = bob();
        let h = epistula::sign(alice(), &body, Some(&to), ts);
        let h = reparse(&h.to_pairs()).unwrap();
        let now = (ts as i64 + skew) as u64;
        let v = Verifier::new(Recipient::Hotkey(to)).verify(&h, &body, now).unwrap();
        prop_assert_eq!(v.signer, alice().account_id());
    }

    #[test]
    fn body_corruption_is_refused(body in proptest::collection::vec(any::<u8>(), 1..512),
                                  idx in any::<prop::sample::Index>(),
                                  flip in 1u8..=255) {
        let to = bob();
        let h = epistula::sign(alice(), &body, Some(&to), T0);
        let mut bad = body.clone();
        let i = idx.index(bad.len());
        bad[i] ^= flip;
        let r = Verifier::new(Recipient::Hotkey(to)).verify(&h, &bad, T0);
        prop_assert!(matches!(r, Err(EpistulaError::BadSignature(_))));
    }

    #[test]
    fn signature_corruption_is_refused(idx in 0usize..64, flip in 1u8..=255) {
        let to = bob();
        let mut h = epistula::sign(alice(), b"body", Some(&to), T0);
        h.signature[idx] ^= flip;
        let r = Verifier::new(Recipient::Hotkey(to)).verify(&h, b"body", T0);
        prop_assert!(matches!(r, Err(EpistulaError::BadSignature(_))));
    }

    #[test]
    fn header_byte_corruption_is_refused(which in 0usize..6, idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        // Any change to any header byte: refused at parse or at verify, never accepted.
        let to = bob();
        let h = epistula::sign(alice(), b"body", Some(&to), T0);
        let mut pairs = h.to_pairs();
        let name = pairs[which].0;
        let value = &mut pairs[which].1;
        let mut bytes = value.clone().into_bytes();
        let i = idx.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        // Non-UTF-8 header values never reach us as &str; skip those.
        let Ok(s) = String::from_utf8(bytes) else { return Ok(()) };
        // Case changes in the hex signature decode to the same bytes; they are the same signature.
        let same_sig = name == header::SIGNATURE && s.eq_ignore_ascii_case(value);
        // Trailing/leading spaces are trimmed like HTTP servers do.
        let same_trimmed = s.trim() == value.as_str();
        prop_assume!(!same_sig && !same_trimmed);
        *value = s;
        let accepted = reparse(&pairs)
            .and_then(|h| Verifier::new(Recipient::Hotkey(to)).verify(&h, b"body", T0))
            .is_ok();
        prop_assert!(!accepted, "corrupted {} accepted", name);
    }

    #[test]
    fn ss58_round_trip(key in any::<[u8; 32]>()) {
        let a = AccountId(key);
        let s = a.to_ss58();
        prop_assert_eq!(s.len(), 48);
        prop_assert!(s.starts_with('5'));
        prop_assert_eq!(AccountId::from_ss58(&s).unwrap(), a);
    }

    #[test]
    fn bundle_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = EvidenceBundle::from_json(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(42),
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn ss58_single_char_damage_is_refused(key in any::<[u8; 32]>(), idx in 0usize..48, c in prop::sample::select(
        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".chars().collect::<Vec<_>>())) {
        let s = AccountId(key).to_ss58();
        prop_assume!(s.as_bytes()[idx] as char != c);
        let mut damaged = s.clone();
        damaged.replace_range(idx..idx + 1, &c.to_string());
        // A 2-byte checksum misses 1 in 65536 random changes; the seed below is fixed
        // so this stays a deterministic check rather than a coin flip.
        prop_assert!(AccountId::from_ss58(&damaged).is_err());
    }
}
