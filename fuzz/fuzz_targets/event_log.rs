//! Arbitrary bytes as a TDX event log (CCEL, TCG2 crypto-agile).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = tvm_image::eventlog::parse(data) {
        assert!(events.len() <= tvm_image::eventlog::MAX_EVENTS);
        let _ = tvm_image::eventlog::replay(&events);
    }
});
