//! What the measured kernel command line tells the init: the dm-verity
//! parameters of the root file system. The command line is measured (TDX:
//! RTMR2; SEV-SNP: the kernel-hashes table), so the root hash here is the
//! image's, and every block of the root is checked against it.

/// `tvm.root=<data blocks>:<hash start block>:<salt hex>:<root hash hex>`:
/// the root disk holds the file system in its first `data_blocks` 4 KiB
/// blocks and the hash tree from block `hash_start` (veritysetup
/// `--no-superblock --hash-offset`), SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityRoot {
    pub data_blocks: u64,
    pub hash_start: u64,
    pub salt: String,
    pub root_hash: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CmdlineError {
    Missing,
    Repeated,
    Malformed(&'static str),
}

impl std::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CmdlineError::Missing => write!(
                f,
                "the kernel command line has no tvm.root=: boot the release's command line unchanged"
            ),
            CmdlineError::Repeated => write!(
                f,
                "tvm.root= appears more than once on the kernel command line"
            ),
            CmdlineError::Malformed(why) => write!(f, "tvm.root= is malformed: {why}"),
        }
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The verity root named on `cmdline` (exactly once).
pub fn verity_root(cmdline: &str) -> Result<VerityRoot, CmdlineError> {
    let mut found = cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("tvm.root="));
    let value = found.next().ok_or(CmdlineError::Missing)?;
    if found.next().is_some() {
        return Err(CmdlineError::Repeated);
    }
    let parts: Vec<&str> = value.split(':').collect();
    let [blocks, start, salt, root] = parts[..] else {
        return Err(CmdlineError::Malformed(
            "want <data blocks>:<hash start>:<salt>:<root hash>",
        ));
    };
    let number = |s: &str| s.parse::<u64>().ok().filter(|n| *n > 0);
    let data_blocks = number(blocks).ok_or(CmdlineError::Malformed("data blocks"))?;
    let hash_start = number(start).ok_or(CmdlineError::Malformed("hash start block"))?;
    if hash_start < data_blocks {
        return Err(CmdlineError::Malformed(
            "the hash tree starts inside the data",
        ));
    }
    if !is_hex(salt, 64) {
        return Err(CmdlineError::Malformed("salt: want 64 hex digits"));
    }
    if !is_hex(root, 64) {
        return Err(CmdlineError::Malformed("root hash: want 64 hex digits"));
    }
    Ok(VerityRoot {
        data_blocks,
        hash_start,
        salt: salt.to_ascii_lowercase(),
        root_hash: root.to_ascii_lowercase(),
    })
}

impl VerityRoot {
    /// The device-mapper table line for the verity target over `dev`
    /// (`major:minor`): the data and its hash tree on one disk. A corrupted
    /// block panics the guest: a CVM whose root was changed stops rather
    /// than runs on with read errors.
    pub fn table(&self, dev: &str) -> (u64, String) {
        let sectors = self.data_blocks * 8;
        (
            sectors,
            format!(
                "1 {dev} {dev} 4096 4096 {} {} sha256 {} {} 1 panic_on_corruption",
                self.data_blocks, self.hash_start, self.root_hash, self.salt
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "5a17000000000000000000000000000000000000000000000000000000000001";
    const ROOT: &str = "ABCDEF0000000000000000000000000000000000000000000000000000000002";

    #[test]
    fn reads_the_root_and_builds_its_table() {
        let line = format!("console=ttyS0 panic=-1 tvm.root=100:101:{SALT}:{ROOT} ro");
        let r = verity_root(&line).unwrap();
        assert_eq!(r.data_blocks, 100);
        assert_eq!(r.hash_start, 101);
        assert_eq!(r.root_hash, ROOT.to_ascii_lowercase());
        let (sectors, table) = r.table("254:0");
        assert_eq!(sectors, 800);
        assert_eq!(
            table,
            format!(
                "1 254:0 254:0 4096 4096 100 101 sha256 {} {SALT} 1 panic_on_corruption",
                ROOT.to_ascii_lowercase()
            )
        );
    }

    #[test]
    fn refuses_what_would_mount_an_unchecked_root() {
        assert_eq!(verity_root("console=ttyS0"), Err(CmdlineError::Missing));
        let one = format!("tvm.root=1:1:{SALT}:{ROOT}");
        assert_eq!(
            verity_root(&format!("{one} {one}")),
            Err(CmdlineError::Repeated)
        );
        for bad in [
            format!("tvm.root=0:1:{SALT}:{ROOT}"),
            format!("tvm.root=10:9:{SALT}:{ROOT}"),
            format!("tvm.root=x:1:{SALT}:{ROOT}"),
            format!("tvm.root=1:1:{SALT}"),
            format!("tvm.root=1:1:{SALT}:{ROOT}:extra"),
            format!("tvm.root=1:1:00:{ROOT}"),
            format!("tvm.root=1:1:{SALT}:{}", &ROOT[1..]),
            format!("tvm.root=1:1:{SALT}:{}g", &ROOT[1..]),
        ] {
            assert!(
                matches!(verity_root(&bad), Err(CmdlineError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
