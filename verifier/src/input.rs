//! Evidence files come as raw binary or as hex (with or without `0x`, any
//! whitespace); accept both.

/// Decode `data` as hex if it is entirely hex text, else return it unchanged.
pub fn binary_or_hex(data: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let body = text.strip_prefix(b"0x").unwrap_or(&text);
    if !body.is_empty() && body.len().is_multiple_of(2) && body.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(bytes) = hex::decode(body) {
            return bytes;
        }
    }
    data.to_vec()
}

/// A time that is neither RFC 3339 nor Unix seconds.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is neither RFC 3339 (2025-07-04T10:00:00Z) nor Unix seconds")]
pub struct TimeError(String);

/// Parse a time given as RFC 3339 or Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    if let Ok(secs) = s.trim().parse::<i64>() {
        return Ok(secs);
    }
    ::time::OffsetDateTime::parse(s.trim(), &::time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| TimeError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_binary() {
        assert_eq!(binary_or_hex(b"0x0102\n"), vec![1, 2]);
        assert_eq!(binary_or_hex(b"01 02"), vec![1, 2]);
        assert_eq!(binary_or_hex(&[0x04, 0x00, 0xff]), vec![0x04, 0x00, 0xff]);
        assert_eq!(binary_or_hex(b"abc"), b"abc".to_vec());
        assert_eq!(parse_time("1757462400").unwrap(), 1_757_462_400);
        assert_eq!(parse_time("2025-09-10T00:00:00Z").unwrap(), 1_757_462_400);
        assert!(parse_time("yesterday").is_err());
    }
}
