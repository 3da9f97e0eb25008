//! The kernel's configfs-tsm report interface (Linux ≥ 6.7), one ABI for TDX
//! quotes and SEV-SNP reports: make a directory under
//! `/sys/kernel/config/tsm/report`, write report_data to `inblob`, read the
//! quote or report from `outblob` (and SNP's certificate table from
//! `auxblob`), check `generation` to be sure no other writer raced us, remove
//! the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::hexbytes::HexBytes;

use super::{BackendError, Tee, TeeKind};

pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";
/// Where a TD finds its CC event log (ACPI CCEL table data).
pub const CCEL_PATH: &str = "/sys/firmware/acpi/tables/data/CCEL";

const WHAT: &str = "configfs-tsm";
/// A quote is ~5 KB, an SNP certificate table a few KB; anything bigger is not a report.
const MAX_BLOB: usize = 1 << 20;
/// The CC event log, read once: the firmware writes it before the kernel
/// starts and it does not change while the VM runs.
pub(crate) fn read_ccel() -> Option<HexBytes> {
    std::fs::read(CCEL_PATH).ok().map(HexBytes)
}

/// Another writer raced ours this many times in a row: give up.
const MAX_RACES: usize = 3;

/// The file operations the interface needs; the kernel implements them on
/// the real configfs, tests implement them with a model of the kernel.
pub trait TsmFs: Send + Sync {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system.
pub struct RealFs;

impl TsmFs for RealFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_BLOB as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > MAX_BLOB {
            return Err(io::Error::other(format!("more than {MAX_BLOB} bytes")));
        }
        Ok(out)
    }
}

/// One report as the kernel produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// `tdx_guest` or `sev_guest`.
    pub provider: String,
    pub outblob: Vec<u8>,
    /// SEV-SNP's certificate table, when the host provides one.
    pub auxblob: Option<Vec<u8>>,
}

pub struct Tsm<F: TsmFs = RealFs> {
    root: PathBuf,
    fs: F,
    provider: String,
    /// SEV-SNP VMPL to request (written to `privlevel`); TDX ignores it.
    privlevel: Option<u32>,
    seq: AtomicU64,
    ccel: Option<HexBytes>,
}

impl Tsm<RealFs> {
    /// Open the interface at its usual place; `vmpl` applies to SEV-SNP only.
    pub fn open_default(vmpl: u32) -> Result<Self, BackendError> {
        Tsm::open(RealFs, Path::new(DEFAULT_ROOT), Some(vmpl))
    }
}

/// Removes the report directory however the request ends.
struct Entry<'a, F: TsmFs> {
    fs: &'a F,
    dir: PathBuf,
}

impl<F: TsmFs> Drop for Entry<'_, F> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove configfs-tsm entry");
        }
    }
}

impl<F: TsmFs> Tsm<F> {
    /// Check the interface is there and learn its provider by making (and
    /// removing) one entry.
    pub fn open(fs: F, root: &Path, privlevel: Option<u32>) -> Result<Self, BackendError> {
        let mut tsm = Tsm {
            root: root.to_path_buf(),
            fs,
            provider: String::new(),
            privlevel,
            seq: AtomicU64::new(0),
            ccel: read_ccel(),
        };
        let entry = tsm.entry()?;
        let provider = tsm.read_text(&entry.dir.join("provider"))?;
        drop(entry);
        tsm.provider = provider;
        Ok(tsm)
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    fn entry(&self) -> Result<Entry<'_, F>, BackendError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("tvm-{}-{n}", std::process::id()));
        match self.fs.create_dir(&dir) {
            Ok(()) => Ok(Entry { fs: &self.fs, dir }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackendError::Unavailable {
                what: WHAT,
                reason: format!(
                    "{} does not exist: it needs Linux 6.7 or later with CONFIG_TSM_REPORTS, the tdx_guest or sev_guest module, and configfs mounted (mount -t configfs none /sys/kernel/config)",
                    self.root.display()
                ),
            }),
            Err(e) => Err(BackendError::Unavailable {
                what: WHAT,
                reason: format!("cannot create {}: {e} (the agent must run as root inside the CVM)", dir.display()),
            }),
        }
    }

    fn read_text(&self, path: &Path) -> Result<String, BackendError> {
        let raw = self.fs.read(path).map_err(|e| failed(path, "read", &e))?;
        Ok(String::from_utf8_lossy(&raw).trim().to_string())
    }

    fn generation(&self, dir: &Path) -> Result<u64, BackendError> {
        let path = dir.join("generation");
        let text = self.read_text(&path)?;
        text.parse().map_err(|_| BackendError::Failed {
            what: WHAT,
            reason: format!("{} holds {text:?}, not a number", path.display()),
        })
    }

    /// One report over `report_data`.
    pub fn report(&self, report_data: &[u8; 64]) -> Result<TsmReport, BackendError> {
        for _ in 0..MAX_RACES {
            let entry = self.entry()?;
            let dir = &entry.dir;
            // TDX kernels hide `privlevel` (VMPLs are SEV-SNP's): write it for SNP only.
            if let (Some(level), "sev_guest") = (self.privlevel, self.provider.as_str()) {
                let p = dir.join("privlevel");
                self.fs
                    .write(&p, level.to_string().as_bytes())
                    .map_err(|e| failed(&p, "write", &e))?;
            }
            let inblob = dir.join("inblob");
            self.fs
                .write(&inblob, report_data)
                .map_err(|e| failed(&inblob, "write", &e))?;
            let before = self.generation(dir)?;
            let outblob_path = dir.join("outblob");
            let outblob = self.fs.read(&outblob_path).map_err(|e| {
                let hint = if self.provider == "tdx_guest" {
                    " (TDX quotes come from the host's quote generation service: is QGS running on the host and the TD started with a quote-generation socket?)"
                } else {
                    ""
                };
                BackendError::Failed {
                    what: WHAT,
                    reason: format!("reading {}: {e}{hint}", outblob_path.display()),
                }
            })?;
            let auxblob = match self.fs.read(&dir.join("auxblob")) {
                Ok(b) if !b.is_empty() => Some(b),
                // No certificate table (TDX, or a host that provides none).
                _ => None,
            };
            let after = self.generation(dir)?;
            if before != after {
                tracing::warn!(
                    before,
                    after,
                    "another writer changed the configfs-tsm entry; retrying"
                );
                continue;
            }
            if outblob.is_empty() {
                return Err(BackendError::Failed {
                    what: WHAT,
                    reason: format!("{} was empty", outblob_path.display()),
                });
            }
            return Ok(TsmReport {
                provider: self.provider.clone(),
                outblob,
                auxblob,
            });
        }
        Err(BackendError::Failed {
            what: WHAT,
            reason: format!("another process kept rewriting the report entry ({MAX_RACES} tries): is a second agent running?"),
        })
    }
}

fn failed(path: &Path, op: &str, e: &io::Error) -> BackendError {
    BackendError::Failed {
        what: WHAT,
        reason: format!("cannot {op} {}: {e}", path.display()),
    }
}

impl<F: TsmFs> Tee for Tsm<F> {
    fn kind(&self) -> TeeKind {
        if self.provider == "sev_guest" {
            TeeKind::SevSnp
        } else {
            TeeKind::Tdx
        }
    }

    fn describe(&self) -> String {
        format!("configfs-tsm ({})", self.provider)
    }

    fn rtmr3(&self) -> Result<Option<[u8; 48]>, BackendError> {
        match self.kind() {
            TeeKind::Tdx => super::rtmr::Rtmr3::default().read().map(Some),
            TeeKind::SevSnp => Ok(None),
        }
    }

    fn extend_rtmr3(&self, digest: &[u8; 48]) -> Result<(), BackendError> {
        super::rtmr::Rtmr3::default().extend(digest)
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError> {
        let r = self.report(report_data)?;
        Ok(match r.provider.as_str() {
            "tdx_guest" => TeeEvidence::Tdx {
                quote: HexBytes(r.outblob),
                event_log: self.ccel.clone(),
            },
            "sev_guest" => TeeEvidence::SevSnp {
                report: HexBytes(r.outblob),
                certs: r.auxblob.map(HexBytes),
            },
            other => {
                return Err(BackendError::Unavailable {
                    what: WHAT,
                    reason: format!("provider {other:?} is neither tdx_guest nor sev_guest"),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A model of the kernel's configfs-tsm: entries are created with their
    /// attribute files, `generation` counts writes, `outblob` is produced
    /// from `inblob` by a fixture function.
    struct FakeKernel {
        root: PathBuf,
        provider: &'static str,
        files: Mutex<BTreeMap<PathBuf, Vec<u8>>>,
        dirs: Mutex<Vec<PathBuf>>,
        make: fn(&[u8]) -> io::Result<Vec<u8>>,
        aux: Option<Vec<u8>>,
        /// Bump the generation behind our back this many times.
        races: Mutex<usize>,
    }

    impl FakeKernel {
        fn new(provider: &'static str, make: fn(&[u8]) -> io::Result<Vec<u8>>) -> Self {
            FakeKernel {
                root: PathBuf::from("/sys/kernel/config/tsm/report"),
                provider,
                files: Mutex::new(BTreeMap::new()),
                dirs: Mutex::new(Vec::new()),
                make,
                aux: None,
                races: Mutex::new(0),
            }
        }
    }

    impl TsmFs for &FakeKernel {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            if path.parent() != Some(&self.root) {
                return Err(io::ErrorKind::NotFound.into());
            }
            let mut dirs = self.dirs.lock().unwrap();
            if dirs.iter().any(|d| d == path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            dirs.push(path.to_path_buf());
            let mut f = self.files.lock().unwrap();
            f.insert(
                path.join("provider"),
                format!("{}\n", self.provider).into_bytes(),
            );
            f.insert(path.join("generation"), b"0\n".to_vec());
            Ok(())
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.dirs.lock().unwrap().retain(|d| d != path);
            self.files
                .lock()
                .unwrap()
                .retain(|k, _| !k.starts_with(path));
            Ok(())
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            let dir = path.parent().ok_or(io::ErrorKind::NotFound)?;
            let mut f = self.files.lock().unwrap();
            if !f.contains_key(&dir.join("generation")) {
                return Err(io::ErrorKind::NotFound.into());
            }
            // TDX kernels have no privlevel attribute.
            if path.ends_with("privlevel") && self.provider == "tdx_guest" {
                return Err(io::ErrorKind::NotFound.into());
            }
            if path.ends_with("inblob") && data.len() > 64 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            f.insert(path.to_path_buf(), data.to_vec());
            let g = f
                .get(&dir.join("generation"))
                .map(|g| {
                    String::from_utf8_lossy(g)
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            f.insert(dir.join("generation"), format!("{}\n", g + 1).into_bytes());
            Ok(())
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let dir = path.parent().ok_or(io::ErrorKind::NotFound)?;
            if path.ends_with("outblob") {
                let inblob = self
                    .files
                    .lock()
                    .unwrap()
                    .get(&dir.join("inblob"))
                    .cloned()
                    .unwrap_or_default();
                let mut races = self.races.lock().unwrap();
                if *races > 0 {
                    *races -= 1;
                    drop(races);
                    self.write(&dir.join("inblob"), &inblob)?;
                }
                return (self.make)(&inblob);
            }
            if path.ends_with("auxblob") {
                return self.aux.clone().ok_or(io::ErrorKind::NotFound.into());
            }
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or(io::ErrorKind::NotFound.into())
        }
    }

    /// The real TDX quote of testdata, with the inblob in its report_data
    /// (offset 48 + 520), as a TD's kernel would return it.
    fn tdx_quote(inblob: &[u8]) -> io::Result<Vec<u8>> {
        let mut q = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/tdx/dcapqvl_tdx_quote_v4.bin"
        ))?;
        q[568..568 + inblob.len()].copy_from_slice(inblob);
        Ok(q)
    }

    fn snp_report(inblob: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = vec![0u8; 1184];
        r[0x50..0x50 + inblob.len()].copy_from_slice(inblob);
        Ok(r)
    }

    fn qgs_down(_: &[u8]) -> io::Result<Vec<u8>> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    const RD: [u8; 64] = [7u8; 64];

    #[test]
    fn tdx_quote_carries_report_data_and_the_entry_is_removed() {
        let k = FakeKernel::new("tdx_guest", tdx_quote);
        // A VMPL is configured (as `tee: auto` does) but TDX must not be asked for it.
        let tsm = Tsm::open(&k, &k.root, Some(0)).unwrap();
        assert_eq!(tsm.kind(), TeeKind::Tdx);
        assert_eq!(tsm.describe(), "configfs-tsm (tdx_guest)");
        let r = tsm.report(&RD).unwrap();
        assert_eq!(&r.outblob[568..632], &RD[..]);
        assert_eq!(r.auxblob, None);
        assert!(k.dirs.lock().unwrap().is_empty(), "entry left behind");
        match tsm.evidence(&RD).unwrap() {
            TeeEvidence::Tdx { quote, .. } => assert_eq!(&quote.0[568..632], &RD[..]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snp_report_with_certificate_table() {
        let mut k = FakeKernel::new("sev_guest", snp_report);
        k.aux = Some(vec![1, 2, 3]);
        let tsm = Tsm::open(&k, &k.root, Some(0)).unwrap();
        assert_eq!(tsm.kind(), TeeKind::SevSnp);
        match tsm.evidence(&RD).unwrap() {
            TeeEvidence::SevSnp { report, certs } => {
                assert_eq!(&report.0[0x50..0x90], &RD[..]);
                assert_eq!(certs.unwrap().0, vec![1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_interface_says_what_is_needed() {
        let k = FakeKernel::new("tdx_guest", tdx_quote);
        let err = Tsm::open(&k, Path::new("/nonexistent/tsm/report"), None)
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{msg}");
        assert!(
            msg.contains("Linux 6.7") && msg.contains("CONFIG_TSM_REPORTS"),
            "{msg}"
        );
    }

    #[test]
    fn quote_service_failure_names_qgs() {
        let k = FakeKernel::new("tdx_guest", qgs_down);
        let tsm = Tsm::open(&k, &k.root, None).unwrap();
        let msg = tsm.report(&RD).unwrap_err().to_string();
        assert!(msg.contains("outblob") && msg.contains("QGS"), "{msg}");
        assert!(
            k.dirs.lock().unwrap().is_empty(),
            "entry left behind after a failure"
        );
    }

    #[test]
    fn a_racing_writer_is_detected_and_retried() {
        let k = FakeKernel::new("tdx_guest", tdx_quote);
        *k.races.lock().unwrap() = 2;
        let tsm = Tsm::open(&k, &k.root, None).unwrap();
        assert!(tsm.report(&RD).is_ok());
        *k.races.lock().unwrap() = 5;
        let msg = tsm.report(&RD).unwrap_err().to_string();
        assert!(msg.contains("second agent"), "{msg}");
    }

    #[test]
    fn real_fs_without_configfs_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tsm::open(RealFs, &dir.path().join("tsm/report"), None)
            .err()
            .unwrap();
        assert!(matches!(err, BackendError::Unavailable { .. }));
    }
}
