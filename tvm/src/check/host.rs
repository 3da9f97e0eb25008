//! What `tvm check` reads a host through: files under a root (`/`, or a
//! fixture tree in tests) and a command runner (the system's programs, or a
//! table of recorded outputs). Nothing else of the host is touched, so every
//! check runs the same on a fixture as on a machine.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It ran; its exit code and output.
    Exited {
        code: i32,
        stdout: String,
        stderr: String,
    },
    /// No such program on this host.
    NotFound,
    /// It did not finish in time (killed), or could not be started.
    Failed(String),
}

impl Ran {
    /// Standard output of a run that exited 0.
    pub fn ok(&self) -> Option<&str> {
        match self {
            Ran::Exited {
                code: 0, stdout, ..
            } => Some(stdout),
            _ => None,
        }
    }
}

/// Recorded command outputs (tests and fixture hosts): the key is the
/// command line, words joined by single spaces.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

/// Who runs the host's programs.
#[derive(Debug, Clone)]
pub enum Runner {
    /// The programs on `PATH`, each given `timeout`.
    System { timeout: Duration },
    /// A fixture's recorded outputs; a command not in the table is not
    /// installed. Commands asked for are logged (fixes are checked by it).
    Table {
        outputs: BTreeMap<String, Recorded>,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    },
}

/// A host as `tvm check` sees it.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    runner: Runner,
    connect_timeout: Duration,
}

/// Largest file a check reads (kernel logs are the big ones).
const MAX_READ: u64 = 8 << 20;
/// Largest output kept from a command.
const MAX_OUTPUT: usize = 8 << 20;

impl Host {
    pub fn new(root: impl Into<PathBuf>, runner: Runner) -> Self {
        Host {
            root: root.into(),
            runner,
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// The live system: root `/`, the system's programs with 5 s each.
    pub fn system() -> Self {
        Host::new(
            "/",
            Runner::System {
                timeout: Duration::from_secs(5),
            },
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (absolute, as on the host) under the root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// A file's text (lossy UTF-8), at most 8 MiB.
    pub fn read(&self, path: &str) -> io::Result<String> {
        let f = std::fs::File::open(self.path(path))?;
        let mut bytes = Vec::new();
        f.take(MAX_READ).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A one-line file (sysfs), trimmed.
    pub fn value(&self, path: &str) -> Option<String> {
        self.read(path).ok().map(|s| s.trim().to_string())
    }

    pub fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.path(path)).is_ok()
    }

    /// Names in a directory, sorted.
    pub fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(self.path(path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        names.sort();
        Ok(names)
    }

    /// The last part of a symlink's target (sysfs `driver`, `iommu_group`).
    pub fn link_name(&self, path: &str) -> Option<String> {
        let target = std::fs::read_link(self.path(path)).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Permission bits, owner and group of a file.
    pub fn mode(&self, path: &str) -> Option<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.path(path)).ok()?;
        Some((m.mode() & 0o7777, m.uid(), m.gid()))
    }

    /// Write a file under the root (fixes), creating its folder.
    /// Write a file under the root (fixes, units), creating its folder:
    /// whole or not at all (a new file renamed over the old), never through
    /// a symlink planted where it goes.
    pub fn write(&self, path: &str, contents: &str) -> io::Result<()> {
        self.write_mode(path, contents.as_bytes(), 0o644)
    }

    pub fn write_mode(&self, path: &str, contents: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.path(path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = p.with_file_name(format!(".{name}.tvm-new"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    }

    /// Run `program args…`.
    pub fn run(&self, program: &str, args: &[&str]) -> Ran {
        match &self.runner {
            Runner::Table { outputs, log } => {
                let line = std::iter::once(program)
                    .chain(args.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Ok(mut l) = log.lock() {
                    l.push(line.clone());
                }
                match outputs.get(&line) {
                    Some(r) => Ran::Exited {
                        code: r.code,
                        stdout: r.stdout.clone(),
                        stderr: r.stderr.clone(),
                    },
                    None => Ran::NotFound,
                }
            }
            Runner::System { timeout } => run_system(program, args, *timeout),
        }
    }

    /// Whether a TCP connection to `host:port` opens in time. With a table
    /// runner, only loopback addresses are tried (tests never leave the box).
    pub fn connect(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let addrs = resolve(host, port, self.connect_timeout)?;
        if matches!(self.runner, Runner::Table { .. })
            && !addrs.iter().all(|a| a.ip().is_loopback())
        {
            return Err(format!("{host}: not tried from a fixture host"));
        }
        let mut last = format!("{host}: no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(_) => return Ok(a),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(last)
    }
}

/// Name resolution can hang on a broken resolver; it gets the same timeout.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("{host}:{port}");
    std::thread::spawn(move || {
        let r = name.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(a)) if !a.is_empty() => Ok(a),
        Ok(Ok(_)) => Err(format!("{host}: no address")),
        Ok(Err(e)) => Err(format!("{host}: {e}")),
        Err(_) => Err(format!("{host}: name resolution timed out")),
    }
}

fn run_system(program: &str, args: &[&str], timeout: Duration) -> Ran {
    let mut child = match Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ran::NotFound,
        Err(e) => return Ran::Failed(format!("{program}: {e}")),
    };
    // Read both pipes on threads so a chatty program cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_OUTPUT as u64).read_to_end(&mut out);
            }
            let _ = tx.send(String::from_utf8_lossy(&out).into_owned());
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ran::Failed(format!(
                    "{program} did not finish in {} s",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Ran::Failed(format!("{program}: {e}")),
        }
    };
    // A child it left behind may hold the pipes open: wait a little, not forever.
    let collect = |rx: std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
    };
    Ran::Exited {
        code: status.code().unwrap_or(-1),
        stdout: collect(out),
        stderr: collect(err),
    }
}
