//! Thin, checked wrappers over the system calls an init needs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn c(s: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f, d) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
        .map_err(|e| io::Error::new(e.kind(), format!("mount {source} on {target}: {e}")))
}

/// Moves the mount at `from` to `to`.
pub fn move_mount(from: &str, to: &str) -> io::Result<()> {
    let (f, t, none) = (c(from)?, c(to)?, c("")?);
    // SAFETY: NUL-terminated strings alive for the call; no data.
    check(unsafe {
        libc::mount(
            f.as_ptr(),
            t.as_ptr(),
            none.as_ptr(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("move {from} to {to}: {e}")))
}

pub fn chroot_here() -> io::Result<()> {
    let dot = c(".")?;
    // SAFETY: a NUL-terminated string alive for the call.
    check(unsafe { libc::chroot(dot.as_ptr()) })
}

/// A block device node for `major:minor` at `path`.
pub fn mknod_block(path: &str, dev: libc::dev_t) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let p = c(path)?;
    // SAFETY: a NUL-terminated string alive for the call.
    check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFBLK | 0o600, dev) })
}

/// Loads a kernel module from its file (compressed ones too: the kernel
/// decompresses), with its parameters. `Ok(false)`: the hardware is not there (ENODEV), which
/// only an optional module may answer.
pub fn load_module(path: &Path, params: &str) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;
    let flags = if path.extension().is_some_and(|e| e != "ko") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c(params)?;
    // SAFETY: an open descriptor and a NUL-terminated string, both alive.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(true),
        Some(libc::ENODEV) | Some(libc::ENXIO) => Ok(false),
        _ => Err(e),
    }
}

/// Bytes from the kernel's random generator (blocks until it is seeded).
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// The block device (`vdX`) on the PCI slot `slot` (e.g. "0000:00:02.0"),
/// waiting up to `wait` for the driver to probe it. Disks are found by
/// slot, as `tvm launch` places them, never by the order they appear in.
pub fn disk_on_slot(slot: &str, wait: Duration) -> Option<(PathBuf, libc::dev_t, u64)> {
    let t = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let link = std::fs::read_link(e.path()).unwrap_or_default();
                if !link.to_string_lossy().contains(&format!("/{slot}/")) {
                    continue;
                }
                let sys = e.path();
                let dev = std::fs::read_to_string(sys.join("dev")).ok()?;
                let sectors = std::fs::read_to_string(sys.join("size"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let (ma, mi) = dev.trim().split_once(':')?;
                let dev = libc::makedev(ma.parse().ok()?, mi.parse().ok()?);
                return Some((sys, dev, sectors));
            }
        }
        if t.elapsed() > wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn major_minor(dev: libc::dev_t) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// Writes a sysctl (`/proc/sys/...`).
pub fn sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{path} = {value}: {e}")))
}
