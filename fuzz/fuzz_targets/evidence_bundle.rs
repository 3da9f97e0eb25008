//! Arbitrary bytes as an evidence bundle: typed errors, never a panic; what
//! parses re-serialises to a bundle that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvm_protocol::{report_data, EvidenceBundle};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = EvidenceBundle::from_json(data) {
        let _ = b.check_device_hashes();
        let _ = report_data(&b.nonce, &b.claims);
        let again = EvidenceBundle::from_json(&b.to_json()).expect("re-serialised bundle parses");
        assert_eq!(again, b);
    }
});
