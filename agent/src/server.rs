//! The agent's HTTP API. `GET /health` is open; everything else needs an
//! Epistula signature for this miner (see `auth`). Served over RA-TLS and,
//! when configured, plain HTTP; metrics on their own (loopback) listener.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;
use tvm_protocol::evidence::EvidenceRequest;

use crate::auth::{Access, Limit};
use crate::backend::{BackendError, Readiness};
use crate::evidence::{EvidenceSource, AGENT_VERSION};
use crate::metrics::Metrics;
use crate::proxy::{self, Proxy};

/// `{"nonce": "<64 hex>"}` is 77 bytes; leave room for whitespace.
pub const MAX_EVIDENCE_REQUEST: usize = 1024;

pub struct AppState {
    pub source: Arc<EvidenceSource>,
    pub access: Access,
    pub metrics: Metrics,
    pub proxy: Option<Proxy>,
    pub max_body: usize,
    slots: Arc<Semaphore>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
}

impl AppState {
    /// Evidence requests being answered or queued, and hardware slots free:
    /// what a caller that hangs up must give back.
    pub fn evidence_load(&self) -> (usize, usize) {
        (
            self.in_flight.load(Ordering::Acquire),
            self.slots.available_permits(),
        )
    }

    pub fn new(
        source: Arc<EvidenceSource>,
        access: Access,
        proxy: Option<Proxy>,
        max_body: usize,
        max_concurrent: usize,
        max_queued: usize,
    ) -> Self {
        AppState {
            source,
            access,
            metrics: Metrics::default(),
            proxy,
            max_body,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: max_concurrent + max_queued,
        }
    }
}

type St = State<Arc<AppState>>;

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The API router (health, evidence, info, inference).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/evidence", post(evidence))
        .route("/api/v1/info", get(info))
        .route("/v1/chat/completions", post(inference))
        .route("/v1/completions", post(inference))
        .route("/v1/models", get(inference))
        .with_state(state)
}

/// The metrics router, for a separate listener.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(s): St) -> Response {
    let ready = s.source.devices.readiness();
    s.metrics.request("health", 200);
    Json(json!({
        "status": "ok",
        "ready": ready == Readiness::Ready,
        "simulated": s.source.simulated(),
    }))
    .into_response()
}

async fn metrics(State(s): St) -> Response {
    let ready = s.source.devices.readiness() == Readiness::Ready;
    let text = s
        .metrics
        .render(ready, s.source.simulated(), s.source.devices.gpu_count());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// How long a client may take to send its body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn refuse(s: &AppState, route: &'static str, d: &crate::auth::Denied) -> Response {
    let status = d.status();
    s.metrics.request(route, status.as_u16());
    s.metrics.denied(d.reason());
    tracing::info!(route, reason = d.reason(), detail = %d, "request refused");
    err(status, d.to_string())
}

/// A request whose Epistula signature checked out.
struct Signed {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    signer: tvm_protocol::keys::AccountId,
}

/// Check the headers (form, recipient, freshness, allowlist) before reading
/// anything; then read at most `limit` bytes of body in bounded time; then
/// check the signature over them.
async fn signed(
    s: &AppState,
    route: &'static str,
    req: Request,
    limit: usize,
    kind: Limit,
) -> Result<Signed, Response> {
    let (parts, body) = req.into_parts();
    let h = s
        .access
        .precheck(&parts.headers)
        .map_err(|d| refuse(s, route, &d))?;
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            let (status, reason, msg) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body over {limit} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "body_error",
                    format!("the request body could not be read: {e}"),
                )
            };
            s.metrics.request(route, status.as_u16());
            s.metrics.denied(reason);
            return Err(err(status, msg));
        }
        Err(_) => {
            s.metrics.request(route, 408);
            s.metrics.denied("body_timeout");
            return Err(err(
                StatusCode::REQUEST_TIMEOUT,
                "the request body took too long",
            ));
        }
    };
    let signer = s
        .access
        .check(&h, &body, kind)
        .map_err(|d| refuse(s, route, &d))?;
    // A signed caller's connection may stay open (see listener).
    if let Some(conn) = parts.extensions.get::<crate::listener::ConnActivity>() {
        conn.mark_signed();
    }
    Ok(Signed {
        method: parts.method,
        headers: parts.headers,
        body,
        signer,
    })
}

async fn evidence(State(s): St, req: Request) -> Response {
    const ROUTE: &str = "evidence";
    let Signed { body, signer, .. } =
        match signed(&s, ROUTE, req, MAX_EVIDENCE_REQUEST, Limit::Attestation).await {
            Ok(r) => r,
            Err(r) => return r,
        };
    let nonce = match serde_json::from_slice::<EvidenceRequest>(&body) {
        Ok(r) => r.nonce,
        Err(e) => {
            s.metrics.request(ROUTE, 400);
            return err(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"nonce\": \"<64 hex>\"}}: {e}"),
            );
        }
    };
    // A nonce names the validator that made it (Targon's layout). One made
    // by another validator is someone else's challenge being relayed: answering
    // it would let the relay show this node's evidence as its own.
    if !nonce.is_from(&signer) {
        s.metrics.request(ROUTE, 400);
        s.metrics.denied("foreign_nonce");
        return err(
            StatusCode::BAD_REQUEST,
            format!(
                "the nonce was not made by its signer {}: its first 16 bytes must be sha256(signer SS58)[..16]",
                signer.to_ss58()
            ),
        );
    }
    // Bounded queue: the hardware answers a few requests at a time. The
    // guard gives the place back however the request ends (a client that
    // hangs up drops this future midway).
    struct Place<'a>(&'a AtomicUsize);
    impl Drop for Place<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let place = Place(&s.in_flight);
    if s.in_flight.fetch_add(1, Ordering::AcqRel) >= s.max_in_flight {
        s.metrics.busy();
        s.metrics.request(ROUTE, 503);
        let mut r = err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} evidence requests in progress; retry shortly",
                s.max_in_flight
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let started = Instant::now();
    let result = match s.slots.clone().acquire_owned().await {
        Ok(permit) => {
            let src = s.source.clone();
            // The permit goes with the hardware call: a caller that hangs up
            // does not free the slot before the devices are done.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                src.produce(nonce)
            })
            .await
        }
        Err(_) => return err(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    drop(place);
    let secs = started.elapsed().as_secs_f64();
    let (status, response) = match result {
        Ok(Ok(p)) => {
            tracing::info!(nonce = %nonce.to_hex(), gpus = p.bundle.gpus.len(), devices_ms = p.devices_ms, tee_ms = p.tee_ms, "evidence produced");
            let r = (
                [(header::CONTENT_TYPE, "application/json")],
                p.bundle.to_json(),
            )
                .into_response();
            (200, r)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "evidence failed");
            let status = match e {
                BackendError::NotConfidential(_) | BackendError::Busy(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status.as_u16(), err(status, e.to_string()))
        }
        Err(e) => (
            500,
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("evidence task failed: {e}"),
            ),
        ),
    };
    s.metrics.evidence(status == 200, secs);
    s.metrics.request(ROUTE, status);
    response
}

async fn info(State(s): St, req: Request) -> Response {
    if let Err(r) = signed(&s, "info", req, 0, Limit::Attestation).await {
        return r;
    }
    s.metrics.request("info", 200);
    let src = &s.source;
    let ready = src.devices.readiness();
    Json(json!({
        "agent_version": AGENT_VERSION,
        "cvm_id": src.cvm_id,
        "node_type": src.node_type(),
        "simulated": src.simulated(),
        "tee": {"kind": src.tee.kind(), "backend": src.tee.describe()},
        "gpus": {"count": src.devices.gpu_count(), "backend": src.devices.describe(), "readiness": ready},
        "runtime": src.runtime,
    }))
    .into_response()
}

async fn inference(State(s): St, req: Request) -> Response {
    const ROUTE: &str = "inference";
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let Signed {
        method,
        headers,
        body,
        ..
    } = match signed(&s, ROUTE, req, s.max_body, Limit::Inference).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(proxy) = &s.proxy else {
        s.metrics.request(ROUTE, 503);
        return proxy::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_upstream",
            "this node serves no inference (runtime.upstream is not set)",
        );
    };
    // Sealed: no inference until the GPUs are in CC mode and ready.
    if let Readiness::NotReady(why) = s.source.devices.readiness() {
        s.metrics.request(ROUTE, 503);
        return proxy::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("GPUs not ready for confidential work: {why}"),
        );
    }
    if path == "/v1/models" {
        if let Some(list) = proxy.model_list() {
            s.metrics.request(ROUTE, 200);
            return Json(list).into_response();
        }
    }
    let f = proxy.forward(method, &path, &headers, body).await;
    if f.upstream_error {
        s.metrics.upstream_error();
    }
    s.metrics.request(ROUTE, f.response.status().as_u16());
    f.response
}
