//! The validator's side of the wire: a miner's node list from its axon
//! (`GET /cvm`) and one node's evidence (`POST /api/v1/evidence`), both
//! Epistula-signed for the miner. Evidence is asked over RA-TLS first and
//! plain HTTP second, on port 8080 then 8980 (Targon's order: next port on a
//! refused connection or a 404). Bodies are size-limited and every request
//! has a timeout.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tvm_protocol::epistula;
use tvm_protocol::evidence::{EvidenceBundle, EvidenceRequest, MAX_BUNDLE_BYTES};
use tvm_protocol::keys::{AccountId, Hotkey};
use tvm_protocol::nodes::{parse_node_list, NodeEntry};
use tvm_protocol::nonce::Nonce;

/// A node list is small; this bounds a hostile axon.
const MAX_NODE_LIST_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{0}")]
    Client(String),
}

/// Evidence as fetched: the bundle, and the TLS key the connection showed.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bundle: EvidenceBundle,
    pub tls_spki_sha256: Option<[u8; 32]>,
    pub url: String,
}

pub struct Attester {
    client: reqwest::Client,
    validator: Hotkey,
    /// Evidence ports, tried in order (8080, 8980).
    pub ports: Vec<u16>,
    /// Also try plain HTTP when RA-TLS cannot connect. Off when the policy
    /// refuses plain HTTP: such an answer could only fail `tls.key`, and a
    /// TLS hiccup would then count as a failure instead of being tried again.
    pub plain_http: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read at most `limit` bytes of a response body.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    url: &str,
) -> Result<Vec<u8>, AttestError> {
    let too_big = || AttestError::Malformed {
        url: url.to_string(),
        reason: format!("answer over {limit} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| AttestError::Malformed {
        url: url.to_string(),
        reason: format!("answer broke off: {e}"),
    })? {
        if out.len() + chunk.len() > limit {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// What went wrong, in the words of the innermost error ("Connection
/// refused", "timed out", a TLS alert), after reqwest's own summary.
fn cause(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let root = inner.to_string();
    if e.is_timeout() {
        "timed out".into()
    } else if root == e.to_string() {
        root
    } else {
        root.to_lowercase()
    }
}

impl Attester {
    pub fn new(validator: Hotkey, timeout: Duration) -> Result<Self, AttestError> {
        Ok(Attester {
            client: crate::ratls::dangerous_any_certificate_client(timeout)
                .map_err(AttestError::Client)?,
            validator,
            ports: vec![8080, 8980],
            plain_http: true,
        })
    }

    fn signed(
        &self,
        req: reqwest::RequestBuilder,
        body: &[u8],
        miner: &AccountId,
    ) -> reqwest::RequestBuilder {
        let h = epistula::sign(&self.validator, body, Some(miner), now_ms());
        h.to_pairs()
            .into_iter()
            .fold(req, |r, (k, v)| r.header(k, v))
    }

    /// The miner's CVMs, from its axon.
    pub async fn node_list(
        &self,
        axon: SocketAddr,
        miner: &AccountId,
    ) -> Result<Vec<NodeEntry>, AttestError> {
        let url = format!("http://{axon}/cvm");
        let resp = self
            .signed(self.client.get(&url), b"", miner)
            .send()
            .await
            .map_err(|e| AttestError::Unreachable(format!("{url}: {}", cause(&e))))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, MAX_NODE_LIST_BYTES, &url).await?;
        if status != 200 {
            return Err(AttestError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        parse_node_list(&body).map_err(|e| AttestError::Malformed {
            url,
            reason: e.to_string(),
        })
    }

    /// One node's evidence for `nonce`.
    pub async fn evidence(
        &self,
        node: &NodeEntry,
        miner: &AccountId,
        nonce: &Nonce,
    ) -> Result<Fetched, AttestError> {
        let host = node.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let body = serde_json::to_vec(&EvidenceRequest { nonce: *nonce })
            .map_err(|e| AttestError::Client(e.to_string()))?;
        let mut tried = Vec::new();
        for port in &self.ports {
            let schemes: &[&str] = if self.plain_http {
                &["https", "http"]
            } else {
                &["https"]
            };
            for scheme in schemes {
                let url = format!("{scheme}://{host}:{port}/api/v1/evidence");
                let req = self
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                let resp = match self.signed(req, &body, miner).send().await {
                    Ok(r) => r,
                    // Refused, or not TLS: try plain HTTP, then the next port.
                    Err(e) if e.is_connect() => {
                        tried.push(format!("{url}: {}", cause(&e)));
                        continue;
                    }
                    Err(e) => {
                        return Err(AttestError::Unreachable(format!("{url}: {}", cause(&e))))
                    }
                };
                let status = resp.status().as_u16();
                if status == 404 {
                    tried.push(format!("{url}: 404"));
                    break;
                }
                let tls = crate::ratls::tls_spki_sha256(&resp)
                    .transpose()
                    .map_err(|reason| AttestError::Malformed {
                        url: url.clone(),
                        reason: reason.to_string(),
                    })?;
                let bytes = read_limited(resp, MAX_BUNDLE_BYTES, &url).await?;
                if status != 200 {
                    return Err(AttestError::Status {
                        url,
                        status,
                        body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    });
                }
                let bundle =
                    EvidenceBundle::from_json(&bytes).map_err(|e| AttestError::Malformed {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                return Ok(Fetched {
                    bundle,
                    tls_spki_sha256: tls,
                    url,
                });
            }
        }
        Err(AttestError::Unreachable(tried.join("; ")))
    }

    /// An inference call (`GET` without a body, else `POST` of `body`) to
    /// the node's agent, Epistula-signed for `miner`, over RA-TLS only: the
    /// connection's key must be `cvm_id`, the key the node's quote attested
    /// this round, so the answer comes from the measured CVM. The response
    /// is returned unread (it may stream) once its status is 200.
    pub async fn inference(
        &self,
        node: &str,
        miner: &AccountId,
        path: &str,
        body: Option<&[u8]>,
        cvm_id: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, AttestError> {
        let entry = NodeEntry {
            ip: node.to_string(),
            price: None,
        };
        let host = entry.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut tried = Vec::new();
        for port in &self.ports {
            let url = format!("https://{host}:{port}{path}");
            let req = match body {
                Some(b) => self
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b.to_vec()),
                None => self.client.get(&url),
            };
            // The whole exchange, the streamed answer included.
            let req = req.timeout(timeout);
            let resp = match self
                .signed(req, body.unwrap_or_default(), miner)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    tried.push(format!("{url}: {}", cause(&e)));
                    continue;
                }
                Err(e) => return Err(AttestError::Unreachable(format!("{url}: {}", cause(&e)))),
            };
            let seen = crate::ratls::tls_spki_sha256(&resp)
                .transpose()
                .map_err(|reason| AttestError::Malformed {
                    url: url.clone(),
                    reason: reason.to_string(),
                })?
                .map(hex::encode);
            if seen.as_deref() != Some(cvm_id) {
                return Err(AttestError::Malformed {
                    url,
                    reason: format!(
                        "answered under TLS key {}, not the attested CVM key {cvm_id}: another machine or a proxy",
                        seen.unwrap_or_else(|| "(none)".into())
                    ),
                });
            }
            let status = resp.status().as_u16();
            if status != 200 {
                let bytes = read_limited(resp, 64 * 1024, &url)
                    .await
                    .unwrap_or_default();
                return Err(AttestError::Status {
                    url,
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                });
            }
            return Ok(resp);
        }
        Err(AttestError::Unreachable(tried.join("; ")))
    }
}
