//! Driver for the commit-reveal interop test (tests/interop/test_drand.py,
//! against PyPI `bittensor-drand`). One JSON command per line on stdin, one
//! JSON answer per line on stdout:
//!
//! - `{"op":"payload","hotkey":hex,"uids":[..],"values":[..],"version_key":N}` → `{"payload":hex}`
//! - `{"op":"encrypt","round":N,"plain":hex}` → `{"commit":hex}` (to drand quicknet)
//! - `{"op":"decrypt","commit":hex,"signature":hex}` → `{"plain":hex}` or `{"error":..}`
//! - `{"op":"reveal_round","last_epoch_block":N,"pending_epoch_at":N,"subnet_epoch_index":N,"tempo":N,"blocks_since_last_step":N,"current_block":N,"reveal_period":N,"block_time":F,"now":F}` → `{"round":N}`

use std::io::{BufRead, Write};

use parity_scale_codec::Encode;
use serde_json::{json, Value};
use tvm_chain::drand::{self, Beacon, Epochs, Schedule, WeightsPayload};

fn hex_of(v: &Value, k: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(k)
        .and_then(Value::as_str)
        .ok_or(format!("missing {k}"))?;
    hex::decode(s).map_err(|e| format!("{k}: {e}"))
}

fn u64_of(v: &Value, k: &str) -> Result<u64, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .ok_or(format!("missing {k}"))
}

fn f64_of(v: &Value, k: &str) -> Result<f64, String> {
    v.get(k)
        .and_then(Value::as_f64)
        .ok_or(format!("missing {k}"))
}

fn u16s(v: &Value, k: &str) -> Result<Vec<u16>, String> {
    let a = v
        .get(k)
        .and_then(Value::as_array)
        .ok_or(format!("missing {k}"))?;
    a.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or(format!("{k}: not a u16"))
        })
        .collect()
}

fn answer(cmd: &Value) -> Result<Value, String> {
    match cmd.get("op").and_then(Value::as_str) {
        Some("payload") => {
            let p = WeightsPayload {
                hotkey: hex_of(cmd, "hotkey")?,
                uids: u16s(cmd, "uids")?,
                values: u16s(cmd, "values")?,
                version_key: u64_of(cmd, "version_key")?,
            };
            Ok(json!({"payload": hex::encode(p.encode())}))
        }
        Some("encrypt") => {
            let c = drand::encrypt(
                &Beacon::quicknet(),
                u64_of(cmd, "round")?,
                &hex_of(cmd, "plain")?,
            )
            .map_err(|e| e.to_string())?;
            Ok(json!({"commit": hex::encode(c)}))
        }
        Some("decrypt") => {
            let p = drand::decrypt(&hex_of(cmd, "commit")?, &hex_of(cmd, "signature")?)
                .map_err(|e| e.to_string())?;
            Ok(json!({"plain": hex::encode(p)}))
        }
        Some("reveal_round") => {
            // bittensor-drand 2.0's get_encrypted_commit_v2 inputs.
            let s = Schedule {
                block: u64_of(cmd, "current_block")?,
                tempo: u64_of(cmd, "tempo")?,
                epochs: Epochs::Stateful {
                    index: u64_of(cmd, "subnet_epoch_index")?,
                    last_epoch_block: u64_of(cmd, "last_epoch_block")?,
                    pending_epoch_at: u64_of(cmd, "pending_epoch_at")?,
                    blocks_since_last_step: u64_of(cmd, "blocks_since_last_step")?,
                },
                reveal_period_epochs: u64_of(cmd, "reveal_period")?,
                block_time: f64_of(cmd, "block_time")?,
            };
            let round = s
                .reveal_round(&Beacon::quicknet(), f64_of(cmd, "now")?)
                .ok_or("the subnet runs no epochs")?;
            Ok(json!({"round": round}))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(cmd) => answer(&cmd).unwrap_or_else(|e| json!({ "error": e })),
            Err(e) => json!({ "error": e.to_string() }),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
