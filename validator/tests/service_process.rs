//! `tvm-verifier run` and `check` as processes, against a loopback responder
//! that serves a miner's node list and canned evidence (a real TDX quote
//! from testdata, bound to no nonce of ours, so every verdict is a
//! rejection with its reasons). The validator is killed with SIGKILL in the
//! middle of a round and restarted: no finished verdict is lost or redone,
//! and the round finishes once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use tvm_protocol::evidence::{Claims, EvidenceBundle, NodeType, TeeEvidence, BUNDLE_VERSION};
use tvm_protocol::hexbytes::{Digest32, HexBytes};
use tvm_protocol::keys::Hotkey;
use tvm_protocol::nonce::Nonce;
use tvm_validator::db::Db;

fn td(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// A real TDX quote wrapped as an agent's bundle, for someone else's nonce.
fn canned_bundle() -> Vec<u8> {
    let quote = std::fs::read(td("tdx/dcapqvl_tdx_quote_v4.bin")).unwrap();
    let who = Hotkey::from_uri("//Canned").unwrap().account_id();
    let b = EvidenceBundle {
        version: BUNDLE_VERSION,
        nonce: Nonce::generate(&who),
        tee: TeeEvidence::Tdx {
            quote: HexBytes(quote),
            event_log: None,
        },
        gpus: Vec::new(),
        switches: Vec::new(),
        claims: Claims {
            cvm_id: Digest32([7; 32]),
            node_type: NodeType::Cpu,
            agent_version: "canned".into(),
            simulated: false,
            gpu_reports_sha256: Vec::new(),
            switch_reports_sha256: Vec::new(),
            runtime: Default::default(),
        },
        runtime_events: vec![],
    };
    serde_json::to_vec(&b).unwrap()
}

#[derive(Clone)]
struct Node {
    ip: IpAddr,
    delay: Duration,
    body: Arc<Vec<u8>>,
    hits: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

async fn evidence(State(n): State<Node>) -> axum::response::Response {
    use axum::response::IntoResponse;
    tokio::time::sleep(n.delay).await;
    *n.hits.lock().unwrap().entry(n.ip).or_default() += 1;
    (
        [("content-type", "application/json")],
        n.body.as_ref().clone(),
    )
        .into_response()
}

/// Nodes on 127.0.0.{first..first+count}:port answering after `delay`, and an
/// axon listing them; returns (axon address, evidence port, hit counts).
fn responder(
    rt: &tokio::runtime::Runtime,
    first: u8,
    count: u8,
    delay: Duration,
) -> (SocketAddr, u16, Arc<Mutex<HashMap<IpAddr, u32>>>) {
    let body = Arc::new(canned_bundle());
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let port = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, first), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut list = Vec::new();
    for i in 0..count {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, first + i));
        list.push(serde_json::json!({"ip": ip.to_string(), "price": 100}));
        let node = Node {
            ip,
            delay,
            body: body.clone(),
            hits: hits.clone(),
        };
        let app = Router::new()
            .route("/api/v1/evidence", post(evidence))
            .with_state(node);
        let l = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::new(ip, port)))
            .unwrap();
        rt.spawn(async move { axum::serve(l, app).await });
    }
    let list = serde_json::to_vec(&list).unwrap();
    let axon = Router::new().route("/cvm", get(move || async move { list.clone() }));
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let axon_addr = l.local_addr().unwrap();
    rt.spawn(async move { axum::serve(l, axon).await });
    (axon_addr, port, hits)
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tvm-verifier"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tvm-verifier starts")
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_killed_validator_resumes_its_round_without_losing_a_verdict() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    const NODES: u8 = 10;
    let (axon, port, hits) = responder(&rt, 40, NODES, Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    tvm_sim::intel::SimIntel::generate()
        .unwrap()
        .save(&sim)
        .unwrap();
    let db_path = dir.path().join("validator.db");
    let weights = dir.path().join("weights.json");
    let config = dir.path().join("validator.yaml");
    // The responder speaks plain HTTP: without this the validator would not
    // ask it at all (RA-TLS only), and no verdict would be made.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "dangerous_allow_plain_http: true\n").unwrap();
    let miner = Hotkey::from_uri("//Miner1").unwrap().account_id().to_ss58();
    std::fs::write(
        &config,
        format!(
            r#"hotkey_phrase: "//Validator"
policy: "{policy}"
miners:
  - uid: 1
    hotkey: "{miner}"
    axon: "{axon}"
# One epoch for the next century: the restart lands in the same epoch.
epoch_seconds: 4000000000
poll_seconds: 1
weights_file: "{weights}"
database: "{db}"
status_listen: null
evidence_ports: [{port}]
concurrency: 1
node_timeout_seconds: 5
retries: 0
dangerous_allow_private_addresses: true
dangerous_simulated_pcs: "{sim}"
"#,
            weights = weights.display(),
            db = db_path.display(),
            sim = sim.display(),
            policy = policy.display(),
        ),
    )
    .unwrap();

    let mut child = start(&config);
    let db = {
        let mut db = None;
        wait_for("the database", Duration::from_secs(30), || {
            db = db_path.exists().then(|| Db::open(&db_path).ok()).flatten();
            db.is_some()
        });
        db.unwrap()
    };
    let finished = |db: &Db| -> Vec<(u16, String, String)> {
        match db.rounds(1).unwrap().first() {
            Some(r) => db.finished_nodes(r.id).unwrap(),
            None => Vec::new(),
        }
    };
    wait_for("three verdicts", Duration::from_secs(60), || {
        finished(&db).len() >= 3
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = finished(&db);
    assert!(
        before.len() < usize::from(NODES),
        "killed mid-round: {} of {NODES} done",
        before.len()
    );
    assert!(
        db.last_finished().unwrap().is_none(),
        "the round was not finished"
    );
    assert!(!weights.exists(), "no weights before the round finishes");

    let mut child = start(&config);
    wait_for("the round to finish", Duration::from_secs(60), || {
        db.last_finished().unwrap().is_some()
    });
    child.kill().unwrap();
    child.wait().unwrap();

    let rounds = db.rounds(10).unwrap();
    assert_eq!(rounds.len(), 1, "one round: {rounds:?}");
    let after = finished(&db);
    assert_eq!(after.len(), usize::from(NODES));
    for v in &before {
        assert!(
            after.contains(v),
            "the verdict for {} was lost or redone",
            v.1
        );
    }
    // Real hardware claimed, simulated collateral: each rejected by name.
    for (_, _, report) in &after {
        assert!(
            report.contains("\"tee.collateral\",\"status\":\"fail\""),
            "{report}"
        );
    }
    // Each node attested once; only the one in flight at the kill twice.
    let hits = hits.lock().unwrap();
    let twice: Vec<_> = hits.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(hits.len(), usize::from(NODES), "{hits:?}");
    assert!(twice.len() <= 1, "{hits:?}");
    for (ip, _) in &twice {
        assert!(!before.iter().any(|b| b.1 == ip.to_string()));
    }
    let w: serde_json::Value = serde_json::from_slice(&std::fs::read(&weights).unwrap()).unwrap();
    assert_eq!(w["epoch"], rounds[0].epoch);
    // Every node rejected: everything to the burn uid.
    assert_eq!(
        w["weights"],
        serde_json::json!([{"uid": 0, "weight": 65535}])
    );
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tvm-verifier"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_every_check_and_exits_by_the_verdict() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, port, hits) = responder(&rt, 60, 1, Duration::ZERO);
    let miner = Hotkey::from_uri("//Miner1").unwrap().account_id().to_ss58();
    let collateral = td("tdx/dcapqvl_tdx_quote_v4_collateral.json");
    let node = format!("http://127.0.0.60:{port}");
    // At a time the collateral is fresh (not today: it expired in 2025).
    let (code, out, err) = check(&[
        &node,
        "--miner-hotkey",
        &miner,
        "--collateral",
        collateral.to_str().unwrap(),
        "--at",
        "2025-07-04T10:16:31Z",
    ]);
    assert_eq!(code, 1, "rejected: {out}{err}");
    assert!(err.contains("(plain HTTP)"), "{err}");
    assert!(out.contains("REJECTED"), "{out}");
    // The quote is genuine; its report_data is not for our nonce.
    assert!(out.contains("PASS  collateral.fresh"), "{out}");
    assert!(out.contains("PASS  quote.signature"), "{out}");
    assert!(out.contains("FAIL  report_data"), "{out}");
    assert_eq!(hits.lock().unwrap().len(), 1);

    let (code, out, _) = check(&[
        &node,
        "--miner-hotkey",
        &miner,
        "--collateral",
        collateral.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], false);

    // Nothing listening: exit 2, and says so.
    let (code, _, err) = check(&[
        &format!("127.0.0.61:{port}"),
        "--miner-hotkey",
        &miner,
        "--collateral",
        collateral.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // A bad hotkey is refused before anything is sent.
    let (code, _, err) = check(&[&node, "--miner-hotkey", "not-ss58"]);
    assert_eq!(code, 2);
    assert!(err.contains("--miner-hotkey"), "{err}");
}
