//! Who may call the agent: before the body is read, the headers' recipient,
//! freshness and (for an allowlist) the claimed signer; then the sr25519
//! signature over the body; then a per-signer token bucket; then the replay
//! guard. Order matters: only an allowed signer with a valid signature,
//! within its rate, can take memory in the replay guard, and strangers'
//! bodies are never buffered.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use tvm_protocol::epistula::{EpistulaError, Recipient, SignedHeaders, Verifier};
use tvm_protocol::keys::AccountId;
use tvm_protocol::replay::{ReplayGuard, DEFAULT_CAPACITY};

use crate::config::{AccessConfig, Allow};

/// Why a request was refused; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    Epistula(#[from] EpistulaError),
    #[error("{0} is not on this node's validator allowlist")]
    NotAllowed(String),
    #[error("{0} is over its rate limit ({1} requests per minute): slow down")]
    RateLimited(String, u32),
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Epistula(EpistulaError::ReplayGuardFull(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Denied::Epistula(_) => StatusCode::UNAUTHORIZED,
            Denied::NotAllowed(_) => StatusCode::FORBIDDEN,
            Denied::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Epistula(EpistulaError::MissingHeader(_)) => "unsigned",
            Denied::Epistula(EpistulaError::WrongRecipient { .. }) => "wrong_recipient",
            Denied::Epistula(EpistulaError::Stale { .. }) => "stale",
            Denied::Epistula(EpistulaError::FromFuture { .. }) => "future",
            Denied::Epistula(EpistulaError::BadSignature(_)) => "bad_signature",
            Denied::Epistula(EpistulaError::Replayed { .. }) => "replayed",
            Denied::Epistula(EpistulaError::ReplayGuardFull(_)) => "replay_guard_full",
            Denied::Epistula(_) => "malformed",
            Denied::NotAllowed(_) => "not_allowed",
            Denied::RateLimited(..) => "rate_limited",
        }
    }
}

enum Allowed {
    Any,
    List {
        path: PathBuf,
        keys: RwLock<(HashSet<AccountId>, Option<SystemTime>)>,
    },
}

/// A token bucket per signer.
struct Buckets {
    per_minute: u32,
    burst: u32,
    map: Mutex<HashMap<AccountId, (f64, Instant)>>,
}

/// Signers remembered at most; full buckets are dropped first.
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    fn take(&self, who: AccountId, now: Instant) -> bool {
        let rate = f64::from(self.per_minute) / 60.0;
        let burst = f64::from(self.burst);
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(&who) {
            map.retain(|_, (tokens, at)| {
                (*tokens + now.duration_since(*at).as_secs_f64() * rate) < burst
            });
            // Still full of active signers: a newcomer waits, the map stays bounded.
            if map.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let (tokens, at) = map.entry(who).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Access {
    miner: AccountId,
    verifier: Verifier,
    replay: ReplayGuard,
    allowed: Allowed,
    evidence: Buckets,
    inference: Buckets,
}

/// Which rate limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Evidence and node information.
    Attestation,
    Inference,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the validator allowlist {path}: {reason}")]
pub struct AllowlistError {
    pub path: String,
    pub reason: String,
}

/// One SS58 hotkey per line; `#` starts a comment.
pub fn parse_allowlist(text: &str) -> Result<HashSet<AccountId>, String> {
    let mut out = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let id = AccountId::from_ss58(line)
            .map_err(|e| format!("line {}: {line:?} is not an SS58 hotkey: {e}", n + 1))?;
        out.insert(id);
    }
    Ok(out)
}

fn read_allowlist(
    path: &PathBuf,
) -> Result<(HashSet<AccountId>, Option<SystemTime>), AllowlistError> {
    let err = |reason: String| AllowlistError {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > 1 << 20 {
        return Err(err("larger than 1 MiB".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    Ok((parse_allowlist(&text).map_err(err)?, meta.modified().ok()))
}

impl Access {
    pub fn new(miner: AccountId, cfg: &AccessConfig) -> Result<Self, AllowlistError> {
        let allowed = match (cfg.allow, &cfg.allowlist) {
            (Allow::AnySigner, _) => Allowed::Any,
            (Allow::Allowlist, path) => {
                let path = path.clone().unwrap_or_default();
                let keys = read_allowlist(&path)?;
                Allowed::List {
                    path,
                    keys: RwLock::new(keys),
                }
            }
        };
        Ok(Access {
            miner,
            // Replays are checked by `check` itself, after the allowlist and rate limit.
            verifier: Verifier::new(Recipient::Hotkey(miner)).with_window_ms(cfg.window_ms),
            replay: ReplayGuard::new(DEFAULT_CAPACITY),
            allowed,
            evidence: Buckets {
                per_minute: cfg.per_signer_per_minute,
                burst: cfg.per_signer_burst,
                map: Mutex::new(HashMap::new()),
            },
            inference: Buckets {
                per_minute: cfg.inference_per_signer_per_minute,
                burst: cfg.inference_per_signer_burst,
                map: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Re-read the allowlist if the file changed. A broken file keeps the
    /// last good list (and says so) rather than locking every validator out.
    pub fn reload(&self) -> Result<bool, AllowlistError> {
        let Allowed::List { path, keys } = &self.allowed else {
            return Ok(false);
        };
        let mtime = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
        let current = keys.read().map(|k| k.1).unwrap_or(None);
        if mtime.is_some() && mtime == current {
            return Ok(false);
        }
        let fresh = read_allowlist(path)?;
        let n = fresh.0.len();
        if n == 0 {
            // Most likely a file caught mid-rewrite: replace it by renaming a new one into place.
            return Err(AllowlistError {
                path: path.display().to_string(),
                reason: "the new list is empty; keeping the previous one (to refuse everyone, stop the agent)".into(),
            });
        }
        if let Ok(mut k) = keys.write() {
            *k = fresh;
        }
        tracing::info!(path = %path.display(), validators = n, "allowlist reloaded");
        Ok(true)
    }

    /// What can be checked before reading the body: the headers' form, the
    /// recipient, freshness and (for an allowlist) the claimed signer. Lets
    /// the server refuse strangers without buffering their bodies.
    pub fn precheck(&self, headers: &HeaderMap) -> Result<SignedHeaders, Denied> {
        let h = SignedHeaders::parse(|name| headers.get(name).and_then(|v| v.to_str().ok()))?;
        if h.signed_for != Some(self.miner) {
            return Err(Denied::Epistula(EpistulaError::WrongRecipient {
                expected: self.miner.to_ss58(),
                got: h
                    .signed_for
                    .map(|a| a.to_ss58())
                    .unwrap_or_else(|| "nobody".into()),
            }));
        }
        let now = now_ms();
        let window = self.verifier.window_ms();
        if now > h.timestamp_ms.saturating_add(window) {
            return Err(Denied::Epistula(EpistulaError::Stale {
                age_ms: now - h.timestamp_ms,
                window_ms: window,
                hint: "",
            }));
        }
        if h.timestamp_ms > now.saturating_add(window) {
            return Err(Denied::Epistula(EpistulaError::FromFuture {
                ahead_ms: h.timestamp_ms - now,
                window_ms: window,
            }));
        }
        self.allowed_or_refuse(&h.signed_by)?;
        Ok(h)
    }

    fn allowed_or_refuse(&self, who: &AccountId) -> Result<(), Denied> {
        if let Allowed::List { keys, .. } = &self.allowed {
            let ok = keys.read().map(|k| k.0.contains(who)).unwrap_or(false);
            if !ok {
                return Err(Denied::NotAllowed(who.to_ss58()));
            }
        }
        Ok(())
    }

    /// Check a request: its headers and the exact body bytes. The replay
    /// guard is consulted last, so that only allowed signers within their
    /// rate can take its memory.
    pub fn check(&self, h: &SignedHeaders, body: &[u8], limit: Limit) -> Result<AccountId, Denied> {
        let now = now_ms();
        let v = self.verifier.verify(h, body, now)?;
        self.allowed_or_refuse(&v.signer)?;
        let buckets = match limit {
            Limit::Attestation => &self.evidence,
            Limit::Inference => &self.inference,
        };
        if !buckets.take(v.signer, Instant::now()) {
            return Err(Denied::RateLimited(v.signer.to_ss58(), buckets.per_minute));
        }
        self.replay.admit(
            v.signer,
            v.uuid,
            v.timestamp_ms.saturating_add(self.verifier.window_ms()),
            now,
        )?;
        Ok(v.signer)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_signer() {
        let b = Buckets {
            per_minute: 60,
            burst: 3,
            map: Mutex::new(HashMap::new()),
        };
        let (a, c) = (AccountId([1; 32]), AccountId([2; 32]));
        let t = Instant::now();
        assert!((0..3).all(|_| b.take(a, t)));
        assert!(!b.take(a, t));
        assert!(b.take(c, t), "another signer is still served");
        assert!(
            b.take(a, t + Duration::from_millis(1100)),
            "one token back after a second"
        );
    }

    #[test]
    fn allowlist_lines_and_errors() {
        let l = parse_allowlist(
            "# validators\n5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY  # alice\n\n",
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        let e = parse_allowlist("5Grwva\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
