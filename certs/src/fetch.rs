//! HTTPS GETs to Intel PCS and AMD KDS: rustls with ring, Mozilla's roots (plus
//! any extra roots, e.g. a PCCS's), a timeout on every request, a body size
//! limit, and per-host backoff after 429/503 so that a rate-limited service
//! gets no request storm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collateral items are small (a CRL is the largest, tens of KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// First backoff when a 429/503 gives no Retry-After; doubles up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{host} asked us to slow down; not asking again for {seconds} s")]
    Backoff { host: String, seconds: u64 },
    #[error("{url} answered {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} sent more than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}

pub struct Response {
    pub body: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

pub struct Fetcher {
    client: reqwest::Client,
    backoff: Mutex<HashMap<String, Backoff>>,
    sent: AtomicU64,
}

impl Fetcher {
    /// `extra_roots`: DER certificates trusted besides Mozilla's roots.
    pub fn new(extra_roots: &[Vec<u8>], timeout: Duration) -> Result<Self, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in extra_roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| FetchError::Tls(format!("extra root: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Redirects stay on HTTPS (plain HTTP only to this machine, as
        // tests and local mirrors serve), and are few: a redirect must not
        // turn an https:// source into one anyone on the path can answer.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let u = attempt.url();
            let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if u.scheme() == "https" || (u.scheme() == "http" && loopback) {
                attempt.follow()
            } else {
                attempt.error("a redirect away from https://")
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tvm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        Ok(Fetcher {
            client,
            backoff: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
        })
    }

    /// Requests actually sent (not those refused by backoff).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn host_of(url: &str) -> String {
        url.split("://")
            .nth(1)
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or(url)
            .to_string()
    }

    pub async fn get(&self, url: &str) -> Result<Response, FetchError> {
        self.send(url, self.client.get(url)).await
    }

    /// POST `body` (e.g. an OCSP request, `application/ocsp-request`).
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Response, FetchError> {
        let req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(url, req).await
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, FetchError> {
        let host = Self::host_of(url);
        {
            let map = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = map.get(&host) {
                let now = Instant::now();
                if now < b.until {
                    return Err(FetchError::Backoff {
                        host,
                        seconds: (b.until - now).as_secs().max(1),
                    });
                }
            }
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut resp = request.send().await.map_err(|e| FetchError::Network {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status == 429 || status == 503 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
            let mut map = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            let delay = retry_after.unwrap_or_else(|| {
                map.get(&host)
                    .map(|b| (b.delay * 2).min(MAX_BACKOFF))
                    .unwrap_or(FIRST_BACKOFF)
            });
            map.insert(
                host,
                Backoff {
                    until: Instant::now() + delay,
                    delay,
                },
            );
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
                hint: " (rate limited; backing off)",
            });
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
                hint: if status == 404 {
                    " (no such item: check the FMSPC, chip ID, TCB or RIM id)"
                } else {
                    ""
                },
            });
        }
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&host);
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::Network {
            url: url.to_string(),
            reason: e.to_string(),
        })? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { body, headers })
    }
}
