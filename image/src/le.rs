//! Little-endian integers at an offset of untrusted bytes: a value, or
//! where the bytes ran out (the firmware and PE readers share these).

pub(crate) fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at.saturating_add(2))
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at {at:#x}"))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at.saturating_add(4))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at {at:#x}"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, at)?) | (u64::from(u32_at(b, at.saturating_add(4))?) << 32))
}
