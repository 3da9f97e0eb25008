//! The sealed inference proxy: OpenAI-compatible routes passed to the local
//! inference server (vLLM), streamed chunk by chunk (no buffering: a token
//! reaches the caller as soon as the upstream sends it). The model is chosen
//! by `X-Targon-Model` or the body's `model`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::{ModelRoute, RuntimeConfig};

/// Targon's header naming the model a request is for.
pub const TARGON_MODEL: &str = "x-targon-model";

pub struct Proxy {
    client: reqwest::Client,
    upstream: Option<String>,
    models: BTreeMap<String, ModelRoute>,
}

/// An OpenAI-style error body.
pub fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}

#[derive(serde::Deserialize)]
struct ModelField {
    model: Option<String>,
}

/// The `model` of a JSON object body (a JSON array also fits the struct: refused).
fn body_model(body: &[u8]) -> Option<String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<ModelField>(body).ok()?.model
}

impl Proxy {
    pub fn new(cfg: &RuntimeConfig) -> Result<Self, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS towards the upstream: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // The upstream is local: never route it through an HTTP proxy from the environment.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            // Between reads, not in all: a long generation may stream for minutes.
            .read_timeout(Duration::from_secs(cfg.upstream_timeout_s))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        Ok(Proxy {
            client,
            upstream: cfg
                .upstream
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            models: cfg.models.clone(),
        })
    }

    /// `/v1/models` as this node attests it: the configured model names
    /// (the runtime claims), not whatever the upstream calls them. `None`
    /// when no model map is configured (then the upstream answers).
    pub fn model_list(&self) -> Option<serde_json::Value> {
        if self.models.is_empty() {
            return None;
        }
        let data: Vec<_> = self
            .models
            .keys()
            .map(|m| json!({"id": m, "object": "model", "owned_by": "tvm"}))
            .collect();
        Some(json!({"object": "list", "data": data}))
    }

    /// Which upstream (base URL) and model name a request goes to.
    fn route(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(String, Option<String>), Box<Response>> {
        // With no model map every request goes to one upstream: skip the parse.
        let named = match headers.get(TARGON_MODEL).and_then(|v| v.to_str().ok()) {
            Some(m) => Some(m.to_string()),
            None if self.models.is_empty() => None,
            None => body_model(body),
        };
        let no_upstream = || {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_upstream",
                "this node has no inference server configured (runtime.upstream)",
            )
        };
        match (&named, self.models.is_empty()) {
            (None, false) => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "model_required",
                format!(
                    "name the model (X-Targon-Model, or the body's model); this node serves: {}",
                    self.models.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ))),
            (_, true) => {
                let up = self
                    .upstream
                    .clone()
                    .ok_or_else(|| Box::new(no_upstream()))?;
                Ok((up, None))
            }
            (Some(m), false) => match self.models.get(m) {
                Some(r) => {
                    let up = r
                        .upstream
                        .clone()
                        .or_else(|| self.upstream.clone())
                        .ok_or_else(|| Box::new(no_upstream()))?;
                    // The upstream gets exactly the attested model (or its
                    // served name), whatever else the body asked for.
                    let target = r.served_as.clone().unwrap_or_else(|| m.clone());
                    Ok((up.trim_end_matches('/').to_string(), Some(target)))
                }
                None => Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!(
                        "model {m:?} is not served by this node (serves: {})",
                        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ))),
            },
        }
    }

    /// Forward one request (`path` like `/v1/chat/completions`).
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Forwarded {
        let (base, served_as) = match self.route(headers, &body) {
            Ok(r) => r,
            Err(response) => {
                return Forwarded {
                    response: *response,
                    upstream_error: false,
                }
            }
        };
        let body = match served_as {
            Some(name) if body_model(&body).as_deref() == Some(name.as_str()) => body,
            Some(name) => match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(mut o)) => {
                    o.insert("model".into(), json!(name));
                    Bytes::from(serde_json::to_vec(&o).unwrap_or_default())
                }
                _ => {
                    return Forwarded {
                        response: error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "the body must be a JSON object (an OpenAI-style request)",
                        ),
                        upstream_error: false,
                    }
                }
            },
            None => body,
        };
        let url = format!("{base}{path}");
        let mut req = self.client.request(method, &url);
        for h in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&h) {
                req = req.header(h, v);
            }
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let (status, kind, what) = if e.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "is not reachable: is the inference server (vLLM) running?",
                    )
                } else if e.is_timeout() {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "did not answer in time",
                    )
                } else {
                    (StatusCode::BAD_GATEWAY, "upstream_error", "failed")
                };
                return Forwarded {
                    response: error(
                        status,
                        kind,
                        format!("inference server {base} {what} ({e})"),
                    ),
                    upstream_error: true,
                };
            }
        };
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = Response::builder().status(status);
        for h in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CACHE_CONTROL,
        ] {
            if let Some(v) = resp.headers().get(h.as_str()) {
                out = out.header(h, v.as_bytes());
            }
        }
        // Upstream errors (4xx/5xx) pass through as the upstream wrote them;
        // a stream that breaks midway ends the response, which the client sees.
        let out = out
            .body(Body::from_stream(resp.bytes_stream()))
            .unwrap_or_else(|_| {
                error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "unreadable upstream headers",
                )
            });
        Forwarded {
            response: out,
            upstream_error: false,
        }
    }
}

/// What the proxy answered, and whether the upstream failed to.
pub struct Forwarded {
    pub response: Response,
    pub upstream_error: bool,
}
