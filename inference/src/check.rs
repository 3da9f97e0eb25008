//! Is this answer the model's? A response is checked against a reference
//! copy of the model: every token's log-probability under the reference,
//! where it stopped, what it reported, and whether it repeats an answer
//! given for another seed. Each check is named and says why it failed, as
//! the attestation checks do. The thresholds follow the subnet's last v5
//! verifier (EOS outside the top 15 where it stopped, usage outside 0.5–2×
//! of the recount), plus the reported log-probabilities at random
//! positions. Its unlikely-token rules (any token at or below −13, five or
//! more at or below −8) are kept in calibrated form: a token is judged by
//! its tail, the chance that sampling at the request's temperature gives a
//! token no more likely, which is uniform for honest answers whatever the
//! model's entropy. The raw thresholds failed 2 of 12 honest SmolLM2-135M
//! answers near temperature 1, where its next-token distribution is flat.

use crate::stream::Observed;

/// The thresholds (the `v5:` section of the validator's settings).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// A token whose tail (the chance that honest sampling gives a token
    /// no more likely) is below this fails the answer.
    pub min_token_tail: f64,
    /// Tokens with a tail below this are rare...
    pub rare_tail: f64,
    /// ...and more than this many of them fail the answer.
    pub max_rare_tokens: usize,
    /// Where an answer stops, EOS must be among the reference's top this many.
    pub eos_top_k: usize,
    /// Reported usage must be within these multiples of the recount.
    pub usage_min_ratio: f64,
    pub usage_max_ratio: f64,
    /// Reported log-probabilities are compared at this many random positions...
    pub checked_positions: usize,
    /// ...and may differ from the reference's by at most this.
    pub max_logprob_diff: f64,
    /// An answer repeated for another seed fails when the chance that
    /// sampling gave it again is below this.
    pub replay_max_probability: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_token_tail: 1e-6,
            rare_tail: 1e-3,
            max_rare_tokens: 4,
            eos_top_k: 15,
            usage_min_ratio: 0.5,
            usage_max_ratio: 2.0,
            checked_positions: 10,
            max_logprob_diff: 0.1,
            replay_max_probability: 1e-6,
        }
    }
}

/// Which OpenAI endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`: the prompt is one user message, the model
    /// reads it through its chat template.
    Chat,
    /// `/v1/completions`: the model continues the prompt's text as it is.
    Completion,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

/// What the validator asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: String,
    pub endpoint: Endpoint,
    pub prompt: String,
    pub temperature: f64,
    pub seed: u64,
    pub max_tokens: usize,
}

impl Request {
    /// The body sent to [`Endpoint::path`]: streamed, with usage and each
    /// token's log-probability.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.model,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        match self.endpoint {
            Endpoint::Chat => {
                body["messages"] = serde_json::json!([{"role": "user", "content": self.prompt}]);
                body["logprobs"] = true.into();
                body["top_logprobs"] = 1.into();
            }
            Endpoint::Completion => {
                body["prompt"] = self.prompt.clone().into();
                body["logprobs"] = 1.into();
            }
        }
        body
    }
}

/// The reference's view of one position of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The log-probability of the token the answer has here (at the last
    /// position, after the answer: of EOS).
    pub token_logprob: f64,
    /// The highest log-probability of any token here.
    pub top_logprob: f64,
    /// EOS's rank here (0: the most likely token).
    pub eos_rank: usize,
    /// The chance that sampling at the request's temperature gives a token
    /// no more likely than the answer's here (1 at the last position).
    /// An honest token's tail is below any p with chance at most p; a
    /// reference that sees only the top tokens gives an upper bound.
    pub tail: f64,
    /// The log of the chance that sampling at the request's temperature
    /// gives this very token (an upper bound from a top-tokens reference;
    /// 0 at the last position). The replay check multiplies them.
    pub sample_logprob: f64,
}

impl Position {
    /// The sampling fields of a position no token is checked at.
    pub const END: Position = Position {
        token_logprob: 0.0,
        top_logprob: 0.0,
        eos_rank: 0,
        tail: 1.0,
        sample_logprob: 0.0,
    };
}

/// The tail of token `x` under log-probabilities `lp` sampled at
/// `temperature` (0: as at 1; greedy answers are checked by `v5.greedy`;
/// above 1: as at 1, an upper bound).
pub fn tail(lp: &[f64], x: usize, temperature: f64) -> f64 {
    sampling(lp, x, temperature).0
}

/// Token `x`'s tail (see [`tail`]) and the log of its own chance under
/// sampling at `temperature` (0: as at 1).
pub fn sampling(lp: &[f64], x: usize, temperature: f64) -> (f64, f64) {
    let Some(&own) = lp.get(x) else {
        return (0.0, NOT_A_TOKEN);
    };
    let t = if temperature > 0.0 {
        temperature.min(1.0)
    } else {
        1.0
    };
    let top = lp.iter().cloned().fold(f64::MIN, f64::max);
    let (mut below, mut all) = (0.0, 0.0);
    for &l in lp {
        let w = ((l - top) / t).exp();
        all += w;
        if l <= own {
            below += w;
        }
    }
    if all > 0.0 {
        (below / all, (own - top) / t - all.ln())
    } else {
        (0.0, NOT_A_TOKEN)
    }
}

/// The log-probability a reference gives text that is none of its tokens.
pub const NOT_A_TOKEN: f64 = -1000.0;

/// A reference copy of a model.
pub trait Reference {
    fn model(&self) -> &str;
    /// One position per output token of the answer to `req`, then one
    /// after the last; tails at the request's temperature.
    fn score(&self, req: &Request, output: &[String]) -> Result<Vec<Position>, String>;
    /// The prompt's length in tokens, as the model reads it.
    fn prompt_tokens(&self, req: &Request) -> u64;
    /// The end-of-text token, as text.
    fn eos(&self) -> &str;
}

impl Reference for crate::toy::ToyLm {
    fn model(&self) -> &str {
        self.name()
    }

    fn score(&self, req: &Request, output: &[String]) -> Result<Vec<Position>, String> {
        use crate::toy::{token_id, tokenize, EOS_ID};
        // The toy has no chat template: both endpoints read the words.
        let mut context = tokenize(&req.prompt);
        let mut out = Vec::with_capacity(output.len() + 1);
        for i in 0..=output.len() {
            let lp = self.logprobs(&context);
            let top = lp.iter().cloned().fold(f64::MIN, f64::max);
            let eos_rank = lp.iter().filter(|x| **x > lp[EOS_ID]).count();
            let token = match output.get(i) {
                Some(t) => token_id(t),
                None => Some(EOS_ID),
            };
            out.push(Position {
                // A token the model does not have cannot be its output.
                token_logprob: token.map(|t| lp[t]).unwrap_or(NOT_A_TOKEN),
                top_logprob: top,
                eos_rank,
                ..match (i < output.len(), token) {
                    (false, _) => Position::END,
                    (true, Some(t)) => {
                        let (tail, sample_logprob) = sampling(&lp, t, req.temperature);
                        Position {
                            tail,
                            sample_logprob,
                            ..Position::END
                        }
                    }
                    (true, None) => Position {
                        tail: 0.0,
                        sample_logprob: NOT_A_TOKEN,
                        ..Position::END
                    },
                }
            });
            if let Some(t) = token {
                context.push(t);
            }
        }
        Ok(out)
    }

    fn prompt_tokens(&self, req: &Request) -> u64 {
        crate::toy::tokenize(&req.prompt).len() as u64
    }

    fn eos(&self) -> &str {
        crate::toy::EOS
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.checks
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Pass(_)))
    }

    /// The first failure, as `name: why`.
    pub fn failure(&self) -> Option<String> {
        self.checks.iter().find_map(|c| match &c.outcome {
            Outcome::Fail(why) => Some(format!("{}: {why}", c.name)),
            Outcome::Pass(_) => None,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Outcome> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }
}

/// An earlier answer to the same prompt (for the replay check).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Earlier {
    pub seed: u64,
    pub tokens: Vec<String>,
}

/// What a reference made of an answer: one [`Position`] per output token
/// and one after the last, and the prompt's length in its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub positions: Vec<Position>,
    pub prompt_tokens: u64,
    /// The model's end-of-text token, as text.
    pub eos: String,
}

/// A token's text as a message shows it: at most 40 characters.
fn shown(token: &str) -> String {
    let mut s: String = token.chars().take(40).collect();
    if s.len() < token.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// What fails an answer before any reference is asked (cheap, and what a
/// miner could otherwise use to load the validator's reference): more
/// tokens than asked for, or more text than such tokens can hold.
pub fn precheck(req: &Request, got: &Observed) -> Option<String> {
    let n = got.tokens.len();
    if n > req.max_tokens {
        return Some(format!(
            "v5.finish: {n} tokens; max_tokens was {}",
            req.max_tokens
        ));
    }
    let bytes: usize = got.tokens.iter().map(String::len).sum();
    if bytes > 64 * n.max(1) {
        return Some(format!(
            "v5.tokens: {bytes} bytes of text in {n} tokens (at most 64 a token)"
        ));
    }
    None
}

/// Scores an answer with a reference that runs here.
pub fn score_with(
    reference: &dyn Reference,
    req: &Request,
    got: &Observed,
) -> Result<Scored, String> {
    Ok(Scored {
        positions: reference.score(req, &got.tokens)?,
        prompt_tokens: reference.prompt_tokens(req),
        eos: reference.eos().to_string(),
    })
}

/// Checks `got` (the answer to `req`) against `reference`.
pub fn check(
    rules: &Rules,
    req: &Request,
    got: &Observed,
    reference: &dyn Reference,
    earlier: &[Earlier],
    pick: &mut dyn FnMut(usize) -> usize,
) -> Verdict {
    check_scored(
        rules,
        req,
        got,
        score_with(reference, req, got),
        earlier,
        pick,
    )
}

/// Checks `got` (the answer to `req`) against what a reference made of it
/// (`scored`, or why it could not). `pick(n)` gives an index below n: where
/// reported log-probabilities are compared (the validator's own
/// randomness). `earlier` holds answers this miner gave the same prompt
/// before.
pub fn check_scored(
    rules: &Rules,
    req: &Request,
    got: &Observed,
    scored: Result<Scored, String>,
    earlier: &[Earlier],
    pick: &mut dyn FnMut(usize) -> usize,
) -> Verdict {
    let mut checks = Vec::new();
    let mut put = |name, outcome| checks.push(Check { name, outcome });
    let n = got.tokens.len();

    put(
        "v5.model",
        match got.model.as_deref() {
            Some(m) if m != req.model => Outcome::Fail(format!(
                "the answer names model {m:?}, the request asked for {:?}",
                req.model
            )),
            _ => Outcome::Pass(req.model.clone()),
        },
    );

    let (scored, prompt_count, eos) = match scored {
        Ok(s) if s.positions.len() == n + 1 => (s.positions, s.prompt_tokens, s.eos),
        Ok(s) => {
            let s = s.positions;
            put(
                "v5.reference",
                Outcome::Fail(format!(
                    "the reference scored {} positions for {n} tokens",
                    s.len()
                )),
            );
            return Verdict { checks };
        }
        Err(e) => {
            put(
                "v5.reference",
                Outcome::Fail(format!("the reference could not score the answer: {e}")),
            );
            return Verdict { checks };
        }
    };

    // Every token the model's own: none that honest sampling would all but
    // never give, few that it rarely gives.
    let worst = scored[..n]
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.tail.total_cmp(&b.1.tail));
    let rare = scored[..n]
        .iter()
        .filter(|p| p.tail < rules.rare_tail)
        .count();
    put(
        "v5.tokens",
        match worst {
            Some((i, p)) if p.token_logprob <= NOT_A_TOKEN => Outcome::Fail(format!(
                "token {i} ({}) is no token of the reference's vocabulary: not this model's output",
                shown(&got.tokens[i])
            )),
            Some((i, p)) if p.tail.is_nan() || p.tail < rules.min_token_tail => Outcome::Fail(format!(
                "token {i} ({}, log-probability {:.2} under the reference): sampling at temperature {} gives a token this unlikely with probability {:.1e} (below {:.0e} fails): not this model's output",
                shown(&got.tokens[i]), p.token_logprob, req.temperature, p.tail, rules.min_token_tail
            )),
            _ if rare > rules.max_rare_tokens => Outcome::Fail(format!(
                "{rare} tokens that sampling at temperature {} gives with probability below {:.0e} each (more than {} fail): another model, or a changed answer",
                req.temperature, rules.rare_tail, rules.max_rare_tokens
            )),
            Some((i, p)) => Outcome::Pass(format!(
                "{n} tokens, least likely token {i} (log-probability {:.2}, tail {:.1e}), {rare} with tails below {:.0e}",
                p.token_logprob, p.tail, rules.rare_tail
            )),
            None => Outcome::Pass("no tokens".into()),
        },
    );

    // Finish: a known reason, and one that fits where the answer ended.
    let finish = match got.finish_reason.as_deref() {
        None => Outcome::Fail("no finish reason".into()),
        Some("length") if n != req.max_tokens => Outcome::Fail(format!(
            "finish reason length with {n} tokens; max_tokens was {}",
            req.max_tokens
        )),
        Some("length") => Outcome::Pass(format!("length at {n} tokens")),
        Some("stop") if n > req.max_tokens => {
            Outcome::Fail(format!("{n} tokens; max_tokens was {}", req.max_tokens))
        }
        Some("stop") => {
            let rank = scored[n].eos_rank;
            if rank >= rules.eos_top_k {
                Outcome::Fail(format!(
                    "stopped after {n} tokens where the reference ranks end-of-text {} (must be in its top {}): the answer was cut short",
                    rank + 1,
                    rules.eos_top_k
                ))
            } else {
                Outcome::Pass(format!(
                    "stop after {n} tokens, end-of-text ranked {}",
                    rank + 1
                ))
            }
        }
        Some(other) => Outcome::Fail(format!("finish reason {other:?}")),
    };
    put("v5.finish", finish);

    // End-of-text passed over: inside the answer, or under greedy decoding.
    let eos_inside = got.tokens.iter().position(|t| *t == eos);
    let skipped = (req.temperature <= 0.0)
        .then(|| scored[..n].iter().position(|p| p.eos_rank == 0))
        .flatten();
    put(
        "v5.eos",
        match (eos_inside, skipped) {
            (Some(i), _) => Outcome::Fail(format!("end-of-text inside the answer at token {i}")),
            (None, Some(i)) => Outcome::Fail(format!(
                "greedy decoding went on past end-of-text, the reference's top token at position {i}"
            )),
            (None, None) => Outcome::Pass("no end-of-text skipped".into()),
        },
    );

    // Greedy decoding writes the reference's top token at every step.
    let off = (req.temperature <= 0.0)
        .then(|| {
            scored[..n]
                .iter()
                .position(|p| p.token_logprob < p.top_logprob - rules.max_logprob_diff)
        })
        .flatten();
    put(
        "v5.greedy",
        match off {
            Some(i) => Outcome::Fail(format!(
                "temperature 0, but token {i} ({}) is not the reference's top token there (log-probability {:.2}, the top {:.2}): sampled, or another model",
                shown(&got.tokens[i]),
                scored[i].token_logprob,
                scored[i].top_logprob
            )),
            None if req.temperature <= 0.0 => Outcome::Pass("every token the top one".into()),
            None => Outcome::Pass(format!("sampled at temperature {}", req.temperature)),
        },
    );

    // Usage reported, and near the recount.
    // The exact count always passes (an empty answer reports 0).
    let ratio_ok = |reported: u64, counted: u64| {
        if reported == counted {
            return true;
        }
        let c = counted.max(1) as f64;
        let r = reported as f64 / c;
        r >= rules.usage_min_ratio && r <= rules.usage_max_ratio
    };

    put(
        "v5.usage",
        match (got.prompt_tokens, got.completion_tokens) {
            (Some(_), Some(c)) if !ratio_ok(c, n as u64) => Outcome::Fail(format!(
                "usage says {c} completion tokens; the answer has {n} (allowed {}–{}×)",
                rules.usage_min_ratio, rules.usage_max_ratio
            )),
            (Some(p), Some(_)) if !ratio_ok(p, prompt_count) => Outcome::Fail(format!(
                "usage says {p} prompt tokens; the reference counts {prompt_count} (allowed {}–{}×)",
                rules.usage_min_ratio, rules.usage_max_ratio
            )),
            (Some(p), Some(c)) => Outcome::Pass(format!(
                "{p} prompt and {c} completion tokens (recounted {prompt_count} and {n})"
            )),
            _ => Outcome::Fail(
                "no usage in the stream (the request asks for it with stream_options.include_usage)"
                    .into(),
            ),
        },
    );

    // The reported log-probabilities, at random positions.
    let mut idx: Vec<usize> = if n <= rules.checked_positions {
        (0..n).collect()
    } else {
        let mut chosen = std::collections::BTreeSet::new();
        // Bounded: a poor source of picks cannot stall the check; what
        // it did not cover is taken in order.
        for _ in 0..rules.checked_positions * 16 {
            if chosen.len() == rules.checked_positions {
                break;
            }
            chosen.insert(pick(n) % n);
        }
        let mut i = 0;
        while chosen.len() < rules.checked_positions {
            chosen.insert(i);
            i += 1;
        }
        chosen.into_iter().collect()
    };
    idx.sort_unstable();
    let mut worst = (0usize, 0f64);
    let mut missing = None;
    for &i in &idx {
        let reported = got.logprobs.get(i).copied().unwrap_or(f64::NAN);
        if !reported.is_finite() {
            missing = Some(i);
            break;
        }
        let d = (reported - scored[i].token_logprob).abs();
        if d > worst.1 {
            worst = (i, d);
        }
    }
    put(
        "v5.logprobs",
        match missing {
            Some(i) => Outcome::Fail(format!(
                "no log-probability reported for token {i} (the request asks for logprobs)"
            )),
            None if worst.1 > rules.max_logprob_diff => Outcome::Fail(format!(
                "the reported log-probability of token {} differs from the reference's by {:.3} (at most {})",
                worst.0, worst.1, rules.max_logprob_diff
            )),
            None => Outcome::Pass(format!(
                "{} positions, largest difference {:.4}",
                idx.len(),
                worst.1
            )),
        },
    );

    // The same answer for another seed, when sampling could hardly repeat it.
    // An answer that repeats, or is a piece of, an earlier answer to the
    // same prompt for another seed.
    let repeat = (req.temperature > 0.0 && n > 0)
        .then(|| {
            earlier.iter().find(|e| {
                let common = e.tokens.len().min(n);
                e.seed != req.seed && common > 0 && e.tokens[..common] == got.tokens[..common]
            })
        })
        .flatten();
    put(
        "v5.replay",
        match repeat {
            Some(e) => {
                // The chance that sampling gives each token again, or an
                // upper bound on it: their product bounds a repeat by chance.
                let common = e.tokens.len().min(n);
                let ln_bound: f64 = scored[..common].iter().map(|p| p.sample_logprob).sum();
                if ln_bound < rules.replay_max_probability.ln() {
                    Outcome::Fail(format!(
                        "the same {common} tokens as the answer for seed {} (sampling repeats them with probability at most {:.1e}): a replayed answer",
                        e.seed,
                        ln_bound.exp()
                    ))
                } else {
                    Outcome::Pass(format!(
                        "repeats the answer for seed {}, as sampling may (probability up to {:.1e})",
                        e.seed,
                        ln_bound.exp()
                    ))
                }
            }
            None => Outcome::Pass("not a repeat".into()),
        },
    );
    Verdict { checks }
}

/// Why an answer was not scored.
#[derive(Debug, Clone, PartialEq)]
pub enum Unscored {
    /// The reference could not score (down, slow, incompatible): the
    /// validator's side, nothing is recorded against the miner.
    Reference(String),
    /// The answer does not fit the reference's tokens: it fails
    /// (`v5.reference`), or a miner could keep an old window by making
    /// every new answer unscorable.
    Misfit(String),
}

/// What a vLLM-style reference server answered to the scoring request
/// [`scoring_request`] made, as [`Scored`]: `prompt_logprobs` (per prompt
/// token, the top k and the token itself) for the answer's tokens, the last
/// `n` prompt positions, and the next token's `top_logprobs` for where the
/// answer stopped. `eos` is the model's end-of-text token as text.
pub fn scored_from_prompt_logprobs(
    answer: &serde_json::Value,
    output: &[String],
    eos: &str,
    temperature: f64,
) -> Result<Scored, Unscored> {
    use serde_json::Value;
    let reference = |why: &str| Unscored::Reference(why.to_string());
    // Chat answers carry them at the top, completions in the choice.
    let prompt = answer
        .get("prompt_logprobs")
        .or_else(|| answer.pointer("/choices/0/prompt_logprobs"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            reference(
                "the reference returned no prompt_logprobs (a vLLM-compatible server is needed)",
            )
        })?;
    let n = output.len();
    if prompt.len() < n + 1 {
        return Err(Unscored::Misfit(format!(
            "the reference scored {} prompt tokens for an answer of {n}",
            prompt.len()
        )));
    }
    let start = prompt.len() - n;
    let mut positions = Vec::with_capacity(n + 1);
    for (i, token) in output.iter().enumerate() {
        let entry = prompt[start + i].as_object().ok_or_else(|| {
            Unscored::Reference(format!("prompt_logprobs[{}] is not an object", start + i))
        })?;
        let mut listed: Vec<(&str, f64)> = entry
            .values()
            .filter_map(|v| {
                Some((
                    v.get("decoded_token")?.as_str()?,
                    v.get("logprob")?.as_f64()?,
                ))
            })
            .collect();
        listed.sort_by(|a, b| b.1.total_cmp(&a.1));
        let own = listed.iter().find(|(t, _)| t == token).map(|(_, l)| *l).ok_or_else(|| {
            Unscored::Misfit(format!(
                "the reference tokenizes the answer differently at token {i} ({} is not among its tokens there): not this model's tokens",
                shown(token)
            ))
        })?;
        positions.push(Position {
            token_logprob: own,
            top_logprob: listed.first().map(|(_, l)| *l).unwrap_or(own),
            // Not among the top k: ranked lower than any listed (at least 1000th).
            eos_rank: listed.iter().position(|(t, _)| *t == eos).unwrap_or(1000),
            tail: tail_bound(&listed, own, temperature),
            sample_logprob: sample_bound(&listed, own, temperature),
        });
    }
    // Chat: a list of {token, logprob}; completions: {token: logprob}.
    let chat_top = answer
        .pointer("/choices/0/logprobs/content/0/top_logprobs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("token")?.as_str()?.to_string(),
                        t.get("logprob")?.as_f64()?,
                    ))
                })
                .collect::<Vec<_>>()
        });
    let completion_top = || {
        answer
            .pointer("/choices/0/logprobs/top_logprobs/0")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(t, l)| Some((t.clone(), l.as_f64()?)))
                    .collect::<Vec<_>>()
            })
    };
    let top: Vec<(String, f64)> = chat_top
        .or_else(completion_top)
        .ok_or_else(|| reference("the reference returned no top_logprobs for the next token"))?;
    let mut top = top;
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let eos_at = top.iter().position(|(t, _)| t == eos);
    positions.push(Position {
        token_logprob: eos_at.map(|i| top[i].1).unwrap_or(-1000.0),
        top_logprob: top.first().map(|t| t.1).unwrap_or(0.0),
        eos_rank: eos_at.unwrap_or(1000),
        ..Position::END
    });
    Ok(Scored {
        positions,
        prompt_tokens: (prompt.len() - n) as u64,
        eos: eos.to_string(),
    })
}

/// An upper bound on a token's tail (see [`tail`]) from only the top
/// tokens a server lists (`listed`, most likely first, the token itself
/// among them with log-probability `own`), the smaller of two. By mass:
/// unlisted tokens are no more likely than the least likely listed one
/// other than `own`, and hold the mass the listed ones leave; at
/// temperature t ≤ 1 they weigh at most that mass times that token's
/// probability to the power 1/t − 1. By count: at most
/// [`MAX_VOCABULARY`] tokens, each no likelier than this one.
/// The most tokens a model's vocabulary is taken to have (Gemma's 262 144
/// and below): every token no more likely than one weighs at most as much,
/// so a tail is at most this many times the token's own chance.
pub const MAX_VOCABULARY: f64 = 524_288.0;

/// An upper bound on the log of a token's chance under sampling at
/// `temperature` from only the listed top tokens: its weight over theirs.
fn sample_bound(listed: &[(&str, f64)], own: f64, temperature: f64) -> f64 {
    let t = if temperature > 0.0 {
        temperature.min(1.0)
    } else {
        1.0
    };
    let top = listed.first().map(|(_, l)| *l).unwrap_or(own).max(own);
    let sum: f64 = listed.iter().map(|(_, l)| ((l - top) / t).exp()).sum();
    if sum > 0.0 {
        ((own - top) / t - sum.ln()).min(0.0)
    } else {
        0.0
    }
}

fn tail_bound(listed: &[(&str, f64)], own: f64, temperature: f64) -> f64 {
    let t = if temperature > 0.0 {
        temperature.min(1.0)
    } else {
        1.0
    };
    let others_min = listed
        .iter()
        .map(|(_, l)| *l)
        .filter(|l| *l != own)
        .fold(f64::INFINITY, f64::min);
    let cap = others_min.min(0.0);
    let rest = (1.0 - listed.iter().map(|(_, l)| l.exp()).sum::<f64>()).max(0.0);
    let top = listed.first().map(|(_, l)| *l).unwrap_or(own).max(own);
    let w = |l: f64| ((l - top) / t).exp();
    // Σ exp(l/t) over unlisted l ≤ cap is at most rest · exp(cap (1/t − 1)),
    // here relative to exp(top/t) as `w` is.
    let unlisted = rest * ((cap - top) / t - cap).exp();
    let all: f64 = listed.iter().map(|(_, l)| w(*l)).sum::<f64>() + unlisted;
    let above: f64 = listed
        .iter()
        .filter(|(_, l)| *l > own)
        .map(|(_, l)| w(*l))
        .sum();
    let by_mass = if all > 0.0 {
        (1.0 - above / all).clamp(0.0, 1.0)
    } else {
        1.0
    };
    // Far below the listed tokens the mass bound says little; there each
    // token no more likely than this one has at most its chance.
    by_mass.min(MAX_VOCABULARY * sample_bound(listed, own, temperature).exp())
}

/// The body that asks a vLLM-style server (`model` there) to score
/// `output`, the answer to `req`, sent to the same endpoint as `req`: for a
/// chat, the answer as the assistant's message, continued (chat template
/// applied by the server); for a completion, the prompt and the answer as
/// one text. Greedy, one new token, the top 20 everywhere.
pub fn scoring_request(model: &str, req: &Request, output: &[String]) -> serde_json::Value {
    match req.endpoint {
        Endpoint::Chat => serde_json::json!({
            "model": model,
            "messages": [
                {"role": "user", "content": req.prompt},
                {"role": "assistant", "content": output.concat()},
            ],
            "continue_final_message": true,
            "add_generation_prompt": false,
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": 20,
            "logprobs": true,
            "top_logprobs": 20,
        }),
        Endpoint::Completion => serde_json::json!({
            "model": model,
            "prompt": format!("{}{}", req.prompt, output.concat()),
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": 20,
            "logprobs": 20,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_of_a_known_distribution() {
        let lp = [0.5f64.ln(), 0.3f64.ln(), 0.2f64.ln()];
        assert!((tail(&lp, 0, 1.0) - 1.0).abs() < 1e-12);
        assert!((tail(&lp, 1, 1.0) - 0.5).abs() < 1e-12);
        assert!((tail(&lp, 2, 1.0) - 0.2).abs() < 1e-12);
        // At 0.5 the weights are squared: 0.25, 0.09, 0.04.
        assert!((tail(&lp, 2, 0.5) - 0.04 / 0.38).abs() < 1e-12);
        // Greedy and above-1 temperatures are judged as at 1.
        assert_eq!(tail(&lp, 2, 0.0), tail(&lp, 2, 1.0));
        assert_eq!(tail(&lp, 2, 1.5), tail(&lp, 2, 1.0));
        assert_eq!(tail(&lp, 7, 1.0), 0.0);
    }

    /// splitmix64, for reproducible random distributions.
    fn next(x: &mut u64) -> f64 {
        *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn a_servers_top_k_bounds_the_tail_from_above() {
        let mut x = 42u64;
        for case in 0..300 {
            // Flat and peaked distributions over 400 tokens.
            let spread = 1.0 + 14.0 * next(&mut x);
            let raw: Vec<f64> = (0..400).map(|_| -spread * next(&mut x)).collect();
            let top = raw.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = raw.iter().map(|l| (l - top).exp()).sum();
            let lp: Vec<f64> = raw.iter().map(|l| l - top - z.ln()).collect();
            let mut order: Vec<usize> = (0..lp.len()).collect();
            order.sort_by(|a, b| lp[*b].total_cmp(&lp[*a]));
            let own = order[(next(&mut x) * 400.0) as usize % 400];
            let t = 0.2 + 0.8 * next(&mut x);
            let (exact, exact_lp) = sampling(&lp, own, t);
            // Everything listed: the bound is the tail.
            let names: Vec<String> = (0..lp.len()).map(|i| i.to_string()).collect();
            let all: Vec<(&str, f64)> =
                order.iter().map(|i| (names[*i].as_str(), lp[*i])).collect();
            let b = tail_bound(&all, lp[own], t);
            assert!((b - exact).abs() < 1e-9, "case {case}: {b} vs {exact}");
            // The top 20 and the token itself, as vLLM lists them.
            let mut listed: Vec<(&str, f64)> = all[..20].to_vec();
            if !order[..20].contains(&own) {
                listed.push((names[own].as_str(), lp[own]));
            }
            let b = tail_bound(&listed, lp[own], t);
            assert!(
                b >= exact - 1e-12,
                "case {case}: bound {b} under the tail {exact}"
            );
            assert!(b <= 1.0);
            let s = sample_bound(&listed, lp[own], t);
            assert!(s >= exact_lp - 1e-9, "case {case}: {s} under {exact_lp}");
            let direct = (lp[own] / t).exp() / lp.iter().map(|l| (l / t).exp()).sum::<f64>();
            assert!((exact_lp.exp() - direct).abs() < 1e-9);
        }
        // Far below the listed tokens the count bound holds: at T 1, the
        // top 20 holding 0.9 and the token at −25, its tail is at most
        // 2^19 e^−25 / 0.9 (about 8e−6), not the 0.1 left over.
        let top: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let mut listed: Vec<(&str, f64)> =
            top.iter().map(|n| (n.as_str(), 0.045f64.ln())).collect();
        listed.push(("x", -25.0));
        let b = tail_bound(&listed, -25.0, 1.0);
        assert!(b < 1e-5 && b > 1e-6, "{b}");
    }

    #[test]
    fn a_server_that_cannot_place_a_token_fails_the_answer_but_a_broken_one_does_not() {
        let answer = serde_json::json!({
            "prompt_logprobs": [null,
                {"1": {"logprob": -0.1, "rank": 1, "decoded_token": " apple"}},
                {"2": {"logprob": -0.2, "rank": 1, "decoded_token": " river"}}],
            "choices": [{"logprobs": {"content": [{"token": "<eos>", "logprob": -0.1,
                "top_logprobs": [{"token": "<eos>", "logprob": -0.1}]}]}}],
        });
        let out = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = scored_from_prompt_logprobs(&answer, &out(&[" apple", " river"]), "<eos>", 0.7);
        assert_eq!(ok.map(|s| s.positions.len()), Ok(3));
        match scored_from_prompt_logprobs(&answer, &out(&[" apple", " stone"]), "<eos>", 0.7) {
            Err(Unscored::Misfit(why)) => assert!(why.contains("not this model's tokens"), "{why}"),
            other => panic!("{other:?}"),
        }
        match scored_from_prompt_logprobs(&answer, &out(&[" a", " b", " c"]), "<eos>", 0.7) {
            Err(Unscored::Misfit(_)) => {}
            other => panic!("{other:?}"),
        }
        let broken = serde_json::json!({"choices": []});
        match scored_from_prompt_logprobs(&broken, &out(&[" apple"]), "<eos>", 0.7) {
            Err(Unscored::Reference(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_answer_that_stops_where_the_model_would_passes() {
        let req = Request {
            model: "m".into(),
            endpoint: Endpoint::Completion,
            prompt: "p".into(),
            temperature: 0.7,
            seed: 1,
            max_tokens: 16,
        };
        let got = Observed {
            model: Some("m".into()),
            finish_reason: Some("stop".into()),
            prompt_tokens: Some(3),
            completion_tokens: Some(0),
            done: true,
            ..Observed::default()
        };
        let scored = Scored {
            positions: vec![Position {
                eos_rank: 0,
                ..Position::END
            }],
            prompt_tokens: 3,
            eos: "<eos>".into(),
        };
        let v = check_scored(&Rules::default(), &req, &got, Ok(scored), &[], &mut |_| 0);
        assert!(v.passed(), "{:?}", v.failure());
        // Usage that is not the count is still held to the ratio.
        let lying = Observed {
            completion_tokens: Some(5),
            ..got
        };
        let scored = Scored {
            positions: vec![Position::END],
            prompt_tokens: 3,
            eos: "<eos>".into(),
        };
        let v = check_scored(&Rules::default(), &req, &lying, Ok(scored), &[], &mut |_| 0);
        assert!(matches!(v.get("v5.usage"), Some(Outcome::Fail(_))), "{v:?}");
    }
}
