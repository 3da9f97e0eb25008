//! Synthetic requests from a seed: prompts drawn from a built-in word list
//! (no network, nothing a miner can precompute for an unseen seed), a
//! temperature, a sampling seed and a length, in documented ranges.

use sha2::{Digest, Sha256};

/// The ranges requests are drawn from.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestRanges {
    pub min_prompt_words: usize,
    pub max_prompt_words: usize,
    /// Temperatures: 0 (greedy) or drawn from this range.
    pub min_temperature: f64,
    pub max_temperature: f64,
    /// One request in this many is greedy (temperature 0).
    pub greedy_one_in: u64,
    pub min_max_tokens: usize,
    pub max_max_tokens: usize,
    /// One request in this many repeats an earlier prompt with a new seed.
    pub repeat_one_in: u64,
    /// One request in this many goes to `/v1/completions` (the prompt's
    /// text continued), the others to `/v1/chat/completions`.
    pub completion_one_in: u64,
}

impl Default for RequestRanges {
    fn default() -> Self {
        RequestRanges {
            min_prompt_words: 8,
            max_prompt_words: 24,
            min_temperature: 0.3,
            max_temperature: 1.0,
            greedy_one_in: 4,
            min_max_tokens: 16,
            max_max_tokens: 96,
            repeat_one_in: 4,
            completion_one_in: 3,
        }
    }
}

/// A deterministic stream of numbers from a seed (SHA-256 in counter mode).
pub struct Draw {
    key: [u8; 32],
    counter: u64,
}

impl Draw {
    pub fn new(seed: &[u8]) -> Self {
        Draw {
            key: Sha256::digest(seed).into(),
            counter: 0,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(self.counter.to_le_bytes());
        self.counter += 1;
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const TOPICS: [&str; 16] = [
    "Write about",
    "Describe",
    "Continue the list",
    "Tell a story of",
    "Explain",
    "Compare",
    "Summarise",
    "List",
    "Imagine",
    "Recall",
    "Name",
    "Sing of",
    "Picture",
    "Plan",
    "Sketch",
    "Wonder about",
];

/// One request's parameters (the model is the caller's).
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub prompt: String,
    pub temperature: f64,
    pub seed: u64,
    pub max_tokens: usize,
    pub endpoint: crate::check::Endpoint,
}

/// Draws a request; `earlier` prompts may be asked again with a new seed.
pub fn draw(r: &RequestRanges, d: &mut Draw, earlier: &[String]) -> Drawn {
    let repeat = !earlier.is_empty() && d.range(1, r.repeat_one_in.max(1)) == 1;
    let prompt = if repeat {
        earlier[d.range(0, earlier.len() as u64 - 1) as usize].clone()
    } else {
        let words = d.range(r.min_prompt_words as u64, r.max_prompt_words as u64);
        let mut p = TOPICS[d.range(0, TOPICS.len() as u64 - 1) as usize].to_string();
        for _ in 0..words {
            p.push(' ');
            p.push_str(
                crate::toy::token_text(d.range(0, crate::toy::EOS_ID as u64 - 1) as usize).trim(),
            );
        }
        p
    };
    // A repeated prompt is sampled, never greedy: only a sampled answer
    // shows a replay (greedy decoding repeats itself by design).
    let temperature = if !repeat && d.range(1, r.greedy_one_in.max(1)) == 1 {
        0.0
    } else {
        let t = r.min_temperature + d.unit() * (r.max_temperature - r.min_temperature);
        (t * 100.0).round() / 100.0
    };
    Drawn {
        prompt,
        temperature,
        seed: d.next_u64() >> 1,
        max_tokens: d.range(r.min_max_tokens as u64, r.max_max_tokens as u64) as usize,
        endpoint: if d.range(1, r.completion_one_in.max(1)) == 1 {
            crate::check::Endpoint::Completion
        } else {
            crate::check::Endpoint::Chat
        },
    }
}
