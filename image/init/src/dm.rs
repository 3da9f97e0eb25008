//! Device-mapper devices made with the kernel's ioctls (linux/dm-ioctl.h,
//! interface version 4): create, load one target, resume. Three calls are
//! all the init needs; libdevmapper and its udev handshakes are not.

use std::io;
use std::os::fd::AsRawFd;

const DM_IOCTL_SIZE: usize = 312;
const TARGET_SPEC_SIZE: usize = 40;
const DM_READONLY_FLAG: u32 = 1;

const fn iowr(nr: u64) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = iowr(3);
const DM_DEV_SUSPEND: u64 = iowr(6);
const DM_TABLE_LOAD: u64 = iowr(9);

/// The `struct dm_ioctl` header, followed by `payload`.
fn header(name: &str, flags: u32, targets: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= 128 {
        return Err(io::Error::other(
            "device-mapper name must be 1 to 127 bytes",
        ));
    }
    // Room for what the kernel writes back.
    let size = (DM_IOCTL_SIZE + payload.len()).max(16 * 1024);
    let mut b = vec![0u8; size];
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    put(&mut b, 0, 4); // version 4.0.0
    put(&mut b, 12, size as u32); // data_size
    put(&mut b, 16, DM_IOCTL_SIZE as u32); // data_start
    put(&mut b, 20, targets); // target_count
    put(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    b[DM_IOCTL_SIZE..DM_IOCTL_SIZE + payload.len()].copy_from_slice(payload);
    Ok(b)
}

fn call(request: u64, buf: &mut [u8], what: &str) -> io::Result<()> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/mapper/control: {e}")))?;
    // SAFETY: `buf` is a dm_ioctl header (data_size = its length) the kernel
    // reads and writes within that length.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("device-mapper {what}: {e}"),
        ));
    }
    Ok(())
}

/// Creates `name` with one target of `kind` over `sectors` sectors and
/// activates it; the device number of the new device.
pub fn create(
    name: &str,
    kind: &str,
    sectors: u64,
    params: &str,
    read_only: bool,
) -> io::Result<libc::dev_t> {
    let flags = if read_only { DM_READONLY_FLAG } else { 0 };
    let mut b = header(name, flags, 0, &[])?;
    call(DM_DEV_CREATE, &mut b, &format!("create {name}"))?;
    let dev = u64::from_ne_bytes(b[40..48].try_into().map_err(io::Error::other)?);

    if kind.len() >= 16 {
        return Err(io::Error::other("target type name too long"));
    }
    let mut spec = vec![0u8; TARGET_SPEC_SIZE];
    spec[8..16].copy_from_slice(&sectors.to_ne_bytes());
    spec[24..24 + kind.len()].copy_from_slice(kind.as_bytes());
    spec.extend_from_slice(params.as_bytes());
    spec.push(0);
    while !spec.len().is_multiple_of(8) {
        spec.push(0);
    }
    let next = spec.len() as u32;
    spec[20..24].copy_from_slice(&next.to_ne_bytes());
    let mut b = header(name, flags, 1, &spec)?;
    let loaded = call(
        DM_TABLE_LOAD,
        &mut b,
        &format!("load the {kind} table of {name}"),
    );
    // The table may hold a key (dm-crypt): no copy outlives the call.
    spec.fill(0);
    b.fill(0);
    loaded?;

    // DM_DEV_SUSPEND without the suspend flag resumes: the table goes live.
    let mut b = header(name, flags, 0, &[])?;
    call(DM_DEV_SUSPEND, &mut b, &format!("resume {name}"))?;
    Ok(dev as libc::dev_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // As linux/dm-ioctl.h defines them on x86_64.
        assert_eq!(DM_DEV_CREATE, 0xc138fd03);
        assert_eq!(DM_DEV_SUSPEND, 0xc138fd06);
        assert_eq!(DM_TABLE_LOAD, 0xc138fd09);
    }

    #[test]
    fn the_header_is_laid_out_as_struct_dm_ioctl() {
        let b = header("root", DM_READONLY_FLAG, 1, b"xyz").unwrap();
        assert_eq!(&b[0..4], &4u32.to_ne_bytes());
        assert_eq!(&b[12..16], &(b.len() as u32).to_ne_bytes());
        assert_eq!(&b[16..20], &312u32.to_ne_bytes());
        assert_eq!(&b[20..24], &1u32.to_ne_bytes());
        assert_eq!(&b[28..32], &1u32.to_ne_bytes());
        assert_eq!(&b[48..53], b"root\0");
        assert_eq!(&b[312..315], b"xyz");
        assert!(header("", 0, 0, &[]).is_err());
        assert!(header(&"n".repeat(128), 0, 0, &[]).is_err());
    }
}
