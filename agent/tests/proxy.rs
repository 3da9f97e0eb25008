//! The sealed inference proxy over real loopback sockets: tokens stream
//! through unbuffered; nothing reaches the upstream while the GPUs are not
//! ready or the caller is unsigned; upstream failures become OpenAI-style
//! errors (or pass through as the upstream wrote them); models route to their
//! own upstreams under the names those upstreams know.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use tvm_agent::auth::Access;
use tvm_agent::backend::{self, BackendError, DeviceSet, Devices, Gather, Readiness};
use tvm_agent::config::{Allow, Config, GpuChoice, ModelRoute, TeeChoice};
use tvm_agent::evidence::EvidenceSource;
use tvm_agent::proxy::Proxy;
use tvm_agent::server::{self, AppState};
use tvm_agent::{Agent, Running};
use tvm_protocol::epistula;
use tvm_protocol::evidence::Runtime;
use tvm_protocol::keys::{AccountId, Hotkey};

/// How long any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn key(uri: &str) -> Hotkey {
    Hotkey::from_uri(uri).unwrap()
}

/// A plain-HTTP test client (reqwest is built with `rustls-no-provider` in
/// this workspace, so a client needs a process-wide provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn miner() -> AccountId {
    key("//Miner").account_id()
}

fn config(sim_dir: &Path, upstream: Option<String>) -> Config {
    let mut c = Config {
        hotkey: miner().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    c.sim.dir = sim_dir.to_path_buf();
    c.sim.gpus = 1;
    c.access.allow = Allow::AnySigner;
    c.access.per_signer_burst = 1000;
    c.access.per_signer_per_minute = 60_000;
    c.runtime.upstream = upstream;
    c
}

// ---------------------------------------------------------------- upstreams

/// What an upstream saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    /// (path, headers, body) per request.
    requests: Mutex<Vec<(String, HeaderMap, Bytes)>>,
}

impl Seen {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn record(&self, req_path: &str, headers: &HeaderMap, body: &Bytes) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.requests
            .lock()
            .unwrap()
            .push((req_path.to_string(), headers.clone(), body.clone()));
    }

    fn last_json(&self) -> Value {
        let reqs = self.requests.lock().unwrap();
        let (_, _, body) = reqs.last().expect("the upstream saw no request");
        serde_json::from_slice(body).unwrap()
    }
}

struct Upstream {
    url: String,
    seen: Arc<Seen>,
}

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

async fn read_request(seen: &Seen, req: Request) -> (String, Bytes) {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path().to_string();
    seen.record(&path, &parts.headers, &body);
    (path, body)
}

/// An upstream answering every path with a JSON completion naming itself,
/// the path and the model it was asked for.
async fn echo_upstream(name: &'static str) -> Upstream {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .fallback(any(
            move |State(seen): State<Arc<Seen>>, req: Request| async move {
                let (path, body) = read_request(&seen, req).await;
                let model = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("model").cloned())
                    .unwrap_or(Value::Null);
                axum::Json(json!({
                    "object": "chat.completion",
                    "upstream": name,
                    "path": path,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                }))
            },
        ))
        .with_state(seen.clone());
    let addr = serve(app).await;
    Upstream {
        url: format!("http://{addr}"),
        seen,
    }
}

/// An upstream that always fails with 500 and its own body.
const UPSTREAM_500: &str = r#"{"object":"error","message":"CUDA out of memory","code":500}"#;

async fn failing_upstream() -> Upstream {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .fallback(any(
            |State(seen): State<Arc<Seen>>, req: Request| async move {
                read_request(&seen, req).await;
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "application/json")],
                    UPSTREAM_500,
                )
            },
        ))
        .with_state(seen.clone());
    let addr = serve(app).await;
    Upstream {
        url: format!("http://{addr}"),
        seen,
    }
}

/// An SSE upstream: sends the first event, then holds the rest until the
/// test says it has received that first event through the proxy.
struct Gate {
    release: Notify,
}

const FIRST: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
const REST: [&str; 3] = [
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\n",
    "data: [DONE]\n\n",
];

async fn streaming_upstream(gate: Arc<Gate>) -> Upstream {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                move |State(seen): State<Arc<Seen>>, req: Request| async move {
                    read_request(&seen, req).await;
                    let (tx, rx) = mpsc::channel::<Bytes>(8);
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(Bytes::from_static(FIRST.as_bytes())).await;
                        gate.release.notified().await;
                        for chunk in REST {
                            let _ = tx.send(Bytes::from_static(chunk.as_bytes())).await;
                        }
                    });
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
                    });
                    (
                        [
                            (header::CONTENT_TYPE, "text/event-stream"),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        Body::from_stream(stream),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(seen.clone());
    let addr = serve(app).await;
    Upstream {
        url: format!("http://{addr}"),
        seen,
    }
}

/// A loopback port with nothing listening on it.
fn dead_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

// -------------------------------------------------------------------- agent

struct Fixture {
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    _agent: Option<Running>,
}

async fn agent(cfg_edit: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("sim"), None);
    cfg_edit(&mut cfg);
    let running = Agent::build(&cfg).unwrap().start_local().unwrap();
    Fixture {
        base: format!("http://{}", running.http),
        _dir: dir,
        http: client(),
        _agent: Some(running),
    }
}

/// GPUs present but not in confidential-computing mode.
struct NotReadyGpus;

impl Devices for NotReadyGpus {
    fn describe(&self) -> String {
        "test GPUs, CC mode off".into()
    }
    fn gpu_count(&self) -> usize {
        1
    }
    fn readiness(&self) -> Readiness {
        Readiness::NotReady("GPU 0 is not in CC mode (cc_mode=off)".into())
    }
    fn evidence(&self, _: &[u8; 32], _: Gather) -> Result<DeviceSet, BackendError> {
        Err(BackendError::NotConfidential("CC mode off".into()))
    }
}

/// An agent assembled by hand around devices that are never ready.
async fn not_ready_agent(upstream: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("sim"), Some(upstream.to_string()));
    let (tee, _) = backend::select(&cfg).unwrap();
    let source = Arc::new(EvidenceSource {
        tee,
        devices: Box::new(NotReadyGpus),
        cvm_id: tvm_protocol::Digest32([7; 32]),
        runtime: Runtime {
            image_digest: None,
            upstream: cfg.runtime.upstream.clone(),
            models: Vec::new(),
            agent_config: None,
        },
        gather: Gather::Parallel,
        runtime_events: Vec::new(),
    });
    let state = Arc::new(AppState::new(
        source,
        Access::new(miner(), &cfg.access).unwrap(),
        Some(Proxy::new(&cfg.runtime).unwrap()),
        cfg.runtime.max_body_bytes,
        1,
        1,
    ));
    let addr = serve(server::router(state)).await;
    Fixture {
        base: format!("http://{addr}"),
        _dir: dir,
        http: client(),
        _agent: None,
    }
}

impl Fixture {
    /// A request to the agent, signed by Alice unless `signed` is false.
    fn request(
        &self,
        path: &str,
        body: &[u8],
        signed: bool,
        model_header: Option<&str>,
    ) -> reqwest::RequestBuilder {
        // `GET /v1/models` has no body: it is signed over none.
        let (mut req, body) = if path == "/v1/models" {
            (self.http.get(format!("{}{path}", self.base)), &b""[..])
        } else {
            let req = self
                .http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_vec());
            (req, body)
        };
        if signed {
            let h = epistula::sign(&key("//Alice"), body, Some(&miner()), now_ms());
            for (k, v) in h.to_pairs() {
                req = req.header(k, v);
            }
        }
        if let Some(m) = model_header {
            req = req.header("X-Targon-Model", m);
        }
        req
    }

    async fn call(&self, path: &str, body: &Value, model_header: Option<&str>) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let r = tokio::time::timeout(STEP, self.request(path, &body, true, model_header).send())
            .await
            .expect("the agent did not answer in 10 s")
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?} (status {status})"));
        (status, v)
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
}

fn error_kind(v: &Value) -> &str {
    v["error"]["type"].as_str().unwrap_or_default()
}

fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn sse_streams_through_unbuffered() {
    let gate = Arc::new(Gate {
        release: Notify::new(),
    });
    let up = streaming_upstream(gate.clone()).await;
    let url = up.url.clone();
    let f = agent(|c| c.runtime.upstream = Some(url)).await;

    let mut body = chat("any");
    body["stream"] = json!(true);
    let body = serde_json::to_vec(&body).unwrap();
    let sent = Instant::now();
    let resp = tokio::time::timeout(
        STEP,
        f.request("/v1/chat/completions", &body, true, None).send(),
    )
    .await
    .expect("no response headers through the proxy within 10 s")
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream"),
        "the SSE content type must pass through"
    );

    // The upstream holds everything after the first event until we have it:
    // a proxy that buffered (whole body, or more than one event) never
    // delivers it, and we fail here instead of hanging.
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let first = tokio::time::timeout(STEP, async {
        while !got.ends_with(FIRST.as_bytes()) {
            match stream.next().await {
                Some(chunk) => got.extend_from_slice(&chunk.unwrap()),
                None => break,
            }
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "the first SSE event did not come through the proxy within 10 s while the upstream \
         held the rest: the proxy buffers the stream (got so far: {:?})",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        FIRST,
        "the first event, and nothing else yet"
    );
    eprintln!(
        "first SSE chunk through the proxy {:.2} ms after the request was sent (informational)",
        sent.elapsed().as_secs_f64() * 1e3
    );
    gate.release.notify_one();

    tokio::time::timeout(STEP, async {
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
    })
    .await
    .expect("the rest of the stream did not arrive within 10 s");
    let want: String = std::iter::once(FIRST).chain(REST).collect();
    assert_eq!(String::from_utf8_lossy(&got), want);
    assert_eq!(up.seen.hits(), 1);
}

#[tokio::test]
async fn nothing_reaches_the_upstream_while_gpus_are_not_ready() {
    let up = echo_upstream("default").await;
    let f = not_ready_agent(&up.url).await;
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/models"] {
        let (s, v) = f.call(path, &chat("m"), None).await;
        assert_eq!(s, 503, "{path}: {v}");
        assert_eq!(error_kind(&v), "not_ready", "{path}: {v}");
        assert!(error_message(&v).contains("CC mode"), "{v}");
    }
    assert_eq!(
        up.seen.hits(),
        0,
        "a request reached the upstream while not ready"
    );
}

#[tokio::test]
async fn unsigned_requests_are_refused_before_the_upstream() {
    let up = echo_upstream("default").await;
    let url = up.url.clone();
    let f = agent(|c| c.runtime.upstream = Some(url)).await;
    let body = serde_json::to_vec(&chat("m")).unwrap();
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/models"] {
        let r = f.request(path, &body, false, None).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // Signed over other bytes than those sent.
    let h = epistula::sign(&key("//Alice"), b"{}", Some(&miner()), now_ms());
    let mut req = f
        .http
        .post(format!("{}/v1/chat/completions", f.base))
        .body(body.clone());
    for (k, v) in h.to_pairs() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    assert_eq!(
        up.seen.hits(),
        0,
        "an unsigned request reached the upstream"
    );

    // The same body signed goes through, and the Epistula headers stay behind.
    let (s, v) = f.call("/v1/chat/completions", &chat("m"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(up.seen.hits(), 1);
    let reqs = up.seen.requests.lock().unwrap();
    let (_, headers, _) = &reqs[0];
    assert!(
        !headers.keys().any(|k| k.as_str().starts_with("epistula")),
        "the caller's Epistula headers were forwarded: {headers:?}"
    );
}

#[tokio::test]
async fn upstream_down_is_a_502_that_says_so() {
    let url = dead_port_url();
    let f = agent(|c| c.runtime.upstream = Some(url)).await;
    let (s, v) = f.call("/v1/chat/completions", &chat("m"), None).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(error_kind(&v), "upstream_unreachable", "{v}");
    assert!(error_message(&v).contains("not reachable"), "{v}");
}

#[tokio::test]
async fn upstream_errors_pass_through_as_written() {
    let up = failing_upstream().await;
    let url = up.url.clone();
    let f = agent(|c| c.runtime.upstream = Some(url)).await;
    let body = serde_json::to_vec(&chat("m")).unwrap();
    let r = f
        .request("/v1/chat/completions", &body, true, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(r.text().await.unwrap(), UPSTREAM_500);
    assert_eq!(up.seen.hits(), 1);
}

#[tokio::test]
async fn models_route_to_their_own_upstreams() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let (url_a, url_b) = (a.url.clone(), b.url.clone());
    let f = agent(move |c| {
        c.runtime.upstream = Some(url_a);
        c.runtime
            .models
            .insert("model-a".into(), ModelRoute::default());
        c.runtime.models.insert(
            "model-b".into(),
            ModelRoute {
                upstream: Some(format!("{url_b}/")),
                served_as: None,
            },
        );
    })
    .await;

    // By the body's model.
    let (s, v) = f.call("/v1/chat/completions", &chat("model-a"), None).await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("a")), "{v}");
    let (s, v) = f.call("/v1/completions", &chat("model-b"), None).await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("b")), "{v}");
    assert_eq!(v["path"], "/v1/completions", "{v}");

    // X-Targon-Model wins over the body, and the upstream is asked for the
    // routed model: a body cannot reach a model the node does not attest.
    let (s, v) = f
        .call("/v1/chat/completions", &chat("model-a"), Some("model-b"))
        .await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("b")), "{v}");
    assert_eq!(v["model"], "model-b", "{v}");
    let (s, v) = f
        .call("/v1/chat/completions", &chat("model-b"), Some("model-a"))
        .await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("a")), "{v}");

    // The model list is the attested one, answered by the agent itself.
    let (s, v) = f.call("/v1/models", &json!({}), None).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["model-a", "model-b"], "{v}");
    assert_eq!((a.seen.hits(), b.seen.hits()), (2, 2));

    // A model this node does not serve, by body or by header.
    let (s, v) = f.call("/v1/chat/completions", &chat("gpt-5"), None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(error_kind(&v), "model_not_found", "{v}");
    assert!(error_message(&v).contains("model-a, model-b"), "{v}");
    let (s, v) = f
        .call("/v1/chat/completions", &chat("model-a"), Some("gpt-5"))
        .await;
    assert_eq!((s, error_kind(&v)), (404, "model_not_found"), "{v}");
    assert_eq!(
        (a.seen.hits(), b.seen.hits()),
        (2, 2),
        "an unknown model reached an upstream"
    );
}

#[tokio::test]
async fn served_as_renames_the_model_for_the_upstream() {
    let up = echo_upstream("vllm").await;
    let url = up.url.clone();
    let f = agent(move |c| {
        c.runtime.upstream = Some(url);
        c.runtime.models.insert(
            "llama-8b".into(),
            ModelRoute {
                upstream: None,
                served_as: Some("/models/Meta-Llama-3.1-8B-Instruct".into()),
            },
        );
    })
    .await;
    let mut body = chat("llama-8b");
    body["temperature"] = json!(0.25);
    let (s, v) = f.call("/v1/chat/completions", &body, None).await;
    assert_eq!(s, 200, "{v}");
    let seen = up.seen.last_json();
    assert_eq!(
        seen["model"], "/models/Meta-Llama-3.1-8B-Instruct",
        "{seen}"
    );
    // Everything else arrives as sent.
    assert_eq!(seen["temperature"], 0.25);
    assert_eq!(seen["messages"], body["messages"]);
    assert_eq!(seen["max_tokens"], 8);

    // Routed by header, the body gets the served name too.
    let (s, _) = f
        .call("/v1/chat/completions", &chat("whatever"), Some("llama-8b"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        up.seen.last_json()["model"],
        "/models/Meta-Llama-3.1-8B-Instruct"
    );
}

/// A signed body that is JSON but not an object, for a model with
/// `served_as`: the rewrite must not take the handler down.
#[tokio::test]
async fn a_non_object_body_for_a_renamed_model_gets_an_answer() {
    let up = echo_upstream("vllm").await;
    let url = up.url.clone();
    let f = agent(move |c| {
        c.runtime.upstream = Some(url);
        c.runtime.models.insert(
            "llama-8b".into(),
            ModelRoute {
                upstream: None,
                served_as: Some("internal".into()),
            },
        );
    })
    .await;
    // `["llama-8b"]` would deserialise as `{model: "llama-8b"}` (serde reads
    // structs from sequences): a model is read from JSON objects only.
    let body = br#"["llama-8b"]"#;
    let r = tokio::time::timeout(
        STEP,
        f.request("/v1/chat/completions", body, true, None).send(),
    )
    .await
    .expect("no answer in 10 s");
    let r = r.unwrap_or_else(|e| panic!("the agent dropped the connection: {e}"));
    // Models are listed and this request names none: model_required.
    let s = r.status().as_u16();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((s, error_kind(&v)), (400, "model_required"), "{v}");
    // Named by header, the rewrite needs an object: a clear 400, no upstream call.
    let r = f
        .request("/v1/chat/completions", body, true, Some("llama-8b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("JSON object"));
}
