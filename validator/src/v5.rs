//! The v5 share: after each round's attestation, every accepted node whose
//! agent serves a model the validator holds a reference for is asked a few
//! synthetic, Epistula-signed requests over RA-TLS (the connection's key
//! must be the one its quote attested this round). Each streamed answer is
//! timed and checked against the reference (`tvm_inference::check`); the
//! per-miner windows (`tvm_inference::score`) give the v5 scores.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tvm_inference::check::{
    check_scored, precheck, score_with, scored_from_prompt_logprobs, scoring_request, Earlier,
    Reference, Request, Rules, Scored, Unscored,
};
use tvm_inference::prompts::{draw, Draw, RequestRanges};
use tvm_inference::score::{Answer, ScoreRules, Windows};
use tvm_inference::stream::StreamReader;
use tvm_protocol::keys::AccountId;

use crate::attest::Attester;
use crate::scoring::NodeResult;

/// The reference a model is checked against.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceConfig {
    /// The built-in deterministic toy model (devnet and tests only: it is
    /// what its name says, and checks nothing about a real model).
    Toy,
    /// The built-in reference for small models: this GGUF file (llama
    /// architecture, byte-level BPE, ChatML), run here on the CPU.
    Gguf {
        /// The model file (loaded once, at start).
        path: std::path::PathBuf,
    },
    /// A vLLM-compatible server running the same model: it scores answers
    /// with `prompt_logprobs` on the endpoint they were asked on.
    Openai {
        /// Its base URL (`http://127.0.0.1:8000`).
        url: String,
        /// The model's end-of-text token as text (`<|im_end|>`, `<|eot_id|>`).
        eos: String,
        /// The name it serves the model under; absent: the same name.
        #[serde(default)]
        served_as: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub reference: ReferenceConfig,
}

/// `v5:` in validator.yaml. Absent: the v5 share is burned.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct V5Config {
    /// The models scored, each with its reference.
    pub models: BTreeMap<String, ModelConfig>,
    /// Requests per node and model each round.
    pub requests_per_model: usize,
    /// The longest an answer may take, whole.
    pub timeout_seconds: u64,
    /// Nodes asked at once.
    pub concurrency: usize,
    /// The longest the whole v5 phase of a round may take; answers not in
    /// by then are not counted (the weights wait for nothing longer).
    pub phase_seconds: u64,
    pub rules: Rules,
    pub score: ScoreRules,
    pub requests: RequestRanges,
}

impl Default for V5Config {
    fn default() -> Self {
        V5Config {
            models: BTreeMap::new(),
            requests_per_model: 2,
            timeout_seconds: 120,
            concurrency: 16,
            phase_seconds: 600,
            rules: Rules::default(),
            score: ScoreRules::default(),
            requests: RequestRanges::default(),
        }
    }
}

impl V5Config {
    /// Scores `model` against the built-in toy reference with `requests`
    /// answers a node and model each round, paid from the first round's
    /// (devnet and tests).
    pub fn toy(model: &str, requests: usize) -> Self {
        Self::one(model, ReferenceConfig::Toy, requests)
    }

    /// As [`V5Config::toy`], with the model file at `path` as the reference.
    pub fn gguf(model: &str, path: &std::path::Path, requests: usize) -> Self {
        let path = path.to_path_buf();
        Self::one(model, ReferenceConfig::Gguf { path }, requests)
    }

    fn one(model: &str, reference: ReferenceConfig, requests: usize) -> Self {
        V5Config {
            models: [(model.to_string(), ModelConfig { reference })].into(),
            requests_per_model: requests,
            score: ScoreRules {
                min_completed: requests,
                ..ScoreRules::default()
            },
            ..V5Config::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("v5.models lists no model: nothing could be scored".into());
        }
        if self.requests_per_model == 0 || self.requests_per_model > 32 {
            return Err("v5.requests_per_model must be 1 to 32".into());
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > 600 {
            return Err("v5.timeout_seconds must be 1 to 600".into());
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err("v5.concurrency must be 1 to 256".into());
        }
        if self.phase_seconds < self.timeout_seconds || self.phase_seconds > 3600 {
            return Err(
                "v5.phase_seconds must be at least timeout_seconds and at most 3600".into(),
            );
        }
        let r = &self.requests;
        let built_in = self
            .models
            .values()
            .any(|m| matches!(m.reference, ReferenceConfig::Gguf { .. }));
        if built_in && r.max_max_tokens > tvm_inference::gguf::MAX_POSITIONS / 2 {
            return Err(format!(
                "v5.requests: max_max_tokens must be at most {} with a gguf reference (it runs {} positions, prompt and answer)",
                tvm_inference::gguf::MAX_POSITIONS / 2,
                tvm_inference::gguf::MAX_POSITIONS
            ));
        }
        if r.min_max_tokens == 0 || r.max_max_tokens < r.min_max_tokens || r.max_max_tokens > 4096 {
            return Err("v5.requests: max_tokens range must be within 1..=4096".into());
        }
        let in_range = |t: f64| t > 0.0 && t <= 1.0;
        if !in_range(r.min_temperature)
            || !in_range(r.max_temperature)
            || r.max_temperature < r.min_temperature
        {
            // Above 1 sampling is flatter than the model: tails judged at 1
            // would fail honest answers.
            return Err("v5.requests: temperatures must be a range within (0, 1]".into());
        }
        if r.min_prompt_words == 0 || r.max_prompt_words < r.min_prompt_words {
            return Err("v5.requests: prompt words range is empty".into());
        }
        Ok(())
    }
}

/// One answer, for the dashboard.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnswerSeen {
    pub uid: u16,
    pub node: String,
    pub model: String,
    pub verified: bool,
    /// Why it failed, or how fast it was.
    pub detail: String,
}

/// What the v5 phase of a round found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct V5Round {
    /// Per uid: its v5 score.
    pub scores: BTreeMap<u16, f64>,
    /// Per uid: the score's reason (the dashboard's v5 column).
    pub reasons: BTreeMap<u16, String>,
    pub answers: Vec<AnswerSeen>,
}

/// A model's reference: here, or a server.
#[derive(Clone)]
enum Scorer {
    Local(Arc<dyn Reference + Send + Sync>),
    Remote {
        url: String,
        eos: String,
        model: String,
    },
}

/// What a validator keeps between rounds: the windows and, per miner,
/// model and prompt, the answers given (for the replay check).
pub struct V5 {
    pub cfg: V5Config,
    /// For reference servers (the validator's own, usually on its network).
    client: reqwest::Client,
    /// Scoring calls in flight at once.
    reference_turns: Arc<tokio::sync::Semaphore>,
    windows: Mutex<Windows>,
    history: Mutex<HashMap<(u16, String), Answers>>,
    holders: Mutex<HashMap<u16, String>>,
    /// Per model, its reference.
    scorers: HashMap<String, Scorer>,
}

/// A miner's earlier answers to one model: (prompt, answer), oldest first.
type Answers = VecDeque<Kept>;

/// An answer kept for the replay check: its prompt and tokens.
type Kept = (String, Earlier);

/// [`V5::state`]'s form.
#[derive(serde::Serialize, Deserialize)]
struct State {
    windows: Vec<(u16, String, Vec<Answer>)>,
    history: Vec<(u16, String, Vec<Kept>)>,
    holders: Vec<(u16, String)>,
}

/// Earlier answers kept per miner and model.
const HISTORY: usize = 64;
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

impl V5 {
    pub fn new(cfg: V5Config) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(reference_tls()?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(cfg.timeout_seconds.max(1)))
            .build()
            .map_err(|e| format!("cannot build the reference client: {e}"))?;
        let mut scorers = HashMap::new();
        for (model, m) in &cfg.models {
            let scorer = match &m.reference {
                ReferenceConfig::Toy => {
                    Scorer::Local(Arc::new(tvm_inference::toy::ToyLm::new(model)))
                }
                ReferenceConfig::Gguf { path } => {
                    let lm = tvm_inference::gguf::GgufLm::load(path, model)
                        .map_err(|e| format!("v5.models.{model}: {e}"))?;
                    Scorer::Local(Arc::new(lm))
                }
                ReferenceConfig::Openai {
                    url,
                    eos,
                    served_as,
                } => Scorer::Remote {
                    url: url.trim_end_matches('/').to_string(),
                    eos: eos.clone(),
                    model: served_as.clone().unwrap_or_else(|| model.to_string()),
                },
            };
            scorers.insert(model.clone(), scorer);
        }
        Ok(V5 {
            scorers,
            cfg,
            client,
            reference_turns: Arc::new(tokio::sync::Semaphore::new(4)),
            windows: Mutex::new(Windows::default()),
            history: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
        })
    }

    /// What `model`'s answers are scored with.
    fn reference(&self, model: &str) -> Option<Scorer> {
        self.scorers.get(model).cloned()
    }

    async fn score(
        &self,
        scorer: &Scorer,
        req: &Request,
        got: &tvm_inference::stream::Observed,
    ) -> Result<Scored, Unscored> {
        let unavailable = Unscored::Reference;
        match scorer {
            Scorer::Local(r) => {
                // A real model takes seconds: off the async threads, and the
                // turn held until the work ends (it cannot be cancelled).
                let turn = self.reference_turns.clone().acquire_owned().await.ok();
                let (r, req, got) = (r.clone(), req.clone(), got.clone());
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    score_with(r.as_ref(), &req, &got)
                })
                .await
                .map_err(|e| unavailable(format!("the built-in reference stopped: {e}")))?
                .map_err(unavailable)
            }
            Scorer::Remote { url, eos, model } => {
                let _turn = self.reference_turns.acquire().await.ok();
                let url = &format!("{url}{}", req.endpoint.path());
                let body = scoring_request(model, req, &got.tokens).to_string();
                let resp = self
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("the reference server {url}: {e}")))?;
                let status = resp.status();
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| unavailable(format!("the reference server {url}: {e}")))?;
                if !status.is_success() {
                    return Err(unavailable(format!(
                        "the reference server {url} answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    )));
                }
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| unavailable(format!("the reference server {url}: {e}")))?;
                scored_from_prompt_logprobs(&v, &got.tokens, eos, req.temperature)
            }
        }
    }

    /// What the v5 phase keeps between rounds, as JSON: the windows, the
    /// answers kept for the replay check and each uid's hotkey. The
    /// validator stores it after each v5 phase, so a restart does not
    /// start every miner's window again.
    pub fn state(&self) -> String {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries();
        let history = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((u, m), h)| (*u, m.clone(), h.iter().cloned().collect()))
            .collect();
        let mut holders: Vec<(u16, String)> = self
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(u, h)| (*u, h.clone()))
            .collect();
        holders.sort();
        serde_json::to_string(&State {
            windows,
            history,
            holders,
        })
        .unwrap_or_default()
    }

    /// Takes back what [`V5::state`] gave. Windows of models no longer
    /// configured are dropped, and each window is cut to the configured
    /// length.
    pub fn restore(&self, json: &str) -> Result<(), String> {
        let s: State = serde_json::from_str(json).map_err(|e| format!("stored v5 state: {e}"))?;
        let known = |m: &str| self.cfg.models.contains_key(m);
        let windows = s.windows.into_iter().filter(|(_, m, _)| known(m)).collect();
        *self.windows.lock().unwrap_or_else(|e| e.into_inner()) =
            Windows::from_entries(&self.cfg.score, windows);
        *self.history.lock().unwrap_or_else(|e| e.into_inner()) = s
            .history
            .into_iter()
            .filter(|(_, m, _)| known(m))
            .map(|(u, m, h): (u16, String, Vec<Kept>)| {
                let skip = h.len().saturating_sub(HISTORY);
                ((u, m), h.into_iter().skip(skip).collect())
            })
            .collect();
        *self.holders.lock().unwrap_or_else(|e| e.into_inner()) = s.holders.into_iter().collect();
        Ok(())
    }

    /// The v5 phase of `epoch`'s round over its accepted, counted nodes.
    pub async fn probe(&self, attester: &Attester, nodes: &[NodeResult], epoch: u64) -> V5Round {
        // A uid that changed hands starts again.
        {
            let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            for n in nodes {
                let old = holders.insert(n.miner_uid, n.miner_hotkey.clone());
                if old.is_some_and(|o| o != n.miner_hotkey) {
                    windows.forget(n.miner_uid);
                    history.retain(|(u, _), _| *u != n.miner_uid);
                }
            }
        }
        // Nodes are asked side by side, in an order no miner can count on,
        // and the whole phase has a deadline: a node that drips its answers
        // slowly delays no one's weights. Answers count as they come in.
        use futures_util::StreamExt;
        let mut order: Vec<&NodeResult> = nodes.iter().collect();
        shuffle(&mut order);
        let answers_in: Mutex<Vec<AnswerSeen>> = Mutex::new(Vec::new());
        let answers_ref = &answers_in;
        let asked = futures_util::stream::iter(order.into_iter().filter_map(|n| {
            let (Some(true), Some(cvm)) = (n.accepted, &n.cvm_id) else {
                return None;
            };
            let miner = AccountId::from_ss58(&n.miner_hotkey).ok()?;
            Some(async move {
                self.node(attester, n, &miner, cvm, epoch, answers_ref)
                    .await
            })
        }))
        .buffer_unordered(self.cfg.concurrency.max(1))
        .collect::<Vec<()>>();
        if tokio::time::timeout(Duration::from_secs(self.cfg.phase_seconds), asked)
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = self.cfg.phase_seconds,
                "the v5 phase ran out of time: answers not in by then are not counted"
            );
        }
        let answers = answers_in.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // A window that got nothing this round (the node not accepted, the
        // model no longer served, no answer in time) records a failure, so
        // a miner is not paid on an old window after it stops serving; one
        // of a model this validator no longer scores is dropped.
        let asked_now: std::collections::HashSet<(u16, &str)> =
            answers.iter().map(|a| (a.uid, a.model.as_str())).collect();
        windows.retain_models(|m| self.cfg.models.contains_key(m));
        for (uid, model) in windows.keys() {
            if !asked_now.contains(&(uid, model.as_str())) {
                // As many as a served round would have brought.
                for _ in 0..self.cfg.requests_per_model {
                    windows.record(
                        &self.cfg.score,
                        uid,
                        &model,
                        Answer::Failed(
                        "v5.request: not asked this round (the node was not accepted, no longer lists the model, or did not answer in time)"
                            .into(),
                        ),
                    );
                }
            }
        }
        let mut out = V5Round {
            answers,
            ..V5Round::default()
        };
        let mut uids: Vec<u16> = nodes.iter().map(|n| n.miner_uid).collect();
        uids.extend(windows.keys().into_iter().map(|(u, _)| u));
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            let s = windows.standing(&self.cfg.score, uid);
            if s.asked == 0 {
                continue;
            }
            out.scores.insert(uid, s.score);
            out.reasons.insert(uid, s.reason);
        }
        out
    }

    /// The models `n` serves that have a reference here, then each asked.
    async fn node(
        &self,
        attester: &Attester,
        n: &NodeResult,
        miner: &AccountId,
        cvm: &str,
        epoch: u64,
        sink: &Mutex<Vec<AnswerSeen>>,
    ) {
        let listed = match self.models(attester, n, miner, cvm).await {
            Ok(m) => m,
            // No runtime, or none reachable: nothing asked, nothing scored.
            Err(e) => {
                tracing::debug!(node = %n.node, error = %e, "no inference models");
                return;
            }
        };
        // Each configured model once, however often the node lists it.
        let served: std::collections::BTreeSet<&String> = listed
            .iter()
            .filter(|m| self.cfg.models.contains_key(m.as_str()))
            .collect();
        for model in served {
            let Some(scorer) = self.reference(model) else {
                continue;
            };
            for i in 0..self.cfg.requests_per_model {
                let a = self
                    .ask(attester, n, miner, cvm, model, &scorer, epoch, i)
                    .await;
                let (verified, detail) = match &a {
                    Some(Answer::Verified { tps, ttft }) => (
                        true,
                        format!("{tps:.1} tokens/s, first token {:.0} ms", ttft * 1e3),
                    ),
                    Some(Answer::Failed(why)) => (false, why.clone()),
                    None => (false, "not scored: the reference could not score it (the validator's side; nothing recorded)".into()),
                };
                if let Some(a) = a {
                    self.windows
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&self.cfg.score, n.miner_uid, model, a);
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(AnswerSeen {
                        uid: n.miner_uid,
                        node: n.node.clone(),
                        model: model.clone(),
                        verified,
                        detail,
                    });
            }
        }
    }

    async fn models(
        &self,
        attester: &Attester,
        n: &NodeResult,
        miner: &AccountId,
        cvm: &str,
    ) -> Result<Vec<String>, String> {
        let resp = attester
            .inference(
                &n.node,
                miner,
                "/v1/models",
                None,
                cvm,
                Duration::from_secs(self.cfg.timeout_seconds.min(30)),
            )
            .await
            .map_err(|e| e.to_string())?;
        let bytes = crate::attest::read_limited(resp, 64 * 1024, "/v1/models")
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(v.get("data")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(String::from))
                    .take(256)
                    .collect()
            })
            .unwrap_or_default())
    }

    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        attester: &Attester,
        n: &NodeResult,
        miner: &AccountId,
        cvm: &str,
        model: &str,
        scorer: &Scorer,
        epoch: u64,
        i: usize,
    ) -> Option<Answer> {
        let key = (n.miner_uid, model.to_string());
        let earlier_prompts: Vec<String> = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|h| h.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        // Unpredictable to the miner: the validator's randomness, then the
        // round and position (so one round's requests differ).
        let mut secret = [0u8; 32];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).is_err() {
            tracing::error!("no system randomness on the validator: v5 request not sent");
            return None;
        }
        let mut d =
            Draw::new(&[&secret[..], &epoch.to_le_bytes(), &(i as u64).to_le_bytes()].concat());
        let drawn = draw(&self.cfg.requests, &mut d, &earlier_prompts);
        let req = Request {
            model: model.to_string(),
            endpoint: drawn.endpoint,
            prompt: drawn.prompt,
            temperature: drawn.temperature,
            seed: drawn.seed,
            max_tokens: drawn.max_tokens,
        };
        let body = req.body().to_string();
        let t0 = Instant::now();
        let limit = Duration::from_secs(self.cfg.timeout_seconds);
        let read = async {
            let mut resp = attester
                .inference(
                    &n.node,
                    miner,
                    req.endpoint.path(),
                    Some(body.as_bytes()),
                    cvm,
                    limit,
                )
                .await
                .map_err(|e| format!("v5.request: {e}"))?;
            let mut r = StreamReader::default();
            let mut total = 0usize;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("v5.request: the answer broke off: {e}"))?
            {
                total += chunk.len();
                if total > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "v5.request: an answer over {MAX_ANSWER_BYTES} bytes"
                    ));
                }
                r.feed(&chunk, t0.elapsed().as_secs_f64())
                    .map_err(|e| format!("v5.request: {e}"))?;
            }
            Ok(r.observed)
        };
        let observed = match tokio::time::timeout(limit, read).await {
            Ok(Ok(o)) => o,
            Ok(Err(why)) => return Some(Answer::Failed(why)),
            Err(_) => {
                return Some(Answer::Failed(format!(
                    "v5.request: no whole answer within {limit:?}"
                )))
            }
        };
        // What fails without a reference fails before one is asked.
        if let Some(why) = precheck(&req, &observed) {
            return Some(Answer::Failed(why));
        }
        let earlier: Vec<Earlier> = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|h| {
                h.iter()
                    .filter(|(p, _)| *p == req.prompt)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        // At most a few scoring calls at once: the reference is shared.
        // The reference failing is the validator's problem, not the miner's;
        // an answer that does not fit the reference's tokens fails.
        let scored = match self.score(scorer, &req, &observed).await {
            Ok(s) => Ok(s),
            Err(Unscored::Misfit(why)) => Err(why),
            Err(Unscored::Reference(e)) => {
                tracing::warn!(node = %n.node, model, error = %e, "v5 answer not scored: the reference failed");
                return None;
            }
        };
        let mut pick = |len: usize| d.range(0, len as u64 - 1) as usize;
        let verdict = check_scored(
            &self.cfg.rules,
            &req,
            &observed,
            scored,
            &earlier,
            &mut pick,
        );
        if verdict.passed() {
            // Verified answers only: what a replay could be compared with.
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let h = history.entry(key).or_default();
            h.push_back((
                req.prompt.clone(),
                Earlier {
                    seed: req.seed,
                    tokens: observed.tokens.clone(),
                },
            ));
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        if let Some(why) = verdict.failure() {
            return Some(Answer::Failed(why));
        }
        // Paid speed: tokens over the whole time from the request to the
        // last token. Holding tokens back and sending them in one burst
        // gains nothing, nor does a short answer (its first-token time counts).
        let last = observed.arrivals.last().copied().unwrap_or(0.0);
        let tps = if last > 0.0 {
            observed.tokens.len() as f64 / last
        } else {
            0.0
        };
        Some(Answer::Verified {
            tps,
            ttft: observed.ttft().unwrap_or(last),
        })
    }
}

/// TLS for reference servers: the public web roots.
fn reference_tls() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Shuffles in place with the system's randomness (Fisher–Yates).
fn shuffle<T>(v: &mut [T]) {
    let rng = ring::rand::SystemRandom::new();
    for i in (1..v.len()).rev() {
        let mut b = [0u8; 8];
        if ring::rand::SecureRandom::fill(&rng, &mut b).is_err() {
            return;
        }
        let j = (u64::from_le_bytes(b) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_history_and_holders_survive_a_restart() {
        let mut cfg = V5Config::toy("toy/a", 2);
        cfg.score.window = 3;
        let v5 = V5::new(cfg.clone()).unwrap();
        {
            let mut w = v5.windows.lock().unwrap();
            for tps in [10.0, 20.0, 30.0, 40.0] {
                w.record(
                    &v5.cfg.score,
                    2,
                    "toy/a",
                    Answer::Verified { tps, ttft: 0.1 },
                );
            }
            w.record(
                &v5.cfg.score,
                3,
                "toy/a",
                Answer::Failed("v5.tokens: x".into()),
            );
            // A model since removed from the settings.
            w.record(
                &v5.cfg.score,
                2,
                "toy/gone",
                Answer::Verified {
                    tps: 5.0,
                    ttft: 0.1,
                },
            );
        }
        let earlier = Earlier {
            seed: 7,
            tokens: vec![" apple".into()],
        };
        v5.history.lock().unwrap().insert(
            (2, "toy/a".into()),
            [("a prompt".to_string(), earlier.clone())].into(),
        );
        v5.holders.lock().unwrap().insert(2, "5Grw…".into());
        let stored = v5.state();

        let again = V5::new(cfg).unwrap();
        again.restore(&stored).unwrap();
        let w = again.windows.lock().unwrap();
        assert_eq!(w.keys(), vec![(2, "toy/a".into()), (3, "toy/a".into())]);
        let mut before = v5.windows.lock().unwrap().clone();
        before.retain_models(|m| m != "toy/gone");
        for uid in [2, 3] {
            assert_eq!(
                w.standing(&again.cfg.score, uid).reason,
                before.standing(&v5.cfg.score, uid).reason
            );
        }
        assert_eq!(w.entries()[0].2.len(), 3);
        assert_eq!(
            again.history.lock().unwrap()[&(2, "toy/a".to_string())][0].1,
            earlier
        );
        assert_eq!(again.holders.lock().unwrap()[&2], "5Grw…");
        assert!(again.restore("{not json").is_err());
    }
}
