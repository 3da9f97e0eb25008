//! The TDX event log on real data: a GCP Container-Optimized OS TD's CCEL
//! and quote (google/go-tdx-guest, testdata/measure), and dstack's quote
//! with its event log. Replaying each log reproduces the quote's RTMRs; one
//! flipped bit in an extended digest changes its register, and the parser
//! refuses damaged logs without panicking.

use std::path::PathBuf;

use tvm_image::eventlog::{self, EventLogError};

fn testdata(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/measure")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rtmrs(quote: &[u8]) -> [[u8; 48]; 4] {
    let q = dcap_qvl::quote::Quote::parse(quote).unwrap();
    let td = q.report.as_td10().unwrap();
    [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3]
}

#[test]
fn gcp_ccel_replays_to_the_quotes_rtmrs() {
    let log = testdata("gotdxguest_ccel_data.dat");
    let events = eventlog::parse(&log).unwrap();
    assert!(events.len() > 20, "{} events", events.len());
    let quoted = rtmrs(&testdata("gotdxguest_cos-113-tdx-quote.dat"));
    let replayed = eventlog::replay(&events);
    assert_eq!(
        eventlog::first_mismatch(&replayed, &quoted),
        None,
        "replayed {:?}",
        replayed.map(hex::encode)
    );
    // RTMR0–2 carry the boot; nothing extended RTMR3 on this TD.
    assert!(replayed[..3].iter().all(|r| *r != [0; 48]));
    assert_eq!(replayed[3], [0; 48]);
    // Firmware, bootloader and kernel each extended their register.
    for rtmr in 0..3 {
        assert!(events.iter().any(|e| e.rtmr() == Some(rtmr)), "RTMR{rtmr}");
    }

    // One flipped bit in any extended digest changes its register alone.
    let extended: Vec<&eventlog::Event> = events.iter().filter(|e| e.rtmr().is_some()).collect();
    for e in [
        extended[0],
        extended[extended.len() / 2],
        extended[extended.len() - 1],
    ] {
        let mut changed = events.clone();
        changed[e.index - 1].digest[7] ^= 0x10;
        let r = eventlog::replay(&changed);
        let (i, _, _) = eventlog::first_mismatch(&r, &quoted).unwrap();
        assert_eq!(Some(i), e.rtmr(), "event {} ({})", e.index, e.type_name());
        assert_eq!(
            (0..4).filter(|j| r[*j] != quoted[*j]).count(),
            1,
            "only RTMR{i} changes"
        );
    }
}

#[test]
fn damaged_logs_are_refused_with_their_reason() {
    let log = testdata("gotdxguest_ccel_data.dat");
    let events = eventlog::parse(&log).unwrap();
    // Where the records end (the rest is padding).
    let end = {
        let mut n = 0usize;
        // header: 4 + 4 + 20 + 4 + size
        let size = u32::from_le_bytes(log[28..32].try_into().unwrap()) as usize;
        n += 32 + size;
        for e in &events {
            n += 4 + 4 + 4 + 2 + 48 + 4 + e.data.len();
        }
        n
    };
    // Cut inside the last record.
    assert!(matches!(
        eventlog::parse(&log[..end - 3]),
        Err(EventLogError::Truncated { .. })
    ));
    // Every cut inside the records is refused or reads fewer events; none panics.
    for cut in (0..end).step_by(97) {
        if let Ok(fewer) = eventlog::parse(&log[..cut]) {
            assert!(fewer.len() < events.len(), "cut {cut}");
        }
    }
    // Not a crypto-agile log.
    let mut bad = log.clone();
    bad[32] ^= 0xff; // the header's signature
    assert_eq!(eventlog::parse(&bad), Err(EventLogError::NoSpecIdHeader));
    // A record claiming 4 GiB of data.
    let mut huge = log[..end].to_vec();
    let last_size_at = end - events.last().unwrap().data.len() - 4;
    huge[last_size_at..last_size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        eventlog::parse(&huge),
        Err(EventLogError::EventTooLarge { .. })
    ));
    // A digest of an algorithm the header does not name.
    let mut alg = log[..end].to_vec();
    let first = 32 + u32::from_le_bytes(log[28..32].try_into().unwrap()) as usize;
    alg[first + 12] = 0x0b; // SHA-256's id, not in this log's header
    assert!(matches!(
        eventlog::parse(&alg),
        Err(EventLogError::UnknownAlgorithm { alg: 0x000b, .. })
    ));
}

/// An event's digest as dstack gives it: the firmware's, or, for dstack's
/// own runtime events in RTMR3 (no digest in the JSON),
/// `SHA-384(type as u32 LE ‖ ":" ‖ name ‖ ":" ‖ payload)`.
fn dstack_digest(e: &serde_json::Value) -> [u8; 48] {
    use sha2::Digest;
    let given = e["digest"].as_str().unwrap();
    if !given.is_empty() {
        return hex::decode(given).unwrap().try_into().unwrap();
    }
    let mut h = sha2::Sha384::new();
    h.update((e["event_type"].as_u64().unwrap() as u32).to_le_bytes());
    h.update(b":");
    h.update(e["event"].as_str().unwrap().as_bytes());
    h.update(b":");
    h.update(hex::decode(e["event_payload"].as_str().unwrap()).unwrap());
    h.finalize().into()
}

/// dstack's quote and its event log (JSON, as dstack serves it): replaying
/// the log's digests gives the quote's RTMR0–3, RTMR3 included (dstack's
/// runtime events: app id, compose hash, OS image hash…).
#[test]
fn dstack_event_log_replays_to_its_quotes_rtmrs() {
    let doc: serde_json::Value =
        serde_json::from_slice(&testdata("dstack_tdx-lite-getquote.json")).unwrap();
    let quote = hex::decode(doc["quote"].as_str().unwrap()).unwrap();
    let log: serde_json::Value = serde_json::from_str(doc["event_log"].as_str().unwrap()).unwrap();
    let events: Vec<eventlog::Event> = log
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| eventlog::Event {
            index: i + 1,
            // dstack numbers the registers from 0 (RTMR0); the log's own
            // index is one more.
            mr_index: e["imr"].as_u64().unwrap() as u32 + 1,
            event_type: e["event_type"].as_u64().unwrap() as u32,
            digest: dstack_digest(e),
            data: Vec::new(),
        })
        .collect();
    let quoted = rtmrs(&quote);
    let replayed = eventlog::replay(&events);
    assert_eq!(
        eventlog::first_mismatch(&replayed, &quoted),
        None,
        "replayed {:?} quoted {:?}",
        replayed.map(hex::encode),
        quoted.map(hex::encode)
    );
}

/// A minimal CBOR reader for dstack's measurement document (maps, byte and
/// text strings, unsigned integers: all it uses).
#[derive(Debug, Clone, PartialEq)]
enum Cbor {
    Uint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Map(Vec<(Cbor, Cbor)>),
}

fn cbor(b: &[u8], pos: &mut usize) -> Cbor {
    let head = b[*pos];
    *pos += 1;
    let (major, info) = (head >> 5, head & 0x1f);
    let mut arg = |info: u8| -> u64 {
        let n = match info {
            0..=23 => return u64::from(info),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => panic!("unsupported CBOR length {info}"),
        };
        let v = b[*pos..*pos + n]
            .iter()
            .fold(0u64, |a, x| (a << 8) | u64::from(*x));
        *pos += n;
        v
    };
    let len = arg(info);
    match major {
        0 => Cbor::Uint(len),
        2 | 3 => {
            let s = b[*pos..*pos + len as usize].to_vec();
            *pos += len as usize;
            if major == 2 {
                Cbor::Bytes(s)
            } else {
                Cbor::Text(String::from_utf8(s).unwrap())
            }
        }
        5 => Cbor::Map((0..len).map(|_| (cbor(b, pos), cbor(b, pos))).collect()),
        _ => panic!("unsupported CBOR major type {major}"),
    }
}

fn get<'a>(m: &'a Cbor, key: &str) -> &'a Cbor {
    match m {
        Cbor::Map(kv) => {
            &kv.iter()
                .find(|(k, _)| *k == Cbor::Text(key.into()))
                .unwrap_or_else(|| panic!("no {key}"))
                .1
        }
        _ => panic!("not a map"),
    }
}

fn bytes48(c: &Cbor) -> [u8; 48] {
    match c {
        Cbor::Bytes(b) => b.as_slice().try_into().unwrap(),
        _ => panic!("not bytes"),
    }
}

/// dstack's measurement document (kernel Authenticode, command line and
/// initrd digests, MRTD) for the quote it came with: RTMR1 and RTMR2
/// computed from the artifacts' hashes equal the quote's, and MRTD is the
/// document's two-pass value. A changed input changes the register.
#[test]
fn dstack_rtmr1_rtmr2_and_mrtd_from_the_artifacts() {
    use base64::Engine;
    use tvm_image::tdx;
    let doc: serde_json::Value =
        serde_json::from_slice(&testdata("dstack_tdx-lite-getquote.json")).unwrap();
    let quote = hex::decode(doc["quote"].as_str().unwrap()).unwrap();
    let vm: serde_json::Value = serde_json::from_str(doc["vm_config"].as_str().unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(vm["tdx_measurement"]["measurement"].as_str().unwrap())
        .unwrap();
    let m = cbor(&raw, &mut 0);
    let image = get(&m, "image");
    let kernel = bytes48(get(image, "kernel_authenticode"));
    let cmdline = bytes48(get(image, "cmdline_sha384"));
    let initrd = bytes48(get(image, "initrd_sha384"));
    let mrtd = bytes48(get(get(get(&m, "tdvf"), "mrtd"), "two_pass"));

    let q = dcap_qvl::quote::Quote::parse(&quote).unwrap();
    let td = q.report.as_td10().unwrap();
    assert_eq!(tdx::rtmr1(&kernel), td.rt_mr1);
    assert_eq!(tdx::rtmr2(&cmdline, &initrd), td.rt_mr2);
    assert_eq!(mrtd, td.mr_td);
    // Another kernel, command line or initrd: another register.
    let mut k = kernel;
    k[0] ^= 1;
    assert_ne!(tdx::rtmr1(&k), td.rt_mr1);
    let mut c = cmdline;
    c[47] ^= 1;
    assert_ne!(tdx::rtmr2(&c, &initrd), td.rt_mr2);
    assert_ne!(tdx::rtmr2(&initrd, &cmdline), td.rt_mr2, "order matters");
}

/// `diagnose` against a reference boot's event digests: the same log has no
/// divergence; a changed kernel (RTMR1's application event) is named by its
/// register, place and type; a missing or extra event is said as such.
#[test]
fn diagnose_names_the_first_event_that_differs() {
    let events = eventlog::parse(&testdata("gotdxguest_ccel_data.dat")).unwrap();
    let reference: [Vec<[u8; 48]>; 4] = std::array::from_fn(|r| {
        events
            .iter()
            .filter(|e| e.rtmr() == Some(r))
            .map(|e| e.digest)
            .collect()
    });
    assert_eq!(eventlog::diagnose(&events, &reference), None);

    let mut other_kernel = events.clone();
    let app = other_kernel
        .iter()
        .position(|e| e.rtmr() == Some(1) && e.type_name() == "EV_EFI_BOOT_SERVICES_APPLICATION")
        .unwrap();
    other_kernel[app].digest[0] ^= 1;
    let d = eventlog::diagnose(&other_kernel, &reference).unwrap();
    assert_eq!((d.rtmr, d.event.as_ref().unwrap().index), (1, app + 1));
    let said = d.to_string();
    assert!(
        said.starts_with("RTMR1 event") && said.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
        "{said}"
    );

    let mut fewer = reference.clone();
    let extra = fewer[2].pop().unwrap();
    let d = eventlog::diagnose(&events, &fewer).unwrap();
    assert_eq!(d.rtmr, 2);
    assert!(d.to_string().contains("an event more than expected"), "{d}");
    let mut more = reference.clone();
    more[2].push(extra);
    let d = eventlog::diagnose(&events, &more).unwrap();
    assert!(d.to_string().contains("expected one more"), "{d}");
}
