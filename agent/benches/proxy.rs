//! The inference proxy's cost under load: a load generator drives N keep-alive
//! connections for a fixed time against (a) the upstream directly, (b) the
//! agent's `/v1/chat/completions` (Epistula-signed; the agent verifies every
//! signature, as in service), (c) nginx as a reverse proxy to the same
//! upstream, when an `nginx` binary is on PATH. Everything runs on loopback on
//! this machine: load generator, agent, upstream (and nginx) share its cores.
//!
//! `cargo bench -p tvm-agent --bench proxy` (or `bench/proxy.sh`). Settings
//! from the environment: PROXY_BENCH_CONNS (32; at most 64, the agent's
//! per-address connection cap), PROXY_BENCH_SECS (5),
//! PROXY_BENCH_POOL (pre-signed requests, 90000: the agent's replay guard
//! holds 100000). Without `--bench` (as `cargo test --benches` runs it) it
//! does a short smoke run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use tokio::runtime::Runtime;

use tvm_agent::config::{Allow, Config, GpuChoice, TeeChoice};
use tvm_agent::Agent;
use tvm_protocol::epistula::{self, Recipient, SignedHeaders, Verifier};
use tvm_protocol::keys::Hotkey;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A small chat completion, as vLLM answers one (~300 bytes).
const COMPLETION: &str = r#"{"id":"chatcmpl-bench-0001","object":"chat.completion","created":1732250000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

const REQUEST: &str = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;

struct Settings {
    conns: usize,
    phase: Duration,
    warmup: Duration,
    pool: usize,
    smoke: bool,
    upstream_latency: Duration,
    /// The offered load of the paced run, requests per second (all
    /// connections together).
    rate: f64,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let smoke = !std::env::args().any(|a| a == "--bench");
        if smoke {
            return Settings {
                conns: 4,
                phase: Duration::from_millis(300),
                warmup: Duration::from_millis(50),
                pool: 1_000,
                smoke,
                upstream_latency: Duration::ZERO,
                rate: 200.0,
            };
        }
        Settings {
            conns: num("PROXY_BENCH_CONNS", 32).max(1),
            phase: Duration::from_secs(num("PROXY_BENCH_SECS", 5) as u64),
            warmup: Duration::from_millis(500),
            pool: num("PROXY_BENCH_POOL", 90_000),
            smoke,
            upstream_latency: Duration::from_millis(num("PROXY_BENCH_UPSTREAM_MS", 0) as u64),
            rate: num("PROXY_BENCH_RATE", 1000).max(1) as f64,
        }
    }
}

fn runtime(name: &str, threads: usize) -> Result<Runtime, Error> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The upstream: answers every completion with the same JSON, after
/// `latency` (0: at once, the proxy's worst case; a real model takes tens of
/// milliseconds or more per completion).
fn start_upstream(rt: &Runtime, latency: Duration) -> Result<SocketAddr, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            ([(header::CONTENT_TYPE, "application/json")], COMPLETION)
        }),
    );
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(l)?;
        axum::serve(l, app).await
    });
    Ok(addr)
}

/// The agent (simulated TDX and GPU), with limits that do not get in the way
/// of a load test and a freshness window long enough for pre-signed requests.
fn start_agent(rt: &Runtime, upstream: SocketAddr, sim_dir: &Path) -> Result<SocketAddr, Error> {
    let mut cfg = Config {
        hotkey: Hotkey::from_uri("//Miner")?.account_id().to_ss58(),
        tee: TeeChoice::Sim,
        gpus: GpuChoice::Sim,
        ..Config::default()
    };
    cfg.sim.dir = sim_dir.to_path_buf();
    cfg.sim.gpus = 1;
    cfg.access.allow = Allow::AnySigner;
    cfg.access.per_signer_burst = u32::MAX;
    cfg.access.per_signer_per_minute = u32::MAX;
    // Inference has a bucket of its own: the bench measures the proxy, not the limit.
    cfg.access.inference_per_signer_burst = u32::MAX;
    cfg.access.inference_per_signer_per_minute = u32::MAX;
    cfg.access.window_ms = 60_000;
    cfg.runtime.upstream = Some(format!("http://{upstream}"));
    let _enter = rt.enter();
    let running = Agent::build(&cfg)?.start_local()?;
    Ok(running.http)
}

/// nginx as a child process, stopped (with its workers) when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT would wait for keep-alive connections; SIGTERM is nginx's
        // fast shutdown and takes the workers with the master.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn start_nginx(bin: &Path, dir: &Path, upstream: SocketAddr) -> Result<Nginx, Error> {
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream inference {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://inference;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut nginx = Nginx { child, addr };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(nginx);
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited ({status}): {log}").into());
        }
        if Instant::now() > deadline {
            return Err("nginx did not listen within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests signed up front (distinct UUIDs), so signing is not measured.
fn presign(n: usize) -> Result<Arc<Vec<HeaderMap>>, Error> {
    let miner = Hotkey::from_uri("//Miner")?.account_id();
    let signer = Hotkey::from_uri("//Alice")?;
    let ts = now_ms();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n.div_ceil(threads);
    let parts: Vec<Result<Vec<HeaderMap>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let signer = &signer;
                s.spawn(move || -> Result<Vec<HeaderMap>, Error> {
                    let count = per.min(n.saturating_sub(t * per));
                    let mut out = Vec::with_capacity(count);
                    for _ in 0..count {
                        let h = epistula::sign(signer, REQUEST.as_bytes(), Some(&miner), ts);
                        let mut map = HeaderMap::new();
                        map.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        for (k, v) in h.to_pairs() {
                            map.insert(HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
                        }
                        out.push(map);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p?);
    }
    Ok(Arc::new(all))
}

/// Seconds one signature check takes (parse + sr25519 verify), on one thread.
fn verify_cost(requests: &[HeaderMap]) -> Result<f64, Error> {
    let miner = Hotkey::from_uri("//Miner")?.account_id();
    let verifier = Verifier::new(Recipient::Hotkey(miner)).with_window_ms(3_600_000);
    let n = requests.len().min(2_000);
    let now = now_ms();
    let t = Instant::now();
    for h in &requests[..n] {
        let parsed = SignedHeaders::parse(|name| h.get(name).and_then(|v| v.to_str().ok()))?;
        verifier.verify(&parsed, REQUEST.as_bytes(), now)?;
    }
    Ok(t.elapsed().as_secs_f64() / n.max(1) as f64)
}

/// One target's numbers.
struct Outcome {
    name: String,
    ok: usize,
    failed: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    /// Microseconds, sorted.
    latencies: Vec<u32>,
    pool_ran_out: bool,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[i.min(self.latencies.len() - 1)]) / 1e3
    }
}

/// Where the next request's headers come from: the agent needs each signed
/// request once (replay guard); the others may reuse them.
#[derive(Clone)]
struct Pool {
    requests: Arc<Vec<HeaderMap>>,
    next: Arc<AtomicUsize>,
    /// Each request once, below this index (`unique` pools only).
    end: usize,
    unique: bool,
}

impl Pool {
    fn take(&self) -> Option<&HeaderMap> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.unique {
            self.requests.get(i).filter(|_| i < self.end)
        } else {
            self.requests.get(i % self.requests.len().max(1))
        }
    }
}

struct Worker {
    ok: usize,
    failed: usize,
    first_failure: Option<String>,
    latencies: Vec<u32>,
    pool_ran_out: bool,
}

/// Sends as fast as answers come (`pace` None: a closed loop, the most the
/// target can do), or one request every `pace.1` from `pace.0` on, each
/// timed from when it was due, so that a late answer counts against the
/// requests queued behind it (an open loop: latency at a given load).
async fn worker(
    url: Arc<str>,
    pool: Pool,
    warm_until: Instant,
    stop_at: Instant,
    pace: Option<(Instant, Duration)>,
) -> Result<Worker, Error> {
    // One client per worker, one idle connection: N workers are N keep-alive
    // connections.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()?;
    let body = Bytes::from_static(REQUEST.as_bytes());
    let mut w = Worker {
        ok: 0,
        failed: 0,
        first_failure: None,
        latencies: Vec::with_capacity(1 << 16),
        pool_ran_out: false,
    };
    let mut due = pace.map(|(first, _)| first);
    loop {
        if let Some(d) = due {
            tokio::time::sleep_until(d.into()).await;
        }
        let now = Instant::now();
        if now >= stop_at {
            break;
        }
        let Some(headers) = pool.take() else {
            w.pool_ran_out = true;
            break;
        };
        let t0 = due.unwrap_or_else(Instant::now);
        if let (Some(d), Some((_, every))) = (due.as_mut(), pace) {
            *d += every;
        }
        let result = async {
            let r = client
                .post(&*url)
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await?;
            let status = r.status();
            let bytes = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let took = t0.elapsed();
        if t0 < warm_until {
            continue;
        }
        match result {
            Ok((status, bytes)) if status.is_success() && bytes.len() == COMPLETION.len() => {
                w.ok += 1;
                w.latencies
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Ok((status, bytes)) => {
                w.failed += 1;
                w.first_failure.get_or_insert_with(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&bytes))
                });
            }
            Err(e) => {
                w.failed += 1;
                w.first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(w)
}

/// Drives `url` for the warm-up and the phase: closed loop, or paced at
/// `rate` requests per second over all connections.
fn drive(
    rt: &Runtime,
    name: &str,
    url: &str,
    pool: Pool,
    s: &Settings,
    rate: Option<f64>,
) -> Result<Outcome, Error> {
    let url: Arc<str> = Arc::from(url);
    let start = Instant::now();
    let warm_until = start + s.warmup;
    let stop_at = warm_until + s.phase;
    let every = rate.map(|r| Duration::from_secs_f64(s.conns as f64 / r));
    let workers: Vec<Worker> = rt.block_on(async {
        let tasks: Vec<_> = (0..s.conns)
            .map(|i| {
                // Connections staggered evenly over one period.
                let pace = every.map(|e| (start + e.mul_f64(i as f64 / s.conns as f64), e));
                tokio::spawn(worker(url.clone(), pool.clone(), warm_until, stop_at, pace))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.map_err(|e| -> Error { e.into() })??);
        }
        Ok::<_, Error>(out)
    })?;
    let elapsed = Instant::now()
        .min(stop_at)
        .saturating_duration_since(warm_until);
    let mut o = Outcome {
        name: name.to_string(),
        ok: 0,
        failed: 0,
        first_failure: None,
        elapsed,
        latencies: Vec::new(),
        pool_ran_out: false,
    };
    for w in workers {
        o.ok += w.ok;
        o.failed += w.failed;
        o.pool_ran_out |= w.pool_ran_out;
        if o.first_failure.is_none() {
            o.first_failure = w.first_failure;
        }
        o.latencies.extend(w.latencies);
    }
    o.latencies.sort_unstable();
    Ok(o)
}

fn main() -> Result<(), Error> {
    let s = Settings::from_env();
    // The test client and the agent's upstream client use reqwest, built with
    // `rustls-no-provider` in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.clamp(1, 4);
    // Three runtimes, as three processes would have: upstream, agent, load.
    let upstream_rt = runtime("upstream", threads)?;
    let agent_rt = runtime("agent", threads)?;
    let load_rt = runtime("load", threads)?;
    let dir = tempfile::tempdir()?;

    let upstream = start_upstream(&upstream_rt, s.upstream_latency)?;
    let agent = start_agent(&agent_rt, upstream, &dir.path().join("sim"))?;
    let nginx_bin = if s.smoke { None } else { find_on_path("nginx") };
    let nginx = match &nginx_bin {
        Some(bin) => {
            let ndir = dir.path().join("nginx");
            std::fs::create_dir_all(&ndir)?;
            match start_nginx(bin, &ndir, upstream) {
                Ok(n) => Some(n),
                Err(e) => {
                    eprintln!("nginx found at {} but did not start: {e}", bin.display());
                    None
                }
            }
        }
        None => None,
    };

    let t = Instant::now();
    let requests = presign(s.pool)?;
    println!(
        "proxy bench: upstream answers after {} ms, {} connections, {:.1} s per target (after {:.1} s warm-up), {} pre-signed requests ({:.1} s to sign, not measured)",
        s.upstream_latency.as_millis(),
        s.conns,
        s.phase.as_secs_f64(),
        s.warmup.as_secs_f64(),
        requests.len(),
        t.elapsed().as_secs_f64()
    );
    println!(
        "machine: {cores} cores, shared by the load generator, the upstream, the agent{} (all on loopback): absolute numbers are this box's, the ratios are the point",
        if nginx.is_some() { " and nginx" } else { "" }
    );
    if s.smoke {
        println!("(smoke run: `cargo bench` passes --bench for the real one)");
    }

    let reuse = |r: &Arc<Vec<HeaderMap>>| Pool {
        requests: r.clone(),
        next: Arc::new(AtomicUsize::new(0)),
        end: r.len(),
        unique: false,
    };
    let path = "/v1/chat/completions";
    // The agent takes each signed request once: the paced run's share is
    // set aside first (its rate over warm-up and phase, and half again),
    // so that a fast closed-loop run cannot leave it none.
    let paced_share = ((s.rate * (s.warmup + s.phase).as_secs_f64() * 1.5).ceil() as usize)
        .min(requests.len() / 2);
    let split = requests.len() - paced_share;
    let unique = |from: usize, end: usize| Pool {
        requests: requests.clone(),
        next: Arc::new(AtomicUsize::new(from)),
        end,
        unique: true,
    };
    if nginx.is_none() && !s.smoke {
        println!("nginx: not on PATH, its row is left out (bench/proxy.sh installs it)");
    }
    let mut all = Vec::new();
    // The most each target does (closed loop), then all of them at the
    // same offered load (open loop), where added latency is the proxy's
    // own cost rather than queueing behind a saturated CPU.
    for rate in [None, Some(s.rate)] {
        let mut results = vec![drive(
            &load_rt,
            "upstream (direct)",
            &format!("http://{upstream}{path}"),
            reuse(&requests),
            &s,
            rate,
        )?];
        results.push(drive(
            &load_rt,
            "tvm-agent (Epistula verify + proxy)",
            &format!("http://{agent}{path}"),
            match rate {
                None => unique(0, split),
                Some(_) => unique(split, requests.len()),
            },
            &s,
            rate,
        )?);
        if let Some(n) = &nginx {
            results.push(drive(
                &load_rt,
                "nginx (proxy_pass, keepalive, buffering off)",
                &format!("http://{}{path}", n.addr),
                reuse(&requests),
                &s,
                rate,
            )?);
        }
        let direct_rps = results[0].rps();
        let (direct_p50, direct_p99) = (results[0].pct_ms(0.5), results[0].pct_ms(0.99));
        println!();
        match rate {
            None => println!("as fast as each target answers ({} connections, closed loop):", s.conns),
            Some(r) => println!(
                "paced at {r:.0} req/s over {} connections (open loop, each request timed from when it was due):",
                s.conns
            ),
        }
        println!("| target | requests | req/s | p50 ms | p99 ms | % of direct req/s | p50 added ms | p99 added ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (i, o) in results.iter().enumerate() {
            let (pct, added50, added99) = if i == 0 {
                ("—".to_string(), "—".to_string(), "—".to_string())
            } else {
                (
                    format!("{:.0} %", 100.0 * o.rps() / direct_rps),
                    format!("{:+.2}", o.pct_ms(0.5) - direct_p50),
                    format!("{:+.2}", o.pct_ms(0.99) - direct_p99),
                )
            };
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {pct} | {added50} | {added99} |",
                o.name,
                o.ok,
                o.rps(),
                o.pct_ms(0.5),
                o.pct_ms(0.99),
            );
        }
        all.push(results);
    }
    drop(nginx);
    let results: Vec<Outcome> = all.into_iter().flatten().collect();
    let mut bad = false;
    for o in &results {
        if o.failed > 0 {
            bad = true;
            println!(
                "{}: {} requests failed; first: {}",
                o.name,
                o.failed,
                o.first_failure.as_deref().unwrap_or("?")
            );
        }
        if o.pool_ran_out {
            println!(
                "{}: the pre-signed pool ran out after {:.1} s (raise PROXY_BENCH_POOL, at most 100000)",
                o.name,
                o.elapsed.as_secs_f64()
            );
        }
    }
    // Context for the agent's row: what verifying one signature costs alone.
    let per_verify = verify_cost(&requests)?;
    let agent_rps = results
        .iter()
        .filter(|o| o.name.starts_with("tvm-agent"))
        .map(Outcome::rps)
        .fold(0.0, f64::max);
    println!(
        "\nEpistula verification alone (one thread, no replay guard): {:.1} µs per request; at the agent's {:.0} req/s that is {:.2} of this machine's {cores} cores",
        per_verify * 1e6,
        agent_rps,
        per_verify * agent_rps
    );
    // Leave the servers' runtimes without waiting for their tasks.
    upstream_rt.shutdown_background();
    agent_rt.shutdown_background();
    load_rt.shutdown_background();
    if bad || results.iter().any(|o| o.ok == 0) {
        return Err("some requests failed".into());
    }
    Ok(())
}
