//! What the validator shows: a JSON status API, a server-rendered dashboard
//! (no scripts, no external assets) and Prometheus metrics, all read from
//! the round store, so they show a round as it runs and survive restarts.
//!
//! - `GET /api/v1/rounds` — recent rounds, their weights and where they went
//! - `GET /api/v1/nodes` — every node of the latest round: verdict, GPUs, score, reasons
//! - `GET /api/v1/miners/{uid}` — one miner's nodes, points and weight in
//!   the last finished round
//! - `GET /` — the dashboard; `GET /metrics` — Prometheus text

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use crate::db::{Db, RoundRow};
use crate::scoring::{GpuSeen, NodeResult, NodeScore};
use tvm_verifier::facts::rfc3339;

/// What the pages need besides the store.
pub struct StatusInfo {
    pub validator: String,
    /// The policy trusts simulated roots: everything is labelled SIMULATED.
    pub simulated: bool,
    /// Where the metagraph comes from and the weights go, in words.
    pub network: String,
}

#[derive(Clone)]
struct AppState {
    db: Arc<Db>,
    info: Arc<StatusInfo>,
}

pub fn router(db: Arc<Db>, info: StatusInfo) -> Router {
    let state = AppState {
        db,
        info: Arc::new(info),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/api/v1/rounds", get(rounds))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/miners/{uid}", get(miner))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A round as the API shows it.
#[derive(Debug, Serialize)]
pub struct RoundView {
    pub epoch: u64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// (uid, u16 weight), once finished.
    pub weights: Vec<(u16, u16)>,
    /// Where the weights went, in words (for a commit: when the chain
    /// reveals it and, once read back, whether it did).
    pub set: Option<String>,
    pub notes: Vec<String>,
    pub miner_errors: Vec<(u16, String)>,
}

/// A node as the API shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub miner_uid: u16,
    pub node: String,
    /// accepted, rejected or no_evidence.
    pub verdict: &'static str,
    pub simulated: bool,
    pub cvm_id: Option<String>,
    pub gpus: Vec<GpuSeen>,
    pub bid: Option<u64>,
    /// How it counted (once the round is scored): `outcome` counted,
    /// duplicate, not_in_auction, failed or no_evidence.
    pub score: Option<Value>,
    /// Why it failed, in words.
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
struct NodesView {
    round: Option<RoundView>,
    nodes: Vec<NodeView>,
}

fn round_view(r: &RoundRow) -> RoundView {
    let result: Value = r
        .result
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    let set = match serde_json::from_value::<crate::service::WeightsSent>(result["set"].clone()) {
        Ok(w) => Some(
            match serde_json::from_value::<crate::service::RevealSeen>(result["reveal"].clone()) {
                Ok(r) => format!("{w}; {r}"),
                Err(_) => w.to_string(),
            },
        ),
        Err(_) => None,
    };
    RoundView {
        epoch: r.epoch,
        started_at: r.started_at,
        finished_at: r.finished_at,
        weights: serde_json::from_value(result["weights"].clone()).unwrap_or_default(),
        set,
        notes: serde_json::from_value(result["notes"].clone()).unwrap_or_default(),
        miner_errors: serde_json::from_value(result["miner_errors"].clone()).unwrap_or_default(),
    }
}

fn node_view(n: NodeResult, scores: &HashMap<(u16, &str), Value>) -> NodeView {
    let score = scores.get(&(n.miner_uid, n.node.as_str())).cloned();
    NodeView {
        verdict: match n.accepted {
            Some(true) => "accepted",
            Some(false) => "rejected",
            None => "no_evidence",
        },
        miner_uid: n.miner_uid,
        node: n.node,
        simulated: n.simulated,
        cvm_id: n.cvm_id,
        gpus: n.gpus,
        bid: n.bid,
        score,
        reasons: n.reasons,
    }
}

/// A round's nodes (as far as it got), with their scores once it finished.
fn nodes_of(db: &Db, row: &RoundRow) -> Result<Vec<NodeView>, String> {
    let result: Value = row
        .result
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    let scores: HashMap<(u16, &str), Value> = result["nodes"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| {
                    let uid = u16::try_from(s["miner_uid"].as_u64()?).ok()?;
                    Some(((uid, s["node"].as_str()?), s["score"].clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(db
        .finished_results(row.id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|n| node_view(n, &scores))
        .collect())
}

/// The latest round, running or finished.
fn latest(db: &Db) -> Result<Option<RoundRow>, String> {
    Ok(db.rounds(1).map_err(|e| e.to_string())?.into_iter().next())
}

/// The last finished round: what weights and points come from.
fn finished(db: &Db) -> Result<Option<RoundRow>, String> {
    db.last_finished().map_err(|e| e.to_string())
}

fn unavailable(e: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e })),
    )
        .into_response()
}

/// SQLite work off the async workers: a page never stalls the round.
async fn blocking(
    s: AppState,
    f: impl FnOnce(&Db, &StatusInfo) -> Result<Response, String> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || f(&s.db, &s.info)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(format!("status page failed: {e}")),
    }
}

async fn rounds(State(s): State<AppState>) -> Response {
    blocking(s, |db, _| {
        let rows = db.rounds(50).map_err(|e| e.to_string())?;
        Ok(Json(rows.iter().map(round_view).collect::<Vec<_>>()).into_response())
    })
    .await
}

async fn nodes(State(s): State<AppState>) -> Response {
    blocking(s, |db, _| {
        let row = latest(db)?;
        let nodes = match &row {
            Some(r) => nodes_of(db, r)?,
            None => Vec::new(),
        };
        Ok(Json(NodesView {
            round: row.as_ref().map(round_view),
            nodes,
        })
        .into_response())
    })
    .await
}

async fn miner(State(s): State<AppState>, Path(uid): Path<u16>) -> Response {
    blocking(s, move |db, _| {
        let Some(row) = finished(db)? else {
            return Ok((
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "no round has finished yet"})),
            )
                .into_response());
        };
        let round = round_view(&row);
        let nodes: Vec<NodeView> = nodes_of(db, &row)?
            .into_iter()
            .filter(|n| n.miner_uid == uid)
            .collect();
        let weight = round.weights.iter().find(|(u, _)| *u == uid).map(|(_, w)| *w);
        if nodes.is_empty() && weight.is_none() {
            return Ok((
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({
                    "error": format!("uid {uid} had no nodes and no weight in the last finished round (epoch {})", round.epoch)
                })),
            )
                .into_response());
        }
        let points: f64 = nodes
            .iter()
            .filter_map(|n| n.score.as_ref()?.get("points")?.as_f64())
            .sum();
        Ok(Json(serde_json::json!({
            "uid": uid,
            "epoch": round.epoch,
            "v6_points": points,
            "weight": weight.unwrap_or(0),
            "nodes": nodes,
        }))
        .into_response())
    })
    .await
}

async fn metrics(State(s): State<AppState>) -> Response {
    blocking(s, |db, _| {
        let mut out = String::new();
        let n = db.finished_count().map_err(|e| e.to_string())?;
        let _ = writeln!(
            out,
            "# HELP tvm_validator_rounds_finished Rounds finished and stored.\n# TYPE tvm_validator_rounds_finished gauge\ntvm_validator_rounds_finished {n}"
        );
        if let Some(row) = latest(db)? {
            let nodes = nodes_of(db, &row)?;
            let _ = writeln!(
                out,
                "# HELP tvm_validator_round_epoch The latest round's epoch.\n# TYPE tvm_validator_round_epoch gauge\ntvm_validator_round_epoch {}",
                row.epoch
            );
            let _ = writeln!(
                out,
                "# HELP tvm_validator_round_running 1 while the latest round is running.\n# TYPE tvm_validator_round_running gauge\ntvm_validator_round_running {}",
                u8::from(row.finished_at.is_none())
            );
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for n in &nodes {
                *by.entry(n.verdict).or_default() += 1;
            }
            let _ = writeln!(out, "# HELP tvm_validator_round_nodes Nodes of the latest round by verdict, as far as it got.\n# TYPE tvm_validator_round_nodes gauge");
            for v in ["accepted", "rejected", "no_evidence"] {
                let _ = writeln!(
                    out,
                    "tvm_validator_round_nodes{{verdict=\"{v}\"}} {}",
                    by.get(v).copied().unwrap_or(0)
                );
            }
        }
        if let Some(row) = finished(db)? {
            let counted: usize = nodes_of(db, &row)?
                .iter()
                .filter(|n| n.score.as_ref().is_some_and(|s| s["outcome"] == "counted"))
                .map(|n| n.gpus.len())
                .sum();
            let _ = writeln!(out, "# HELP tvm_validator_verified_gpus GPUs verified and counted (unique) in the last finished round.\n# TYPE tvm_validator_verified_gpus gauge\ntvm_validator_verified_gpus {counted}");
            if let Some(done) = row.finished_at {
                let _ = writeln!(out, "# HELP tvm_validator_round_seconds How long the last finished round took.\n# TYPE tvm_validator_round_seconds gauge\ntvm_validator_round_seconds {}", done - row.started_at);
            }
            let _ = writeln!(out, "# HELP tvm_validator_weight The last finished round's u16 weight per uid.\n# TYPE tvm_validator_weight gauge");
            for (uid, w) in &round_view(&row).weights {
                let _ = writeln!(out, "tvm_validator_weight{{uid=\"{uid}\"}} {w}");
            }
        }
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
    })
    .await
}

/// HTML-escape text from the network (node names, reasons).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How a node counted, in the same words as `tvm devnet` prints them.
fn outcome_words(score: &Option<Value>) -> String {
    score
        .clone()
        .and_then(|s| serde_json::from_value::<NodeScore>(s).ok())
        .map_or_else(|| "pending".into(), |s| s.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#0a6b0a;font-weight:600}.bad{color:#b00020;font-weight:600}\
.sim{background:#ffe08a;padding:.1em .4em;font-weight:700}.muted{color:#777}ul{margin:0;padding-left:1.2em}\
td:last-child{word-break:break-all;max-width:48em}";

async fn dashboard(State(s): State<AppState>) -> Response {
    blocking(s, dashboard_page).await
}

/// The last finished round (or the first one, while it runs), and a line
/// for a newer round in progress.
fn dashboard_page(db: &Db, info: &StatusInfo) -> Result<Response, String> {
    let newest = latest(db)?;
    let row = match finished(db)? {
        Some(r) => Some(r),
        None => newest.clone(),
    };
    let nodes = match &row {
        Some(r) => nodes_of(db, r)?,
        None => Vec::new(),
    };
    let sim = if info.simulated {
        " <span class=\"sim\">SIMULATED</span>"
    } else {
        ""
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>tvm validator</title><style>{STYLE}</style></head><body>\
         <h1>tvm validator{sim}</h1><p>hotkey <code>{}</code> · {}</p>",
        esc(&info.validator),
        esc(&info.network)
    );
    let round = row.as_ref().map(round_view);
    match &round {
        None => h.push_str(
            "<p>No round yet: the first starts when the validator has its metagraph.</p>",
        ),
        Some(r) => {
            let state = match r.finished_at {
                Some(t) => format!("finished {}", rfc3339(t)),
                None => format!(
                    "running since {} ({} nodes so far)",
                    rfc3339(r.started_at),
                    nodes.len()
                ),
            };
            let _ = write!(h, "<h2>Epoch {}</h2><p>{}</p>", r.epoch, esc(&state));
            if let Some(set) = &r.set {
                let _ = write!(h, "<p>Weights: {}</p>", esc(set));
            }
            for n in &r.notes {
                let _ = write!(h, "<p class=\"muted\">{}</p>", esc(n));
            }
        }
    }
    if let (Some(n), Some(r)) = (&newest, &row) {
        if n.epoch != r.epoch {
            let so_far = db.node_count(n.id).unwrap_or(0);
            let _ = write!(
                h,
                "<p>Epoch {} is running since {}: {so_far} nodes attested so far.</p>",
                n.epoch,
                rfc3339(n.started_at)
            );
        }
    }

    // Miners.
    let mut miners: BTreeMap<u16, (usize, usize, usize, f64)> = BTreeMap::new();
    for n in &nodes {
        let e = miners.entry(n.miner_uid).or_default();
        e.0 += 1;
        if n.verdict == "accepted" {
            e.1 += 1;
        }
        if let Some(sc) = &n.score {
            if sc["outcome"] == "counted" {
                e.2 += n.gpus.len();
                e.3 += sc["points"].as_f64().unwrap_or(0.0);
            }
        }
    }
    let weights: BTreeMap<u16, u16> = round
        .as_ref()
        .map(|r| r.weights.iter().copied().collect())
        .unwrap_or_default();
    for uid in weights.keys() {
        miners.entry(*uid).or_default();
    }
    h.push_str("<h2>Miners</h2><table id=\"miners\"><tr><th>uid</th><th>nodes</th><th>accepted</th><th>GPUs counted</th><th>v6 points</th><th>weight</th></tr>");
    for (uid, (n, ok, gpus, points)) in &miners {
        let w = weights.get(uid).copied().unwrap_or(0);
        let _ = write!(
            h,
            "<tr><td>{uid}</td><td>{n}</td><td>{ok}</td><td>{gpus}</td><td>{points}</td><td>{w} ({:.1} %)</td></tr>",
            f64::from(w) * 100.0 / 65535.0
        );
    }
    h.push_str("</table>");
    if let Some(r) = &round {
        for (uid, e) in &r.miner_errors {
            let _ = write!(
                h,
                "<p class=\"bad\">miner {uid}: no node list — {}</p>",
                esc(e)
            );
        }
    }

    // Nodes.
    h.push_str("<h2>Nodes</h2><table id=\"nodes\"><tr><th>miner</th><th>node</th><th>verdict</th><th>GPUs</th><th>counted</th><th>why</th></tr>");
    for n in &nodes {
        let verdict = match n.verdict {
            "accepted" => "<span class=\"ok\">ACCEPTED</span>",
            "rejected" => "<span class=\"bad\">REJECTED</span>",
            _ => "<span class=\"bad\">NO EVIDENCE</span>",
        };
        let sim = if n.simulated {
            " <span class=\"sim\">SIMULATED</span>"
        } else {
            ""
        };
        let gpus = n
            .gpus
            .iter()
            .map(|g| {
                format!(
                    "{} <span class=\"muted\">{}</span>",
                    esc(&g.model),
                    esc(&g.id.chars().take(16).collect::<String>())
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let why = if n.reasons.is_empty() {
            String::new()
        } else {
            format!(
                "<ul>{}</ul>",
                n.reasons
                    .iter()
                    .map(|r| format!("<li>{}</li>", esc(r)))
                    .collect::<String>()
            )
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{verdict}{sim}</td><td>{gpus}</td><td>{}</td><td>{why}</td></tr>",
            n.miner_uid,
            esc(&n.node),
            esc(&outcome_words(&n.score)),
        );
    }
    h.push_str("</table>");

    // Rounds.
    h.push_str("<h2>Rounds</h2><table id=\"rounds\"><tr><th>epoch</th><th>started</th><th>finished</th><th>weights</th></tr>");
    for r in db.rounds(20).unwrap_or_default().iter().map(round_view) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.epoch,
            rfc3339(r.started_at),
            r.finished_at.map(rfc3339).unwrap_or_else(|| "—".into()),
            esc(r.set.as_deref().unwrap_or("—"))
        );
    }
    h.push_str("</table></body></html>");
    Ok(Html(h).into_response())
}

/// Serve the status pages on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}
