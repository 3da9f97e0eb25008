//! `tvm image serve DIR`: an operator's image service.
//!
//! - `GET /v1/manifests/<node-type>.json` and `GET /v1/files/<name>/<version>/<file>`
//!   from `DIR/v1/…`: static files with range requests and conditional GETs
//!   (tower-http's `ServeDir`, which also refuses paths out of `DIR`).
//!   Release files live under versioned paths and are cached for a year;
//!   manifests change when a release is published and are revalidated.
//! - `POST /v1/reports`: a host report (`tvm-check/1` JSON) from
//!   `tvm install --submit`, Epistula-signed by the miner's hotkey, stored
//!   as `REPORTS/<ss58>/<ms>-<uuid>.json` for the operator (`tvm image
//!   reports`). Bounded: 64 KiB a report, one a minute and the latest 20
//!   per hotkey, 10 000 in all.
//!
//! Operators may serve the same `DIR` from any static host instead; only
//! report intake needs this server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tvm_protocol::epistula::{Recipient, SignedHeaders, Verifier};
use tvm_protocol::replay::ReplayGuard;

use crate::check::report::SCHEMA;

/// Largest report body.
pub const MAX_REPORT: usize = 64 << 10;
/// Reports kept per hotkey (the oldest go).
pub const KEEP_PER_HOTKEY: usize = 20;
/// How much report intake holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub keep_per_hotkey: usize,
    pub max_reports: usize,
    pub min_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            keep_per_hotkey: KEEP_PER_HOTKEY,
            max_reports: MAX_REPORTS,
            min_interval: MIN_INTERVAL,
        }
    }
}

/// Reports kept in all; beyond it intake answers 507.
pub const MAX_REPORTS: usize = 10_000;
/// Least time between two reports of one hotkey.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

struct Intake {
    dir: PathBuf,
    verifier: Verifier,
    /// Reports held, counted at start and kept exact under this lock (which
    /// serialises writes and pruning).
    held: Mutex<usize>,
    limits: Limits,
}

/// The router: static release files under `root`, reports into `reports`.
pub fn router(root: &Path, reports: &Path) -> Router {
    router_with(root, reports, Limits::default())
}

/// [`router`] with other intake limits (tests).
pub fn router_with(root: &Path, reports: &Path, limits: Limits) -> Router {
    let intake = Arc::new(Intake {
        dir: reports.to_path_buf(),
        verifier: Verifier::new(Recipient::Unaddressed)
            .with_replay_guard(Arc::new(ReplayGuard::default())),
        held: Mutex::new(count_all(reports)),
        limits,
    });
    let files = Router::new()
        .fallback_service(ServeDir::new(root.join("v1/files")))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ));
    let manifests = Router::new()
        .fallback_service(ServeDir::new(root.join("v1/manifests")))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ));
    Router::new()
        .route("/v1/reports", post(submit))
        .with_state(intake)
        .nest("/v1/files", files)
        .nest("/v1/manifests", manifests)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REPORT))
}

pub async fn serve(listen: SocketAddr, root: &Path, reports: &Path) -> Result<(), String> {
    if !root.join("v1").is_dir() {
        return Err(format!(
            "{}: no v1/ folder (publish with v1/manifests/<node-type>.json and v1/files/<name>/<version>/…)",
            root.display()
        ));
    }
    std::fs::create_dir_all(reports).map_err(|e| format!("{}: {e}", reports.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        "image service on {listen}: {} (reports into {})",
        root.display(),
        reports.display()
    );
    axum::serve(listener, router(root, reports))
        .await
        .map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, why.into()).into_response()
}

async fn submit(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    let verified = match SignedHeaders::parse(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .and_then(|h| intake.verifier.verify(&h, &body, now_ms()))
    {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, format!("not accepted: {e}")),
    };
    let report: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    if report.get("schema").and_then(|s| s.as_str()) != Some(SCHEMA) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("not a {SCHEMA} report (send the output of tvm check --json)"),
        );
    }
    let ss58 = verified.signer.to_ss58();
    let intake2 = intake.clone();
    let stored = tokio::task::spawn_blocking(move || {
        store(
            &intake2,
            &ss58,
            verified.timestamp_ms,
            &verified.uuid.to_string(),
            &body,
        )
    })
    .await;
    match stored {
        Ok(Ok(name)) => (StatusCode::CREATED, name).into_response(),
        Ok(Err((status, why))) => refuse(status, why),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Report files of one hotkey, oldest first (names start with the time).
fn reports_of(dir: &Path) -> Vec<PathBuf> {
    let mut v = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A report's time (ms), from its file name `<ms>-<uuid>.json`.
fn report_ms(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn count_all(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| reports_of(&e.path()).len())
                .sum()
        })
        .unwrap_or(0)
}

fn store(
    intake: &Intake,
    ss58: &str,
    timestamp_ms: u64,
    uuid: &str,
    body: &[u8],
) -> Result<String, (StatusCode, String)> {
    let mut held = intake.held.lock().map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "intake poisoned".to_string(),
        )
    })?;
    let internal = |e: std::io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let dir = intake.dir.join(ss58);
    let existing = reports_of(&dir);
    if let Some(last) = existing.last() {
        let last_ms = report_ms(last);
        if timestamp_ms < last_ms.saturating_add(intake.limits.min_interval.as_millis() as u64) {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!("one report a minute per hotkey; {ss58} sent one less than a minute ago"),
            ));
        }
    }
    // A hotkey at its keep limit replaces its oldest; any other report
    // adds one, up to the limit in all.
    if existing.len() < intake.limits.keep_per_hotkey && *held >= intake.limits.max_reports {
        return Err((
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the service holds {} reports; the operator must clear some",
                intake.limits.max_reports
            ),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let name = format!("{timestamp_ms:013}-{uuid}.json");
    let tmp = dir.join(format!("{name}.part"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Reports are the operator's, not the world's.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(internal)?;
        f.write_all(body).map_err(internal)?;
    }
    std::fs::rename(&tmp, dir.join(&name)).map_err(internal)?;
    *held += 1;
    let all = reports_of(&dir);
    for old in all
        .iter()
        .take(all.len().saturating_sub(intake.limits.keep_per_hotkey))
    {
        if std::fs::remove_file(old).is_ok() {
            *held = held.saturating_sub(1);
        }
    }
    Ok(format!("{ss58}/{name}\n"))
}

/// Miner-supplied text made safe for the operator's terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

/// `tvm image reports`: one line per stored report, newest last.
pub fn list_reports(reports: &Path) -> Result<String, String> {
    let mut out = String::new();
    let mut hotkeys = std::fs::read_dir(reports)
        .map_err(|e| format!("{}: {e}", reports.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect::<Vec<_>>();
    hotkeys.sort();
    for dir in hotkeys {
        let hotkey = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for path in reports_of(&dir) {
            let v: serde_json::Value = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let when = time::OffsetDateTime::from_unix_timestamp((report_ms(&path) / 1000) as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            let failed = v
                .get("checks")
                .and_then(|c| c.as_array())
                .map(|c| {
                    c.iter()
                        .filter(|f| f.get("status").and_then(|s| s.as_str()) == Some("fail"))
                        .filter_map(|f| f.get("id").and_then(|i| i.as_str()))
                        .map(printable)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{when}  {hotkey}  {:<9} {}  {}\n",
                printable(v.get("node_type").and_then(|n| n.as_str()).unwrap_or("?")),
                if v.get("ready").and_then(|r| r.as_bool()) == Some(true) {
                    "ready"
                } else {
                    "NOT READY"
                },
                if failed.is_empty() {
                    String::new()
                } else {
                    format!("failed: {failed}")
                }
            ));
        }
    }
    Ok(out)
}
