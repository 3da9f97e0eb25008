//! A real model on the CPU: a llama-architecture GGUF file (SmolLM2,
//! TinyLlama, …) run with candle, as the built-in reference of small
//! models (it scores answers here, without a reference server) and as the
//! honest upstream of the devnet when such a file is installed.
//!
//! What it supports, and refuses to load otherwise: candle's quantized
//! llama (`general.architecture: llama`), a GPT-2 style byte-level BPE
//! tokenizer (`tokenizer.ggml.model: gpt2`) with a known pre-tokenizer,
//! and a ChatML chat template. Answers are scored one token at a time after
//! the prompt (candle's llama returns the last position's logits only),
//! so scoring costs one forward pass per answer token.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::check::{sampling, Endpoint, Position, Reference, Request, NOT_A_TOKEN};
use crate::toy::{sample, Finish, Generation, Mix};

/// Positions candle's llama runs (prompt and answer together).
pub const MAX_POSITIONS: usize = 4096;

/// Largest model file loaded: the built-in reference is for small models,
/// and it holds the weights as 32-bit floats (4–8× the file).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Shows the name only (the weights are not for printing).
impl std::fmt::Debug for GgufLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufLm").field("name", &self.name).finish()
    }
}

pub struct GgufLm {
    name: String,
    weights: ModelWeights,
    vocab: Vocab,
    /// The system message the chat template adds when none is given.
    system: Option<String>,
}

/// A model's tokenizer and token texts, from its GGUF metadata.
pub struct Vocab {
    tokenizer: Tokenizer,
    /// Each token's text as output shows it (byte-level decoded; a token
    /// that is not whole UTF-8 shows as U+FFFD, as servers show it).
    texts: Vec<String>,
    /// Output text to token, for texts that name exactly one token.
    by_text: HashMap<String, u32>,
    /// Output text to tokens, for texts that name several (pieces of a
    /// multi-byte character all show as U+FFFD).
    shared_text: HashMap<String, Vec<u32>>,
    eos: u32,
}

fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, String> {
    ct.metadata
        .get(key)
        .ok_or_else(|| format!("the file has no {key}"))
}

fn meta_str(ct: &Content, key: &str) -> Result<String, String> {
    meta(ct, key)?
        .to_string()
        .cloned()
        .map_err(|e| format!("{key}: {e}"))
}

fn meta_strs(ct: &Content, key: &str) -> Result<Vec<String>, String> {
    meta(ct, key)?
        .to_vec()
        .map_err(|e| format!("{key}: {e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// GPT-2's map from bytes to the printable characters byte-level BPE
/// vocabularies are written in, inverted: character to byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// The default system message of a ChatML template, if it adds one.
fn chatml_system(template: &str) -> Result<Option<String>, String> {
    if !template.contains("<|im_start|>") || !template.contains("<|im_end|>") {
        return Err(
            "its chat template is not ChatML (<|im_start|>role … <|im_end|>): the built-in reference \
             knows no other; score this model with a reference server (reference: openai)"
                .into(),
        );
    }
    let Some(at) = template.find("<|im_start|>system") else {
        return Ok(None);
    };
    let rest = &template[at + "<|im_start|>system".len()..];
    // The template's newline is a real one or a Jinja escape.
    let rest = rest
        .strip_prefix('\n')
        .or_else(|| rest.strip_prefix("\\n"))
        .unwrap_or(rest);
    match rest.find("<|im_end|>") {
        // An expression here (`' + message['content'] + '`): no default.
        Some(end) => {
            let text = &rest[..end];
            let expression = ["{{", "{%", "' +", "+ '", "message["]
                .iter()
                .any(|m| text.contains(m));
            Ok((!expression).then(|| text.replace("\\'", "'")))
        }
        None => Ok(None),
    }
}

/// The model with every tensor dequantized to 32-bit floats (as a GGUF file
/// in memory). Run quantized, candle (as llama.cpp) also rounds each
/// activation to 8 bits before a product: log-probabilities then move by up
/// to 0.1 from the weights' own, as much as a check allows. A reference
/// must give the weights' own.
fn dequantized<R: std::io::Read + std::io::Seek>(
    ct: &Content,
    f: &mut R,
) -> candle_core::Result<(Content, std::io::Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = ct.tensor(f, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        tensors.push((name.as_str(), QTensor::quantize(&t, GgmlDType::F32)?));
    }
    let metadata: Vec<(&str, &Value)> = ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut data = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut data, &metadata, &refs)?;
    drop(tensors);
    data.set_position(0);
    let ct = Content::read(&mut data)?;
    Ok((ct, data))
}

impl GgufLm {
    /// Loads the model in `path`, served and scored as `name`.
    pub fn load(path: &Path, name: &str) -> Result<Self, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(format!(
                "{shown}: {size} bytes; the built-in reference loads models up to {MAX_FILE_BYTES} (score larger ones with a reference server)"
            ));
        }
        let mut f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let ct = Content::read(&mut f).map_err(|e| format!("{shown}: not a GGUF file: {e}"))?;
        let err = |e: String| format!("{shown}: {e}");
        let arch = meta_str(&ct, "general.architecture").map_err(err)?;
        if arch != "llama" {
            return Err(err(format!(
                "architecture {arch:?}; the built-in reference runs llama-architecture models"
            )));
        }
        let vocab = Vocab::from_gguf(&ct).map_err(err)?;
        let template = meta_str(&ct, "tokenizer.chat_template").map_err(err)?;
        let system = chatml_system(&template).map_err(err)?;
        let (ct, mut data) =
            dequantized(&ct, &mut f).map_err(|e| err(format!("cannot read the weights: {e}")))?;
        let weights = ModelWeights::from_gguf(ct, &mut data, &Device::Cpu)
            .map_err(|e| err(format!("cannot load the weights: {e}")))?;
        Ok(GgufLm {
            name: name.to_string(),
            weights,
            vocab,
            system,
        })
    }
}

impl Vocab {
    /// Reads only the vocabulary of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let mut f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let ct = Content::read(&mut f).map_err(|e| format!("{shown}: not a GGUF file: {e}"))?;
        Vocab::from_gguf(&ct).map_err(|e| format!("{shown}: {e}"))
    }

    pub fn from_gguf(ct: &Content) -> Result<Self, String> {
        let kind = meta_str(ct, "tokenizer.ggml.model")?;
        if kind != "gpt2" {
            return Err(format!(
                "tokenizer {kind:?}; the built-in reference reads byte-level BPE (gpt2) tokenizers"
            ));
        }
        // How text is split before BPE, as llama.cpp names it.
        let pre = meta_str(ct, "tokenizer.ggml.pre").unwrap_or_else(|_| "default".into());
        let digits = match pre.as_str() {
            "smollm" | "starcoder" | "refact" => true,
            "gpt-2" | "gpt2" | "default" => false,
            other => {
                return Err(format!(
                    "pre-tokenizer {other:?} is not one the built-in reference knows (smollm, starcoder, refact, gpt-2)"
                ))
            }
        };
        let tokens = meta_strs(ct, "tokenizer.ggml.tokens")?;
        let merges = meta_strs(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("a merge without a space: {m:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let types: Vec<i32> = meta(ct, "tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().map_err(|e| e.to_string()))?
            .iter()
            .map(|v| v.to_i32().unwrap_or(1))
            .collect();
        let eos = meta(ct, "tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().map_err(|e| e.to_string()))?;
        if eos as usize >= tokens.len() {
            return Err(format!("eos_token_id {eos} is not in the vocabulary"));
        }
        let vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::new(vocab, merges);
        let mut tokenizer = Tokenizer::new(bpe);
        let bytes = ByteLevel::new(false, true, true);
        if digits {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                bytes.into(),
            ])));
        } else {
            tokenizer.with_pre_tokenizer(Some(bytes));
        }
        // Control (3) and user-defined (4) tokens are matched whole.
        let special = |i: usize| matches!(types.get(i), Some(3) | Some(4));
        let specials: Vec<AddedToken> = (0..tokens.len())
            .filter(|i| special(*i))
            .map(|i| AddedToken::from(tokens[i].clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(specials)
            .map_err(|e| format!("cannot add the special tokens: {e}"))?;

        let to_byte = unicode_to_byte();
        let mut texts = Vec::with_capacity(tokens.len());
        let mut count: HashMap<String, usize> = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            let text = if special(i) {
                t.clone()
            } else {
                let raw: Option<Vec<u8>> = t.chars().map(|c| to_byte.get(&c).copied()).collect();
                match raw {
                    Some(b) => String::from_utf8(b).unwrap_or_else(|_| "\u{FFFD}".into()),
                    None => "\u{FFFD}".into(),
                }
            };
            *count.entry(text.clone()).or_default() += 1;
            texts.push(text);
        }
        let by_text = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| count.get(*t) == Some(&1))
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();

        let mut shared_text: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            if count.get(t).is_some_and(|c| *c > 1) {
                shared_text.entry(t.clone()).or_default().push(i as u32);
            }
        }
        Ok(Vocab {
            tokenizer,
            texts,
            by_text,
            shared_text,
            eos,
        })
    }

    /// `text`'s tokens (special tokens in it are read as such).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize: {e}"))
    }

    /// A token's text as output shows it.
    pub fn token_text(&self, id: u32) -> &str {
        self.texts
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("\u{FFFD}")
    }

    /// The token whose output text is `text`, if exactly one is.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The token an answer's `text` is at a position with next-token
    /// log-probabilities `lp`: the one it names, or of the tokens sharing
    /// that text the most likely (an honest server shows a piece of a
    /// multi-byte character as U+FFFD, whichever piece it was).
    pub fn token_at(&self, text: &str, lp: &[f64]) -> Option<u32> {
        self.token_id(text).or_else(|| {
            self.shared_text.get(text)?.iter().copied().max_by(|a, b| {
                let at = |t: &u32| lp.get(*t as usize).copied().unwrap_or(f64::MIN);
                at(a).total_cmp(&at(b))
            })
        })
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }
}

impl GgufLm {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text the model reads for a chat of one user message.
    pub fn chat_prompt(&self, user: &str) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.system {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
        s.push_str(&format!(
            "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ));
        s
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The text the model reads for `req`.
    fn input(&self, req: &Request) -> String {
        match req.endpoint {
            Endpoint::Chat => self.chat_prompt(&req.prompt),
            Endpoint::Completion => req.prompt.clone(),
        }
    }

    /// Log-probabilities of the next token after feeding `ids` at `pos`.
    fn step(model: &mut ModelWeights, ids: &[u32], pos: usize) -> Result<Vec<f64>, String> {
        let mut run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
            model
                .forward(&x, pos)?
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()
        };
        let logits = run().map_err(|e| format!("the model failed: {e}"))?;
        let top = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let sum: f64 = logits.iter().map(|x| (*x as f64 - top).exp()).sum();
        let norm = top + sum.ln();
        Ok(logits.iter().map(|x| *x as f64 - norm).collect())
    }

    /// Continues `prompt` (with `chat`, a chat of one user message with
    /// that text): up to `max_tokens` sampled at `temperature` (0: greedy)
    /// with `seed`. Also gives the prompt's length in tokens.
    pub fn generate(
        &self,
        prompt: &str,
        chat: bool,
        temperature: f64,
        seed: u64,
        max_tokens: usize,
    ) -> Result<(Generation, usize), String> {
        let text = if chat {
            self.chat_prompt(prompt)
        } else {
            prompt.to_string()
        };
        let ids = self.vocab.encode(&text)?;
        if ids.is_empty() {
            return Err("an empty prompt".into());
        }
        let mut model = self.weights.clone();
        let mut rng = Mix(seed ^ 0x7476_6d5f_6767_7566);
        let mut g = Generation {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: Finish::Length,
        };
        let mut lp = Self::step(&mut model, &ids, 0)?;
        let mut pos = ids.len();
        while g.tokens.len() < max_tokens {
            let pick = sample(&lp, temperature, &mut rng);
            if pick == self.vocab.eos as usize {
                g.finish = Finish::Stop;
                break;
            }
            g.tokens.push(pick);
            g.logprobs.push(lp[pick]);
            if g.tokens.len() == max_tokens {
                break;
            }
            lp = Self::step(&mut model, &[pick as u32], pos)?;
            pos += 1;
        }
        Ok((g, ids.len()))
    }
}

impl Reference for GgufLm {
    fn model(&self) -> &str {
        &self.name
    }

    fn score(&self, req: &Request, output: &[String]) -> Result<Vec<Position>, String> {
        let temperature = req.temperature;
        let ids = self.vocab.encode(&self.input(req))?;
        if ids.is_empty() {
            return Err("an empty prompt".into());
        }
        if ids.len() + output.len() >= MAX_POSITIONS {
            return Err(format!(
                "{} prompt and {} answer tokens: the built-in reference runs at most {MAX_POSITIONS} positions",
                ids.len(),
                output.len()
            ));
        }
        let mut model = self.weights.clone();
        let mut lp = Self::step(&mut model, &ids, 0)?;
        let mut pos = ids.len();
        let mut out = Vec::with_capacity(output.len() + 1);
        for i in 0..=output.len() {
            let top = lp.iter().cloned().fold(f64::MIN, f64::max);
            let eos_lp = lp.get(self.vocab.eos as usize).copied().unwrap_or(f64::MIN);
            let eos_rank = lp.iter().filter(|x| **x > eos_lp).count();
            let token = match output.get(i) {
                Some(t) => self.vocab.token_at(t, &lp),
                None => Some(self.vocab.eos),
            };
            let Some(token) = token else {
                // Text that is no single token of this model cannot be
                // its output; what follows is not scored.
                out.push(Position {
                    token_logprob: NOT_A_TOKEN,
                    top_logprob: top,
                    eos_rank,
                    tail: 0.0,
                    sample_logprob: NOT_A_TOKEN,
                });
                while out.len() < output.len() + 1 {
                    out.push(Position {
                        token_logprob: top,
                        top_logprob: top,
                        eos_rank,
                        ..Position::END
                    });
                }
                break;
            };
            let (tail, sample_logprob) = if i < output.len() {
                sampling(&lp, token as usize, temperature)
            } else {
                (1.0, 0.0)
            };
            out.push(Position {
                token_logprob: lp.get(token as usize).copied().unwrap_or(NOT_A_TOKEN),
                top_logprob: top,
                eos_rank,
                tail,
                sample_logprob,
            });
            if i < output.len() {
                lp = Self::step(&mut model, &[token], pos)?;
                pos += 1;
            }
        }
        Ok(out)
    }

    fn prompt_tokens(&self, req: &Request) -> u64 {
        self.vocab
            .encode(&self.input(req))
            .map(|ids| ids.len() as u64)
            .unwrap_or(0)
    }

    fn eos(&self) -> &str {
        self.vocab.token_text(self.vocab.eos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_a_bijection() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
    }

    #[test]
    fn chatml_default_system_is_read() {
        let t = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are kind<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}";
        assert_eq!(chatml_system(t).unwrap().as_deref(), Some("You are kind"));
        let none =
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}";
        assert_eq!(chatml_system(none).unwrap(), None);
        let own = "{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>' }}";
        assert_eq!(chatml_system(own).unwrap(), None);
        let apostrophe = "{{ '<|im_start|>system\nYou\\'re kind<|im_end|>\n' }}";
        assert_eq!(
            chatml_system(apostrophe).unwrap().as_deref(),
            Some("You're kind")
        );
        assert!(chatml_system("{{ bos_token }}[INST]").is_err());
    }
}
