//! The Authenticode hash of a PE image (Microsoft's "Windows Authenticode
//! Portable Executable Signature Format"): what TDVF extends into RTMR1 for
//! the kernel it starts (a Linux bzImage is a PE through its EFI stub). The
//! file is hashed without its checksum field, without the certificate-table
//! directory entry and without the certificate table, with the sections in
//! file order.

use sha2::{Digest, Sha384};

/// Why a file has no Authenticode hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PE image: {0}")]
pub struct PeError(String);

fn u16_at(b: &[u8], at: usize) -> Result<u16, PeError> {
    crate::le::u16_at(b, at).map_err(PeError)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PeError> {
    crate::le::u32_at(b, at).map_err(PeError)
}

fn range(b: &[u8], from: usize, to: usize, what: &str) -> Result<std::ops::Range<usize>, PeError> {
    if from <= to && to <= b.len() {
        Ok(from..to)
    } else {
        Err(PeError(format!(
            "{what} spans {from:#x}..{to:#x}, the file is {:#x} bytes",
            b.len()
        )))
    }
}

/// The byte ranges Authenticode hashes, in order.
fn hashed_ranges(pe: &[u8]) -> Result<Vec<std::ops::Range<usize>>, PeError> {
    if pe.get(..2) != Some(b"MZ") {
        return Err(PeError("no MZ header".into()));
    }
    let nt = u32_at(pe, 0x3c)? as usize;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        return Err(PeError(format!("no PE signature at {nt:#x}")));
    }
    let coff = nt + 4;
    let sections = usize::from(u16_at(pe, coff + 2)?);
    let optional_size = usize::from(u16_at(pe, coff + 16)?);
    let opt = coff + 20;
    let (rva_count_at, dirs) = match u16_at(pe, opt)? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        m => return Err(PeError(format!("optional header magic {m:#x}"))),
    };
    let checksum = opt + 64;
    let size_of_headers = u32_at(pe, opt + 60)? as usize;
    let rva_count = u32_at(pe, rva_count_at)? as usize;
    // The certificate table is data directory 4; its "address" is a file offset.
    let (cert_entry, cert_size) = if rva_count > 4 {
        let entry = dirs + 4 * 8;
        (Some(entry), u32_at(pe, entry + 4)? as usize)
    } else {
        (None, 0)
    };
    let mut out = vec![range(pe, 0, checksum, "the headers")?];
    match cert_entry {
        Some(entry) => {
            out.push(range(pe, checksum + 4, entry, "the headers")?);
            out.push(range(pe, entry + 8, size_of_headers, "the headers")?);
        }
        None => out.push(range(pe, checksum + 4, size_of_headers, "the headers")?),
    }
    let table = opt + optional_size;
    let mut raw: Vec<(usize, usize)> = Vec::with_capacity(sections);
    for i in 0..sections {
        let s = table + i * 40;
        let size = u32_at(pe, s + 16)? as usize;
        let at = u32_at(pe, s + 20)? as usize;
        if size > 0 {
            raw.push((at, size));
        }
    }
    raw.sort_unstable();
    let mut hashed = size_of_headers;
    let mut previous_end = 0;
    for (at, size) in raw {
        let end = at
            .checked_add(size)
            .ok_or_else(|| PeError(format!("section at {at:#x} overflows")))?;
        // Overlapping sections would be hashed again and again.
        if at < previous_end {
            return Err(PeError(format!("sections overlap at {at:#x}")));
        }
        previous_end = end;
        out.push(range(pe, at, end, "a section")?);
        hashed += size;
    }
    // What follows the sections, less the certificate table at the end.
    let end = pe.len().saturating_sub(cert_size);
    if end > hashed {
        out.push(range(pe, hashed, end, "the data after the sections")?);
    }
    Ok(out)
}

/// The Authenticode SHA-384 of a PE image.
pub fn sha384(pe: &[u8]) -> Result<[u8; 48], PeError> {
    let mut h = Sha384::new();
    for r in hashed_ranges(pe)? {
        h.update(&pe[r]);
    }
    Ok(h.finalize().into())
}
