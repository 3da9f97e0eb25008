//! Scale bench: one validator round over 10,000 simulated CVMs.
//!
//! `cargo bench -p tvm-e2e --bench scale` (nodes: `SCALE_NODES`, default 10000).
//!
//! A responder in a child process (so the validator's own CPU and memory
//! are measured alone) serves 250 miners' node lists (40 nodes each) and
//! every node on its own loopback address over RA-TLS, as agents serve
//! (the agent's own listener, each node its own TLS key, which is its CVM
//! id), with a mix of honest and failing nodes:
//!
//! - 53 % honest: a fresh SIMULATED TDX quote and one simulated GPU's SPDM
//!   report signed for the validator's nonce (each node its own CVM and GPU),
//! - 20 % stale: canned evidence for another nonce and CVM (fails),
//! - 10 % overloaded (503), 5 % junk JSON, 10 % listed where nothing
//!   listens, 1 % certificate bombs (a GPU chain of 2,000 certificates),
//!   1 % hang until the validator's timeout.
//!
//! The parent runs the round (`round::run`: node lists, evidence over
//! RA-TLS, appraisal, scoring; no database writes) with the devnet's
//! simulated collateral and policy, and prints wall time, its CPU time (per
//! node, and per TLS connection, measured apart), peak RSS, the responder's
//! CPU time, and checks every node came out as its kind says. It exits 1
//! when the target (< 60 s, < 1 GiB) is missed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tvm_agent::backend::sim::{hierarchy, Shape, SimDevices, SimTee};
use tvm_agent::backend::Gather;
use tvm_agent::evidence::EvidenceSource;
use tvm_agent::tls::TlsIdentity;
use tvm_protocol::evidence::EvidenceRequest;
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_protocol::nonce::Nonce;
use tvm_validator::attest::Attester;
use tvm_validator::round::{self, Miner, RoundConfig};
use tvm_validator::scoring::NodeScore;

const PER_MINER: usize = 40;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Honest,
    Stale,
    Overloaded,
    Junk,
    Refused,
    Bomb,
    Hang,
}

fn kind(k: usize) -> Kind {
    match k % 100 {
        0..=49 | 95..=97 => Kind::Honest,
        50..=69 => Kind::Stale,
        70..=79 => Kind::Overloaded,
        80..=84 => Kind::Junk,
        85..=94 => Kind::Refused,
        98 => Kind::Bomb,
        _ => Kind::Hang,
    }
}

/// Node `k`'s own loopback address (nothing listens there for `Refused`).
fn node_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (k / 250) as u8,
        0,
        1 + (k % 250) as u8,
    ))
}

fn miner_key(i: usize) -> Hotkey {
    Hotkey::from_uri(&format!("//ScaleMiner{i}")).expect("dev key")
}

struct Responder {
    miners: HashMap<String, usize>,
    sources: HashMap<usize, EvidenceSource>,
    stale: Vec<u8>,
    bomb: Vec<u8>,
}

fn signed_for(h: &HeaderMap) -> Option<&str> {
    h.get("Epistula-Signed-For")?.to_str().ok()
}

async fn node_list(State(r): State<Arc<Responder>>, h: HeaderMap) -> Response {
    let Some(&i) = signed_for(&h).and_then(|m| r.miners.get(m)) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let list: Vec<_> = (0..PER_MINER)
        .map(|j| serde_json::json!({"ip": node_ip(i * PER_MINER + j).to_string(), "price": 200}))
        .collect();
    axum::Json(list).into_response()
}

async fn evidence(
    State((r, k)): State<(Arc<Responder>, usize)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if signed_for(&h).and_then(|m| r.miners.get(m)) != Some(&(k / PER_MINER)) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let json = |b: Vec<u8>| ([("content-type", "application/json")], b).into_response();
    match kind(k) {
        Kind::Honest => {
            let Ok(req) = serde_json::from_slice::<EvidenceRequest>(&body) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let r2 = r.clone();
            let made = tokio::task::spawn_blocking(move || {
                let src = r2.sources.get(&k)?;
                let p = src.produce(req.nonce).ok()?;
                serde_json::to_vec(&p.bundle).ok()
            })
            .await;
            match made {
                Ok(Some(b)) => json(b),
                _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Kind::Stale => json(r.stale.clone()),
        Kind::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
        Kind::Junk => json(b"{\"quote\": 42}".to_vec()),
        Kind::Bomb => json(r.bomb.clone()),
        Kind::Hang => {
            tokio::time::sleep(TIMEOUT * 3).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Kind::Refused => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The child: build every honest node's evidence source, serve, and print
/// `ready AXON PORT` when listening.
fn responder(sim: &Path, nodes: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let miners_n = nodes / PER_MINER;
    let (_, nvidia) = hierarchy(sim).expect("sim hierarchy");
    let tee = Arc::new(
        SimTee::open(&tvm_agent::config::SimConfig {
            dir: sim.to_path_buf(),
            ..Default::default()
        })
        .expect("sim TDX"),
    );
    // Every listening node's TLS key (its CVM id); honest ones' sources.
    let listening: Vec<usize> = (0..miners_n * PER_MINER)
        .filter(|k| kind(*k) != Kind::Refused)
        .collect();
    let make = |ks: &[usize]| -> Vec<(usize, TlsIdentity, Option<EvidenceSource>)> {
        ks.iter()
            .map(|&k| {
                let tls = TlsIdentity::generate(&[node_ip(k).to_string()]).expect("TLS key");
                let src = (kind(k) == Kind::Honest).then(|| EvidenceSource {
                    tee: Box::new(tee.clone()),
                    devices: Box::new(
                        SimDevices::issue(&nvidia, Shape::gpus(1), Duration::ZERO)
                            .expect("sim GPU"),
                    ),
                    cvm_id: tls.cvm_id(),
                    runtime: Default::default(),
                    gather: Gather::Sequential,
                    runtime_events: Vec::new(),
                });
                (k, tls, src)
            })
            .collect()
    };
    // Two threads: the machine has two cores.
    let half = listening.len() / 2;
    let made: Vec<(usize, TlsIdentity, Option<EvidenceSource>)> = std::thread::scope(|s| {
        let a = s.spawn(|| make(&listening[..half]));
        let b = make(&listening[half..]);
        let mut all = a.join().expect("setup thread");
        all.extend(b);
        all
    });
    let mut sources = HashMap::new();
    let mut keys = Vec::new();
    for (k, tls, src) in made {
        if let Some(src) = src {
            sources.insert(k, src);
        }
        keys.push((k, tls));
    }
    let some_honest = *sources.keys().next().expect("an honest node");
    let stale = {
        let src = &sources[&some_honest];
        let other = Nonce::generate(&Hotkey::from_uri("//Someone").expect("key").account_id());
        serde_json::to_vec(&src.produce(other).expect("stale").bundle).expect("json")
    };
    // A certificate bomb: the stale bundle with 2,000 certificates in a chain.
    let bomb = {
        let mut b: serde_json::Value = serde_json::from_slice(&stale).expect("json");
        let cert = b["gpus"][0]["cert_chain"][0].clone();
        b["gpus"][0]["cert_chain"] = serde_json::Value::Array(vec![cert; 2000]);
        serde_json::to_vec(&b).expect("json")
    };
    let miners = (0..miners_n)
        .map(|i| (miner_key(i).account_id().to_ss58(), i))
        .collect();
    let r = Arc::new(Responder {
        miners,
        sources,
        stale,
        bomb,
    });
    rt.block_on(async move {
        let port = std::net::TcpListener::bind(SocketAddr::new(node_ip(0), 0))
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        for (k, tls) in keys {
            let app = Router::new()
                .route("/api/v1/evidence", post(evidence))
                .route("/health", get(|| async { "ok" }))
                .with_state((r.clone(), k));
            let l = tokio::net::TcpListener::bind(SocketAddr::new(node_ip(k), port))
                .await
                .expect("bind");
            let tls = tls.server_config().expect("TLS config");
            tokio::spawn(tvm_agent::listener::serve(l, app, Some(tls)));
        }
        let app = Router::new().route("/cvm", get(node_list)).with_state(r);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let axon = l.local_addr().expect("addr");
        println!("ready {axon} {port}");
        std::io::stdout().flush().ok();
        let _ = axum::serve(l, app).await;
    });
}

fn rusage(who: i32) -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("responder") {
        let nodes = args[3].parse().expect("nodes");
        responder(Path::new(&args[2]), nodes);
        return;
    }
    let nodes: usize = std::env::var("SCALE_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let nodes = nodes / PER_MINER * PER_MINER;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = dir.path().join("sim");
    tvm_agent::backend::sim::init(&sim).expect("sim hierarchy");

    let setup = Instant::now();
    let mut child = Command::new(&args[0])
        .arg("responder")
        .arg(&sim)
        .arg(nodes.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("responder starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("responder ready");
    let mut words = line.split_whitespace().skip(1);
    let axon: SocketAddr = words.next().and_then(|w| w.parse().ok()).expect("axon");
    let port: u16 = words.next().and_then(|w| w.parse().ok()).expect("port");
    println!(
        "scale: responder ready with {nodes} nodes in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let validator = Hotkey::from_uri("//Validator").expect("key");
    let miners: Vec<Miner> = (0..nodes / PER_MINER)
        .map(|i| Miner {
            uid: i as u16 + 1,
            hotkey: miner_key(i).account_id(),
            axon,
        })
        .collect();
    // Nothing relaxed but the simulated roots: every node is fetched over
    // RA-TLS and its TLS key checked, as real rounds run.
    let (policy, pcs) = tvm_e2e::devnet_trust(&sim).expect("devnet trust");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut attester = Attester::new(validator.clone(), TIMEOUT).expect("client");
    attester.ports = vec![port];
    // As `tvm-verifier run` sets it: RA-TLS only under this policy.
    attester.plain_http = policy.dangerous_allow_plain_http;
    let cfg = RoundConfig {
        concurrency: 256,
        node_timeout: TIMEOUT,
        retries: 1,
        // A loopback responder.
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let me: AccountId = validator.account_id();
    let cpu0 = rusage(libc::RUSAGE_SELF);
    let t = Instant::now();
    let report = rt.block_on(round::run(
        &miners, &attester, &me, &policy, &pcs, &cfg, now,
    ));
    let wall = t.elapsed();
    let cpu = rusage(libc::RUSAGE_SELF) - cpu0;
    let rss = peak_rss_mib();
    // The validator's CPU for one RA-TLS connection (handshake, one small
    // request), measured apart: fresh clients to one honest node.
    let honest_ip = (0..nodes)
        .map(node_ip)
        .zip(0..)
        .find(|(_, k)| kind(*k) == Kind::Honest)
        .map(|(ip, _)| ip)
        .expect("an honest node");
    const TLS_CONNECTIONS: u32 = 300;
    let tls_cpu0 = rusage(libc::RUSAGE_SELF);
    rt.block_on(async {
        for _ in 0..TLS_CONNECTIONS {
            let client =
                tvm_validator::ratls::dangerous_any_certificate_client(TIMEOUT).expect("client");
            let r = client
                .get(format!("https://{honest_ip}:{port}/health"))
                .send()
                .await
                .expect("health");
            assert!(r.status().is_success());
        }
    });
    let tls_cpu = (rusage(libc::RUSAGE_SELF) - tls_cpu0) / TLS_CONNECTIONS;
    let _ = child.kill();
    let _ = child.wait();
    let responder_cpu = rusage(libc::RUSAGE_CHILDREN);

    // Every node as its kind says.
    let mut by_kind: HashMap<Kind, (usize, usize)> = HashMap::new();
    let index: HashMap<AccountId, usize> = miners
        .iter()
        .enumerate()
        .map(|(i, m)| (m.hotkey, i))
        .collect();
    let uid_to_i: HashMap<u16, usize> = miners.iter().map(|m| (m.uid, index[&m.hotkey])).collect();
    let k_of: HashMap<String, usize> = (0..nodes).map(|k| (node_ip(k).to_string(), k)).collect();
    for (n, s) in &report.scores.nodes {
        let k = k_of[&n.node];
        assert_eq!(k / PER_MINER, uid_to_i[&n.miner_uid], "{}", n.node);
        let kd = kind(k);
        let ok = match kd {
            Kind::Honest => matches!(s, NodeScore::Counted { .. }),
            Kind::Stale => matches!(s, NodeScore::Failed),
            _ => matches!(s, NodeScore::NoEvidence),
        };
        let e = by_kind.entry(kd).or_default();
        e.0 += 1;
        e.1 += usize::from(ok);
    }
    println!(
        "scale: {} nodes of {} miners in {:.1} s wall; validator CPU {:.1} s ({:.0} % of 2 cores), peak RSS {:.0} MiB; responder CPU {:.1} s",
        report.scores.nodes.len(),
        miners.len(),
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64() / 2.0,
        rss,
        responder_cpu.as_secs_f64(),
    );
    println!(
        "  validator CPU per node {:.2} ms; per RA-TLS connection (new client, handshake, one request) {:.2} ms",
        cpu.as_secs_f64() * 1e3 / nodes as f64,
        tls_cpu.as_secs_f64() * 1e3,
    );
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by_key(|(k, _)| format!("{k:?}"));
    for (k, (n, ok)) in &kinds {
        println!("  {k:?}: {n} nodes, {ok} scored as expected");
    }
    let met = wall < Duration::from_secs(60) && rss < 1024.0;
    println!(
        "  target: < 60 s wall, < 1024 MiB peak RSS: {}",
        if met { "met" } else { "NOT met" }
    );
    let wrong: usize = kinds.iter().map(|(_, (n, ok))| n - ok).sum();
    assert_eq!(report.scores.nodes.len(), nodes, "every node scored");
    assert_eq!(wrong, 0, "every node scored as its kind says");
    if !met && nodes >= 10_000 {
        eprintln!("scale: the target was not met");
        std::process::exit(1);
    }
}
