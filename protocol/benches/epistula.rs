//! Epistula verification throughput on vector A of the reference doc (the same
//! input the interop test times bittensor-wallet's `Keypair.verify` on).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tvm_protocol::{Recipient, ReplayGuard, SignedHeaders, Verifier};

const BODY: &[u8] = br#"{"nonce":"00112233"}"#;
const NOW: u64 = 1_700_000_001_000;

fn headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Epistula-Version", "2"),
        ("Epistula-Timestamp", "1700000000000"),
        ("Epistula-Uuid", "2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44"),
        ("Epistula-Signed-By", "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"),
        ("Epistula-Signed-For", "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"),
        ("Epistula-Request-Signature", "0x96f03bd272d32c4ba940c0da3727abc1c39562cf560ba2b72136ad2266600877f7912fb3e554f95d04c8dbfa0198bd51a70f61c382ae3ad52bb1c1788b22c787"),
    ]
}

fn parse(pairs: &[(&'static str, &'static str)]) -> SignedHeaders {
    SignedHeaders::parse(|n| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| *v)
    })
    .expect("vector A parses")
}

fn bench(c: &mut Criterion) {
    let pairs = headers();
    let verifier = Verifier::new(Recipient::Hotkey(
        "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
            .parse()
            .expect("bob"),
    ));
    let mut g = c.benchmark_group("epistula");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+verify (vector A)", |b| {
        b.iter(|| {
            verifier
                .verify(&parse(&pairs), BODY, NOW)
                .expect("verifies")
        })
    });
    let parsed = parse(&pairs);
    g.bench_function("verify only (vector A)", |b| {
        b.iter(|| verifier.verify(&parsed, BODY, NOW).expect("verifies"))
    });
    // With a replay guard every call is a new UUID signed anew; measure the guard's
    // cost by comparing against the same headers verified without it.
    let fresh = || {
        verifier
            .clone()
            .with_replay_guard(Arc::new(ReplayGuard::new(1 << 20)))
    };
    let mut guarded = fresh();
    let alice = tvm_protocol::Hotkey::from_uri("//Alice").expect("alice");
    let bob = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
        .parse()
        .expect("bob");
    let signed: Vec<_> = (0..20_000)
        .map(|_| tvm_protocol::epistula::sign(&alice, BODY, Some(&bob), NOW))
        .collect();
    let mut i = 0;
    g.bench_function("verify + replay guard (fresh UUIDs)", |b| {
        b.iter(|| {
            if i == signed.len() {
                i = 0;
                guarded = fresh();
            }
            let r = guarded
                .verify(&signed[i], BODY, NOW)
                .expect("fresh UUID verifies");
            i += 1;
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
