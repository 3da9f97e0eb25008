//! A validator round over real sockets: miners' axons (`tvm serve`'s
//! handler) list SIMULATED agents on separate loopback addresses; the round
//! fetches and appraises every node and scores: the honest node counts, a
//! node listed by two miners scores zero for both, a silent node scores zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tvm_e2e::{axon, devnet_trust, key, sim_agent};
use tvm_protocol::nodes::NodeEntry;
use tvm_validator::attest::Attester;
use tvm_validator::round::{self, Miner, RoundConfig};
use tvm_validator::scoring::NodeScore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_scores_honest_duplicate_and_silent_nodes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    // One port number, several loopback hosts: like CVMs on different machines.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (policy, collateral) = devnet_trust(&sim).unwrap();
    let mut attester = Attester::new(key("//Validator").unwrap(), Duration::from_secs(10)).unwrap();
    attester.ports = vec![port];
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
