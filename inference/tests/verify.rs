//! Answers from the toy model over real sockets, honest and cheating,
//! checked against the toy reference; speed measured against a known pace.

use std::time::Duration;

use tvm_inference::check::{check, Earlier, Endpoint, Outcome, Request, Rules};
use tvm_inference::score::{Answer, ScoreRules, Windows};
use tvm_inference::server::{Behaviour, ToyConfig};
use tvm_inference::stream::Observed;

mod common;
use common::{ask, start};
use tvm_inference::toy::ToyLm;

const MODEL: &str = "toy/tvm-toy-1";

fn req(prompt: &str, temperature: f64, seed: u64, max_tokens: usize) -> Request {
    Request {
        model: MODEL.into(),
        endpoint: Endpoint::Chat,
        prompt: prompt.into(),
        temperature,
        seed,
        max_tokens,
    }
}

fn verdict(r: &Request, o: &Observed, earlier: &[Earlier]) -> tvm_inference::check::Verdict {
    // The validator's randomness, here a fixed sequence.
    let mut draw = tvm_inference::prompts::Draw::new(b"test positions");
    let mut pick = |len: usize| draw.range(0, len as u64 - 1) as usize;
    check(
        &Rules::default(),
        r,
        o,
        &ToyLm::new(MODEL),
        earlier,
        &mut pick,
    )
}

const PROMPTS: [&str; 3] = [
    "Write about apple river stone cloud green quick light",
    "Describe the ocean and the plant and the bread at night",
    "Tell a story of tiger paper music glass",
];

#[tokio::test]
async fn honest_answers_verify_at_several_temperatures() {
    let url = start(ToyConfig::honest(&[MODEL])).await;
    let mut tokens = 0;
    for (i, p) in PROMPTS.iter().enumerate() {
        for t in [0.0, 0.3, 0.7, 1.0] {
            for chat in [true, false] {
                let r = Request {
                    endpoint: if chat {
                        Endpoint::Chat
                    } else {
                        Endpoint::Completion
                    },
                    ..req(p, t, 1000 + i as u64, 64)
                };
                let o = ask(&url, &r).await;
                let v = verdict(&r, &o, &[]);
                assert!(v.passed(), "T={t} chat={chat}: {:?}", v.failure());
                tokens += o.tokens.len();
            }
        }
    }
    assert!(
        tokens > 200,
        "the answers are too short to test anything: {tokens}"
    );
}

/// A prompt and seed on which the honest model writes at least `n` tokens.
fn long_answer(n: usize) -> (Request, usize) {
    let m = ToyLm::new(MODEL);
    for seed in 0.. {
        let r = req(PROMPTS[0], 0.8, seed, 48);
        let g = m.generate(&tvm_inference::toy::tokenize(&r.prompt), 0.8, seed, 48);
        if g.tokens.len() >= n {
            return (r, g.tokens.len());
        }
    }
    unreachable!()
}

fn failed<'a>(v: &'a tvm_inference::check::Verdict, name: &str) -> &'a str {
    match v.get(name) {
        Some(Outcome::Fail(why)) => why,
        other => panic!("{name} did not fail: {other:?}; all: {:?}", v.checks),
    }
}

#[tokio::test]
async fn each_cheater_fails_the_check_that_names_it() {
    let (r, len) = long_answer(24);
    // Another model under the name asked for.
    let url = start(ToyConfig {
        behaviour: Behaviour::OtherModel("toy/tvm-toy-other".into()),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let v = verdict(&r, &ask(&url, &r).await, &[]);
    assert!(!v.passed());
    let why = failed(&v, "v5.tokens");
    assert!(
        why.contains("another model") || why.contains("not this model's output"),
        "{why}"
    );

    // Cut short.
    let url = start(ToyConfig {
        behaviour: Behaviour::Truncate(len / 3),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let v = verdict(&r, &ask(&url, &r).await, &[]);
    let why = failed(&v, "v5.finish");
    assert!(why.contains("cut short"), "{why}");

    // Another model at temperature 0: not the reference's greedy choice.
    let greedy = Request {
        temperature: 0.0,
        ..r.clone()
    };
    let url_other = start(ToyConfig {
        behaviour: Behaviour::OtherModel("toy/tvm-toy-other".into()),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let v = verdict(&greedy, &ask(&url_other, &greedy).await, &[]);
    assert!(
        matches!(v.get("v5.greedy"), Some(Outcome::Fail(_))),
        "{:?}",
        v.checks
    );

    // A precomputed continuation cut to the new length, for a new seed.
    let url_honest = start(ToyConfig::honest(&[MODEL])).await;
    let first = ask(&url_honest, &r).await;
    let mut cut = first.clone();
    let keep = first.tokens.len() - 1;
    cut.tokens.truncate(keep);
    cut.logprobs.truncate(keep);
    cut.arrivals.truncate(keep);
    cut.finish_reason = Some("length".into());
    cut.completion_tokens = Some(keep as u64);
    let again = Request {
        seed: r.seed + 17,
        max_tokens: keep,
        ..r.clone()
    };
    let v = verdict(
        &again,
        &cut,
        &[Earlier {
            seed: r.seed,
            tokens: first.tokens.clone(),
        }],
    );
    let why = failed(&v, "v5.replay");
    assert!(why.contains("a replayed answer"), "{why}");

    // More tokens than asked for fails before any reference is asked.
    let short = Request {
        max_tokens: 2,
        ..r.clone()
    };
    let why = tvm_inference::check::precheck(&short, &first).unwrap();
    assert!(why.starts_with("v5.finish: "), "{why}");

    // Lying about usage (billing three times the tokens).
    let url = start(ToyConfig {
        behaviour: Behaviour::UsageTimes(3.0),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let completion = Request {
        endpoint: Endpoint::Completion,
        ..r.clone()
    };
    let v = verdict(&completion, &ask(&url, &completion).await, &[]);
    let why = failed(&v, "v5.usage");
    assert!(why.contains("completion tokens"), "{why}");

    // A cached answer replayed for a new seed; the honest model's second
    // answer differs and passes.
    for (behaviour, replays) in [(Behaviour::Replay, true), (Behaviour::Honest, false)] {
        let url = start(ToyConfig {
            behaviour,
            ..ToyConfig::honest(&[MODEL])
        })
        .await;
        let first = ask(&url, &r).await;
        assert!(verdict(&r, &first, &[]).passed());
        let again = Request {
            seed: r.seed + 1_000_003,
            ..r.clone()
        };
        let second = ask(&url, &again).await;
        let earlier = [Earlier {
            seed: r.seed,
            tokens: first.tokens.clone(),
        }];
        let v = verdict(&again, &second, &earlier);
        if replays {
            let why = failed(&v, "v5.replay");
            assert!(why.contains("a replayed answer"), "{why}");
        } else {
            assert!(v.passed(), "{:?}", v.failure());
        }
    }
}

#[tokio::test]
async fn speed_is_measured_within_five_percent_of_the_pace() {
    let (r, len) = long_answer(30);
    let url = start(ToyConfig {
        // Long enough that scheduling noise on a busy machine stays small.
        first_token: Duration::from_millis(2000),
        per_token: Duration::from_millis(100),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let o = ask(&url, &r).await;
    assert_eq!(o.tokens.len(), len);
    let (ttft, tps) = (o.ttft().unwrap(), o.tps().unwrap());
    assert!((ttft - 2.0).abs() / 2.0 < 0.05, "ttft {ttft}");
    assert!((tps - 10.0).abs() / 10.0 < 0.05, "tps {tps}");
    eprintln!("paced 2 s then 10 tokens/s: measured {ttft:.3} s and {tps:.2} tokens/s");
    assert!(verdict(&r, &o, &[]).passed());
}

#[tokio::test]
async fn the_slow_earn_less_and_cheaters_nothing() {
    let rules = ScoreRules {
        min_completed: 3,
        ..ScoreRules::default()
    };
    let (r, _) = long_answer(16);
    let fast = start(ToyConfig {
        per_token: Duration::from_millis(5),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let slow = start(ToyConfig {
        per_token: Duration::from_millis(25),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let cheat = start(ToyConfig {
        behaviour: Behaviour::OtherModel("toy/other".into()),
        per_token: Duration::from_millis(1),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let mut w = Windows::default();
    for (uid, url) in [(1u16, &fast), (2, &slow), (3, &cheat)] {
        for i in 0..4u64 {
            let q = Request {
                seed: r.seed + i * 7919,
                ..r.clone()
            };
            let o = ask(url, &q).await;
            let v = verdict(&q, &o, &[]);
            let a = match (v.failure(), o.tps(), o.ttft()) {
                (None, Some(tps), Some(ttft)) => Answer::Verified { tps, ttft },
                (Some(why), _, _) => Answer::Failed(why),
                _ => Answer::Failed("no speed".into()),
            };
            w.record(&rules, uid, MODEL, a);
        }
    }
    let (f, s, c) = (
        w.standing(&rules, 1),
        w.standing(&rules, 2),
        w.standing(&rules, 3),
    );
    assert!(f.score > s.score && s.score > 0.0, "{f:?} {s:?}");
    assert_eq!(c.score, 0.0);
    assert!(c.reason.contains("0 of 4 answers verified"), "{}", c.reason);
}
