//! The test chain over loopback, driven through subxt's own RPC layer: what
//! it serves decodes with the real metadata, and the extrinsics our client
//! signs are checked and applied by subtensor's rules.

use std::time::Duration;

use subxt::config::RpcConfigFor;
use subxt::rpcs::{LegacyRpcMethods, RpcClient};
use subxt::SubstrateConfig;
use tvm_chain::calls::{Call, SetWeights};
use tvm_chain::extrinsic::{sign, Mortality, TxParams};
use tvm_chain::hyperparams::{Hyperparams, Item};
use tvm_chain::testchain::rules::{DispatchError, Fixture};
use tvm_chain::testchain::server::{TestChain, BANNER};
use tvm_protocol::keys::Hotkey;

const FIXTURE: &str = r#"
netuid: 4
weights_rate_limit: 100
weights_version_key: 7
neurons:
  - hotkey: "//Validator"
    stake: 5000
    validator_permit: true
  - hotkey: "//Miner1"
    axon: 127.0.0.1:7777
  - hotkey: "//Miner2"
"#;

async fn wait_for(chain: &TestChain, tx: &[u8; 32]) -> tvm_chain::testchain::server::Outcome {
    for _ in 0..100 {
        if let Some(o) = chain.outcome(tx) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("extrinsic never included");
}

#[tokio::test]
async fn serves_the_metagraph_and_applies_signed_weights() {
    let chain = TestChain::start(
        Fixture::from_yaml(FIXTURE).unwrap(),
        tvm_chain::metadata::FINNEY,
        0,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let rpc = LegacyRpcMethods::<RpcConfigFor<SubstrateConfig>>::new(
        RpcClient::from_insecure_url(chain.url()).await.unwrap(),
    );
    assert_eq!(rpc.system_chain().await.unwrap(), BANNER);

    let md_bytes = rpc.state_get_metadata(None).await.unwrap();
    let md = tvm_chain::metadata::decode(&md_bytes.into_raw()).unwrap();
    let rv = rpc.state_get_runtime_version(None).await.unwrap();
    assert_eq!(rv.spec_version, chain.chain_state().spec_version);
    let genesis = rpc.genesis_hash().await.unwrap();
    assert_eq!(genesis.0, chain.chain_state().genesis_hash);

    let raw = rpc
        .state_call(
            "NeuronInfoRuntimeApi_get_neurons_lite",
            Some(&tvm_chain::neurons::request(4)),
            None,
        )
        .await
        .unwrap();
    let neurons = tvm_chain::neurons::decode(&raw).unwrap();
    assert_eq!(neurons.len(), 3);
    assert!(neurons[0].validator_permit);
    assert_eq!(neurons[1].axon, Some(("127.0.0.1".parse().unwrap(), 7777)));

    let mut stored = Vec::new();
    for item in Item::ALL {
        let key = tvm_chain::hyperparams::storage_key(&md, item, 4).unwrap();
        stored.push(rpc.state_get_storage(&key, None).await.unwrap());
    }
    let h = Hyperparams::from_storage(
        &md,
        [
            stored[0].as_deref(),
            stored[1].as_deref(),
            stored[2].as_deref(),
            stored[3].as_deref(),
            stored[4].as_deref(),
        ],
    )
    .unwrap();
    assert_eq!(
        (h.weights_version_key, h.weights_rate_limit, h.commit_reveal),
        (7, 100, false)
    );

    // A signed set_weights lands; a second inside the rate limit is refused by name.
    let validator = Hotkey::from_uri("//Validator").unwrap();
    let state = chain.chain_state();
    let call = SetWeights {
        netuid: 4,
        dests: vec![1, 2],
        weights: vec![65535, 32768],
        version_key: 7,
    }
    .call_data(&md)
    .unwrap();
    let nonce = rpc
        .system_account_next_index(&subxt::utils::AccountId32(validator.account_id().0))
        .await
        .unwrap();
    let p = TxParams {
        nonce,
        tip: 0,
        mortality: Mortality::Immortal,
    };
    let tx = rpc
        .author_submit_extrinsic(&sign(&md, &state, &p, &call, &validator).unwrap())
        .await
        .unwrap();
    let o = wait_for(&chain, &tx.0).await;
    assert_eq!(o.result, Ok(()));
    assert_eq!(chain.weights()[&0], vec![(1, 65535), (2, 32768)]);

    let p = TxParams {
        nonce: nonce + 1,
        ..p
    };
    let tx = rpc
        .author_submit_extrinsic(&sign(&md, &state, &p, &call, &validator).unwrap())
        .await
        .unwrap();
    assert_eq!(
        wait_for(&chain, &tx.0).await.result,
        Err(DispatchError("SettingWeightsTooFast"))
    );

    // A replayed nonce, a bad signature: refused at submission.
    let e = rpc
        .author_submit_extrinsic(&sign(&md, &state, &p, &call, &validator).unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outdated"), "{e}");
    let mut bad = sign(
        &md,
        &state,
        &TxParams {
            nonce: nonce + 2,
            ..p
        },
        &call,
        &validator,
    )
    .unwrap();
    let last = bad.len() - 20;
    bad[last] ^= 1;
    let e = rpc.author_submit_extrinsic(&bad).await.unwrap_err();
    assert!(e.to_string().contains("Invalid Transaction"), "{e}");
    chain.stop();
}

#[tokio::test]
async fn the_client_reads_sets_weights_and_refuses_commit_reveal() {
    let chain = TestChain::start(
        Fixture::from_yaml(FIXTURE).unwrap(),
        tvm_chain::metadata::FINNEY,
        0,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let c = tvm_chain::client::Client::connect(&chain.url())
        .await
        .unwrap();
    assert_eq!(c.chain_state(), chain.chain_state());
    let ns = c.neurons(4).await.unwrap();
    assert_eq!(ns.len(), 3);
    assert_eq!(
        ns[0].hotkey,
        Hotkey::from_uri("//Validator").unwrap().account_id()
    );
    assert_eq!(c.hyperparams(4).await.unwrap().weights_version_key, 7);

    // A mortal transaction, signed against the live head, lands; the
    // chain's refusals come back by name, read from the block's events.
    let validator = Hotkey::from_uri("//Validator").unwrap();
    let w = |version_key| SetWeights {
        netuid: 4,
        dests: vec![1],
        weights: vec![65535],
        version_key,
    };
    let included = c.set_weights(&validator, w(7)).await.unwrap();
    assert_ne!(included.block_hash, [0; 32]);
    assert_eq!(chain.weights()[&0], vec![(1, 65535)]);
    let e = c.set_weights(&validator, w(7)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the chain refused set_weights: SubtensorModule.SettingWeightsTooFast"
    );
    let e = c.set_weights(&validator, w(6)).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("SubtensorModule.IncorrectWeightVersionKey"),
        "{e}"
    );
    let miner = Hotkey::from_uri("//Miner2").unwrap();
    let e = c.set_weights(&miner, w(7)).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("SubtensorModule.NeuronNoValidatorPermit"),
        "{e}"
    );
    let axon = tvm_chain::calls::ServeAxon {
        netuid: 4,
        version: 1,
        ip: 0x7f00_0001,
        port: 7777,
        ip_type: 4,
        protocol: 4,
        placeholder1: 0,
        placeholder2: 0,
    };
    c.serve_axon(&miner, axon).await.unwrap();
    let ns = c.neurons(4).await.unwrap();
    assert_eq!(ns[2].axon, Some(("127.0.0.1".parse().unwrap(), 7777)));
    chain.stop();

    // Commit-reveal on: a clear error, and nothing is sent.
    let mut f = Fixture::from_yaml(FIXTURE).unwrap();
    f.commit_reveal = true;
    let chain = TestChain::start(f, tvm_chain::metadata::FINNEY, 0, Duration::from_millis(50))
        .await
        .unwrap();
    let c = tvm_chain::client::Client::connect(&chain.url())
        .await
        .unwrap();
    let e = c
        .set_weights(
            &validator,
            SetWeights {
                netuid: 4,
                dests: vec![1],
                weights: vec![1],
                version_key: 7,
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("commit-reveal is enabled"), "{e}");
    assert_eq!(
        c.nonce(&validator.account_id()).await.unwrap(),
        0,
        "something was sent"
    );
    chain.stop();

    let e = tvm_chain::client::Client::connect("ws://127.0.0.1:9")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("cannot reach the chain"), "{e}");
}

#[tokio::test]
async fn the_client_waits_for_a_chain_that_starts_late_and_follows_its_blocks() {
    use futures_util::StreamExt;
    // Reserve a port, then start the chain on it a little later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        TestChain::start(
            Fixture::from_yaml(FIXTURE).unwrap(),
            tvm_chain::metadata::FINNEY,
            port,
            Duration::from_millis(50),
        )
        .await
        .unwrap()
    });
    let mut retries = 0;
    let c =
        tvm_chain::client::Client::connect_with_backoff(&url, Duration::from_secs(20), |_, _| {
            retries += 1
        })
        .await
        .unwrap();
    assert!(retries >= 1, "connected before the chain started?");
    let chain = starter.await.unwrap();
    let mut blocks = c.new_blocks().await.unwrap();
    let a = blocks.next().await.unwrap().unwrap();
    let b = blocks.next().await.unwrap().unwrap();
    assert_eq!(b, a + 1);
    chain.stop();
    let e = tvm_chain::client::Client::connect_with_backoff(
        "ws://127.0.0.1:9",
        Duration::from_millis(10),
        |_, _| {},
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("cannot reach"), "{e}");
}
