//! Arbitrary bytes as a TDVF (OVMF for TDX) image: MRTD or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tvm_image::tdvf::mrtd(data, tvm_image::tdvf::PageOrder::TwoPass);
});
