//! A validator round over real sockets: miners' axons (`tvm serve`'s
//! handler) list SIMULATED agents on separate loopback addresses; the round
//! fetches and appraises every node and scores: the honest node counts, a
//! node listed by two miners scores zero for both, a silent node scores zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tvm_e2e::{axon, devnet_trust, free_port, key, sim_agent, unix_now, validator_attester};
use tvm_protocol::nodes::NodeEntry;
use tvm_validator::round::{self, Miner, RoundConfig};
use tvm_validator::scoring::NodeScore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_scores_honest_duplicate_and_silent_nodes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    // One port number, several loopback hosts: like CVMs on different machines.
    let port = free_port([127, 0, 0, 2]).unwrap();
    let at = |host: u8| SocketAddr::from(([127, 0, 0, host], port));
    let _a = sim_agent(&sim, "//Miner1", at(2), 2).unwrap();
    let _b = sim_agent(&sim, "//Miner2", at(3), 1).unwrap();
    let entry = |host: u8| NodeEntry {
        ip: format!("127.0.0.{host}"),
        price: Some(100),
    };
    let miners = vec![
        Miner {
            uid: 1,
            hotkey: key("//Miner1").unwrap().account_id(),
            axon: axon("//Miner1", vec![entry(2)]).await.unwrap(),
        },
        // Miner 2's honest node, and a silent one.
        Miner {
            uid: 2,
            hotkey: key("//Miner2").unwrap().account_id(),
            axon: axon("//Miner2", vec![entry(3), entry(9)]).await.unwrap(),
        },
        // Miner 3 lists miner 1's node as its own.
        Miner {
            uid: 3,
            hotkey: key("//Miner1").unwrap().account_id(),
            axon: axon("//Miner1", vec![entry(2)]).await.unwrap(),
        },
    ];
    let now = unix_now();
    let (policy, collateral) = devnet_trust(&sim).unwrap();
    let attester = validator_attester(port).unwrap();
    let cfg = RoundConfig {
        node_timeout: Duration::from_secs(10),
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
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

    let outcome = |uid: u16, host: &str| {
        report
            .scores
            .nodes
            .iter()
            .find(|(n, _)| n.miner_uid == uid && n.node == host)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    assert_eq!(outcome(2, "127.0.0.3"), NodeScore::Counted { points: 1.0 });
    assert!(
        matches!(outcome(1, "127.0.0.2"), NodeScore::Duplicate { .. }),
        "{:?}",
        outcome(1, "127.0.0.2")
    );
    assert!(matches!(
        outcome(3, "127.0.0.2"),
        NodeScore::Duplicate { .. }
    ));
    assert_eq!(outcome(2, "127.0.0.9"), NodeScore::NoEvidence);
    let silent = report.nodes.iter().find(|n| n.node == "127.0.0.9").unwrap();
    assert!(
        silent
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot reach"),
        "{silent:?}"
    );
    assert_eq!(report.scores.v6, BTreeMap::from([(2, 1.0)]));
    assert_eq!(report.scores.weights, vec![(0, 19661), (2, 45874)]);
    assert!(report.miner_errors.is_empty(), "{:?}", report.miner_errors);
}

/// A node that answers with `answers` in turn (then the last one forever),
/// counting requests. `None` hangs.
async fn scripted_node(
    at: SocketAddr,
    answers: Vec<Option<(u16, &'static str)>>,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/api/v1/evidence",
        axum::routing::post(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            async move {
                match answer {
                    None => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (axum::http::StatusCode::OK, "")
                    }
                    Some((status, body)) => {
                        (axum::http::StatusCode::from_u16(status).unwrap(), body)
                    }
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(at).await.unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    count
}

/// The round's own timeout and retry path (the scale bench covers it at
/// size, but CI does not run benches): a hanging node is given up on after
/// its tries, a 503 is tried again, junk is refused without a retry; a
/// miner of hanging nodes spends its budget, not the round's; the round's
/// deadline stops what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_busy_and_junk_nodes_and_the_round_s_budgets() {
    use std::sync::atomic::Ordering;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = free_port([127, 0, 0, 60]).unwrap();
    let at = |host: u8| SocketAddr::from(([127, 0, 0, host], port));
    let _honest = sim_agent(&sim, "//Miner1", at(60), 1).unwrap();
    let hang = scripted_node(at(61), vec![None]).await;
    let busy = scripted_node(
        at(62),
        // The current version, and nothing else.
        vec![Some((503, "busy")), Some((200, "{\"version\": 3}"))],
    )
    .await;
    let junk = scripted_node(at(63), vec![Some((200, "{\"quote\": 42}"))]).await;
    // Miner 2: eight hanging nodes, more than its budget holds.
    for h in 70..78 {
        scripted_node(at(h), vec![None]).await;
    }
    let entry = |host: u8| NodeEntry {
        ip: format!("127.0.0.{host}"),
        price: None,
    };
    // Miner 2, first in the metagraph, lists only hanging nodes.
    let miners = vec![
        Miner {
            uid: 2,
            hotkey: key("//Miner2").unwrap().account_id(),
            axon: axon("//Miner2", (70..78).map(entry).collect())
                .await
                .unwrap(),
        },
        Miner {
            uid: 1,
            hotkey: key("//Miner1").unwrap().account_id(),
            axon: axon("//Miner1", vec![entry(60), entry(61), entry(62), entry(63)])
                .await
                .unwrap(),
        },
    ];
    let now = unix_now();
    let (policy, collateral) = devnet_trust(&sim).unwrap();
    let attester = validator_attester(port).unwrap();
    let cfg = RoundConfig {
        concurrency: 2,
        node_timeout: Duration::from_secs(1),
        retries: 1,
        node_deadline: Duration::from_secs(5),
        // 5 s of node time per miner: miner 1's hanging node (two tries of
        // 1 s and a pause) fits; miner 2's first hanging nodes spend its
        // budget and the rest are not attested.
        miner_budget: round::MinerBudget {
            base: Duration::from_secs(5),
            per_node: Duration::ZERO,
        },
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let validator = key("//Validator").unwrap().account_id();
    // The order nodes finish in.
    let finished = std::sync::Mutex::new(Vec::new());
    let report = round::run_resumable(
        &miners,
        &attester,
        &validator,
        &policy,
        &collateral,
        &cfg,
        now,
        Vec::new(),
        &|r, _| finished.lock().unwrap().push(r.node.clone()),
    )
    .await;
    // Interleaved: miner 1's honest node is called beside miner 2's first
    // hanging one and finishes first, not after miner 2's eight.
    assert_eq!(
        finished.lock().unwrap()[0],
        "127.0.0.60",
        "{:?}",
        finished.lock().unwrap()
    );
    let node = |host: &str| report.nodes.iter().find(|n| n.node == host).unwrap();
    let error = |host: &str| node(host).error.clone().unwrap_or_default();

    assert!(node("127.0.0.60").verdict.as_ref().unwrap().accepted());
    // Hanging: each try gets node_timeout, and both tries are said.
    assert!(
        error("127.0.0.61").contains("no evidence within 1s (tried 2 times)"),
        "{}",
        error("127.0.0.61")
    );
    assert_eq!(hang.load(Ordering::SeqCst), 2);
    // Busy, then an answer: tried again, and the answer is judged.
    assert_eq!(busy.load(Ordering::SeqCst), 2);
    assert!(
        error("127.0.0.62").contains("malformed"),
        "{}",
        error("127.0.0.62")
    );
    // Junk: refused as malformed, not tried again.
    assert!(
        error("127.0.0.63").contains("malformed"),
        "{}",
        error("127.0.0.63")
    );
    assert_eq!(junk.load(Ordering::SeqCst), 1);
    // Miner 2 spent its budget: some nodes were not attested, and say why.
    let unattested = (70..78)
        .filter(|h| error(&format!("127.0.0.{h}")).contains("time budget"))
        .count();
    assert!(unattested >= 4, "{:?}", report.nodes);
    // Miner 1's honest node was not held up by miner 2's.
    assert_eq!(report.scores.v6, BTreeMap::from([(1, 1.0)]));

    // A round deadline shorter than one hanging node: what is left is not
    // attested, and the round still scores what it has.
    let cfg = RoundConfig {
        concurrency: 1,
        round_deadline: Some(Duration::from_millis(1500)),
        miner_budget: round::MinerBudget::default(),
        ..cfg
    };
    let report = round::run(
        &miners,
        &attester,
        &validator,
        &policy,
        &collateral,
        &cfg,
        now,
    )
    .await;
    let over = report
        .nodes
        .iter()
        .filter(|n| {
            n.error
                .as_deref()
                .is_some_and(|e| e.contains("round's deadline"))
        })
        .count();
    assert!(over >= 8, "{:?}", report.nodes);
    assert_eq!(report.nodes.len(), 12);
}
