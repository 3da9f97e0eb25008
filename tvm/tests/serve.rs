//! `tvm serve` against the loopback test chain: Targon's statuses for each
//! kind of caller, the list for a staked validator, the axon announced.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tvm::serve::{run, Axon, ServeConfig};
use tvm_chain::testchain::rules::Fixture;
use tvm_chain::testchain::server::TestChain;
use tvm_protocol::epistula;
use tvm_protocol::keys::Hotkey;
use tvm_protocol::nodes::{parse_node_list, NodeEntry};

const FIXTURE: &str = r#"
netuid: 4
neurons:
  - hotkey: "//Validator"
    stake: 5000
    validator_permit: true
  - hotkey: "//Poor"
    stake: 10
    validator_permit: true
  - hotkey: "//NoPermit"
    stake: 5000
  - hotkey: "//Miner"
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(http: &reqwest::Client, url: &str, signer: Option<&str>) -> (u16, String) {
    let mut req = http.get(url);
    if let Some(who) = signer {
        let miner = Hotkey::from_uri("//Miner").unwrap().account_id();
        let h = epistula::sign(&Hotkey::from_uri(who).unwrap(), b"", Some(&miner), now_ms());
        for (k, v) in h.to_pairs() {
            req = req.header(k, v);
        }
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvm_answers_each_caller_as_targon_does_and_the_axon_is_announced() {
    let chain = TestChain::start(
        Fixture::from_yaml(FIXTURE).unwrap(),
        tvm_chain::metadata::FINNEY,
        0,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ServeConfig {
        hotkey_phrase: Some("//Miner".into()),
        nodes: vec![NodeEntry {
            ip: "10.0.0.1".into(),
            price: Some(250),
        }],
        port,
        listen_ip: "127.0.0.1".parse().unwrap(),
        chain_endpoint: chain.url(),
        external_ip: Some("127.0.0.1".parse().unwrap()),
        refresh_seconds: 1,
        ..ServeConfig::default()
    };
    let serve = tokio::spawn(run(cfg));
    let http = client();
    let url = format!("http://127.0.0.1:{port}/cvm");
    // Wait until the metagraph is in (500 "Still starting up..." until then).
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().as_u16() != 500 {
                ready = true;
                break;
            }
            assert_eq!(r.text().await.unwrap(), "Still starting up...");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "tvm serve never read the metagraph");

    assert_eq!(
        get(&http, &url, None).await,
        (403, "Invalid Signature".into())
    );
    assert_eq!(
        get(&http, &url, Some("//Stranger")).await,
        (403, "Not valid signer".into())
    );
    assert_eq!(
        get(&http, &url, Some("//NoPermit")).await,
        (403, "No VPermit".into())
    );
    assert_eq!(
        get(&http, &url, Some("//Poor")).await,
        (403, "Stake too low".into())
    );
    let (s, body) = get(&http, &url, Some("//Validator")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        parse_node_list(body.as_bytes()).unwrap(),
        vec![NodeEntry {
            ip: "10.0.0.1".into(),
            price: Some(250)
        }]
    );
    assert_eq!(body, r#"[{"ip":"10.0.0.1","price":250}]"#);
    let (s, body) = get(&http, &format!("http://127.0.0.1:{port}/"), None).await;
    assert_eq!((s, body.as_str()), (200, "PONG"));

    // The axon reached the chain.
    let c = tvm_chain::client::Client::connect(&chain.url())
        .await
        .unwrap();
    let mut announced = false;
    for _ in 0..100 {
        let ns = c.neurons(4).await.unwrap();
        if ns[3].axon == Some(("127.0.0.1".parse().unwrap(), port)) {
            announced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(announced, "serve_axon did not land");
    serve.abort();
    chain.stop();
}

#[tokio::test]
async fn starting_up_and_the_legacy_list() {
    let miner = Hotkey::from_uri("//Miner").unwrap().account_id();
    let nodes = vec![
        NodeEntry {
            ip: "10.0.0.1".into(),
            price: Some(5),
        },
        NodeEntry {
            ip: "10.0.0.2".into(),
            price: None,
        },
    ];
    let axon = Arc::new(Axon::new(miner, nodes, 1000.0, true));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cvm", l.local_addr().unwrap());
    let app = axon.clone().router();
    tokio::spawn(async move { axum::serve(l, app).await });
    let http = client();
    assert_eq!(
        get(&http, &url, Some("//Validator")).await,
        (500, "Still starting up...".into())
    );
    let validator = tvm_chain::neurons::Neuron {
        uid: 0,
        hotkey: Hotkey::from_uri("//Validator").unwrap().account_id(),
        coldkey: miner,
        axon: None,
        validator_permit: true,
        stake: 2_000_000_000_000,
        last_update: 0,
    };
    axon.set_metagraph(&[validator]);
    assert_eq!(
        get(&http, &url, Some("//Validator")).await,
        (200, r#"["10.0.0.1","10.0.0.2"]"#.into())
    );
}
