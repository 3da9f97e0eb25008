//! The toy model over the OpenAI API (`/v1/models`, `/v1/chat/completions`,
//! `/v1/completions`, streamed with log-probabilities and usage), at a
//! chosen pace: the honest upstream of tests and the devnet's simulated
//! miners, and each cheater the v5 checks must catch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::gguf::GgufLm;
use crate::toy::{token_text, tokenize, Finish, ToyLm};

/// How the server answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Honest,
    /// Serves this other toy model under the name asked for.
    OtherModel(String),
    /// Stops after this many tokens, saying "stop".
    Truncate(usize),
    /// Reports usage multiplied by this.
    UsageTimes(f64),
    /// Answers a prompt it has seen with the answer it gave first.
    Replay,
}

#[derive(Debug, Clone)]
pub struct ToyConfig {
    /// The model names served.
    pub models: Vec<String>,
    pub behaviour: Behaviour,
    /// Before the first token...
    pub first_token: Duration,
    /// ...and between tokens.
    pub per_token: Duration,
    /// A real model to serve under every name instead of the toy (chat
    /// template applied on `/v1/chat/completions`); `OtherModel` still
    /// serves the toy.
    pub gguf: Option<Arc<GgufLm>>,
}

impl ToyConfig {
    pub fn honest(models: &[&str]) -> Self {
        ToyConfig {
            models: models.iter().map(|m| m.to_string()).collect(),
            behaviour: Behaviour::Honest,
            first_token: Duration::ZERO,
            per_token: Duration::ZERO,
            gguf: None,
        }
    }
}

struct ServerState {
    cfg: ToyConfig,
    cache: Mutex<HashMap<String, Answer>>,
}

/// An answer: token texts and their log-probabilities.
#[derive(Clone)]
struct Answer {
    tokens: Vec<String>,
    logprobs: Vec<f64>,
    finish: Finish,
    prompt_tokens: usize,
}

pub fn router(cfg: ToyConfig) -> Router {
    let state = Arc::new(ServerState {
        cfg,
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .with_state(state)
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, cfg: ToyConfig) -> std::io::Result<()> {
    axum::serve(listener, router(cfg)).await
}

async fn models(State(s): State<Arc<ServerState>>) -> Json<Value> {
    let data: Vec<Value> = s
        .cfg
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "tvm-toy (a deterministic toy model)"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn bad(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"message": msg, "type": "invalid_request_error"}})),
    )
        .into_response()
}

async fn chat(State(s): State<Arc<ServerState>>, Json(body): Json<Value>) -> Response {
    if body.get("continue_final_message").and_then(Value::as_bool) == Some(true) {
        return prompt_logprobs(&s, &body);
    }
    let prompt = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|x| x.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .map(String::from);
    match prompt {
        Some(p) => answer(s, body, p, true).await,
        None => bad("messages must hold a user message with text content"),
    }
}

async fn completions(State(s): State<Arc<ServerState>>, Json(body): Json<Value>) -> Response {
    if body.get("prompt_logprobs").is_some_and(|v| !v.is_null()) {
        return prompt_logprobs(&s, &body);
    }
    match body.get("prompt").and_then(Value::as_str).map(String::from) {
        Some(p) => answer(s, body, p, false).await,
        None => bad("prompt must be a string"),
    }
}

/// The model's answer to `prompt` as `s` is set to give it.
fn generate(
    s: &ServerState,
    model: &str,
    prompt: &str,
    chat: bool,
    temperature: f64,
    seed: u64,
    max_tokens: usize,
) -> Result<Answer, String> {
    let mut a = match (&s.cfg.gguf, &s.cfg.behaviour) {
        (Some(lm), b) if !matches!(b, Behaviour::OtherModel(_)) => {
            let (g, prompt_tokens) = lm.generate(prompt, chat, temperature, seed, max_tokens)?;
            Answer {
                tokens: g
                    .tokens
                    .iter()
                    .map(|t| lm.vocab().token_text(*t as u32).to_string())
                    .collect(),
                logprobs: g.logprobs,
                finish: g.finish,
                prompt_tokens,
            }
        }
        (_, b) => {
            let weights = match b {
                Behaviour::OtherModel(other) => ToyLm::new(other),
                _ => ToyLm::new(model),
            };
            let prompt_tokens = tokenize(prompt);
            let g = weights.generate(&prompt_tokens, temperature, seed, max_tokens);
            Answer {
                tokens: g
                    .tokens
                    .iter()
                    .map(|t| token_text(*t).to_string())
                    .collect(),
                logprobs: g.logprobs,
                finish: g.finish,
                prompt_tokens: prompt_tokens.len(),
            }
        }
    };
    match &s.cfg.behaviour {
        Behaviour::Truncate(n) if a.tokens.len() > *n => {
            a.tokens.truncate(*n);
            a.logprobs.truncate(*n);
            a.finish = Finish::Stop;
        }
        Behaviour::Replay => {
            let mut cache = s.cache.lock().unwrap_or_else(|e| e.into_inner());
            a = cache.entry(prompt.to_string()).or_insert(a).clone();
        }
        _ => {}
    }
    Ok(a)
}

async fn answer(s: Arc<ServerState>, body: Value, prompt: String, chat: bool) -> Response {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad("model is required");
    };
    if !s.cfg.models.iter().any(|m| m == model) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("model {model} is not served here"), "type": "not_found"}})),
        )
            .into_response();
    }
    let temperature = body
        .get("temperature")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let seed = body.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .min(4096) as usize;
    // A real model takes a while: off the server's threads.
    let run = {
        let (s, model, prompt) = (s.clone(), model.to_string(), prompt.clone());
        move || generate(&s, &model, &prompt, chat, temperature, seed, max_tokens)
    };
    let g = match tokio::task::spawn_blocking(run).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": e, "type": "server_error"}})),
            )
                .into_response()
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let usage_factor = match s.cfg.behaviour {
        Behaviour::UsageTimes(f) => f,
        _ => 1.0,
    };
    let usage = json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": ((g.tokens.len() as f64) * usage_factor).round() as u64,
        "total_tokens": g.prompt_tokens + g.tokens.len(),
    });
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let text: String = g.tokens.concat();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text},
                   "logprobs": {"content": g.tokens.iter().zip(&g.logprobs).map(|(t, l)| json!({"token": t, "logprob": l})).collect::<Vec<_>>()},
                   "finish_reason": g.finish.as_str()})
        } else {
            json!({"index": 0, "text": text,
                   "logprobs": {"tokens": g.tokens, "token_logprobs": g.logprobs},
                   "finish_reason": g.finish.as_str()})
        };
        return Json(
            json!({"object": if chat {"chat.completion"} else {"text_completion"},
                           "model": model, "choices": [choice], "usage": usage}),
        )
        .into_response();
    }
    let mut events: Vec<(Duration, String)> = Vec::new();
    for (i, (text, l)) in g.tokens.iter().zip(&g.logprobs).enumerate() {
        let choice = if chat {
            json!({"index": 0, "delta": {"content": text},
                   "logprobs": {"content": [{"token": text, "logprob": l, "top_logprobs": []}]},
                   "finish_reason": null})
        } else {
            json!({"index": 0, "text": text,
                   "logprobs": {"tokens": [text], "token_logprobs": [l]}, "finish_reason": null})
        };
        let wait = if i == 0 {
            s.cfg.first_token
        } else {
            s.cfg.per_token
        };
        events.push((
            wait,
            json!({"model": model, "choices": [choice]}).to_string(),
        ));
    }
    let last = if chat {
        json!({"index": 0, "delta": {}, "finish_reason": g.finish.as_str()})
    } else {
        json!({"index": 0, "text": "", "finish_reason": g.finish.as_str()})
    };
    let wait = if g.tokens.is_empty() {
        s.cfg.first_token
    } else {
        Duration::ZERO
    };
    events.push((wait, json!({"model": model, "choices": [last]}).to_string()));
    events.push((
        Duration::ZERO,
        json!({"model": model, "choices": [], "usage": usage}).to_string(),
    ));
    events.push((Duration::ZERO, "[DONE]".into()));
    let body = futures_util::stream::unfold(events.into_iter(), |mut it| async move {
        let (wait, data) = it.next()?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(format!("data: {data}\n\n")),
            it,
        ))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// vLLM's way to score a text: the messages with the last (assistant) one
/// continued, `prompt_logprobs: k` for every prompt token (the top k and
/// the token itself, each with its rank), and the next token's `top_logprobs`.
/// A reference server for the validator; the toy honours it (it scores
/// with the model asked for, whatever the behaviour).
fn prompt_logprobs(s: &ServerState, body: &Value) -> Response {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad("model is required");
    };
    if !s.cfg.models.iter().any(|m| m == model) {
        return bad("model not served here");
    }
    if s.cfg.gguf.is_some() {
        return bad("this server scores with the toy model only (prompt_logprobs)");
    }
    let messages = body.get("messages").and_then(Value::as_array);
    let chat = messages.is_some();
    let text = |role: &str| {
        messages.and_then(|m| {
            m.iter()
                .rfind(|x| x.get("role").and_then(Value::as_str) == Some(role))
                .and_then(|x| x.get("content"))
                .and_then(Value::as_str)
        })
    };
    // A chat continued, or a completion's whole text.
    let all = match (chat, text("user"), text("assistant")) {
        (true, Some(user), Some(assistant)) => {
            let mut all = tokenize(user);
            all.extend(tokenize(assistant));
            all
        }
        (false, _, _) => match body.get("prompt").and_then(Value::as_str) {
            Some(p) => tokenize(p),
            None => return bad("prompt must be a string"),
        },
        _ => return bad("continue_final_message needs a user and a final assistant message"),
    };
    let k = body
        .get("prompt_logprobs")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .clamp(1, 20) as usize;
    let top_n = body
        .get("top_logprobs")
        .and_then(Value::as_u64)
        .unwrap_or(k as u64)
        .clamp(1, 20) as usize;
    let lm = ToyLm::new(model);
    let ranked = |lp: &[f64]| {
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|a, b| lp[*b].total_cmp(&lp[*a]));
        order
    };
    let mut prompt = vec![Value::Null];
    for i in 1..all.len() {
        let lp = lm.logprobs(&all[..i]);
        let order = ranked(&lp);
        let mut entry = serde_json::Map::new();
        for (rank, id) in order.iter().enumerate() {
            if rank < k || *id == all[i] {
                entry.insert(
                    id.to_string(),
                    json!({"logprob": lp[*id], "rank": rank + 1, "decoded_token": token_text(*id)}),
                );
            }
        }
        prompt.push(Value::Object(entry));
    }
    let lp = lm.logprobs(&all);
    let order = ranked(&lp);
    let top: Vec<Value> = order
        .iter()
        .take(top_n)
        .map(|id| json!({"token": token_text(*id), "logprob": lp[*id]}))
        .collect();
    let next = order[0];
    let usage =
        json!({"prompt_tokens": all.len(), "completion_tokens": 1, "total_tokens": all.len() + 1});
    if !chat {
        // vLLM's completions: prompt_logprobs in the choice, top_logprobs
        // as {token: logprob}.
        let top: serde_json::Map<String, Value> = order
            .iter()
            .take(top_n)
            .map(|id| (token_text(*id).to_string(), json!(lp[*id])))
            .collect();
        return Json(json!({
            "object": "text_completion",
            "model": model,
            "choices": [{"index": 0, "text": token_text(next),
                         "logprobs": {"tokens": [token_text(next)], "token_logprobs": [lp[next]], "top_logprobs": [top]},
                         "prompt_logprobs": prompt,
                         "finish_reason": "length"}],
            "usage": usage,
        }))
        .into_response();
    }
    Json(json!({
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": token_text(next)},
                     "logprobs": {"content": [{"token": token_text(next), "logprob": lp[next], "top_logprobs": top}]},
                     "finish_reason": "length"}],
        "prompt_logprobs": prompt,
        "usage": usage,
    }))
    .into_response()
}
