//! Driver for the cross-language interop test (tests/interop/test_interop.py).
//! Reads one JSON command per line on stdin, answers one JSON line on stdout:
//!
//! - `{"op":"sign","uri":..,"signed_for":ss58|null,"body_hex":..,"timestamp_ms":N}` → `{"headers":{..}}`
//! - `{"op":"verify","recipient":ss58|null,"headers":{..},"body_hex":..,"now_ms":N}` → `{"ok":true,"signer":..}` or `{"ok":false,"error":..}`
//! - `{"op":"keyfile","path":..}` → `{"ok":true,"ss58":..}` or `{"ok":false,"error":..}`
//! - `{"op":"uri","uri":..}` → `{"ok":true,"ss58":..}`
//! - `{"op":"report_data","nonce":hex,"claims":{..}}` → `{"report_data":hex,"device_nonce":hex}`

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde_json::{json, Value};
use tvm_protocol::{
    device_nonce, epistula, report_data, wallet, AccountId, Claims, Hotkey, Nonce, Recipient,
    SignedHeaders, Verifier,
};

fn str_field<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {k}"))
}

fn opt_account(v: &Value, k: &str) -> Result<Option<AccountId>, String> {
    match v.get(k).and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|e| format!("{k}: {e}")),
    }
}

fn body(v: &Value) -> Result<Vec<u8>, String> {
    hex::decode(str_field(v, "body_hex")?).map_err(|e| e.to_string())
}

fn num(v: &Value, k: &str) -> Result<u64, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("missing integer field {k}"))
}

fn handle(cmd: &Value) -> Result<Value, String> {
    match str_field(cmd, "op")? {
        "sign" => {
            let key = Hotkey::from_uri(str_field(cmd, "uri")?).map_err(|e| e.to_string())?;
            let to = opt_account(cmd, "signed_for")?;
            let h = epistula::sign(&key, &body(cmd)?, to.as_ref(), num(cmd, "timestamp_ms")?);
            let headers: HashMap<_, _> = h.to_pairs().into_iter().collect();
            Ok(json!({ "headers": headers }))
        }
        "verify" => {
            let raw: HashMap<String, String> =
                serde_json::from_value(cmd.get("headers").cloned().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            let lookup = |name: &str| {
                raw.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let recipient = match opt_account(cmd, "recipient")? {
                Some(a) => Recipient::Hotkey(a),
                None => Recipient::Unaddressed,
            };
            let (body, now_ms) = (body(cmd)?, num(cmd, "now_ms")?);
            let result = SignedHeaders::parse(lookup)
                .and_then(|h| Verifier::new(recipient).verify(&h, &body, now_ms));
            Ok(match result {
                Ok(v) => json!({"ok": true, "signer": v.signer.to_ss58()}),
                Err(e) => json!({"ok": false, "error": format!("{e:?}")}),
            })
        }
        "keyfile" => {
            let path = std::path::PathBuf::from(str_field(cmd, "path")?);
            Ok(match wallet::load_hotkey_file(&path) {
                Ok(k) => json!({"ok": true, "ss58": k.account_id().to_ss58()}),
                Err(e) => json!({"ok": false, "error": format!("{e:?}"), "message": e.to_string()}),
            })
        }
        "uri" => {
            let key = Hotkey::from_uri(str_field(cmd, "uri")?).map_err(|e| e.to_string())?;
            Ok(json!({"ok": true, "ss58": key.account_id().to_ss58()}))
        }
        "report_data" => {
            let nonce: Nonce = str_field(cmd, "nonce")?
                .parse()
                .map_err(|e| format!("{e}"))?;
            let claims: Claims =
                serde_json::from_value(cmd.get("claims").cloned().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            let events = tvm_protocol::binding::runtime_events(&claims.runtime);
            Ok(json!({
                "report_data": hex::encode(report_data(&nonce, &claims)),
                "device_nonce": hex::encode(device_nonce(&nonce, &claims.cvm_id)),
                "runtime_events": events,
                "rtmr3": hex::encode(tvm_protocol::binding::replay_runtime_events(&events)),
            }))
        }
        other => Err(format!("unknown op {other}")),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|cmd| handle(&cmd))
            .unwrap_or_else(|e| json!({"error": e}));
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
