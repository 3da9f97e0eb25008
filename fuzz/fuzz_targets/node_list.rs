//! Arbitrary bytes as a miner's `/cvm` node list.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = tvm_protocol::parse_node_list(data) {
        for n in &list {
            assert!(!n.host().is_empty());
        }
    }
});
