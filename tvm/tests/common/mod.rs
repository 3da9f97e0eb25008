//! What the `tvm` command-line tests share.

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
