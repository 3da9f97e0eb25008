//! The v5 phase over real sockets: agents whose sealed runtime is the toy
//! model, asked by the validator's v5 module. Inference is taken only from
//! the CVM whose key the round attested: a node whose answers come under
//! another key (another machine, a proxy that terminates TLS) earns nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tvm_agent::{Agent, Running};
use tvm_e2e::{free_port, key, validator_attester};
use tvm_validator::scoring::NodeResult;
use tvm_validator::v5::{ReferenceConfig, V5Config, V5};

const MODEL: &str = tvm::devnet::TOY_MODEL;
const MINER: &str = "//Miner1";

async fn toy(behaviour: tvm_inference::server::Behaviour) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let cfg = tvm_inference::server::ToyConfig {
        behaviour,
        per_token: Duration::from_millis(1),
        ..tvm_inference::server::ToyConfig::honest(&[MODEL])
    };
    tokio::spawn(tvm_inference::server::serve(l, cfg));
    url
}

fn serving_agent(sim: &std::path::Path, upstream: &str, last: u8) -> Running {
    let cfg = tvm::devnet::serving_config(sim, MINER, 1, upstream, MODEL).unwrap();
    let ip = [127, 0, 0, last];
    let at = SocketAddr::from((ip, free_port(ip).unwrap()));
    Agent::build(&cfg).unwrap().start_at(at).unwrap()
}

fn node(at: &Running, cvm: &[u8; 32]) -> NodeResult {
    NodeResult {
        miner_uid: 2,
        miner_hotkey: key(MINER).unwrap().account_id().to_ss58(),
        node: at.https.ip().to_string(),
        accepted: Some(true),
        cvm_id: Some(hex::encode(cvm)),
        gpus: vec![],
        bid: None,
        simulated: true,
        reasons: vec![],
    }
}

fn v5() -> V5 {
    V5::new(V5Config::toy(MODEL, 3)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn inference_counts_only_from_the_attested_cvm() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    tvm_agent::backend::sim::init(&sim).unwrap();
    let honest = toy(tvm_inference::server::Behaviour::Honest).await;
    let a = serving_agent(&sim, &honest, 61);
    let b = serving_agent(&sim, &honest, 62);

    // Answers from the attested CVM are checked and scored.
    let att = validator_attester(a.https.port()).unwrap();
    let v = v5();
    let found = v.probe(&att, &[node(&a, &a.tls_spki_sha256)], 1).await;
    assert_eq!(found.answers.len(), 3, "{found:?}");
    assert!(found.answers.iter().all(|x| x.verified), "{found:?}");
    assert!(found.scores[&2] > 0.0, "{found:?}");
    // Rounds in which the node is not asked (not accepted, or serving no
    // more) count against it: an old window does not keep paying.
    let later = v.probe(&att, &[], 2).await;
    assert!(
        later.reasons[&2].contains("not asked this round"),
        "{later:?}"
    );
    assert!(later.scores[&2] < found.scores[&2], "{later:?}");
    let later = v.probe(&att, &[], 3).await;
    assert_eq!(later.scores[&2], 0.0, "{later:?}");

    // The same node listed with the CVM id the round attested, but its
    // inference answered by another CVM (another key): nothing is asked of
    // it, nothing is scored.
    let att_b = validator_attester(b.https.port()).unwrap();
    let v = v5();
    let mut moved = node(&a, &a.tls_spki_sha256);
    moved.node = b.https.ip().to_string();
    let found = v.probe(&att_b, &[moved], 1).await;
    assert!(found.answers.is_empty(), "{found:?}");
    assert!(found.scores.is_empty(), "{found:?}");
    let e = att_b
        .inference(
            &b.https.ip().to_string(),
            &key(MINER).unwrap().account_id(),
            "/v1/models",
            None,
            &hex::encode(a.tls_spki_sha256),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the attested CVM key"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_model_earns_no_v5_and_the_reason_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    tvm_agent::backend::sim::init(&sim).unwrap();
    let impostor = toy(tvm_inference::server::Behaviour::OtherModel(
        "toy/impostor".into(),
    ))
    .await;
    let a = serving_agent(&sim, &impostor, 63);
    let att = validator_attester(a.https.port()).unwrap();
    let v = v5();
    let found = v.probe(&att, &[node(&a, &a.tls_spki_sha256)], 1).await;
    assert_eq!(found.answers.len(), 3, "{found:?}");
    assert!(
        found.answers.iter().filter(|x| !x.verified).count() >= 2,
        "{found:?}"
    );
    assert_eq!(found.scores[&2], 0.0);
    assert!(
        found.reasons[&2].contains("failed (last: v5."),
        "{}",
        found.reasons[&2]
    );
}

/// The reference as a server (vLLM's `prompt_logprobs` on a chat with the
/// answer continued), here the toy model's own server: an honest answer
/// passes, an impostor's fails, as with the built-in reference.
#[tokio::test(flavor = "multi_thread")]
async fn a_reference_server_scores_answers_as_the_built_in_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    tvm_agent::backend::sim::init(&sim).unwrap();
    let reference = toy(tvm_inference::server::Behaviour::Honest).await;
    let honest = toy(tvm_inference::server::Behaviour::Honest).await;
    let impostor = toy(tvm_inference::server::Behaviour::OtherModel(
        "toy/impostor".into(),
    ))
    .await;
    // `one_in`: one request in this many to /v1/completions (1: all).
    let remote = |one_in: u64| {
        let mut cfg = V5Config::toy(MODEL, 4);
        cfg.requests.completion_one_in = one_in;
        if let Some(m) = cfg.models.get_mut(MODEL) {
            m.reference = ReferenceConfig::Openai {
                url: reference.clone(),
                eos: tvm_inference::toy::EOS.into(),
                served_as: None,
            };
        }
        V5::new(cfg).unwrap()
    };
    let a = serving_agent(&sim, &honest, 64);
    // Every request a completion, then (all but surely) every one a chat.
    for one_in in [1, 1 << 40] {
        let found = remote(one_in)
            .probe(
                &validator_attester(a.https.port()).unwrap(),
                &[node(&a, &a.tls_spki_sha256)],
                1,
            )
            .await;
        assert_eq!(found.answers.len(), 4, "{found:?}");
        assert!(found.answers.iter().all(|x| x.verified), "{found:?}");
        assert!(found.scores[&2] > 0.0);
    }

    let b = serving_agent(&sim, &impostor, 65);
    let found = remote(3)
        .probe(
            &validator_attester(b.https.port()).unwrap(),
            &[node(&b, &b.tls_spki_sha256)],
            1,
        )
        .await;
    assert!(
        found.answers.iter().filter(|x| !x.verified).count() >= 3,
        "{found:?}"
    );
    assert_eq!(found.scores[&2], 0.0);
}
