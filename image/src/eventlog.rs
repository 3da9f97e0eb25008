//! The TDX event log: a TCG2 "crypto-agile" log (TCG PC Client Platform
//! Firmware Profile, §10) as TDVF writes it into the CCEL area. The first
//! record is the SHA-1-format `Spec ID Event03` header naming the digest
//! algorithms; each later record is a `TCG_PCR_EVENT2`: index, type, one
//! digest per algorithm, event data. In a TDX log the index is the CC
//! measurement register: 1 = RTMR0, 2 = RTMR1, 3 = RTMR2, 4 = RTMR3
//! (UEFI spec, EFI_CC_MEASUREMENT_PROTOCOL). Replaying the log is
//! `RTMR = SHA-384(RTMR ‖ digest)` from zero for every event but
//! `EV_NO_ACTION`.
//!
//! The parser reads untrusted bytes: every length is checked, nothing
//! panics, and the sizes a log may claim are capped.

use sha2::{Digest, Sha384};

/// TCG algorithm id of SHA-384, the only one RTMRs use.
pub const TPM_ALG_SHA384: u16 = 0x000c;
/// Events that are recorded but not extended (the header among them).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// The CCEL area is padded after the last record with 0xFF (or zeros).
const END_OF_LOG: u32 = 0xFFFF_FFFF;

/// A log claiming more than these is refused.
pub const MAX_EVENTS: usize = 16_384;
pub const MAX_EVENT_DATA: usize = 1 << 20;
const MAX_ALGORITHMS: u32 = 8;

/// One measured (or recorded) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, the header being 0.
    pub index: usize,
    /// The CC measurement register index as written (1 = RTMR0 … 4 = RTMR3).
    pub mr_index: u32,
    pub event_type: u32,
    /// The SHA-384 digest extended into the register.
    pub digest: [u8; 48],
    pub data: Vec<u8>,
}

impl Event {
    /// The RTMR (0–3) this event extends, if it extends one.
    pub fn rtmr(&self) -> Option<usize> {
        match (self.event_type, self.mr_index) {
            (EV_NO_ACTION, _) => None,
            (_, i @ 1..=4) => Some(i as usize - 1),
            _ => None,
        }
    }

    /// The event type in words, where the TCG or UEFI specs name it.
    pub fn type_name(&self) -> &'static str {
        match self.event_type {
            0x0000_0001 => "EV_POST_CODE",
            0x0000_0003 => "EV_NO_ACTION",
            0x0000_0004 => "EV_SEPARATOR",
            0x0000_0005 => "EV_ACTION",
            0x0000_0006 => "EV_EVENT_TAG",
            0x0000_0008 => "EV_S_CRTM_VERSION",
            0x0000_000d => "EV_IPL",
            0x0000_0012 => "EV_PLATFORM_CONFIG_FLAGS",
            0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
            0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
            0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
            0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
            0x8000_0006 => "EV_EFI_GPT_EVENT",
            0x8000_0007 => "EV_EFI_ACTION",
            0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
            0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
            0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
            0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
            _ => "an unnamed event type",
        }
    }
}

/// Why a log cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("the event log ends inside {what} at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("the event log does not start with a TCG2 'Spec ID Event03' header")]
    NoSpecIdHeader,
    #[error(
        "the event log's header names {0} digest algorithms; at most {MAX_ALGORITHMS} are read"
    )]
    TooManyAlgorithms(u32),
    #[error("the event log has no SHA-384 digests (its algorithms: {0:?}): it is not a TDX log")]
    NoSha384(Vec<u16>),
    #[error("event {index} uses digest algorithm {alg:#06x}, which the header does not name")]
    UnknownAlgorithm { index: usize, alg: u16 },
    #[error("event {index} has no SHA-384 digest")]
    MissingSha384 { index: usize },
    #[error("event {index} claims {size} bytes of data; at most {MAX_EVENT_DATA} are read")]
    EventTooLarge { index: usize, size: usize },
    #[error("the event log has more than {MAX_EVENTS} events")]
    TooManyEvents,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(EventLogError::Truncated {
                what,
                offset: self.pos,
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn peek_u32(&self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parse a crypto-agile event log (the CCEL area, padding after the last
/// record allowed). Returns every record after the header, in order.
pub fn parse(log: &[u8]) -> Result<Vec<Event>, EventLogError> {
    let mut r = Reader { buf: log, pos: 0 };
    // The header: a TCG_PCR_EVENT (SHA-1 format) of type EV_NO_ACTION.
    let _mr = r.u32("the header's index")?;
    let header_type = r.u32("the header's type")?;
    r.take(20, "the header's digest")?;
    let size = r.u32("the header's size")? as usize;
    if header_type != EV_NO_ACTION || size > MAX_EVENT_DATA {
        return Err(EventLogError::NoSpecIdHeader);
    }
    let spec = r.take(size, "the header")?;
    let sizes = spec_id_digest_sizes(spec)?;
    if !sizes.iter().any(|(alg, _)| *alg == TPM_ALG_SHA384) {
        return Err(EventLogError::NoSha384(
            sizes.iter().map(|(a, _)| *a).collect(),
        ));
    }
    let mut events = Vec::new();
    while r.pos < log.len() {
        // Padding after the last record: an index of all ones, or zeros.
        match r.peek_u32() {
            None | Some(END_OF_LOG) => break,
            Some(0) if r.buf[r.pos..].iter().all(|b| *b == 0) => break,
            _ => {}
        }
        if events.len() >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents);
        }
        let index = events.len() + 1;
        let mr_index = r.u32("an event's index")?;
        let event_type = r.u32("an event's type")?;
        let count = r.u32("an event's digest count")?;
        if count > MAX_ALGORITHMS {
            return Err(EventLogError::TooManyAlgorithms(count));
        }
        let mut digest = None;
        for _ in 0..count {
            let alg = r.u16("a digest's algorithm")?;
            let len = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l)
                .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
            let d = r.take(len, "a digest")?;
            if alg == TPM_ALG_SHA384 {
                let mut out = [0u8; 48];
                if d.len() == 48 {
                    out.copy_from_slice(d);
                    digest = Some(out);
                }
            }
        }
        let size = r.u32("an event's data size")? as usize;
        if size > MAX_EVENT_DATA {
            return Err(EventLogError::EventTooLarge { index, size });
        }
        let data = r.take(size, "an event's data")?.to_vec();
        events.push(Event {
            index,
            mr_index,
            event_type,
            digest: digest.ok_or(EventLogError::MissingSha384 { index })?,
            data,
        });
    }
    Ok(events)
}

/// The (algorithm, digest size) list of a `Spec ID Event03` header.
fn spec_id_digest_sizes(spec: &[u8]) -> Result<Vec<(u16, usize)>, EventLogError> {
    let mut r = Reader { buf: spec, pos: 0 };
    let signature = r.take(16, "the header's signature")?;
    if signature != b"Spec ID Event03\0" {
        return Err(EventLogError::NoSpecIdHeader);
    }
    // platformClass, specVersionMinor/Major, specErrata, uintnSize.
    r.take(8, "the header's versions")?;
    let n = r.u32("the header's algorithm count")?;
    if n > MAX_ALGORITHMS {
        return Err(EventLogError::TooManyAlgorithms(n));
    }
    (0..n)
        .map(|_| {
            let alg = r.u16("an algorithm id")?;
            let size = r.u16("a digest size")?;
            Ok((alg, usize::from(size)))
        })
        .collect()
}

/// RTMR0–3 as the events extend them, from zero.
pub fn replay(events: &[Event]) -> [[u8; 48]; 4] {
    let mut rtmr = [[0u8; 48]; 4];
    for e in events {
        if let Some(i) = e.rtmr() {
            rtmr[i] = extend(&rtmr[i], &e.digest);
        }
    }
    rtmr
}

/// `SHA-384(register ‖ digest)`: how a TDX RTMR is extended.
pub fn extend(register: &[u8; 48], digest: &[u8; 48]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(register);
    h.update(digest);
    h.finalize().into()
}

/// The first register whose replayed value differs from the quote's, with
/// both values, or `None` when the log accounts for every RTMR.
pub fn first_mismatch(
    replayed: &[[u8; 48]; 4],
    quoted: &[[u8; 48]; 4],
) -> Option<(usize, [u8; 48], [u8; 48])> {
    (0..4)
        .find(|i| replayed[*i] != quoted[*i])
        .map(|i| (i, replayed[i], quoted[i]))
}

/// Where a log first departs from what was expected of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The RTMR (0–3) whose events differ.
    pub rtmr: usize,
    /// Position among that register's events (0-based).
    pub position: usize,
    /// The log's event there, if the log has one.
    pub event: Option<Event>,
    /// The digest expected there, if one was.
    pub expected: Option<[u8; 48]>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.event, &self.expected) {
            (Some(e), Some(want)) => write!(
                f,
                "RTMR{} event {} (log record {}, {}): digest {}, expected {}",
                self.rtmr,
                self.position,
                e.index,
                e.type_name(),
                hex::encode(e.digest),
                hex::encode(want)
            ),
            (Some(e), None) => write!(
                f,
                "RTMR{} has an event more than expected: record {} ({}), digest {}",
                self.rtmr,
                e.index,
                e.type_name(),
                hex::encode(e.digest)
            ),
            (None, Some(want)) => write!(
                f,
                "RTMR{} ends after {} events; expected one more, digest {}",
                self.rtmr,
                self.position,
                hex::encode(want)
            ),
            (None, None) => write!(f, "RTMR{}: no difference", self.rtmr),
        }
    }
}

/// The first event, register by register (RTMR0 first), whose digest is not
/// the one `expected` lists for its place: what `tvm image diagnose` names
/// when a quote's register differs from a manifest's.
pub fn diagnose(events: &[Event], expected: &[Vec<[u8; 48]>; 4]) -> Option<Divergence> {
    expected
        .iter()
        .enumerate()
        .find_map(|(rtmr, want)| diagnose_register(events, rtmr, want))
}

/// The first event of RTMR `rtmr` whose digest is not `expected`'s at its
/// place (or the event missing or extra).
pub fn diagnose_register(
    events: &[Event],
    rtmr: usize,
    expected: &[[u8; 48]],
) -> Option<Divergence> {
    let got: Vec<&Event> = events.iter().filter(|e| e.rtmr() == Some(rtmr)).collect();
    (0..got.len().max(expected.len())).find_map(|position| {
        let (e, w) = (got.get(position), expected.get(position));
        (e.map(|e| e.digest) != w.copied()).then(|| Divergence {
            rtmr,
            position,
            event: e.map(|e| (*e).clone()),
            expected: w.copied(),
        })
    })
}
