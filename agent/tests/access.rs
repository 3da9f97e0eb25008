//! Access control over real sockets: every refusal gets its status and
//! produces no evidence; a flooding signer is limited while another is served.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tvm_agent::config::{Allow, Config, GpuChoice, TeeChoice};
use tvm_agent::{Agent, Running};
use tvm_protocol::epistula::{self, SignedHeaders};
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_protocol::nonce::Nonce;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn key(uri: &str) -> Hotkey {
    Hotkey::from_uri(uri).unwrap()
}

fn config(sim_dir: &Path, allowlist: Option<&Path>) -> Config {
    let mut c = Config {
        hotkey: key("//Miner").account_id().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    c.sim.dir = sim_dir.to_path_buf();
    c.sim.gpus = 1;
    c.access.per_signer_burst = 5;
    c.access.per_signer_per_minute = 6;
    match allowlist {
        Some(p) => {
            c.access.allow = Allow::Allowlist;
            c.access.allowlist = Some(p.to_path_buf());
        }
        None => c.access.allow = Allow::AnySigner,
    }
    c
}

struct Fixture {
    _dir: tempfile::TempDir,
    agent: Running,
    http: reqwest::Client,
    miner: AccountId,
    allowlist: std::path::PathBuf,
}

async fn start(with_allowlist: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("validators.txt");
    std::fs::write(
        &allowlist,
        format!(
            "# test validators\n{}\n",
            key("//Alice").account_id().to_ss58()
        ),
    )
    .unwrap();
    let cfg = config(
        &dir.path().join("sim"),
        with_allowlist.then_some(allowlist.as_path()),
    );
    let agent = Agent::build(&cfg).unwrap().start_local().unwrap();
    Fixture {
        _dir: dir,
        agent,
        http: client(),
        miner: key("//Miner").account_id(),
        allowlist,
    }
}

/// An evidence request whose nonce `who` made (Targon's layout).
fn body(who: &str) -> Vec<u8> {
    format!(
        r#"{{"nonce":"{}"}}"#,
        Nonce::generate(&key(who).account_id())
    )
    .into_bytes()
}

impl Fixture {
    async fn post(&self, body: &[u8], headers: Option<SignedHeaders>) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("http://{}/api/v1/evidence", self.agent.http))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(h) = headers {
            for (k, v) in h.to_pairs() {
                req = req.header(k, v);
            }
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn sign(&self, who: &str, body: &[u8], at_ms: u64) -> SignedHeaders {
        epistula::sign(&key(who), body, Some(&self.miner), at_ms)
    }

    async fn evidence_produced(&self) -> u64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.agent.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("tvm_agent_evidence_total{result=\"ok\"} "))
            .unwrap()
            .parse()
            .unwrap()
    }
}

#[tokio::test]
async fn every_refusal_has_its_status_and_produces_nothing() {
    let f = start(true).await;
    let body = &body("//Alice")[..];

    let (s, msg) = f.post(body, None).await;
    assert_eq!(s, 401, "unsigned: {msg}");
    assert!(msg.contains("missing header"), "{msg}");

    let other = key("//Other").account_id();
    let h = epistula::sign(&key("//Alice"), body, Some(&other), now_ms());
    let (s, msg) = f.post(body, Some(h)).await;
    assert_eq!(s, 401, "wrong signed_for: {msg}");
    assert!(msg.contains("meant for someone else"), "{msg}");

    let (s, msg) = f
        .post(body, Some(f.sign("//Alice", body, now_ms() - 9_000)))
        .await;
    assert_eq!(s, 401, "stale: {msg}");
    assert!(msg.contains("old"), "{msg}");

    let (s, msg) = f
        .post(body, Some(f.sign("//Alice", body, now_ms() + 9_000)))
        .await;
    assert_eq!(s, 401, "future: {msg}");
    assert!(msg.contains("future"), "{msg}");

    let mut h = f.sign("//Alice", body, now_ms());
    h.signature[5] ^= 1;
    let (s, msg) = f.post(body, Some(h)).await;
    assert_eq!(s, 401, "bad signature: {msg}");

    // Signed over other bytes than those sent.
    let h = f.sign("//Alice", b"{}", now_ms());
    assert_eq!(f.post(body, Some(h)).await.0, 401);

    let bob = &self::body("//Bob")[..];
    let (s, msg) = f.post(bob, Some(f.sign("//Bob", bob, now_ms()))).await;
    assert_eq!(s, 403, "not allowlisted: {msg}");
    assert!(msg.contains("allowlist"), "{msg}");

    let big = vec![b' '; 4096];
    let (s, msg) = f.post(&big, Some(f.sign("//Alice", &big, now_ms()))).await;
    assert_eq!(s, 413, "oversized: {msg}");

    assert_eq!(
        f.evidence_produced().await,
        0,
        "a refused request produced evidence"
    );

    // The same request, once: accepted, then refused as a replay.
    let h = f.sign("//Alice", body, now_ms());
    let (s, msg) = f.post(body, Some(h.clone())).await;
    assert_eq!(s, 200, "{msg}");
    let (s, msg) = f.post(body, Some(h)).await;
    assert_eq!(s, 401, "replayed: {msg}");
    assert!(msg.contains("replay"), "{msg}");
    assert_eq!(f.evidence_produced().await, 1);

    // A signed but malformed request.
    let bad = br#"{"nonce":"zz"}"#;
    assert_eq!(
        f.post(bad, Some(f.sign("//Alice", bad, now_ms()))).await.0,
        400
    );

    // Another validator's nonce, signed by Alice: a relay of someone else's
    // challenge. Refused before any hardware is asked.
    let relayed = &self::body("//Bob")[..];
    let (s, msg) = f
        .post(relayed, Some(f.sign("//Alice", relayed, now_ms())))
        .await;
    assert_eq!(s, 400, "foreign nonce: {msg}");
    assert!(msg.contains("not made by its signer"), "{msg}");
    assert_eq!(f.evidence_produced().await, 1);
}

#[tokio::test]
async fn allowlist_is_reloaded_when_the_file_changes() {
    let f = start(true).await;
    let body = &body("//Bob")[..];
    assert_eq!(
        f.post(body, Some(f.sign("//Bob", body, now_ms()))).await.0,
        403
    );
    // A new mtime even on coarse file systems.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = format!(
        "{}\n{}\n",
        key("//Alice").account_id().to_ss58(),
        key("//Bob").account_id().to_ss58()
    );
    std::fs::write(&f.allowlist, text).unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&f.allowlist)
        .unwrap();
    file.set_modified(SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    assert!(f.agent.state.access.reload().unwrap(), "change not noticed");
    assert_eq!(
        f.post(body, Some(f.sign("//Bob", body, now_ms()))).await.0,
        200
    );
    // A broken file keeps the last good list.
    std::fs::write(&f.allowlist, "not a hotkey\n").unwrap();
    file.set_modified(SystemTime::now() + std::time::Duration::from_secs(2))
        .unwrap();
    assert!(f.agent.state.access.reload().is_err());
    let again = &self::body("//Bob")[..];
    assert_eq!(
        f.post(again, Some(f.sign("//Bob", again, now_ms())))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_flood_from_one_signer_is_limited_while_another_is_served() {
    let f = start(false).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let body = body("//Flooder");
        statuses.push(
            f.post(&body, Some(f.sign("//Flooder", &body, now_ms())))
                .await
                .0,
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (5..=6).contains(&ok),
        "burst of 5 (+ at most one refill): {statuses:?}"
    );
    assert_eq!(ok + limited, 12, "{statuses:?}");
    let patient = body("//Patient");
    let (s, msg) = f
        .post(&patient, Some(f.sign("//Patient", &patient, now_ms())))
        .await;
    assert_eq!(s, 200, "another signer must still be served: {msg}");
    // The health check needs no signature; the main (RA-TLS) port also
    // answers plain HTTP, as Targon's validators speak it.
    let r = f
        .http
        .get(format!("http://{}/health", f.agent.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let j: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(j["simulated"], true);
}

#[tokio::test]
async fn a_full_queue_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("sim"), None);
    cfg.access.max_concurrent_evidence = 1;
    cfg.access.max_queued_evidence = 0;
    cfg.access.per_signer_burst = 50;
    cfg.sim.gpu_latency_ms = 300;
    let agent = Agent::build(&cfg).unwrap().start_local().unwrap();
    let miner = key("//Miner").account_id();
    let http = client();
    let send = |who: &'static str| {
        let http = http.clone();
        let url = format!("http://{}/api/v1/evidence", agent.http);
        async move {
            let body = body(who);
            let h = epistula::sign(&key(who), &body, Some(&miner), now_ms());
            let mut req = http.post(url).body(body);
            for (k, v) in h.to_pairs() {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let (a, b, c) = tokio::join!(send("//A"), send("//B"), send("//C"));
    let mut s = [a, b, c];
    s.sort();
    assert_eq!(s[0], 200, "{s:?}");
    assert!(
        s.contains(&503),
        "one slot, no queue: the others must get 503: {s:?}"
    );
}

#[tokio::test]
async fn a_caller_that_hangs_up_gives_its_place_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("sim"), None);
    cfg.access.max_concurrent_evidence = 1;
    cfg.access.max_queued_evidence = 0;
    // Far longer than the callers wait, however loaded the machine.
    cfg.sim.gpu_latency_ms = 2_000;
    let agent = Agent::build(&cfg).unwrap().start_local().unwrap();
    let miner = key("//Miner").account_id();
    let url = format!("http://{}/api/v1/evidence", agent.http);
    let state = agent.state.clone();
    let post = |timeout_ms: u64, who: &'static str| {
        let (url, http) = (url.clone(), client());
        async move {
            let body = body(who);
            let h = epistula::sign(&key(who), &body, Some(&miner), now_ms());
            let mut req = http
                .post(url)
                .body(body)
                .timeout(std::time::Duration::from_millis(timeout_ms));
            for (k, v) in h.to_pairs() {
                req = req.header(k, v);
            }
            req.send().await.map(|r| r.status().as_u16())
        }
    };
    // Events, not sleeps: wait (generously) until the agent shows the state.
    let until = |what: &'static str, want: fn((usize, usize)) -> bool| {
        let state = state.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !want(state.evidence_load()) {
                assert!(std::time::Instant::now() < deadline, "never {what}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    // Three callers give up while the hardware is still working for them.
    for who in ["//A", "//B", "//C"] {
        assert!(post(1_000, who).await.is_err(), "{who} was answered");
        until("gave the place and the slot back", |(queued, free)| {
            queued == 0 && free == 1
        })
        .await;
    }
    assert_eq!(
        post(60_000, "//D").await.unwrap(),
        200,
        "places leaked by callers that hung up"
    );
}
