//! The guest agent: the only tvm code inside a miner's confidential VM.
//!
//! It answers a validator's nonce with one evidence bundle in which the CPU
//! TEE's quote binds every local GPU report, the agent's TLS key and the
//! runtime it serves; it lets only Epistula-signed callers in; and it proxies
//! inference only while the VM's GPUs are in confidential-computing mode.

pub mod auth;
pub mod backend;
pub mod config;
pub mod evidence;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tvm_protocol::evidence::Runtime;
use tvm_protocol::keys::AccountId;

use crate::backend::Gather;
use crate::config::Config;
use crate::evidence::EvidenceSource;
use crate::server::AppState;
use crate::tls::TlsIdentity;

/// Why the agent cannot start, said once, before it listens.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Allowlist(#[from] auth::AllowlistError),
    #[error("{0}")]
    Other(String),
    #[error("cannot listen on {addr}: {source} (is another agent running, or the port taken?)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Record the runtime in RTMR3 (TDX) before any quote: the events
/// [`tvm_protocol::binding::runtime_events`] gives, extended in order from a
/// zero register. An agent restarted in the same TD finds them there
/// already and extends nothing (or, after a crash part-way through, only
/// the rest); a register holding anything else (another configuration
/// since boot) stops the start: what was measured cannot be unmeasured, so
/// the CVM must reboot to serve something else. SEV-SNP has no such
/// register: there the runtime is bound by report_data only.
fn record_runtime(
    tee: &dyn backend::Tee,
    runtime: &Runtime,
) -> Result<Vec<tvm_protocol::evidence::RuntimeEvent>, StartError> {
    use tvm_protocol::binding::{replay_runtime_events, runtime_event_digest, runtime_events};
    let events = runtime_events(runtime);
    let want = replay_runtime_events(&events);
    let Some(now) = tee.rtmr3()? else {
        return Ok(events);
    };
    // How many of the events RTMR3 holds already (a prefix, or none).
    let done = (0..=events.len()).find(|k| replay_runtime_events(&events[..*k]) == now);
    match done {
        Some(k) if k == events.len() => {
            tracing::info!(events = k, "RTMR3 already holds this runtime (agent restarted)");
        }
        Some(k) => {
            for e in &events[k..] {
                tee.extend_rtmr3(&runtime_event_digest(e))?;
            }
            tracing::info!(events = events.len(), rtmr3 = %hex::encode(want), "runtime recorded in RTMR3");
        }
        None => {
            return Err(StartError::Other(format!(
                "RTMR3 is {}, neither zero nor this configuration's runtime ({}): another configuration ran in this CVM since it booted, and a measurement cannot be taken back; reboot the CVM to serve with this one",
                hex::encode(now),
                hex::encode(want)
            )))
        }
    }
    Ok(events)
}

/// A configured agent, ready to serve.
pub struct Agent {
    pub state: Arc<AppState>,
    pub tls: TlsIdentity,
}

impl Agent {
    /// Pick the backends, make (or load) the CVM's RA-TLS key, load the allowlist.
    pub fn build(cfg: &Config) -> Result<Self, StartError> {
        cfg.validate()?;
        Self::with_backends(cfg, backend::select(cfg)?)
    }

    /// An agent over backends the caller chose (the devnet shares one
    /// simulated GPU between two agents to show a cloned device caught).
    pub fn with_backends(
        cfg: &Config,
        (tee, devices): backend::Backends,
    ) -> Result<Self, StartError> {
        cfg.validate()?;
        let miner =
            AccountId::from_ss58(&cfg.hotkey).map_err(|e| StartError::Other(e.to_string()))?;
        let tls = match &cfg.cvm_key_file {
            Some(p) => TlsIdentity::load_or_generate(p, &cfg.tls_names)?,
            None => TlsIdentity::generate(&cfg.tls_names)?,
        };
        let runtime = Runtime {
            image_digest: cfg.runtime.image_digest.clone(),
            upstream: cfg.runtime.upstream.clone(),
            models: cfg.runtime.models.keys().cloned().collect(),
            agent_config: Some(tvm_protocol::hexbytes::Digest32(cfg.meaning_digest())),
        };
        let access = auth::Access::new(miner, &cfg.access)?;
        let serves = cfg.runtime.upstream.is_some() || !cfg.runtime.models.is_empty();
        let proxy = if serves {
            Some(proxy::Proxy::new(&cfg.runtime).map_err(StartError::Other)?)
        } else {
            None
        };
        // Last of what can fail here: a start that fails after it would
        // leave RTMR3 holding a configuration the fixed one is not.
        let runtime_events = record_runtime(tee.as_ref(), &runtime)?;
        let source = Arc::new(EvidenceSource {
            tee,
            devices,
            cvm_id: tls.cvm_id(),
            runtime,
            runtime_events,
            gather: Gather::Parallel,
        });
        let state = Arc::new(AppState::new(
            source,
            access,
            proxy,
            cfg.runtime.max_body_bytes,
            cfg.access.max_concurrent_evidence,
            cfg.access.max_queued_evidence,
        ));
        Ok(Agent { state, tls })
    }

    /// Serve on already-bound listeners until the process ends: RA-TLS (and
    /// plain HTTP, told apart by the first byte) on the main port, optionally
    /// plain HTTP on a second one, and metrics. Also re-reads the allowlist every
    /// few seconds.
    pub async fn serve(
        self,
        https: std::net::TcpListener,
        http: Option<std::net::TcpListener>,
        metrics: Option<std::net::TcpListener>,
    ) -> Result<(), StartError> {
        let app = server::router(self.state.clone());
        let reload_state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = reload_state.access.reload() {
                    tracing::warn!(error = %e, "allowlist not reloaded; keeping the previous list");
                }
            }
        });
        if let Some(l) = http {
            l.set_nonblocking(true)
                .map_err(|e| StartError::Other(e.to_string()))?;
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| StartError::Other(e.to_string()))?;
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = listener::serve(l, app, None).await {
                    tracing::error!(error = %e, "plain HTTP server stopped");
                }
            });
        }
        if let Some(l) = metrics {
            l.set_nonblocking(true)
                .map_err(|e| StartError::Other(e.to_string()))?;
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| StartError::Other(e.to_string()))?;
            let app = server::metrics_router(self.state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
        let tls = self.tls.server_config()?;
        https
            .set_nonblocking(true)
            .map_err(|e| StartError::Other(e.to_string()))?;
        let https = tokio::net::TcpListener::from_std(https)
            .map_err(|e| StartError::Other(e.to_string()))?;
        listener::serve(https, app, Some(tls))
            .await
            .map_err(|e| StartError::Other(format!("server stopped: {e}")))
    }
}

/// Bind a listener, with an error that names the address.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    std::net::TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })
}

/// An agent serving on loopback ports chosen by the system (tests, the devnet).
pub struct Running {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub state: Arc<AppState>,
    pub tls_spki_sha256: [u8; 32],
    pub task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl Agent {
    /// Serve on 127.0.0.1 (RA-TLS, plain HTTP and metrics, each on a free port).
    pub fn start_local(self) -> Result<Running, StartError> {
        self.start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serve the main port at `main` (several agents can share one port
    /// number on different loopback addresses, as CVMs on different hosts
    /// do); plain HTTP and metrics on free ports of the same address.
    pub fn start_at(self, main: SocketAddr) -> Result<Running, StartError> {
        let any = SocketAddr::new(main.ip(), 0);
        let (https, http, metrics) = (bind(main)?, bind(any)?, bind(any)?);
        let addr = |l: &std::net::TcpListener| {
            l.local_addr().map_err(|e| StartError::Other(e.to_string()))
        };
        let (a, b, c) = (addr(&https)?, addr(&http)?, addr(&metrics)?);
        let state = self.state.clone();
        let tls_spki_sha256 = self.tls.spki_sha256;
        let task = tokio::spawn(self.serve(https, Some(http), Some(metrics)));
        Ok(Running {
            https: a,
            http: b,
            metrics: c,
            state,
            tls_spki_sha256,
            task,
        })
    }
}
