//! Authenticode SHA-384 of PE images against LIEF's (an implementation no
//! one here wrote): setuptools' PE32+ and PE32 launchers. The interop run
//! compares the same on Debian's signed kernel, with its certificate table.

use std::path::PathBuf;

use tvm_image::authenticode::sha384;

fn pe(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/pe")
            .join(name),
    )
    .unwrap()
}

#[test]
fn hashes_equal_liefs() {
    // lief.PE.parse(f).authentihash(lief.PE.ALGORITHMS.SHA_384).hex(), LIEF 1.0.0.
    for (name, want) in [
        ("setuptools_cli-64.exe", "aa51f026171c925f577749be3bf694ee15f79dac063f1e76cbb6530a254416b2e3063715cb000ebec9b1ce9cd01c3263"),
        ("setuptools_cli-32.exe", "0210e294b34e2a51bb486ecc7e4293d55656b0d093f2a4f312da6e2db349619d9c164e02986aa6ed3b44f9b376ce3406"),
    ] {
        assert_eq!(hex::encode(sha384(&pe(name)).unwrap()), want, "{name}");
    }
}

#[test]
fn what_is_hashed_and_what_is_not() {
    let file = pe("setuptools_cli-64.exe");
    let base = sha384(&file).unwrap();
    let nt = u32::from_le_bytes(file[0x3c..0x40].try_into().unwrap()) as usize;
    let opt = nt + 24;
    // The checksum field is not hashed (a signer rewrites it)...
    let mut c = file.clone();
    c[opt + 64] ^= 0xff;
    assert_eq!(sha384(&c).unwrap(), base);
    // ...a byte of code is.
    let mut c = file.clone();
    let last = c.len() - 1;
    c[last / 2] ^= 1;
    assert_ne!(sha384(&c).unwrap(), base);
    // Overlapping sections (hashed again and again) are refused.
    let sections_at = opt + usize::from(u16::from_le_bytes([file[nt + 20], file[nt + 21]]));
    let mut c = file.clone();
    let first_ptr = c[sections_at + 20..sections_at + 24].to_vec();
    c[sections_at + 40 + 20..sections_at + 40 + 24].copy_from_slice(&first_ptr);
    assert!(sha384(&c)
        .unwrap_err()
        .to_string()
        .contains("sections overlap"));
    // Not a PE, or one whose section points past the end: an error, no panic.
    assert!(sha384(b"MZ").is_err());
    assert!(sha384(&file[..file.len() / 2]).is_err());
    let mut c = file.clone();
    c[0] = b'X';
    assert!(sha384(&c).unwrap_err().to_string().contains("no MZ header"));
}
