//! Arbitrary bytes as an NVIDIA RIM: an error with a reason, never a panic,
//! and never a verified RIM (no signer key is available to the fuzzer).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_verifier::gpu::rim::Rim;

fuzz_target!(|data: &[u8]| {
    let r = Rim::verify(data, 1_717_200_000);
    // The seed RIMs verify unchanged; anything else that verifies must still
    // carry NVIDIA's signature, so it cannot be arbitrary.
    if let Ok(rim) = r {
        assert!(!rim.golden().is_empty());
        assert_eq!(rim.signer_chain().len(), 3);
    }
});
