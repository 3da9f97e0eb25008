//! MRTD from a real TDVF image (Debian's OVMF 2022.11-6+deb12u2, whose
//! X64 build carries TDX metadata) against dstack-mr's (an implementation
//! no one here wrote), in both of QEMU's page orders.

use std::path::PathBuf;

use tvm_image::tdvf::{mrtd, sections, PageOrder};

fn ovmf() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/measure/debian_ovmf_2022.11-6+deb12u2_OVMF.fd"),
    )
    .unwrap()
}

#[test]
fn mrtd_equals_dstack_mrs() {
    let fw = ovmf();
    // dstack-mr @ 312dc605, `Tdvf::parse(fw).mrtd_two_pass()` / `mrtd_single_pass()`.
    assert_eq!(
        hex::encode(mrtd(&fw, PageOrder::TwoPass).unwrap()),
        "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1"
    );
    assert_eq!(
        hex::encode(mrtd(&fw, PageOrder::SinglePass).unwrap()),
        "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47"
    );
}

#[test]
fn one_changed_byte_or_broken_metadata_is_caught() {
    let fw = ovmf();
    let base = mrtd(&fw, PageOrder::SinglePass).unwrap();
    // A byte of a measured (MR_EXTEND) section changes MRTD.
    let s = sections(&fw)
        .unwrap()
        .into_iter()
        .find(|s| s.attributes & 1 == 1 && s.raw_data_size > 0)
        .unwrap();
    let mut c = fw.clone();
    c[s.data_offset as usize + 100] ^= 1;
    assert_ne!(mrtd(&c, PageOrder::SinglePass).unwrap(), base);
    // Not OVMF, or its descriptor gone: errors that say so, no panic.
    assert!(mrtd(&fw[..fw.len() / 2], PageOrder::SinglePass).is_err());
    assert!(mrtd(b"short", PageOrder::SinglePass).is_err());
    let at = fw.windows(4).rposition(|w| w == b"TDVF").unwrap();
    // What QEMU would measure otherwise is refused, not given a wrong MRTD:
    // a measured section with no data; and no crafted image costs more
    // than 65536 page records.
    let first = at + 16;
    assert_eq!(sections(&fw).unwrap()[0].attributes & 1, 1);
    let mut c = fw.clone();
    c[first + 4..first + 8].copy_from_slice(&0u32.to_le_bytes());
    assert!(mrtd(&c, PageOrder::SinglePass)
        .unwrap_err()
        .to_string()
        .contains("has no data in the image"));
    let mut c = fw.clone();
    c[first + 16..first + 24].copy_from_slice(&(1u64 << 30).to_le_bytes());
    assert!(mrtd(&c, PageOrder::SinglePass)
        .unwrap_err()
        .to_string()
        .contains("more than 65536 pages"));
    let mut c = fw.clone();
    c[at] = b'X';
    assert!(mrtd(&c, PageOrder::SinglePass)
        .unwrap_err()
        .to_string()
        .contains("no TDVF descriptor"));
}
