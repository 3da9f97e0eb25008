//! MRTD from the firmware image: QEMU adds the TDVF (OVMF built for TDX)
//! sections its metadata lists to the TD, and the TDX module measures each
//! page added (`TDH.MEM.PAGE.ADD`: a 128-byte record naming its GPA) and,
//! for sections marked MR_EXTEND, the page's contents 256 bytes at a time
//! (`TDH.MR.EXTEND`: a 128-byte record naming the chunk's GPA, then the
//! chunk). MRTD is the SHA-384 of that sequence. QEMU versions differ in
//! order: QEMU 8 adds all of a section's pages, then extends them
//! (two-pass); QEMU 9 and later add and extend page by page (single-pass).
//!
//! The metadata is found through OVMF's GUIDed table at the end of the
//! image: the TDX metadata entry gives the offset, from the end, of the
//! `TDVF` descriptor and its sections.

use sha2::{Digest, Sha384};

const PAGE: u64 = 0x1000;
const CHUNK: usize = 0x100;
const ATTR_MR_EXTEND: u32 = 1;
const ATTR_PAGE_AUG: u32 = 2;
/// Sections in one descriptor (TDVF has a handful).
const MAX_SECTIONS: usize = 64;
/// Pages in all sections together (real TDVF images have a few hundred):
/// each costs a SHA-384 record, so a tiny crafted image must not cost GiBs.
const MAX_PAGES: u64 = 1 << 16;

const TABLE_FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const TDX_METADATA_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TDVF metadata: {0}")]
pub struct TdvfError(String);

fn bad<T>(why: impl Into<String>) -> Result<T, TdvfError> {
    Err(TdvfError(why.into()))
}

/// One section of the TDVF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub data_offset: u32,
    pub raw_data_size: u32,
    pub memory_address: u64,
    pub memory_data_size: u64,
    /// 0 BFV, 1 CFV, 2 TD HOB, 3 temporary memory, …
    pub section_type: u32,
    pub attributes: u32,
}

/// The order in which QEMU adds and extends a section's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    TwoPass,
    SinglePass,
}

/// A GUID as stored (first three fields little-endian), by the `sev`
/// crate's conversion (the SEV-SNP measurement uses it too).
fn guid_bytes(guid: &str) -> Result<[u8; 16], TdvfError> {
    sev::measurement::ovmf::guid_le_to_slice(guid).map_err(|e| TdvfError(e.to_string()))
}

fn u16_at(fw: &[u8], at: usize) -> Result<u16, TdvfError> {
    crate::le::u16_at(fw, at).map_err(TdvfError)
}

fn u32_at(fw: &[u8], at: usize) -> Result<u32, TdvfError> {
    crate::le::u32_at(fw, at).map_err(TdvfError)
}

fn u64_at(fw: &[u8], at: usize) -> Result<u64, TdvfError> {
    crate::le::u64_at(fw, at).map_err(TdvfError)
}

/// The data of the GUIDed-table entry `guid`: the table ends 32 bytes
/// before the image does, with a footer entry whose length covers it.
fn table_entry<'a>(fw: &'a [u8], guid: &str) -> Result<&'a [u8], TdvfError> {
    // Each entry: data ‖ u16 length (of the whole entry) ‖ GUID.
    let Some(footer_end) = fw.len().checked_sub(32) else {
        return bad("the image is too small");
    };
    let Some(footer_header) = footer_end.checked_sub(18) else {
        return bad("the image is too small");
    };
    if fw[footer_header + 2..footer_end] != guid_bytes(TABLE_FOOTER_GUID)? {
        return bad("no OVMF GUIDed table footer: not an OVMF image");
    }
    let table_len = usize::from(u16_at(fw, footer_header)?);
    let Some(start) = (footer_header + 18).checked_sub(table_len) else {
        return bad("the GUIDed table is longer than the image");
    };
    let want = guid_bytes(guid)?;
    let mut end = footer_header;
    while end >= start + 18 {
        let len = usize::from(u16_at(fw, end - 18)?);
        if len < 18 || end - start < len {
            return bad(format!("a GUIDed table entry of {len} bytes at {end:#x}"));
        }
        if fw[end - 16..end] == want {
            return Ok(&fw[end - len..end - 18]);
        }
        end -= len;
    }
    bad("no TDX metadata in the GUIDed table: the firmware is not built for TDX")
}

/// The sections of a TDVF image's metadata.
pub fn sections(fw: &[u8]) -> Result<Vec<Section>, TdvfError> {
    let entry = table_entry(fw, TDX_METADATA_GUID)?;
    let Some(off) = entry.len().checked_sub(4) else {
        return bad("the TDX metadata entry is empty");
    };
    let from_end = u32_at(entry, off)? as usize;
    let Some(desc) = fw.len().checked_sub(from_end) else {
        return bad("the TDVF descriptor offset is beyond the image");
    };
    if fw.get(desc..desc + 4) != Some(b"TDVF") {
        return bad(format!("no TDVF descriptor at {desc:#x}"));
    }
    let version = u32_at(fw, desc + 8)?;
    if version != 1 {
        return bad(format!(
            "TDVF descriptor version {version}; this build reads 1"
        ));
    }
    let count = u32_at(fw, desc + 12)? as usize;
    if count > MAX_SECTIONS {
        return bad(format!("{count} sections; at most {MAX_SECTIONS}"));
    }
    let mut pages = 0u64;
    (0..count)
        .map(|i| {
            let at = desc + 16 + 32 * i;
            let s = Section {
                data_offset: u32_at(fw, at)?,
                raw_data_size: u32_at(fw, at + 4)?,
                memory_address: u64_at(fw, at + 8)?,
                memory_data_size: u64_at(fw, at + 16)?,
                section_type: u32_at(fw, at + 24)?,
                attributes: u32_at(fw, at + 28)?,
            };
            if !s.memory_address.is_multiple_of(PAGE)
                || !s.memory_data_size.is_multiple_of(PAGE)
                || s.memory_address.checked_add(s.memory_data_size).is_none()
            {
                return bad(format!(
                    "section {i} at {:#x} of {:#x} bytes is not whole pages",
                    s.memory_address, s.memory_data_size
                ));
            }
            pages = pages.saturating_add(s.memory_data_size / PAGE);
            if pages > MAX_PAGES {
                return bad(format!("more than {MAX_PAGES} pages in all"));
            }
            if u64::from(s.raw_data_size) > s.memory_data_size {
                return bad(format!("section {i} has more data than memory"));
            }
            if s.attributes & ATTR_MR_EXTEND != 0 {
                // What QEMU would measure differently, or not at all, is
                // refused rather than given a wrong MRTD.
                if s.attributes & ATTR_PAGE_AUG != 0 || s.raw_data_size == 0 {
                    return bad(format!(
                        "section {i} is measured (MR_EXTEND) but {}",
                        if s.raw_data_size == 0 {
                            "has no data in the image"
                        } else {
                            "is added after launch (PAGE_AUG)"
                        }
                    ));
                }
                let end = u64::from(s.data_offset) + s.memory_data_size;
                if end > fw.len() as u64 {
                    return bad(format!(
                        "section {i}'s data ends at {end:#x}, beyond the image ({:#x} bytes)",
                        fw.len()
                    ));
                }
            }
            Ok(s)
        })
        .collect()
}

/// MRTD of a TD launched with this TDVF image.
pub fn mrtd(fw: &[u8], order: PageOrder) -> Result<[u8; 48], TdvfError> {
    let sections = sections(fw)?;
    let mut h = Sha384::new();
    let record = |h: &mut Sha384, op: &[u8], gpa: u64| {
        let mut r = [0u8; 128];
        r[..op.len()].copy_from_slice(op);
        r[16..24].copy_from_slice(&gpa.to_le_bytes());
        h.update(r);
    };
    let add = |h: &mut Sha384, s: &Section, page: u64| {
        if s.attributes & ATTR_PAGE_AUG == 0 {
            record(h, b"MEM.PAGE.ADD", s.memory_address + page * PAGE);
        }
    };
    let extend = |h: &mut Sha384, s: &Section, page: u64| -> Result<(), TdvfError> {
        if s.attributes & ATTR_MR_EXTEND == 0 {
            return Ok(());
        }
        for i in 0..(PAGE as usize / CHUNK) {
            let gpa = s.memory_address + page * PAGE + (i * CHUNK) as u64;
            record(h, b"MR.EXTEND", gpa);
            let at = s.data_offset as usize + (page * PAGE) as usize + i * CHUNK;
            let Some(chunk) = fw.get(at..at + CHUNK) else {
                return bad(format!("section data at {at:#x} is beyond the image"));
            };
            h.update(chunk);
        }
        Ok(())
    };
    for s in &sections {
        let pages = s.memory_data_size / PAGE;
        match order {
            PageOrder::TwoPass => {
                for p in 0..pages {
                    add(&mut h, s, p);
                }
                for p in 0..pages {
                    extend(&mut h, s, p)?;
                }
            }
            PageOrder::SinglePass => {
                for p in 0..pages {
                    add(&mut h, s, p);
                    extend(&mut h, s, p)?;
                }
            }
        }
    }
    Ok(h.finalize().into())
}
