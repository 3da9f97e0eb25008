//! What the `tvm` command-line tests share.
#![allow(dead_code)] // each test binary uses a part

/// Run the built `tvm` with `args`: exit code, stdout, stderr.
pub fn tvm(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tvm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The public key `tvm image keygen` printed.
pub fn public_key(keygen_out: &str) -> String {
    keygen_out
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .unwrap()
        .trim()
        .to_string()
}

/// Compare `got` with the reviewed file `tests/<rel>`; `TVM_BLESS=1`
/// rewrites it (then review the diff).
pub fn golden(rel: &str, got: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel);
    if std::env::var_os("TVM_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TVM_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got, want,
        "{rel} changed: review the difference, then bless"
    );
}
