//! SPDM 1.1 GET_MEASUREMENTS request + response, as NVIDIA GPUs and NVSwitches
//! hand them out: one byte string, the request (37 bytes) then the signed
//! response. Parsing only; nothing here says the evidence is genuine.
//!
//! Layout (DMTF DSP0274 1.1, with NVIDIA's opaque data):
//! - request: version 0x11, code 0xE0, param1 (0x01: signature wanted),
//!   param2 (0xFF: all blocks), 32-byte nonce, slot id;
//! - response: version 0x11, code 0x60, param1, param2, block count, record
//!   length (3 bytes LE), the measurement record, the responder's 32-byte
//!   nonce, opaque length (2 bytes LE), the opaque TLVs, then the ECDSA P-384
//!   signature (r‖s, 96 bytes) over SHA-384(request ‖ response up to it).

use std::fmt;

pub const REQUEST_LEN: usize = 37;
pub const NONCE_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 96;
/// Every NVIDIA block carries one SHA-384 digest.
pub const DIGEST_LEN: usize = 48;
/// Larger than any real report (a GPU's is ~4.3 KB); bounds the work on junk.
pub const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

const SPDM_1_1: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
/// DMTF measurement specification, the only one NVIDIA uses.
const SPEC_DMTF: u8 = 0x01;

/// Opaque-data field types NVIDIA defines (shared with the simulated GPUs).
pub use tvm_protocol::spdm::field;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SPDM evidence: {0}")]
pub struct SpdmError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SpdmError> {
    Err(SpdmError(msg.into()))
}

/// One DMTF measurement block.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based, as on the wire. (RIM index = block index − 1.)
    pub index: u8,
    /// DMTF value type (bit 7: raw bit stream rather than a digest).
    pub value_type: u8,
    pub value: Vec<u8>,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Block({} {})", self.index, hex::encode(&self.value))
    }
}

/// One opaque TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueField {
    pub kind: u16,
    pub value: Vec<u8>,
}

/// A parsed GET_MEASUREMENTS exchange.
#[derive(Debug, Clone)]
pub struct MeasurementReport {
    /// The verifier's nonce, from the request.
    pub nonce: [u8; NONCE_LEN],
    pub slot: u8,
    pub responder_nonce: [u8; NONCE_LEN],
    pub blocks: Vec<Block>,
    pub opaque: Vec<OpaqueField>,
    /// request ‖ response up to the signature: what the device signed.
    pub signed: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SpdmError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return err(format!(
                "truncated at offset {}: {what} needs {n} bytes, {} left",
                self.pos,
                self.data.len() - self.pos
            ));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, SpdmError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, SpdmError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u24(&mut self, what: &str) -> Result<usize, SpdmError> {
        let b = self.take(3, what)?;
        Ok(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SpdmError> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }
}

impl MeasurementReport {
    pub fn parse(data: &[u8]) -> Result<Self, SpdmError> {
        if data.len() > MAX_EVIDENCE_BYTES {
            return err(format!(
                "{} bytes, more than the {MAX_EVIDENCE_BYTES}-byte limit",
                data.len()
            ));
        }
        let mut r = Reader { data, pos: 0 };
        let header = r.take(4, "request header")?;
        if header[0] != SPDM_1_1 || header[1] != GET_MEASUREMENTS {
            return err(format!(
                "request starts {:02x} {:02x}, expected SPDM 1.1 GET_MEASUREMENTS (11 e0)",
                header[0], header[1]
            ));
        }
        if header[2] & 0x01 == 0 {
            return err("the request did not ask for a signature (param1 bit 0 clear)");
        }
        if header[3] != 0xFF {
            return err(format!(
                "the request asked for block {}, not all blocks (0xff)",
                header[3]
            ));
        }
        let nonce = r.array::<NONCE_LEN>("request nonce")?;
        let slot = r.u8("slot id")?;

        let version = r.u8("response version")?;
        let code = r.u8("response code")?;
        if version != SPDM_1_1 || code != MEASUREMENTS {
            return err(format!(
                "response starts {version:02x} {code:02x}, expected SPDM 1.1 MEASUREMENTS (11 60)"
            ));
        }
        let _param1 = r.u8("param1")?;
        let _param2 = r.u8("param2")?;
        let count = r.u8("block count")?;
        let record_len = r.u24("measurement record length")?;
        let record = r.take(record_len, "measurement record")?;
        let blocks = parse_blocks(record, count)?;
        let responder_nonce = r.array::<NONCE_LEN>("responder nonce")?;
        let opaque_len = usize::from(r.u16("opaque length")?);
        let opaque = parse_opaque(r.take(opaque_len, "opaque data")?)?;
        let signed_len = r.pos;
        let signature = r.array::<SIGNATURE_LEN>("signature")?;
        // Real H100 evidence (captured by Confidential Containers CI) carries one
        // zero byte after the signature; that much is tolerated, nothing else.
        let trailing = &data[r.pos..];
        if trailing.len() > 1 || trailing.iter().any(|b| *b != 0) {
            return err(format!(
                "{} unexpected byte(s) after the signature",
                trailing.len()
            ));
        }
        Ok(MeasurementReport {
            nonce,
            slot,
            responder_nonce,
            blocks,
            opaque,
            signed: data[..signed_len].to_vec(),
            signature,
        })
    }

    /// The block with this 1-based index.
    pub fn block(&self, index: u8) -> Option<&Block> {
        self.blocks.iter().find(|b| b.index == index)
    }

    pub fn field(&self, kind: u16) -> Option<&[u8]> {
        self.opaque
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.value.as_slice())
    }

    /// A NUL-terminated ASCII field (driver version, project, SKUs).
    pub fn text(&self, kind: u16) -> Option<String> {
        self.field(kind).map(ascii)
    }

    pub fn driver_version(&self) -> Option<String> {
        self.text(field::DRIVER_VERSION)
    }

    /// GPUs carry the VBIOS version as 8 bytes (`009f009601000000` is
    /// 96.00.9f.00.01); NVSwitches as an ASCII string.
    pub fn vbios_version(&self) -> Option<String> {
        let v = self.field(field::VBIOS_VERSION)?;
        if v.len() == 8 && !v.iter().take(4).all(|b| b.is_ascii_graphic()) {
            Some(format!(
                "{:02x}.{:02x}.{:02x}.{:02x}.{:02x}",
                v[3], v[2], v[1], v[0], v[4]
            ))
        } else {
            Some(ascii(v))
        }
    }

    /// MSRSCNT: per block (from index 1), how many times it was extended.
    pub fn measurement_counts(&self) -> Option<Vec<u32>> {
        let v = self.field(field::MSRSCNT)?;
        if v.len() % 4 != 0 {
            return None;
        }
        Some(
            v.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// The FWID the device reports (compared with its certificate's).
    pub fn fwid(&self) -> Option<&[u8]> {
        self.field(field::FWID)
    }
}

fn ascii(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    v[..end]
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                char::from(*b)
            } else {
                '?'
            }
        })
        .collect()
}

fn parse_blocks(record: &[u8], count: u8) -> Result<Vec<Block>, SpdmError> {
    let mut r = Reader {
        data: record,
        pos: 0,
    };
    let mut blocks = Vec::with_capacity(usize::from(count));
    while r.pos < record.len() {
        let index = r.u8("block index")?;
        let spec = r.u8("block specification")?;
        let size = usize::from(r.u16("block size")?);
        let body = r.take(size, "block body")?;
        if spec != SPEC_DMTF {
            return err(format!(
                "block {index}: measurement specification {spec:#04x}, expected DMTF (0x01)"
            ));
        }
        let mut b = Reader { data: body, pos: 0 };
        let value_type = b.u8("DMTF value type")?;
        let value_len = usize::from(b.u16("DMTF value size")?);
        let value = b.take(value_len, "DMTF value")?.to_vec();
        if b.pos != body.len() {
            return err(format!(
                "block {index}: size {size} does not match its DMTF value ({value_len} bytes)"
            ));
        }
        if value_type & 0x80 == 0 && value.len() != DIGEST_LEN {
            return err(format!(
                "block {index}: a {}-byte digest, expected SHA-384 ({DIGEST_LEN} bytes)",
                value.len()
            ));
        }
        if blocks.iter().any(|x: &Block| x.index == index) {
            return err(format!("block {index} appears twice"));
        }
        blocks.push(Block {
            index,
            value_type,
            value,
        });
    }
    if blocks.len() != usize::from(count) {
        return err(format!(
            "the record holds {} blocks but the header says {count}",
            blocks.len()
        ));
    }
    Ok(blocks)
}

fn parse_opaque(data: &[u8]) -> Result<Vec<OpaqueField>, SpdmError> {
    let mut r = Reader { data, pos: 0 };
    let mut fields = Vec::new();
    while r.pos < data.len() {
        let kind = r.u16("opaque field type")?;
        let len = usize::from(r.u16("opaque field length")?);
        let value = r.take(len, "opaque field value")?.to_vec();
        if fields.iter().any(|f: &OpaqueField| f.kind == kind) {
            return err(format!("opaque field {kind} appears twice"));
        }
        fields.push(OpaqueField { kind, value });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nv1() -> Vec<u8> {
        let hex = include_str!("../../../testdata/nvidia/nvtrust_hopper_report.hex");
        hex::decode(hex.trim()).unwrap()
    }

    #[test]
    fn parses_nv1() {
        let r = MeasurementReport::parse(&nv1()).unwrap();
        assert_eq!(
            hex::encode(r.nonce),
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
        );
        assert_eq!(r.blocks.len(), 64);
        assert_eq!(r.driver_version().as_deref(), Some("550.90.07"));
        assert_eq!(r.vbios_version().as_deref(), Some("96.00.9f.00.01"));
        assert_eq!(r.text(field::PROJECT).as_deref(), Some("1010"));
        assert_eq!(r.signed.len() + SIGNATURE_LEN, nv1().len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = nv1();
        for n in 0..data.len() {
            assert!(MeasurementReport::parse(&data[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn trailing_junk_is_refused() {
        let mut data = nv1();
        data.push(0);
        assert!(MeasurementReport::parse(&data).is_ok());
        data.push(0);
        assert!(MeasurementReport::parse(&data).is_err());
        let mut data = nv1();
        data.push(7);
        assert!(MeasurementReport::parse(&data).is_err());
    }
}
