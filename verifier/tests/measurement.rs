//! `measurement` on real evidence against signed manifests: a quote passes
//! only when an accepted manifest for its platform and node type gives its
//! enforced registers; otherwise it fails naming the nearest manifest, its
//! first differing register and, with the node's event log, the event.
//! `warn` registers pass with a warning; no manifest at all fails with
//! what to do.

mod common;
use common::{at, testdata};
use tvm_image::manifest::{self, KeySet};
use tvm_protocol::evidence::NodeType;
use tvm_verifier::facts::{Facts, TdxFacts};
use tvm_verifier::image::{appraise_measurement, ImagePolicy};
use tvm_verifier::tee::{snp, tdx};
use tvm_verifier::{appraise, ImageInput, Images, Policy, Status, Verdict};

/// TDX-1 (dcap-qvl's v4 quote) as measured.
const MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const WHEN: &str = "2025-07-04T10:16:31Z";

struct Operator {
    key: Vec<u8>,
    keys: KeySet,
}

fn operator() -> Operator {
    let (key, public) = manifest::keygen().unwrap();
    let keys = serde_json::from_value(serde_json::json!({
        "keys": [{"public_key": hex::encode(public),
                  "valid_from": "2025-01-01T00:00:00Z",
                  "valid_until": "2026-01-01T00:00:00Z"}]
    }))
    .unwrap();
    Operator { key, keys }
}

/// A manifest `name 1` whose one measurement set is `set` (platform,
/// registers, modes…), valid for July 2025.
fn manifest_json(name: &str, node_types: &[&str], set: serde_json::Value) -> String {
    serde_json::json!({
        "format": 1, "name": name, "version": "1", "node_types": node_types,
        "files": [], "measurements": [set],
        "valid_from": "2025-07-01T00:00:00Z", "valid_until": "2025-08-01T00:00:00Z",
    })
    .to_string()
}

/// A TDX measurement set: RTMR1 and RTMR2 (always enforced) as TDX-1
/// shows them, then `registers`.
fn tdx_set(registers: &[(&str, String)], warn: &[&str]) -> serde_json::Value {
    let (_, rtmr) = tdx::registers_of(&testdata("tdx/dcapqvl_tdx_quote_v4.bin")).unwrap();
    let mut regs = serde_json::Map::new();
    regs.insert("rtmr1".into(), hex::encode(rtmr[1]).into());
    regs.insert("rtmr2".into(), hex::encode(rtmr[2]).into());
    for (k, v) in registers {
        regs.insert(k.to_string(), v.clone().into());
    }
    let modes: serde_json::Map<_, _> = warn
        .iter()
        .map(|r| (r.to_string(), "warn".into()))
        .collect();
    serde_json::json!({"platform": "tdx", "shape": "test-shape", "registers": regs, "modes": modes})
}

impl Operator {
    fn images(&self, manifests: &[String], when: &str) -> Images {
        let signed: Vec<Vec<u8>> = manifests
            .iter()
            .map(|m| serde_json::to_vec(&manifest::sign(m, &self.key).unwrap()).unwrap())
            .collect();
        Images::load(
            signed.iter().map(|b| ("test", b.as_slice())),
            &self.keys,
            at(when),
        )
    }
    fn policy(&self) -> Policy {
        let mut p = Policy::default();
        p.images.operator_keys = self.keys.clone();
        p
    }
}

fn tdx1(policy: &Policy, image: &ImageInput<'_>, when: &str) -> Verdict {
    let c = tdx::parse_collateral(&testdata("tdx/dcapqvl_tdx_quote_v4_collateral.json")).unwrap();
    let c = tdx::TdxCollateral::prepare(c, tvm_certs::anchors::intel_sgx_root().unwrap());
    let v = tdx::verify(&tdx::TdxInput {
        quote: &testdata("tdx/dcapqvl_tdx_quote_v4.bin"),
        collateral: &c,
        at: at(when),
        grace_seconds: 0,
    });
    assert!(v.genuine());
    appraise(v, policy, image, None, at(when))
}

fn measurement(v: &Verdict) -> (Status, String) {
    let c = v.check("measurement").unwrap();
    (c.status, c.detail.clone())
}

#[test]
fn a_tdx_quote_passes_only_with_a_manifest_that_gives_its_registers() {
    let op = operator();
    let zeros = "00".repeat(48);
    let good = manifest_json(
        "tvm-test",
        &["gpu", "cpu"],
        tdx_set(&[("mrtd", MRTD.into()), ("rtmr3", zeros)], &[]),
    );
    let images = op.images(std::slice::from_ref(&good), WHEN);
    assert_eq!(images.accepted().len(), 1);
    let v = tdx1(&op.policy(), &ImageInput::new(&images), WHEN);
    assert_eq!(
        measurement(&v),
        (
            Status::Pass,
            "image tvm-test 1 (tdx shape test-shape)".into()
        )
    );
    assert!(v.accepted());

    // No manifest at all: rejected, saying how to load them.
    let (s, d) = measurement(&tdx1(&op.policy(), &ImageInput::new(&Images::none()), WHEN));
    assert_eq!(s, Status::Fail);
    assert!(
        d.contains("no signed image manifest is loaded") && d.contains("operator_keys"),
        "{d}"
    );

    // Another MRTD, and the right MRTD with another RTMR1: the nearest is
    // named with its first differing register and both values.
    let ones = "11".repeat(48);
    let other = manifest_json(
        "other",
        &["gpu"],
        tdx_set(&[("mrtd", ones.clone()), ("rtmr1", ones.clone())], &[]),
    );
    let near = manifest_json(
        "near",
        &["gpu"],
        tdx_set(&[("mrtd", MRTD.into()), ("rtmr1", ones.clone())], &[]),
    );
    let images = op.images(&[other, near.clone()], WHEN);
    let v = tdx1(&op.policy(), &ImageInput::new(&images), WHEN);
    let (s, d) = measurement(&v);
    assert_eq!(s, Status::Fail);
    assert!(
        d.contains("nearest is near 1 (tdx shape test-shape): first differing register rtmr1")
            && d.contains(&format!("the manifest expects {ones}")),
        "{d}"
    );
    assert!(!v.accepted());

    // A difference in a `warn` register (RTMR0: the host's ACPI tables):
    // accepted, with a warning.
    let warned = manifest_json(
        "warned",
        &["gpu"],
        tdx_set(
            &[("mrtd", MRTD.into()), ("rtmr0", ones.clone())],
            &["rtmr0"],
        ),
    );
    let images = op.images(&[warned], WHEN);
    let v = tdx1(&op.policy(), &ImageInput::new(&images), WHEN);
    let (s, d) = measurement(&v);
    assert_eq!(s, Status::Pass, "{d}");
    assert!(d.contains("WARNING") && d.contains("rtmr0"), "{d}");
    assert!(v.accepted());

    // A manifest for other node types does not vouch for this one.
    let images = op.images(std::slice::from_ref(&good), WHEN);
    let cpu_only = manifest_json("cpu-only", &["cpu"], tdx_set(&[("mrtd", MRTD.into())], &[]));
    let gpu_node = |images: &Images| {
        let input = ImageInput {
            images,
            node_type: Some(NodeType::Gpu),
            event_log: None,
            runtime: None,
        };
        measurement(&tdx1(&op.policy(), &input, WHEN))
    };
    assert_eq!(gpu_node(&images).0, Status::Pass);
    let (s, d) = gpu_node(&op.images(&[cpu_only], WHEN));
    assert_eq!(s, Status::Fail);
    assert!(d.contains("not for gpu nodes"), "{d}");

    // Accepted when loaded, but the node is appraised after the image's
    // window ended: rejected for that.
    let late = "2025-08-02T00:00:00Z";
    let v = appraise(
        tdx::verify(&tdx::TdxInput {
            quote: &testdata("tdx/dcapqvl_tdx_quote_v4.bin"),
            collateral: &tdx::TdxCollateral::prepare(
                tdx::parse_collateral(&testdata("tdx/dcapqvl_tdx_quote_v4_collateral.json"))
                    .unwrap(),
                tvm_certs::anchors::intel_sgx_root().unwrap(),
            ),
            at: at(WHEN),
            grace_seconds: 0,
        }),
        &op.policy(),
        &ImageInput::new(&images),
        None,
        at(late),
    );
    let (s, d) = measurement(&v);
    assert_eq!(s, Status::Fail);
    assert!(
        d.contains("outside their validity window now: tvm-test 1"),
        "{d}"
    );

    // Signed by a key the policy does not pin: refused, and said so.
    let stranger = operator();
    let signed = serde_json::to_vec(
        &manifest::sign(
            &manifest_json("tvm-test", &["gpu"], tdx_set(&[("mrtd", MRTD.into())], &[])),
            &stranger.key,
        )
        .unwrap(),
    )
    .unwrap();
    let refused = Images::load(
        [("operator.example/m.json", signed.as_slice())],
        &op.keys,
        at(WHEN),
    );
    let (s, d) = measurement(&tdx1(&op.policy(), &ImageInput::new(&refused), WHEN));
    assert_eq!(s, Status::Fail);
    assert!(d.contains("1 manifest(s) refused (operator.example/m.json: no key of the operator's key set signed"), "{d}");

    // Switched off by name only.
    let mut off = Policy::default();
    off.images.dangerous_allow_unmeasured = true;
    let (s, d) = measurement(&tdx1(&off, &ImageInput::new(&Images::none()), WHEN));
    assert_eq!(s, Status::NotChecked);
    assert!(d.contains("dangerous_allow_unmeasured"), "{d}");
}

#[test]
fn an_snp_report_is_matched_on_its_launch_measurement() {
    let op = operator();
    let when = "2025-07-02T00:00:00Z";
    let snp2 = |images: &Images| {
        let e = snp::SnpEndorsement::prepare(&testdata("snp/virtee_milan_vcek.der"), None);
        let v = snp::verify(&snp::SnpInput {
            report: &testdata("snp/virtee_milan_report.hex"),
            endorsement: &e,
            grace_seconds: 0,
            at: at(when),
        });
        let mut p = op.policy();
        p.snp.dangerous_allow_missing_crl = true;
        measurement(&appraise(v, &p, &ImageInput::new(images), None, at(when)))
    };
    let m = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";
    let set = |m: &str| serde_json::json!({"platform": "sev-snp", "shape": "milan-1vcpu", "registers": {"measurement": m}});
    assert_eq!(
        snp2(&op.images(&[manifest_json("snp", &["cpu"], set(m))], when)).0,
        Status::Pass
    );
    let (s, d) = snp2(&op.images(
        &[manifest_json("snp", &["cpu"], set(&"ab".repeat(48)))],
        when,
    ));
    assert_eq!(s, Status::Fail);
    assert!(
        d.contains(
            "nearest is snp 1 (sev-snp shape milan-1vcpu): first differing register measurement"
        ),
        "{d}"
    );
    // A TDX-only manifest says nothing about an SEV-SNP guest.
    let (s, d) = snp2(&op.images(
        &[manifest_json(
            "tdx-only",
            &["cpu"],
            tdx_set(&[("mrtd", MRTD.into())], &[]),
        )],
        when,
    ));
    assert_eq!(s, Status::Fail);
    assert!(d.contains("no manifest gives sev-snp measurements"), "{d}");
}

/// The GCP TD's CCEL and quote (go-tdx-guest): a manifest whose RTMR1
/// reference events differ from the log's in one event makes the failure
/// name that event.
#[test]
fn with_the_event_log_the_first_differing_event_is_named() {
    let measure = |rel: &str| {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/measure")
            .join(rel);
        std::fs::read(p).unwrap()
    };
    let log = measure("gotdxguest_ccel_data.dat");
    let quote =
        dcap_qvl::quote::Quote::parse(&measure("gotdxguest_cos-113-tdx-quote.dat")).unwrap();
    let td = quote.report.as_td10().unwrap();
    let facts = Facts::Tdx(TdxFacts {
        quote_version: 4,
        tcb_status: None,
        advisory_ids: vec![],
        fmspc: None,
        mrtd: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        td_attributes: td.td_attributes,
        debug: false,
        collateral_expires: None,
    });
    let events = tvm_image::eventlog::parse(&log).unwrap();
    let mut rtmr1: Vec<[u8; 48]> = events
        .iter()
        .filter(|e| e.rtmr() == Some(1))
        .map(|e| e.digest)
        .collect();
    // The reference boot's third RTMR1 event (say, another kernel) differs.
    rtmr1[2][0] ^= 1;
    let replayed = rtmr1
        .iter()
        .fold([0u8; 48], |r, d| tvm_image::eventlog::extend(&r, d));
    let set = serde_json::json!({
        "platform": "tdx", "shape": "gcp-c3", "registers": {
            "mrtd": hex::encode(td.mr_td), "rtmr0": hex::encode(td.rt_mr0),
            "rtmr1": hex::encode(replayed), "rtmr2": hex::encode(td.rt_mr2)},
        "events": {"rtmr1": rtmr1.iter().map(hex::encode).collect::<Vec<_>>()},
    });
    let op = operator();
    let images = op.images(&[manifest_json("cos", &["cpu"], set)], WHEN);
    assert_eq!(images.accepted().len(), 1, "{:?}", images.refused());
    let policy = ImagePolicy {
        operator_keys: op.keys.clone(),
        dangerous_allow_unmeasured: false,
    };
    let c = appraise_measurement(&facts, None, Some(&log), &images, &policy, at(WHEN));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.contains("first differing register rtmr1")
            && c.detail
                .contains("first differing event: RTMR1 event 2 (log record"),
        "{}",
        c.detail
    );
    // Without the log, the register alone is named.
    let c = appraise_measurement(&facts, None, None, &images, &policy, at(WHEN));
    assert!(
        c.detail.contains("first differing register rtmr1") && !c.detail.contains("event"),
        "{}",
        c.detail
    );
    // A log that is not this TD's (one RTMR1 digest changed) is not used
    // to name an event, and the detail says why.
    let d = events.iter().find(|e| e.rtmr() == Some(1)).unwrap().digest;
    let at_byte = log.windows(48).position(|w| w == d).unwrap();
    let mut forged = log.clone();
    forged[at_byte] ^= 1;
    let c = appraise_measurement(&facts, None, Some(&forged), &images, &policy, at(WHEN));
    assert!(
        c.detail.contains("does not replay to its quote's RTMR1"),
        "{}",
        c.detail
    );
}
