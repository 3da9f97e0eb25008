//! Attacks on what a validator pays for, over real sockets, each in one
//! validator round beside an honest node (docs/threat-model.md §3):
//!
//! - the identity-collision griefer: a GPU-less CVM whose agent claims an
//!   honest node's CVM id with its own TLS key, listed in 4096 spellings;
//! - the GPU report lifter: a CVM that fetches another agent's GPU reports
//!   and lists them in its own claims, quoted with its own TLS key (the
//!   victim refuses the validator's nonce from it, so it asks with one of
//!   its own; `agent_verifier.rs` shows the device nonce's binding alone,
//!   with both asked for the validator's very nonce);
//! - the certificate bomb: a bundle with thousands of certificates;
//! - the rewired HGX board: 8 protected-PCIe GPUs shown with another board's
//!   NVSwitches, or with one of their own withheld.
//!
//! The honest node keeps its point; the attackers get nothing, say why,
//! and cost the validator no collateral fetch.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tvm_agent::auth::Access;
use tvm_agent::backend::sim::SimTee;
use tvm_agent::backend::{BackendError, DeviceSet, Devices, Gather, NoDevices, Readiness};
use tvm_agent::evidence::EvidenceSource;
use tvm_agent::server::AppState;
use tvm_agent::{Agent, Running};
use tvm_e2e::{axon, devnet_trust, free_port, key, sim_agent, unix_now, validator_attester};
use tvm_protocol::keys::AccountId;
use tvm_protocol::nodes::NodeEntry;
use tvm_protocol::nonce::Nonce;
use tvm_protocol::{Digest32, EvidenceBundle};
use tvm_validator::attest::Attester;
use tvm_validator::round::{self, Collateral, Miner, RoundConfig};
use tvm_validator::run::SimulatedPcs;
use tvm_validator::scoring::NodeScore;
use tvm_verifier::tee::tdx::TdxCollateral;

type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The devnet's collateral, counting what the round asks for.
struct Counting {
    inner: SimulatedPcs,
    tdx: AtomicUsize,
}

impl Collateral for Counting {
    fn tdx<'a>(&'a self, quote: &'a [u8], at: i64) -> Fut<'a, Result<Arc<TdxCollateral>, String>> {
        self.tdx.fetch_add(1, Ordering::SeqCst);
        self.inner.tdx(quote, at)
    }
    fn images<'a>(
        &'a self,
        keys: &'a tvm_verifier::image::KeySet,
        at: i64,
    ) -> Fut<'a, tvm_verifier::Images> {
        self.inner.images(keys, at)
    }
}

/// An agent of `miner` over `source` instead of its own evidence source:
/// the real server, RA-TLS and access control, with the attacker's evidence.
fn rogue_agent(
    sim: &std::path::Path,
    miner: &str,
    at: SocketAddr,
    source: impl FnOnce(Digest32) -> EvidenceSource,
) -> Running {
    let cfg = tvm::devnet::agent_config(sim, miner, 0).unwrap();
    let agent = Agent::with_backends(&cfg, (Box::new(sim_tee(sim)), Box::new(NoDevices))).unwrap();
    let src = source(agent.tls.cvm_id());
    let state = AppState::new(
        Arc::new(src),
        Access::new(key(miner).unwrap().account_id(), &cfg.access).unwrap(),
        None,
        cfg.runtime.max_body_bytes,
        cfg.access.max_concurrent_evidence,
        cfg.access.max_queued_evidence,
    );
    Agent {
        state: Arc::new(state),
        tls: agent.tls,
    }
    .start_at(at)
    .unwrap()
}

fn sim_tee(sim: &std::path::Path) -> SimTee {
    SimTee::open(&tvm_agent::config::SimConfig {
        dir: sim.to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

/// GPUs that are another agent's: each request fetches that agent's bundle
/// (with a nonce of the lifter's own, which the victim answers) and hands on
/// its GPU reports.
struct Lifted {
    victim: NodeEntry,
    victim_miner: AccountId,
    attester: Attester,
    me: AccountId,
    rt: tokio::runtime::Handle,
}

impl Devices for Lifted {
    fn describe(&self) -> String {
        "GPUs lifted from another agent".into()
    }
    fn simulated(&self) -> bool {
        true
    }
    fn gpu_count(&self) -> usize {
        1
    }
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
    fn evidence(&self, _nonce: &[u8; 32], _: Gather) -> Result<DeviceSet, BackendError> {
        let nonce = Nonce::generate(&self.me);
        let fetched = self
            .rt
            .block_on(
                self.attester
                    .evidence(&self.victim, &self.victim_miner, &nonce),
            )
            .map_err(|e| BackendError::Failed {
                what: "lifting",
                reason: e.to_string(),
            })?;
        Ok(DeviceSet {
            gpus: fetched.bundle.gpus,
            switches: Vec::new(),
        })
    }
}

/// A node answering every evidence request with a fixed body (plain HTTP).
async fn fixed_answer(at: SocketAddr, body: Vec<u8>) {
    let app = axum::Router::new().route(
        "/api/v1/evidence",
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let l = tokio::net::TcpListener::bind(at).await.unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn griefer_lifter_and_bomb_get_nothing_and_cost_no_fetch() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = free_port([127, 0, 0, 40]).unwrap();
    let at = |host: u8| SocketAddr::from(([127, 0, 0, host], port));

    // The honest node: miner V, one GPU.
    let victim = sim_agent(&sim, "//Victim", at(41), 1).unwrap();
    let victim_id = Digest32(victim.tls_spki_sha256);

    // The griefer: a GPU-less CVM of miner G claiming V's CVM id.
    let _griefer = rogue_agent(&sim, "//Griefer", at(42), |_| EvidenceSource {
        tee: Box::new(sim_tee(&sim)),
        devices: Box::new(NoDevices),
        cvm_id: victim_id,
        runtime: Default::default(),
        gather: Gather::Parallel,
        runtime_events: Vec::new(),
    });

    // The lifter: a CVM of miner L showing V's GPU reports as its own.
    let mut lifting = Attester::new(key("//Lifter").unwrap(), Duration::from_secs(10)).unwrap();
    lifting.ports = vec![port];
    let lifter_devices = Lifted {
        victim: NodeEntry {
            ip: "127.0.0.41".into(),
            price: None,
        },
        victim_miner: key("//Victim").unwrap().account_id(),
        attester: lifting,
        me: key("//Lifter").unwrap().account_id(),
        rt: tokio::runtime::Handle::current(),
    };
    let _lifter = rogue_agent(&sim, "//Lifter", at(43), |own_id| EvidenceSource {
        tee: Box::new(sim_tee(&sim)),
        devices: Box::new(lifter_devices),
        cvm_id: own_id,
        runtime: Default::default(),
        gather: Gather::Parallel,
        runtime_events: Vec::new(),
    });

    // The bomb: a bundle whose one GPU chain holds 2000 certificates.
    let mut bomb: serde_json::Value = {
        let nonce = Nonce::generate(&key("//Validator").unwrap().account_id());
        let mut a = Attester::new(key("//Validator").unwrap(), Duration::from_secs(10)).unwrap();
        a.ports = vec![port];
        let entry = NodeEntry {
            ip: "127.0.0.41".into(),
            price: None,
        };
        let b = a
            .evidence(&entry, &key("//Victim").unwrap().account_id(), &nonce)
            .await
            .unwrap()
            .bundle;
        serde_json::from_slice(&b.to_json()).unwrap()
    };
    let cert = bomb["gpus"][0]["cert_chain"][0].clone();
    bomb["gpus"][0]["cert_chain"] = serde_json::Value::Array(vec![cert; 2000]);
    let bomb = serde_json::to_vec(&bomb).unwrap();
    assert!(bomb.len() < tvm_protocol::evidence::MAX_BUNDLE_BYTES);
    let t = std::time::Instant::now();
    let parsed = EvidenceBundle::from_json(&bomb);
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(parsed.is_err());
    eprintln!(
        "certificate bomb: {} KiB refused in {parse_ms:.1} ms",
        bomb.len() / 1024
    );
    fixed_answer(at(44), bomb).await;

    let entry = |host: &str| NodeEntry {
        ip: host.into(),
        price: None,
    };
    // 4096 spellings of the griefer's one host.
    let spellings: Vec<NodeEntry> = (0..4096)
        .map(|i| match i % 4 {
            0 => entry(&format!("127.0.0.42:{i}")),
            1 => entry(&format!("http://127.0.0.42/{i}")),
            2 => entry(&format!("https://127.0.0.42:{i}/x")),
            _ => entry(&format!("[::ffff:127.0.0.42]:{i}")),
        })
        .collect();
    let miner = |uid: u16, uri: &'static str, nodes: Vec<NodeEntry>| async move {
        Miner {
            uid,
            hotkey: key(uri).unwrap().account_id(),
            axon: axon(uri, nodes).await.unwrap(),
        }
    };
    let miners = vec![
        miner(1, "//Victim", vec![entry("127.0.0.41")]).await,
        miner(2, "//Griefer", spellings).await,
        miner(3, "//Lifter", vec![entry("127.0.0.43")]).await,
        miner(4, "//Bomber", vec![entry("127.0.0.44")]).await,
    ];
    let (policy, pcs) = devnet_trust(&sim).unwrap();
    let collateral = Counting {
        inner: pcs,
        tdx: AtomicUsize::new(0),
    };
    let attester = validator_attester(port).unwrap();
    let cfg = RoundConfig {
        node_timeout: Duration::from_secs(10),
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let now = unix_now();
    let report = round::run(
        &miners,
        &attester,
        &key("//Validator").unwrap().account_id(),
        &policy,
        &collateral,
        &cfg,
        now,
    )
    .await;

    let of = |uid: u16| {
        report
            .scores
            .nodes
            .iter()
            .filter(|(n, _)| n.miner_uid == uid)
            .collect::<Vec<_>>()
    };
    // The honest node keeps its point.
    assert_eq!(of(1).len(), 1);
    assert_eq!(
        of(1)[0].1,
        NodeScore::Counted { points: 1.0 },
        "{:?}",
        of(1)[0].0
    );
    // The griefer: one host called once, whatever the spellings; its claim
    // of V's id fails the TLS key and zeroes no one.
    assert_eq!(of(2).len(), 1, "4096 spellings of one host are one node");
    let (g, s) = of(2)[0];
    assert_eq!(*s, NodeScore::Failed);
    assert!(
        g.reasons.iter().any(|r| r.starts_with("tls.key")),
        "{:?}",
        g.reasons
    );
    assert_eq!(g.cvm_id, None, "an unproven id is never compared");
    // The lifter: its quote, its TLS key and its claims are consistent; the
    // GPU answered the nonce bound to V's CVM, not the lifter's.
    let (l, s) = of(3)[0];
    assert_eq!(*s, NodeScore::Failed);
    let failed: Vec<&str> = l
        .reasons
        .iter()
        .map(|r| r.split(':').next().unwrap_or_default())
        .collect();
    assert!(failed.contains(&"spdm.nonce"), "{failed:?}");
    assert!(!failed.contains(&"tls.key"), "{failed:?}");
    assert!(!failed.contains(&"report_data"), "{failed:?}");
    assert!(!failed.contains(&"claims.devices"), "{failed:?}");
    // The bomb is refused at parsing.
    let (b, s) = of(4)[0];
    assert_eq!(*s, NodeScore::NoEvidence);
    assert!(
        b.reasons[0].contains("2000 certificates in one device chain"),
        "{:?}",
        b.reasons
    );
    // Collateral was asked for only by the two nodes that passed the binding
    // checks (V and the lifter): not by the griefer, not by the bomb.
    assert_eq!(collateral.tdx.load(Ordering::SeqCst), 2);
    assert_eq!(report.scores.v6.keys().collect::<Vec<_>>(), vec![&1]);
}

/// 2048 HTTP/2 connections from one address that send the preface and then
/// nothing (the agent's connection limit) do not keep a validator out: one
/// address holds at most its share, and the validator is served at once.
/// Nor do more connections than the agent has places, from 40 addresses:
/// the oldest that never signed a request make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_flood_from_one_address_does_not_lock_out_a_validator() {
    use tokio::io::AsyncWriteExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let agent = sim_agent(&sim, "//Victim", "127.0.0.50:0".parse().unwrap(), 1).unwrap();
    // HTTP/2 preface and an empty SETTINGS frame: a connection hyper serves.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut flood = Vec::new();
    for _ in 0..2048 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.51:0".parse().unwrap()).unwrap();
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(agent.https)).await
        else {
            continue;
        };
        let _ = s.write_all(PREFACE).await;
        flood.push(s);
    }
    assert!(
        flood.len() >= 1024,
        "only {} connections opened",
        flood.len()
    );
    // A validator from another address, over RA-TLS, with a tight deadline.
    let mut attester = Attester::new(key("//Validator").unwrap(), Duration::from_secs(10)).unwrap();
    attester.ports = vec![agent.https.port()];
    let nonce = Nonce::generate(&key("//Validator").unwrap().account_id());
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        attester.evidence(
            &NodeEntry {
                ip: "127.0.0.50".into(),
                price: None,
            },
            &key("//Victim").unwrap().account_id(),
            &nonce,
        ),
    )
    .await
    .expect("the validator waited behind the flood")
    .unwrap();
    assert!(fetched.tls_spki_sha256.is_some(), "served over RA-TLS");
    drop(flood);

    // From 40 addresses, 64 each: more than all the agent's places. The
    // oldest connections that never signed a request make room, at once
    // (without that, each connection over the limit stalls the agent's
    // accept loop until an unsigned one times out, 30 s after it opened).
    let t = std::time::Instant::now();
    let mut flood = Vec::new();
    for a in 0..40u8 {
        for _ in 0..64 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::from(([127, 0, 1, 10 + a], 0)))
                .unwrap();
            let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(agent.https)).await
            else {
                continue;
            };
            let _ = s.write_all(PREFACE).await;
            flood.push(s);
        }
    }
    assert!(
        flood.len() > 2048,
        "only {} connections opened",
        flood.len()
    );
    let nonce = Nonce::generate(&key("//Validator").unwrap().account_id());
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        attester.evidence(
            &NodeEntry {
                ip: "127.0.0.50".into(),
                price: None,
            },
            &key("//Victim").unwrap().account_id(),
            &nonce,
        ),
    )
    .await
    .expect("the validator waited behind a flood from many addresses")
    .unwrap();
    assert!(fetched.tls_spki_sha256.is_some());
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "the flood held the agent for {:?}",
        t.elapsed()
    );
    drop(flood);
}

/// Collateral that no vendor has (a made-up FMSPC or chip id): every look-up
/// fails, and is counted.
struct Unfindable(AtomicUsize);

impl Collateral for Unfindable {
    fn tdx<'a>(&'a self, _: &'a [u8], _: i64) -> Fut<'a, Result<Arc<TdxCollateral>, String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("404 from the vendor".to_string()) })
    }
}

/// A miner whose nodes pass the binding checks but name platforms no vendor
/// knows costs the validator at most MAX_FAILED_LOOKUPS look-ups a round;
/// its other nodes say why they were not looked up for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_platforms_cost_a_bounded_number_of_lookups() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = free_port([127, 0, 0, 80]).unwrap();
    let mut agents = Vec::new();
    let mut nodes = Vec::new();
    for h in 80..88u8 {
        let at = SocketAddr::from(([127, 0, 0, h], port));
        agents.push(sim_agent(&sim, "//Forger", at, 0).unwrap());
        nodes.push(NodeEntry {
            ip: format!("127.0.0.{h}"),
            price: None,
        });
    }
    let miners = vec![Miner {
        uid: 1,
        hotkey: key("//Forger").unwrap().account_id(),
        axon: axon("//Forger", nodes).await.unwrap(),
    }];
    let (policy, _) = devnet_trust(&sim).unwrap();
    let collateral = Unfindable(AtomicUsize::new(0));
    let attester = validator_attester(port).unwrap();
    let cfg = RoundConfig {
        // One at a time, so the count is exact.
        concurrency: 1,
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let now = unix_now();
    let report = round::run(
        &miners,
        &attester,
        &key("//Validator").unwrap().account_id(),
        &policy,
        &collateral,
        &cfg,
        now,
    )
    .await;
    assert_eq!(
        collateral.0.load(Ordering::SeqCst),
        round::MAX_FAILED_LOOKUPS as usize
    );
    let not_looked_up = report
        .scores
        .nodes
        .iter()
        .filter(|(n, _)| {
            n.reasons
                .iter()
                .any(|r| r.contains("look-ups for this miner's nodes failed"))
        })
        .count();
    assert_eq!(not_looked_up, 8 - round::MAX_FAILED_LOOKUPS as usize);
    assert!(report.scores.v6.is_empty());
}

/// One HGX board's GPUs with another board's NVSwitches (a host with two
/// boards, or switches it can route), or with one switch withheld.
struct Rewired {
    gpus_of: tvm_agent::backend::sim::SimDevices,
    /// `None`: the GPUs' own switches, the last one withheld.
    switches_of: Option<tvm_agent::backend::sim::SimDevices>,
}

impl Devices for Rewired {
    fn describe(&self) -> String {
        "an HGX board rewired".into()
    }
    fn simulated(&self) -> bool {
        true
    }
    fn gpu_count(&self) -> usize {
        8
    }
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
    fn evidence(&self, nonce: &[u8; 32], how: Gather) -> Result<DeviceSet, BackendError> {
        let mut own = self.gpus_of.evidence(nonce, how)?;
        match &self.switches_of {
            Some(other) => own.switches = other.evidence(nonce, how)?.switches,
            None => {
                own.switches.pop();
            }
        }
        Ok(own)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hgx_board_with_borrowed_or_withheld_switches_gets_nothing() {
    use tvm_agent::backend::sim::{hierarchy, Shape, SimDevices};
    use tvm_agent::config::SimGpuModel;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = free_port([127, 0, 0, 50]).unwrap();
    let at = |host: u8| SocketAddr::from(([127, 0, 0, host], port));
    let _honest = sim_agent(&sim, "//Honest", at(51), 1).unwrap();
    let (_, nvidia) = hierarchy(&sim).unwrap();
    let board = || {
        let shape = Shape {
            gpus: 8,
            switches: 4,
            model: SimGpuModel::H200Sxm,
        };
        SimDevices::issue(&nvidia, shape, Duration::ZERO).unwrap()
    };
    let source = |devices: Rewired| {
        let tee = sim_tee(&sim);
        move |own_id| EvidenceSource {
            tee: Box::new(tee),
            devices: Box::new(devices),
            cvm_id: own_id,
            runtime: Default::default(),
            gather: Gather::Parallel,
            runtime_events: Vec::new(),
        }
    };
    let swapped = Rewired {
        gpus_of: board(),
        switches_of: Some(board()),
    };
    let _swapper = rogue_agent(&sim, "//Swapper", at(52), source(swapped));
    let withheld = Rewired {
        gpus_of: board(),
        switches_of: None,
    };
    let _withholder = rogue_agent(&sim, "//Withholder", at(53), source(withheld));

    let entry = |host: &str| NodeEntry {
        ip: host.into(),
        price: None,
    };
    let miner = |uid: u16, uri: &'static str, host: &'static str| async move {
        Miner {
            uid,
            hotkey: key(uri).unwrap().account_id(),
            axon: axon(uri, vec![entry(host)]).await.unwrap(),
        }
    };
    let miners = vec![
        miner(1, "//Honest", "127.0.0.51").await,
        miner(2, "//Swapper", "127.0.0.52").await,
        miner(3, "//Withholder", "127.0.0.53").await,
    ];
    let (policy, pcs) = devnet_trust(&sim).unwrap();
    let report = round::run(
        &miners,
        &validator_attester(port).unwrap(),
        &key("//Validator").unwrap().account_id(),
        &policy,
        &pcs,
        &RoundConfig {
            node_timeout: Duration::from_secs(10),
            dangerous_allow_private_addresses: true,
            ..RoundConfig::default()
        },
        unix_now(),
    )
    .await;
    let of = |uid: u16| {
        report
            .scores
            .nodes
            .iter()
            .find(|(n, _)| n.miner_uid == uid)
            .unwrap()
    };
    assert_eq!(of(1).1, NodeScore::Counted { points: 1.0 });
    for (uid, why) in [
        (2, "which is not in this node's evidence"),
        (3, "the evidence has 8 and 3"),
    ] {
        let (n, s) = of(uid);
        assert_eq!(*s, NodeScore::Failed, "{:?}", n.reasons);
        assert!(
            n.reasons
                .iter()
                .any(|r| r.starts_with("node.topology") && r.contains(why)),
            "{uid}: {:?}",
            n.reasons
        );
    }
    assert_eq!(report.scores.v6.keys().collect::<Vec<_>>(), vec![&1]);
}
