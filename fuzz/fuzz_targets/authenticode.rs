//! Arbitrary bytes as a PE image: a hash or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tvm_image::authenticode::sha384(data);
});
