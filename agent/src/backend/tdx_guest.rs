//! `/dev/tdx_guest`, for TD kernels older than configfs-tsm (6.7) that carry
//! the GET_QUOTE ioctl (distribution TDX kernels of 2023-24): the TDREPORT
//! from `TDX_CMD_GET_REPORT0`, wrapped in a quote-generation-service (QGS)
//! GET_QUOTE request, sent to the host by `TDX_CMD_GET_QUOTE`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use tvm_protocol::evidence::TeeEvidence;
use tvm_protocol::hexbytes::HexBytes;

use super::{BackendError, Tee, TeeKind};

pub const DEVICE: &str = "/dev/tdx_guest";
const WHAT: &str = "/dev/tdx_guest";

const REPORT_LEN: usize = 1024;
/// The kernel's quote buffer (16 KiB: a quote is ~5 KiB with its PCK chain).
const QUOTE_BUF_LEN: usize = 16 * 1024;
const HDR_LEN: usize = 24;
const QGS_HDR_LEN: usize = 16;
const QGS_GET_QUOTE_REQ: u32 = 0;
const QGS_GET_QUOTE_RESP: u32 = 1;

const GET_QUOTE_SUCCESS: u64 = 0;
const GET_QUOTE_IN_FLIGHT: u64 = u64::MAX;
const GET_QUOTE_SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;

/// `_IOC(dir, 'T', nr, size)` as the kernel's asm-generic ioctl.h builds it.
const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((b'T' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
/// `_IOWR('T', 1, struct tdx_report_req)`: 64 bytes in, 1024 out.
pub const TDX_CMD_GET_REPORT0: u64 = ioc(IOC_READ | IOC_WRITE, 1, 64 + REPORT_LEN as u64);
/// `_IOR('T', 4, struct tdx_quote_req)` (Intel's TDX kernels and
/// libtdx_attest), and `_IOR('T', 2, …)` of earlier kernels: a pointer and a
/// length. Tried in that order.
pub const TDX_CMD_GET_QUOTE: u64 = ioc(IOC_READ, 4, 16);
pub const TDX_CMD_GET_QUOTE_OLD: u64 = ioc(IOC_READ, 2, 16);

pub struct TdxGuest {
    file: std::fs::File,
    ccel: Option<HexBytes>,
}

impl TdxGuest {
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| BackendError::Unavailable {
                what: WHAT,
                reason: format!(
                    "cannot open {}: {e} (not a TD, tdx_guest module not loaded, or not root)",
                    path.display()
                ),
            })?;
        Ok(TdxGuest {
            file,
            ccel: super::tsm::read_ccel(),
        })
    }

    fn tdreport(&self, report_data: &[u8; 64]) -> Result<[u8; REPORT_LEN], BackendError> {
        let mut req = [0u8; 64 + REPORT_LEN];
        req[..64].copy_from_slice(report_data);
        // SAFETY: the request struct is the kernel's tdx_report_req layout
        // (two byte arrays), and lives across the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TDX_CMD_GET_REPORT0 as libc::c_ulong,
                req.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(BackendError::Failed {
                what: WHAT,
                reason: format!("TDX_CMD_GET_REPORT0: {}", std::io::Error::last_os_error()),
            });
        }
        let mut out = [0u8; REPORT_LEN];
        out.copy_from_slice(&req[64..]);
        Ok(out)
    }

    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, BackendError> {
        let report = self.tdreport(report_data)?;
        let mut buf = quote_request(&report);
        #[repr(C)]
        struct QuoteReq {
            buf: u64,
            len: u64,
        }
        let mut req = QuoteReq {
            buf: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
        };
        let mut rc = -1;
        for cmd in [TDX_CMD_GET_QUOTE, TDX_CMD_GET_QUOTE_OLD] {
            // SAFETY: `req` points at `buf`, which outlives the call and is as
            // long as `req.len` says; the kernel writes the answer into it.
            rc = unsafe {
                libc::ioctl(
                    self.file.as_raw_fd(),
                    cmd as libc::c_ulong,
                    &mut req as *mut QuoteReq,
                )
            };
            // ENOTTY: this kernel numbers the call the other way.
            if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTTY) {
                break;
            }
        }
        if rc != 0 {
            return Err(BackendError::Failed {
                what: WHAT,
                reason: format!(
                    "TDX_CMD_GET_QUOTE: {} (this kernel may lack the GET_QUOTE ioctl: use a 6.7+ kernel with configfs-tsm)",
                    std::io::Error::last_os_error()
                ),
            });
        }
        quote_response(&buf)
    }
}

/// The kernel's `tdx_quote_hdr` (version 1, status, in_len, out_len) followed
/// by the QGS message, itself prefixed by its big-endian length as QGS reads it.
pub fn quote_request(report: &[u8; REPORT_LEN]) -> Vec<u8> {
    let msg_len = QGS_HDR_LEN + 8 + REPORT_LEN;
    let mut buf = vec![0u8; QUOTE_BUF_LEN];
    buf[0..8].copy_from_slice(&1u64.to_le_bytes());
    buf[8..16].copy_from_slice(&GET_QUOTE_SUCCESS.to_le_bytes());
    buf[16..20].copy_from_slice(&((4 + msg_len) as u32).to_le_bytes());
    let d = &mut buf[HDR_LEN..];
    d[0..4].copy_from_slice(&(msg_len as u32).to_be_bytes());
    let m = &mut d[4..];
    m[0..2].copy_from_slice(&1u16.to_le_bytes()); // QGS message major version
    m[2..4].copy_from_slice(&0u16.to_le_bytes());
    m[4..8].copy_from_slice(&QGS_GET_QUOTE_REQ.to_le_bytes());
    m[8..12].copy_from_slice(&(msg_len as u32).to_le_bytes());
    m[12..16].copy_from_slice(&0u32.to_le_bytes());
    m[16..20].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
    m[20..24].copy_from_slice(&0u32.to_le_bytes()); // no id list
    m[24..24 + REPORT_LEN].copy_from_slice(report);
    buf
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The quote out of the kernel's answer, or why there is none.
pub fn quote_response(buf: &[u8]) -> Result<Vec<u8>, BackendError> {
    let bad = |reason: String| BackendError::Failed { what: WHAT, reason };
    let status = buf
        .get(8..16)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("answer shorter than its header".into()))?;
    match status {
        GET_QUOTE_SUCCESS => {}
        GET_QUOTE_IN_FLIGHT => return Err(bad("the host did not finish the quote (still in flight)".into())),
        GET_QUOTE_SERVICE_UNAVAILABLE => {
            return Err(bad("the host's quote generation service (QGS) is unavailable: is qgsd running on the host?".into()))
        }
        s => return Err(bad(format!("the host answered status {s:#x}"))),
    }
    let out_len = le32(buf, 20).ok_or_else(|| bad("no out_len".into()))? as usize;
    let data = buf
        .get(HDR_LEN..HDR_LEN + out_len)
        .ok_or_else(|| bad(format!("out_len {out_len} exceeds the buffer")))?;
    // 4-byte big-endian length, then the QGS response message.
    let m = data.get(4..).ok_or_else(|| bad("empty answer".into()))?;
    let kind = le32(m, 4).ok_or_else(|| bad("short QGS header".into()))?;
    let error = le32(m, 12).ok_or_else(|| bad("short QGS header".into()))?;
    if kind != QGS_GET_QUOTE_RESP || error != 0 {
        return Err(bad(format!(
            "QGS answered message type {kind}, error code {error:#x}"
        )));
    }
    let id_len = le32(m, 16).ok_or_else(|| bad("short QGS response".into()))? as usize;
    let quote_len = le32(m, 20).ok_or_else(|| bad("short QGS response".into()))? as usize;
    let start = 24usize.saturating_add(id_len);
    m.get(start..start.saturating_add(quote_len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| bad(format!("QGS quote of {quote_len} bytes exceeds the answer")))
}

impl Tee for TdxGuest {
    fn kind(&self) -> TeeKind {
        TeeKind::Tdx
    }
    fn describe(&self) -> String {
        "/dev/tdx_guest (GET_QUOTE ioctl)".into()
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, BackendError> {
        Ok(TeeEvidence::Tdx {
            quote: HexBytes(self.quote(report_data)?),
            event_log: self.ccel.clone(),
        })
    }
    fn rtmr3(&self) -> Result<Option<[u8; 48]>, BackendError> {
        super::rtmr::Rtmr3::default().read().map(Some)
    }
    fn extend_rtmr3(&self, digest: &[u8; 48]) -> Result<(), BackendError> {
        super::rtmr::Rtmr3::default().extend(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_uapi() {
        // linux/tdx-guest.h: _IOWR('T', 1, struct tdx_report_req), as go-tdx-guest uses.
        assert_eq!(TDX_CMD_GET_REPORT0, 0xc440_5401);
        assert_eq!(TDX_CMD_GET_QUOTE, 0x8010_5404);
        assert_eq!(TDX_CMD_GET_QUOTE_OLD, 0x8010_5402);
    }

    /// What the host writes back: status, out_len, length-prefixed QGS response.
    fn answer(status: u64, quote: &[u8], qgs_error: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&1u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&QGS_GET_QUOTE_RESP.to_le_bytes());
        m.extend_from_slice(&((24 + quote.len()) as u32).to_le_bytes());
        m.extend_from_slice(&qgs_error.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        m.extend_from_slice(quote);
        let mut buf = vec![0u8; QUOTE_BUF_LEN];
        buf[0..8].copy_from_slice(&1u64.to_le_bytes());
        buf[8..16].copy_from_slice(&status.to_le_bytes());
        buf[20..24].copy_from_slice(&((4 + m.len()) as u32).to_le_bytes());
        buf[24..28].copy_from_slice(&(m.len() as u32).to_be_bytes());
        buf[28..28 + m.len()].copy_from_slice(&m);
        buf
    }

    #[test]
    fn request_wraps_the_tdreport_for_qgs() {
        let report = [0xabu8; REPORT_LEN];
        let b = quote_request(&report);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1);
        let msg_len = u32::from_be_bytes(b[24..28].try_into().unwrap()) as usize;
        assert_eq!(msg_len, 16 + 8 + REPORT_LEN);
        assert_eq!(le32(&b, 16), Some(4 + msg_len as u32));
        assert_eq!(&b[28 + 24..28 + 24 + REPORT_LEN], &report[..]);
    }

    #[test]
    fn response_yields_the_quote_or_a_reason() {
        let quote = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/tdx/dcapqvl_tdx_quote_v4.bin"
        ))
        .unwrap();
        assert_eq!(quote_response(&answer(0, &quote, 0)).unwrap(), quote);
        let e = quote_response(&answer(GET_QUOTE_SERVICE_UNAVAILABLE, &quote, 0)).unwrap_err();
        assert!(e.to_string().contains("qgsd"), "{e}");
        let e = quote_response(&answer(0, &quote, 0x12)).unwrap_err();
        assert!(e.to_string().contains("0x12"), "{e}");
        let mut cut = answer(0, &quote, 0);
        cut[20..24].copy_from_slice(&(QUOTE_BUF_LEN as u32).to_le_bytes());
        assert!(quote_response(&cut).is_err());
        assert!(quote_response(&[0u8; 10]).is_err());
    }

    #[test]
    fn missing_device_is_unavailable() {
        let e = TdxGuest::open(Path::new("/nonexistent/tdx_guest"))
            .err()
            .unwrap();
        assert!(matches!(e, BackendError::Unavailable { .. }));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        /// A malformed answer from the kernel or the host is an error, never a panic.
        #[test]
        fn quote_response_never_panics(mut raw in proptest::collection::vec(any::<u8>(), 0..300), status in 0u64..3, len in any::<u32>()) {
            raw.resize(raw.len().max(24), 0);
            raw[8..16].copy_from_slice(&status.to_le_bytes());
            raw[20..24].copy_from_slice(&len.to_le_bytes());
            let _ = super::quote_response(&raw);
        }
    }
}
