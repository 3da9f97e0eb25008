//! Arbitrary bytes as a signed image manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = tvm_image::manifest::KeySet::default();
    // No key is trusted: nothing may ever be accepted.
    assert!(tvm_image::manifest::verify(data, &keys, 1_767_225_600).is_err());
});
