//! Verified inference for the v5 share: what a validator asks a miner's
//! sealed runtime (`prompts`), how it reads the streamed answer and its
//! speed (`stream`), whether the answer is the model's (`check`, against a
//! `Reference`), and how answers become a score (`score`). `toy` is a
//! deterministic model with known probabilities for tests and the devnet;
//! `gguf` runs a real small model on the CPU, as a reference and upstream;
//! with feature `server`, `server` serves it over the OpenAI API, honestly
//! or as the cheaters the tests need.

pub mod check;
pub mod gguf;
pub mod prompts;
pub mod score;
pub mod stream;
pub mod toy;

#[cfg(feature = "server")]
pub mod server;
