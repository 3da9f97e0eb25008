//! The guest's network, as `tvm launch` gives it: QEMU user networking on
//! the NIC at PCI slot 00:04.0, whose guest side is always 10.0.2.15/24
//! behind 10.0.2.2. Fixed here (and so measured with the init) rather than
//! taken from DHCP: the host answers DHCP, and the guest need not trust it.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const NIC_SLOT: &str = "0000:00:04.0";
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the kernel reads
    // the family and then the IPv4 fields.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

fn socket() -> io::Result<Socket> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Socket(fd))
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= r.ifr_name.len() {
        return Err(io::Error::other(format!("interface name {name} too long")));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn ioctl<T>(s: &Socket, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is the structure this request reads (ifreq or rtentry).
    if unsafe { libc::ioctl(s.0, request as _, arg as *mut T) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn up(s: &Socket, name: &str) -> io::Result<()> {
    let mut r = ifreq(name)?;
    ioctl(s, libc::SIOCGIFFLAGS, &mut r, &format!("flags of {name}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(s, libc::SIOCSIFFLAGS, &mut r, &format!("bring {name} up"))
}

/// The interface name of the NIC on `slot`, waiting for its driver.
fn nic_on_slot(slot: &str, wait: Duration) -> Option<String> {
    let t = std::time::Instant::now();
    loop {
        for e in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            if link.to_string_lossy().contains(&format!("/{slot}/")) {
                return e.file_name().to_str().map(String::from);
            }
        }
        if t.elapsed() > wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Loopback up, then the NIC addressed with its default route. Returns the
/// NIC's name.
pub fn configure() -> io::Result<String> {
    let s = socket()?;
    up(&s, "lo")?;
    let nic = nic_on_slot(NIC_SLOT, Duration::from_secs(20)).ok_or_else(|| {
        io::Error::other(format!(
            "no network interface on PCI {NIC_SLOT} (start the VM with tvm launch)"
        ))
    })?;
    let mut r = ifreq(&nic)?;
    r.ifr_ifru.ifru_addr = sockaddr(ADDRESS);
    ioctl(&s, libc::SIOCSIFADDR, &mut r, &format!("address {nic}"))?;
    let mut r = ifreq(&nic)?;
    r.ifr_ifru.ifru_netmask = sockaddr(NETMASK);
    ioctl(&s, libc::SIOCSIFNETMASK, &mut r, &format!("netmask {nic}"))?;
    up(&s, &nic)?;
    // SAFETY: rtentry is plain old data; all zeroes is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(GATEWAY);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(&s, libc::SIOCADDRT, &mut route, "default route")?;
    Ok(nic)
}
