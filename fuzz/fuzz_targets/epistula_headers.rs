//! Arbitrary header values through parse and verify: typed errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_protocol::epistula::header;
use tvm_protocol::{Recipient, SignedHeaders, Verifier};

const NAMES: [&str; 6] = [
    header::VERSION,
    header::TIMESTAMP,
    header::UUID,
    header::SIGNED_BY,
    header::SIGNED_FOR,
    header::SIGNATURE,
];

fuzz_target!(|data: &[u8]| {
    // Six header values and a body, separated by 0xff (never valid in a header).
    let mut parts = data.split(|b| *b == 0xff);
    let values: Vec<Option<&str>> = (0..6)
        .map(|_| parts.next().and_then(|p| std::str::from_utf8(p).ok()))
        .collect();
    let body = parts.next().unwrap_or_default();
    let lookup = |name: &str| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| values[i])
    };
    if let Ok(h) = SignedHeaders::parse(lookup) {
        let now = h.timestamp_ms;
        let recipient = h
            .signed_for
            .map_or(Recipient::Unaddressed, Recipient::Hotkey);
        let _ = Verifier::new(recipient).verify(&h, body, now);
        // What we parsed must print back to headers that parse to the same thing.
        let pairs = h.to_pairs();
        let again = SignedHeaders::parse(|n| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        });
        assert_eq!(again.as_ref().ok(), Some(&h));
    }
});
