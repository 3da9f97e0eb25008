//! The agent in sim mode and the verifier library, over real sockets: a
//! validator asks for evidence over RA-TLS and appraises the bundle; replays,
//! swapped GPU reports and a different TLS key fail with the right check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tvm_agent::config::{Allow, Config, GpuChoice, TeeChoice};
use tvm_agent::{Agent, Running};
use tvm_protocol::epistula;
use tvm_protocol::evidence::{EvidenceBundle, EvidenceRequest};
use tvm_protocol::hexbytes::Digest32;
use tvm_protocol::keys::Hotkey;
use tvm_protocol::nonce::Nonce;
use tvm_sim::intel::SimIntel;
use tvm_verifier::bundle::{appraise_bundle, check, BundleInput, BundleVerdict, TeeCollateral};
use tvm_verifier::policy::Policy;
use tvm_verifier::tee::tdx::TdxCollateral;

fn now() -> (i64, u64) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, d.as_millis() as u64)
}

fn miner() -> Hotkey {
    Hotkey::from_uri("//Miner").unwrap()
}

fn validator() -> Hotkey {
    Hotkey::from_uri("//Alice").unwrap()
}

fn start(sim_dir: &std::path::Path, gpus: usize) -> Running {
    let mut cfg = Config {
        hotkey: miner().account_id().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    cfg.sim.dir = sim_dir.to_path_buf();
    cfg.sim.gpus = gpus;
    cfg.access.allow = Allow::AnySigner;
    cfg.tls_names = vec!["127.0.0.1".into()];
    Agent::build(&cfg).unwrap().start_local().unwrap()
}

/// What a validator does: a fresh nonce, a signed request over RA-TLS, the
/// bundle and the TLS key the connection presented.
async fn fetch(agent: &Running, nonce: &Nonce) -> (EvidenceBundle, [u8; 32]) {
    let client =
        tvm_validator::ratls::dangerous_any_certificate_client(Duration::from_secs(20)).unwrap();
    let body = serde_json::to_vec(&EvidenceRequest { nonce: *nonce }).unwrap();
    let h = epistula::sign(&validator(), &body, Some(&miner().account_id()), now().1);
    let mut req = client
        .post(format!(
            "https://127.0.0.1:{}/api/v1/evidence",
            agent.https.port()
        ))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in h.to_pairs() {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let spki = tvm_validator::ratls::tls_spki_sha256(&resp)
        .expect("served over TLS")
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    (EvidenceBundle::from_json(&bytes).unwrap(), spki)
}

struct Validator {
    policy: Policy,
    images: tvm_verifier::Images,
    collateral: std::sync::Arc<TdxCollateral>,
}

impl Validator {
    fn for_devnet(sim_dir: &std::path::Path) -> Self {
        let (policy, _) = tvm_e2e::devnet_trust(sim_dir).unwrap();
        let intel = SimIntel::load(sim_dir).unwrap();
        let collateral =
            TdxCollateral::prepare(intel.collateral(now().0).unwrap(), intel.root_der());
        Validator {
            images: tvm_e2e::devnet_images(sim_dir, &policy),
            policy,
            collateral: std::sync::Arc::new(collateral),
        }
    }

    fn appraise(
        &self,
        bundle: &EvidenceBundle,
        nonce: &Nonce,
        spki: Option<[u8; 32]>,
    ) -> BundleVerdict {
        appraise_bundle(&BundleInput {
            bundle,
            nonce,
            tls_spki_sha256: spki,
            tee_collateral: TeeCollateral::Tdx(&self.collateral),
            rims: &[],
            revocation: &[],
            policy: &self.policy,
            images: &self.images,
            at: now().0,
        })
    }
}

fn names(v: &BundleVerdict) -> Vec<&'static str> {
    v.failures().iter().map(|c| c.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_agent_evidence_is_genuine_and_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let a = start(&sim, 2);
    let b = start(&sim, 2);
    let v = Validator::for_devnet(&sim);

    let nonce = Nonce::generate(&validator().account_id());
    let (bundle, spki) = fetch(&a, &nonce).await;
    assert_eq!(spki, a.tls_spki_sha256);
    let verdict = v.appraise(&bundle, &nonce, Some(spki));
    assert!(verdict.accepted(), "{}", verdict.render());
    assert!(verdict.simulated());
    assert!(verdict.render().contains("SIMULATED"));
    for name in ["report_data", "quote.signature", "pck.chain"] {
        let c = verdict.tee().check(name).unwrap();
        assert_eq!(
            c.status,
            tvm_verifier::verdict::Status::Pass,
            "{name}: {}",
            c.detail
        );
    }
    for name in [check::TLS_KEY, check::CLAIMS_DEVICES, check::SIMULATED] {
        assert!(
            verdict
                .checks()
                .iter()
                .any(|c| c.name == name && c.status == tvm_verifier::verdict::Status::Pass),
            "{name}"
        );
    }
    let gpus = verdict.gpus().unwrap();
    assert_eq!(
        gpus.gpu_ids().len(),
        2,
        "two distinct NVIDIA-style identities"
    );

    // Replayed for another nonce: the quote and every GPU answer the old one.
    let other = Nonce::generate(&validator().account_id());
    let replay = v.appraise(&bundle, &other, Some(spki));
    assert!(!replay.accepted());
    let failed = names(&replay);
    assert!(failed.contains(&"report_data"), "{failed:?}");
    assert!(failed.contains(&"spdm.nonce"), "{failed:?}");

    // A GPU report from another agent, answering the same nonce.
    let (b_bundle, b_spki) = fetch(&b, &nonce).await;
    let mut swapped = bundle.clone();
    swapped.gpus[1] = b_bundle.gpus[1].clone();
    let s = v.appraise(&swapped, &nonce, Some(spki));
    assert!(!s.accepted());
    assert!(
        names(&s).contains(&check::CLAIMS_DEVICES),
        "{:?}",
        names(&s)
    );
    // ...and with the claims rewritten to match: the quote no longer vouches,
    // and B's GPU answered the nonce bound to B's CVM, not A's.
    swapped.claims.gpu_reports_sha256[1] = Digest32::sha256(&swapped.gpus[1].report.0);
    let s = v.appraise(&swapped, &nonce, Some(spki));
    assert_eq!(
        names(&s),
        vec!["report_data", "node.nonce", "spdm.nonce"],
        "{}",
        s.render()
    );
    // The lifter's whole attack: its own quote over those claims (its TLS key,
    // B's report lifted, both asked with the validator's very nonce). Only
    // the device nonce, bound to the CVM that asked, gives it away.
    {
        use tvm_agent::backend::Tee;
        let tee = tvm_agent::backend::sim::SimTee::open(&tvm_agent::config::SimConfig {
            dir: sim.clone(),
            ..Default::default()
        })
        .unwrap();
        // Its agent records its runtime as an honest one would.
        for e in &swapped.runtime_events {
            tee.extend_rtmr3(&tvm_protocol::binding::runtime_event_digest(e))
                .unwrap();
        }
        swapped.tee = tee
            .evidence(&tvm_protocol::report_data(&nonce, &swapped.claims))
            .unwrap();
    }
    let s = v.appraise(&swapped, &nonce, Some(spki));
    assert_eq!(
        names(&s),
        vec!["node.nonce", "spdm.nonce"],
        "{}",
        s.render()
    );

    // A's evidence, but the TLS connection ended at B (a relay).
    let relayed = v.appraise(&bundle, &nonce, Some(b_spki));
    assert_eq!(
        names(&relayed),
        vec![check::TLS_KEY],
        "{}",
        relayed.render()
    );

    // A validator whose policy does not trust the simulated roots.
    let strict = Validator {
        policy: Policy::default(),
        images: tvm_verifier::Images::none(),
        collateral: std::sync::Arc::new(TdxCollateral::prepare(
            SimIntel::load(&sim).unwrap().collateral(now().0).unwrap(),
            tvm_certs::anchors::intel_sgx_root().unwrap(),
        )),
    };
    let r = strict.appraise(&bundle, &nonce, Some(spki));
    assert!(!r.accepted());
    assert!(names(&r).contains(&check::SIMULATED), "{:?}", names(&r));
}

/// The validator's fetch: RA-TLS first, plain HTTP second, the next port on
/// a refused connection; the bundle it gets appraises as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attester_falls_back_across_ports_and_schemes() {
    use tvm_validator::attest::Attester;
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let a = start(&sim, 1);
    let v = Validator::for_devnet(&sim);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = tvm_protocol::nodes::NodeEntry {
        ip: "127.0.0.1".into(),
        price: None,
    };
    let miner = miner().account_id();

    let mut att = Attester::new(validator(), Duration::from_secs(20)).unwrap();
    att.ports = vec![dead, a.https.port()];
    let nonce = Nonce::generate(&validator().account_id());
    let f = att.evidence(&node, &miner, &nonce).await.unwrap();
    assert!(
        f.url.starts_with("https://") && f.url.contains(&a.https.port().to_string()),
        "{}",
        f.url
    );
    assert_eq!(f.tls_spki_sha256, Some(a.tls_spki_sha256));
    assert!(v.appraise(&f.bundle, &nonce, f.tls_spki_sha256).accepted());

    // A plain-HTTP-only port: RA-TLS fails, plain HTTP answers, the key
    // cannot be compared: rejected for exactly that, unless the policy
    // says plain HTTP will do.
    att.ports = vec![a.http.port()];
    let f = att.evidence(&node, &miner, &nonce).await.unwrap();
    assert!(f.url.starts_with("http://"), "{}", f.url);
    assert_eq!(f.tls_spki_sha256, None);
    let verdict = v.appraise(&f.bundle, &nonce, None);
    assert_eq!(
        names(&verdict),
        vec![check::TLS_KEY],
        "{}",
        verdict.render()
    );
    let mut lenient = Validator::for_devnet(&sim);
    lenient.policy.dangerous_allow_plain_http = true;
    let verdict = lenient.appraise(&f.bundle, &nonce, None);
    assert!(verdict.accepted(), "{}", verdict.render());

    att.ports = vec![dead];
    let e = att.evidence(&node, &miner, &nonce).await.unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
}

/// A PCK certificate that is not valid yet is named, with its date, under
/// `pck.chain` (not "the collateral is outside its validity window" with
/// Unix seconds).
#[test]
fn a_pck_certificate_not_yet_valid_is_named_with_its_date() {
    use tvm_verifier::tee::tdx::{self, checks::PCK_CHAIN, TdxInput};
    let sim = SimIntel::generate().unwrap();
    let td = tvm_sim::tdx::SimTd::new(sim.issue_platform().unwrap()).unwrap();
    let quote = td.quote(&[7; 64]).unwrap();
    // The PCK certificate starts a day back (as every simulated one does);
    // judge the quote two hours before that, with collateral of that time.
    let at = now().0 - 86_400 - 7_200;
    let collateral = TdxCollateral::prepare(sim.collateral(at).unwrap(), sim.root_der());
    let v = tdx::verify(&TdxInput {
        quote: &quote,
        collateral: &collateral,
        at,
        grace_seconds: 0,
    });
    let failed: Vec<_> = v
        .checks()
        .iter()
        .filter(|c| c.status == tvm_verifier::Status::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].name, PCK_CHAIN, "{failed:?}");
    assert!(
        failed[0].detail.contains("is not valid before 20"),
        "{}",
        failed[0].detail
    );
}

/// RTMR3, over real sockets: the agent records its configuration, image and
/// models at start and the verifier replays them against the quote; an
/// unknown event type, events that are not the claims', and anything else
/// extended into RTMR3 fail `runtime.events`; an agent restarted in the same
/// TD keeps its record, one with another configuration refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_is_recorded_in_rtmr3_and_replayed() {
    use tvm_agent::backend::sim::{SimDevices, SimTee};
    use tvm_agent::backend::Tee as _;
    use tvm_protocol::evidence::RuntimeEvent;
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let mut cfg = Config {
        hotkey: miner().account_id().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    cfg.sim.dir = sim.clone();
    cfg.sim.gpus = 1;
    cfg.access.allow = Allow::AnySigner;
    cfg.tls_names = vec!["127.0.0.1".into()];
    cfg.runtime.upstream = Some("http://127.0.0.1:9".into());
    cfg.runtime.image_digest = Some(format!("sha256:{}", "ab".repeat(32)));
    cfg.runtime.models.insert(
        "meta-llama/Llama-3.1-8B-Instruct".into(),
        Default::default(),
    );
    let tee = std::sync::Arc::new(SimTee::open(&cfg.sim).unwrap());
    let backends = |tee: &std::sync::Arc<SimTee>| -> tvm_agent::backend::Backends {
        (
            // One TD seen by the agent and by "other software in the CVM".
            Box::new(tee.clone()),
            Box::new(SimDevices::open(&cfg.sim).unwrap()),
        )
    };
    let a = Agent::with_backends(&cfg, backends(&tee))
        .unwrap()
        .start_local()
        .unwrap();
    let v = Validator::for_devnet(&sim);
    let nonce = Nonce::generate(&validator().account_id());
    let (bundle, spki) = fetch(&a, &nonce).await;
    let ok = v.appraise(&bundle, &nonce, Some(spki));
    assert!(ok.accepted(), "{}", ok.render());
    let c = ok.tee().check("runtime.events").unwrap();
    assert!(
        c.detail
            .starts_with("RTMR3 holds 3 runtime events: agent-config=")
            && c.detail.contains("model=meta-llama/Llama-3.1-8B-Instruct"),
        "{}",
        c.detail
    );
    let runtime_failure = |b: &EvidenceBundle| {
        let r = v.appraise(b, &nonce, Some(spki));
        assert!(!r.accepted());
        r.tee().check("runtime.events").unwrap().detail.clone()
    };

    // An event of a type no verifier vetted.
    let mut b = bundle.clone();
    b.runtime_events.push(RuntimeEvent {
        kind: "debug-shell".into(),
        value: "on".into(),
    });
    let d = runtime_failure(&b);
    assert!(d.contains("unknown type \"debug-shell\""), "{d}");
    // Events that are not the claims' runtime (a model left out).
    let mut b = bundle.clone();
    b.runtime_events.pop();
    assert!(runtime_failure(&b).contains("are not the claims' runtime"));
    // Claims and events both without the model: the quote's report_data
    // and RTMR3 both still say it.
    let mut b = bundle.clone();
    b.runtime_events.pop();
    b.claims.runtime.models.clear();
    let r = v.appraise(&b, &nonce, Some(spki));
    let failed = names(&r);
    assert!(failed.contains(&"report_data"), "{failed:?}");
    assert!(
        r.tee()
            .check("runtime.events")
            .unwrap()
            .detail
            .contains("replay to"),
        "{}",
        r.render()
    );

    // The agent restarted in the same TD keeps its record and still passes.
    let again = Agent::with_backends(&cfg, backends(&tee))
        .unwrap()
        .start_local()
        .unwrap();
    let (b2, spki2) = fetch(&again, &nonce).await;
    assert!(v.appraise(&b2, &nonce, Some(spki2)).accepted());
    // Another configuration in that TD cannot start: RTMR3 says otherwise.
    let mut other = cfg.clone();
    other.runtime.image_digest = Some(format!("sha256:{}", "cd".repeat(32)));
    let e = Agent::with_backends(&other, backends(&tee)).err().unwrap();
    assert!(e.to_string().contains("reboot the CVM"), "{e}");

    // A start that stopped part-way (the first event recorded, then a
    // crash): the next start records the rest.
    let partial = std::sync::Arc::new(SimTee::open(&cfg.sim).unwrap());
    let first = tvm_protocol::binding::runtime_events(&bundle.claims.runtime)[0].clone();
    partial
        .extend_rtmr3(&tvm_protocol::binding::runtime_event_digest(&first))
        .unwrap();
    let resumed = Agent::with_backends(&cfg, backends(&partial))
        .unwrap()
        .start_local()
        .unwrap();
    let (b4, spki4) = fetch(&resumed, &nonce).await;
    assert!(v.appraise(&b4, &nonce, Some(spki4)).accepted());

    // Other software in the CVM extends RTMR3 after the agent started:
    // every later quote shows it, and no runtime event accounts for it.
    tee.extend_rtmr3(&[0x5a; 48]).unwrap();
    let (b3, spki3) = fetch(&a, &nonce).await;
    let r = v.appraise(&b3, &nonce, Some(spki3));
    assert!(!r.accepted());
    assert_eq!(names(&r), vec!["runtime.events"], "{}", r.render());
}
