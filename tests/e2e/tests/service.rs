//! The validator's epoch end to end on loopback: the test chain's metagraph,
//! miners' axons listing SIMULATED agents, one round, weights set on the
//! chain as a signed extrinsic it accepts; the same epoch again does
//! nothing; the next epoch inside the rate limit sends nothing. With
//! commit-reveal on, weights are committed once and revealed by the chain.

use std::net::SocketAddr;
use std::time::Duration;

use tvm_chain::client::{BeaconTrust, Client};
use tvm_chain::testchain::rules::Fixture;
use tvm_chain::testchain::server::TestChain;
use tvm_e2e::{axon, devnet_trust, free_port, key, sim_agent, validator_attester};
use tvm_protocol::nodes::NodeEntry;
use tvm_validator::attest::Attester;
use tvm_validator::db::Db;
use tvm_validator::round::RoundConfig;
use tvm_validator::service::{
    resend_weights, run_epoch, EpochOutcome, Network, Service, WeightsSent,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_sets_weights_once_and_respects_the_rate_limit() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = std::net::TcpListener::bind("127.0.0.4:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _a = sim_agent(
        &sim,
        "//Miner1",
        SocketAddr::from(([127, 0, 0, 4], port)),
        1,
    )
    .unwrap();
    let entry = NodeEntry {
        ip: "127.0.0.4".into(),
        price: Some(100),
    };
    let ax1 = axon("//Miner1", vec![entry]).await.unwrap();
    // Miner 2 lists only a node that does not answer.
    let ax2 = axon(
        "//Miner2",
        vec![NodeEntry {
            ip: "127.0.0.5".into(),
            price: None,
        }],
    )
    .await
    .unwrap();
    let fixture = format!(
        r#"
netuid: 4
weights_rate_limit: 100
weights_version_key: 3
neurons:
  - hotkey: "//Validator"
    stake: 5000
    validator_permit: true
  - hotkey: "//Miner1"
    axon: {ax1}
  - hotkey: "//Miner2"
    axon: {ax2}
"#
    );
    let chain = TestChain::start(
        Fixture::from_yaml(&fixture).unwrap(),
        tvm_chain::metadata::FINNEY,
        0,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let client = Client::connect(&chain.url()).await.unwrap();
    let db = Db::open(&dir.path().join("validator.db")).unwrap();
    let (policy, collateral) = devnet_trust(&sim).unwrap();
    let mut attester = Attester::new(key("//Validator").unwrap(), Duration::from_secs(10)).unwrap();
    attester.ports = vec![port];
    let round = RoundConfig {
        node_timeout: Duration::from_secs(10),
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let validator = key("//Validator").unwrap();
    let service = Service {
        network: Network::Chain {
            client: &client,
            netuid: 4,
            version_key: 1,
            block_time: 0.05,
            beacon: BeaconTrust::DangerousChain,
        },
        db: &db,
        attester: &attester,
        validator: &validator,
        policy: &policy,
        collateral: &collateral,
        round: &round,
        v5: None,
    };

    let EpochOutcome::Done {
        report, weights, ..
    } = run_epoch(&service, 1).await.unwrap()
    else {
        panic!("the first run of an epoch must run it");
    };
    assert!(matches!(weights, WeightsSent::Landed { .. }), "{weights:?}");
    // 70 % to miner 1 (uid 1), 30 % burned to uid 0 (no v5 yet); the chain holds exactly that.
    assert_eq!(report.scores.weights, vec![(0, 19661), (1, 45874)]);
    assert_eq!(chain.weights()[&0], vec![(0, 19661), (1, 45874)]);
    assert!(report
        .nodes
        .iter()
        .any(|n| n.node == "127.0.0.5" && n.error.is_some()));

    // The same epoch again (a restart after it finished): nothing redone.
    assert!(matches!(
        run_epoch(&service, 1).await.unwrap(),
        EpochOutcome::AlreadyDone { epoch: 1 }
    ));
    // The next epoch, inside the rate limit: scored, stored, not sent. The
    // chain is held still meanwhile, so the limit cannot pass however slow
    // the machine is.
    chain.pause();
    let EpochOutcome::Done { weights, .. } = run_epoch(&service, 2).await.unwrap() else {
        panic!()
    };
    let next = match weights {
        WeightsSent::RateLimited { last, next } => {
            assert_eq!(next, last + 100);
            next
        }
        other => panic!("{other:?}"),
    };
    // Still inside the limit: nothing sent, nothing changed.
    assert_eq!(resend_weights(&service, 2).await.unwrap(), None);
    assert_eq!(client.nonce(&validator.account_id()).await.unwrap(), 1);
    assert_eq!(
        db.rounds(10)
            .unwrap()
            .iter()
            .filter(|r| r.finished_at.is_some())
            .count(),
        2
    );
    assert_eq!(
        client.nonce(&validator.account_id()).await.unwrap(),
        1,
        "exactly one extrinsic sent"
    );
    // Once the limit has passed, epoch 2's weights go out, once.
    chain.resume();
    while client.best_block().await.unwrap() < next {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = resend_weights(&service, 2).await.unwrap();
    assert!(matches!(sent, Some(WeightsSent::Landed { .. })), "{sent:?}");
    assert_eq!(client.nonce(&validator.account_id()).await.unwrap(), 2);
    assert_eq!(
        resend_weights(&service, 2).await.unwrap(),
        None,
        "landed: not again"
    );
    let stored = db.rounds(1).unwrap().remove(0);
    assert!(stored.result.unwrap().contains("\"landed\""));
    chain.stop();
}

/// Commit-reveal on: the round's weights are committed (timelocked to the
/// test beacon), a validator that lost its record of the commit (killed
/// between commit and record) commits nothing more that epoch, and the
/// chain reveals the commit itself in the next epoch, applying exactly the
/// round's weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_reveal_commits_once_and_the_chain_reveals_the_rounds_weights() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let port = free_port([127, 0, 0, 6]).unwrap();
    let _a = sim_agent(
        &sim,
        "//Miner1",
        SocketAddr::from(([127, 0, 0, 6], port)),
        1,
    )
    .unwrap();
    let entry = NodeEntry {
        ip: "127.0.0.6".into(),
        price: Some(100),
    };
    let ax1 = axon("//Miner1", vec![entry]).await.unwrap();
    // Epochs of 201 blocks of 50 ms (about 10 s, room for the round);
    // test beacon rounds of 1 s.
    let fixture = format!(
        r#"
netuid: 4
tempo: 200
commit_reveal: true
weights_rate_limit: 2
beacon_period: 1
neurons:
  - hotkey: "//Validator"
    stake: 5000
    validator_permit: true
  - hotkey: "//Miner1"
    axon: {ax1}
"#
    );
    let chain = TestChain::start(
        Fixture::from_yaml(&fixture).unwrap(),
        tvm_chain::metadata::FINNEY,
        0,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let client = Client::connect(&chain.url()).await.unwrap();
    let (policy, collateral) = devnet_trust(&sim).unwrap();
    let attester = validator_attester(port).unwrap();
    let round = RoundConfig {
        node_timeout: Duration::from_secs(10),
        dangerous_allow_private_addresses: true,
        ..RoundConfig::default()
    };
    let validator = key("//Validator").unwrap();
    let service = |db| Service {
        network: Network::Chain {
            client: &client,
            netuid: 4,
            version_key: 1,
            block_time: 0.05,
            beacon: BeaconTrust::DangerousChain,
        },
        db,
        attester: &attester,
        validator: &validator,
        policy: &policy,
        collateral: &collateral,
        round: &round,
        v5: None,
    };
    let db = Db::open(&dir.path().join("validator.db")).unwrap();
    let EpochOutcome::Done {
        report,
        mut weights,
        ..
    } = run_epoch(&service(&db), 1).await.unwrap()
    else {
        panic!("the first run of an epoch must run it");
    };
    // A round that ends in the chain epoch's last blocks is refused (its
    // drand round would be out already) and sent again, as between rounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while weights.retry() {
        assert!(std::time::Instant::now() < deadline, "{weights:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(w) = resend_weights(&service(&db), 1).await.unwrap() {
            weights = w;
        }
    }
    // Hold the chain in the commit's epoch.
    chain.pause();
    let WeightsSent::Committed {
        first_reveal_block, ..
    } = weights
    else {
        panic!("{weights:?}")
    };
    assert!(chain.weights().is_empty(), "nothing is set at commit");
    assert_eq!(chain.pending_commits(), 1);
    let (_, schedule) = client.commit_schedule(4, 0.05).await.unwrap();
    assert_eq!(
        schedule.first_reveal_block(),
        Some(first_reveal_block),
        "the round outlasted its epoch"
    );
    // A validator whose database lost the round (killed before it was
    // recorded) runs the epoch again: the chain's LastUpdate shows this
    // epoch's commit, so nothing is sent.
    let fresh = Db::open(&dir.path().join("fresh.db")).unwrap();
    let nonce = client.nonce(&validator.account_id()).await.unwrap();
    let EpochOutcome::Done { weights, .. } = run_epoch(&service(&fresh), 1).await.unwrap() else {
        panic!()
    };
    assert!(
        matches!(weights, WeightsSent::AlreadyCommitted { .. }),
        "{weights:?}"
    );
    assert_eq!(client.nonce(&validator.account_id()).await.unwrap(), nonce);
    assert_eq!(chain.pending_commits(), 1);
    chain.resume();
    // The chain reveals it in the next epoch, once the pulse is out.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while chain.reveals().is_empty() {
        assert!(std::time::Instant::now() < deadline, "not revealed in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reveals = chain.reveals();
    assert_eq!(reveals[0].result, Ok(()), "{reveals:?}");
    assert!(u64::from(chain.block()) >= first_reveal_block);
    assert_eq!(chain.weights()[&0], report.scores.weights);
    assert_eq!(
        client.weights_of(4, 0).await.unwrap(),
        report.scores.weights
    );
}
