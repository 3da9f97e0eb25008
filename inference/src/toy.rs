//! A deterministic toy language model with known probabilities: the honest
//! upstream and the reference of tests and the devnet, where no real model
//! is installed. Its vocabulary is 64 words and an end-of-text token; the
//! distribution of the next token is a fixed function of the model's name
//! and the two tokens before it, so two toy models with different names are
//! different models, and anyone can recompute any token's log-probability.
//! It is labelled a toy wherever it shows; nothing pays on it outside a
//! devnet.

use sha2::{Digest, Sha256};

pub const EOS: &str = "<|endoftext|>";

const WORDS: [&str; 64] = [
    "apple", "river", "stone", "cloud", "green", "quick", "light", "house", "north", "tiger",
    "paper", "music", "glass", "ocean", "plant", "bread", "smile", "train", "chair", "dream",
    "field", "honey", "lemon", "metal", "night", "piano", "queen", "radio", "sugar", "table",
    "urban", "voice", "water", "youth", "zebra", "amber", "beach", "candy", "delta", "eagle",
    "frost", "grape", "heart", "index", "jelly", "knife", "lunar", "maple", "noble", "olive",
    "pearl", "quiet", "robin", "solar", "tulip", "umbra", "vivid", "wheat", "xenon", "yacht",
    "zesty", "brave", "cedar", "dusk",
];

/// Token `i`'s text as it appears in output: words with a leading space,
/// as GPT-style tokenizers write them; the last index is EOS.
pub fn token_text(i: usize) -> &'static str {
    if i >= WORDS.len() {
        return EOS;
    }
    spaced(i)
}

fn spaced(i: usize) -> &'static str {
    static CELL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let v = CELL.get_or_init(|| WORDS.iter().map(|w| format!(" {w}")).collect());
    v[i].as_str()
}

pub const VOCAB: usize = WORDS.len() + 1;
pub const EOS_ID: usize = WORDS.len();

/// The token of a piece of output text (" river" or "river"), if it is one.
pub fn token_id(text: &str) -> Option<usize> {
    if text == EOS {
        return Some(EOS_ID);
    }
    WORDS
        .iter()
        .position(|w| *w == text.trim_start_matches(' '))
}

/// A prompt's tokens: its words in the vocabulary; any other word is mapped
/// to one by its hash (the toy reads any text).
pub fn tokenize(text: &str) -> Vec<usize> {
    text.split_whitespace()
        .map(|w| {
            let lower = w
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            token_id(&lower).unwrap_or_else(|| {
                let h = Sha256::digest(lower.as_bytes());
                h[0] as usize % WORDS.len()
            })
        })
        .collect()
}

/// splitmix64: a small, fixed generator (no dependency whose output could
/// change under us).
pub(crate) struct Mix(pub(crate) u64);

impl Mix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone)]
pub struct ToyLm {
    name: String,
    key: [u8; 32],
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Output tokens, EOS not included.
    pub tokens: Vec<usize>,
    /// Each token's log-probability under the model (temperature 1).
    pub logprobs: Vec<f64>,
    pub finish: Finish,
}

impl ToyLm {
    pub fn new(name: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"tvm toy language model\0");
        h.update(name.as_bytes());
        ToyLm {
            name: name.to_string(),
            key: h.finalize().into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The logits of the next token after `context`: most words near 0, a
    /// few high (10·u³), EOS rising with the context's length.
    fn logits(&self, context: &[usize]) -> [f64; VOCAB] {
        let n = context.len();
        let prev = |back: usize| {
            if n >= back {
                context[n - back] as u64
            } else {
                u64::MAX
            }
        };
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(prev(2).to_le_bytes());
        h.update(prev(1).to_le_bytes());
        let d = h.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&d[..8]);
        let mut rng = Mix(u64::from_le_bytes(seed));
        let mut l = [0f64; VOCAB];
        for x in l.iter_mut() {
            let u = rng.unit();
            *x = 10.0 * u * u * u;
        }
        let u = rng.unit();
        l[EOS_ID] = 12.0 * u * u * u - 6.0 + 0.15 * n.min(120) as f64;
        l
    }

    /// Log-probabilities (temperature 1) of every token after `context`.
    pub fn logprobs(&self, context: &[usize]) -> [f64; VOCAB] {
        let l = self.logits(context);
        let max = l.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = l.iter().map(|x| (x - max).exp()).sum();
        let lse = max + sum.ln();
        let mut out = [0f64; VOCAB];
        for (o, x) in out.iter_mut().zip(l) {
            *o = x - lse;
        }
        out
    }

    /// Samples up to `max_tokens` after `prompt` at `temperature` (0:
    /// greedy) with `seed`: the same inputs give the same output.
    pub fn generate(
        &self,
        prompt: &[usize],
        temperature: f64,
        seed: u64,
        max_tokens: usize,
    ) -> Generation {
        let mut context = prompt.to_vec();
        let mut rng = Mix(seed ^ 0x7476_6d5f_746f_7921);
        let mut g = Generation {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: Finish::Length,
        };
        while g.tokens.len() < max_tokens {
            let lp = self.logprobs(&context);
            let pick = sample(&lp, temperature, &mut rng);
            if pick == EOS_ID {
                g.finish = Finish::Stop;
                break;
            }
            g.tokens.push(pick);
            g.logprobs.push(lp[pick]);
            context.push(pick);
        }
        g
    }
}

/// Draws the next token from log-probabilities `lp` at `temperature`
/// (0: the most likely).
pub(crate) fn sample(lp: &[f64], temperature: f64, rng: &mut Mix) -> usize {
    if temperature <= 0.0 {
        return argmax(lp);
    }
    // Shifted by the top so that low temperatures cannot overflow.
    let top = lp.iter().cloned().fold(f64::MIN, f64::max);
    let w: Vec<f64> = lp.iter().map(|x| ((x - top) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut r = rng.unit() * total;
    for (i, x) in w.iter().enumerate() {
        if r < *x {
            return i;
        }
        r -= x;
    }
    lp.len().saturating_sub(1)
}

pub fn argmax(lp: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in lp.iter().enumerate() {
        if *x > lp[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_a_distribution_and_deterministic() {
        let m = ToyLm::new("toy-a");
        let lp = m.logprobs(&[1, 2, 3]);
        let total: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(lp, ToyLm::new("toy-a").logprobs(&[1, 2, 3]));
        assert_ne!(lp, ToyLm::new("toy-b").logprobs(&[1, 2, 3]));
        let g = m.generate(&[1, 2, 3], 0.8, 7, 40);
        assert_eq!(g, m.generate(&[1, 2, 3], 0.8, 7, 40));
        assert_ne!(g.tokens, m.generate(&[1, 2, 3], 0.8, 8, 40).tokens);
    }

    #[test]
    fn texts_and_tokens_round_trip() {
        for i in 0..VOCAB {
            assert_eq!(token_id(token_text(i)), Some(i));
        }
        assert_eq!(tokenize("Apple, river! zzz").len(), 3);
        assert_eq!(&tokenize("apple river")[..], &[0, 1]);
    }
}
